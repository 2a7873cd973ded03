"""LangSmith runs and feedback.

A line is a run (`run_type` llm / tool / chain / ..., with `id`, `trace_id`,
`parent_run_id`, `inputs`, `outputs`, as `Client.list_runs` gives them) or a feedback
(`key`, `score` or `value`, `run_id` and/or `trace_id`). LLM runs carry OpenAI, Anthropic or
LangChain messages; tool runs the tool results; a root run's `feedback_stats` and every
feedback become the trace's outcomes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from workbench.traces.spans.chat import (
    as_text,
    maybe_json,
    split_echo,
    to_input,
    to_output,
    to_tools,
    with_system,
)
from workbench.traces.spans.common import dig, nonempty_str, outcome_value, sub, timestamp
from workbench.traces.spans.staging import Row
from workbench.conversations.messages import FieldError

_NOT_META = {"inputs", "outputs", "serialized", "events", "child_runs", "feedback_stats",
             "trace_id", "id", "parent_run_id", "child_run_ids", "dotted_order", "attachments"}


def looks_like(obj: Any) -> bool:
    return isinstance(obj, dict) and ("run_type" in obj and ("trace_id" in obj or "id" in obj)
                                      or "key" in obj and ("run_id" in obj or "trace_id" in obj))


def rows(obj: dict, line: int | None, pre: str, mb: int) -> Iterator[Row]:
    if "run_type" in obj:
        yield from _run(obj, line, pre, mb, None)
    elif "key" in obj:
        yield from _feedback(obj, line, pre)
    else:
        raise FieldError(pre or "line", "not a LangSmith run ('run_type') or feedback ('key')")



def _feedback(f: dict, line: int | None, pre: str) -> Iterator[Row]:
    key = nonempty_str(f.get("key"), sub(pre, "key"))
    value = f.get("score") if f.get("score") is not None else f.get("value")
    body = {"name": key, "value": outcome_value(value)}
    if f.get("trace_id"):
        yield Row(nonempty_str(f["trace_id"], sub(pre, "trace_id")), "outcome", line, body)
    else:
        yield Row(None, "outcome", line, body, ref=nonempty_str(f.get("run_id"), sub(pre, "run_id")))


def _run(r: dict, line: int | None, pre: str, mb: int, trace: str | None) -> Iterator[Row]:
    run_id = r.get("id")
    parent = r.get("parent_run_id")
    trace = r.get("trace_id") or trace or (run_id if not parent else None)
    trace = nonempty_str(trace, sub(pre, "trace_id"))
    start = timestamp(r.get("start_time"), sub(pre, "start_time"))
    if not parent:
        meta = {k: v for k, v in r.items() if k not in _NOT_META}
        yield Row(trace, "meta", line, meta)
        for key, stats in (r.get("feedback_stats") or {}).items():
            if isinstance(stats, dict) and "avg" in stats:
                yield Row(trace, "outcome", line, {"name": key,
                                                   "value": outcome_value(stats["avg"])})
    inputs, outputs = r.get("inputs") or {}, r.get("outputs")
    kind = r.get("run_type")
    if kind == "llm":
        inp, tools = to_input(inputs, sub(pre, "inputs"), mb)
        out, echo = to_output(outputs or None, sub(pre, "outputs"), mb)
        echoed, system = split_echo(echo)
        params = dig(r, "extra", "invocation_params", "tools")
        tools = tools or to_tools(params, sub(pre, "extra.invocation_params.tools")) or echoed
        yield Row(trace, "llm", line, {"input": with_system(inp, system), "output": out,
                                       "tools": tools}, start,
                  run_id)
    elif kind == "tool":
        result = maybe_json(outputs.get("output", outputs) if isinstance(outputs, dict)
                            else outputs, sub(pre, "outputs"))
        call_id = inputs.get("tool_call_id") if isinstance(inputs, dict) else None
        if isinstance(result, dict) and result.get("tool_call_id"):   # a LangChain ToolMessage
            call_id, result = result["tool_call_id"], result.get("content")
        if result is None and r.get("error"):
            result = r["error"]
        yield Row(trace, "tool", line, {"id": call_id, "name": r.get("name"),
                                        "output": as_text(result)}, start, run_id)
    elif run_id:
        yield Row(trace, "span", line, {}, start, run_id)   # so feedback on it finds the trace
    for i, child in enumerate(r.get("child_runs") or []):
        if isinstance(child, dict):
            yield from _run(child, line, sub(pre, f"child_runs[{i}]"), mb, trace)
