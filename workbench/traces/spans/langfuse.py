"""Langfuse exports: traces with their observations and scores.

A line (or a .json document) is one of: `{"trace": {...}, "observations": [...]}` (a trace as
the API returns it), a trace object with `observations`, one observation (`traceId`, `type`),
or one score (`traceId`, `name`, `value`). Generations give the LLM calls (their `input` is a
message list or a request `{"tools", "messages"}`), TOOL observations the tool results.
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

OBSERVATION_TYPES = {"GENERATION", "SPAN", "EVENT", "TOOL", "AGENT", "CHAIN", "RETRIEVER",
                     "EVALUATOR", "EMBEDDING", "GUARDRAIL"}
_NOT_META = {"input", "output", "observations", "scores", "corrections"}


def looks_like(obj: Any) -> bool:
    return isinstance(obj, dict) and (
        isinstance(obj.get("trace"), dict) and "observations" in obj
        or "traceId" in obj and str(obj.get("type", "")).upper() in OBSERVATION_TYPES
        or isinstance(obj.get("observations"), list) and "id" in obj and "traceId" not in obj
        or "id" in obj and "timestamp" in obj and bool({"projectId", "sessionId", "userId"}
                                                       & obj.keys())
        or "traceId" in obj and "value" in obj and bool({"dataType", "source"} & obj.keys()))


def rows(obj: dict, line: int | None, pre: str, mb: int) -> Iterator[Row]:
    if isinstance(obj.get("trace"), dict):
        trace = obj["trace"]
        yield from _trace(trace, line, sub(pre, "trace"))
        observations = obj.get("observations")
        field = sub(pre, "observations")
        if not isinstance(observations, list):
            observations, field = trace.get("observations") or [], sub(pre, "trace.observations")
        for i, o in enumerate(observations):
            if isinstance(o, dict):
                yield from _observation(o, line, f"{field}[{i}]", trace.get("id"), mb)
    elif "traceId" in obj and str(obj.get("type", "")).upper() in OBSERVATION_TYPES:
        yield from _observation(obj, line, pre, None, mb)
    elif "traceId" in obj and "name" in obj and ("value" in obj or "stringValue" in obj):
        yield from _score(obj, line, pre)
    elif "id" in obj:
        yield from _trace(obj, line, pre)
        for i, o in enumerate(obj.get("observations") or []):
            if isinstance(o, dict):
                yield from _observation(o, line, sub(pre, f"observations[{i}]"), obj.get("id"), mb)
    else:
        raise FieldError(pre or "line", "not a Langfuse trace, observation or score"
                         " (expected 'trace' and 'observations', 'traceId' and 'type', or"
                         " 'traceId', 'name' and 'value')")



def _trace(t: dict, line: int | None, pre: str) -> Iterator[Row]:
    trace = nonempty_str(t.get("id"), sub(pre, "id"))
    meta = {k: v for k, v in t.items() if k not in _NOT_META and k != "id"}
    if isinstance(meta.get("metadata"), str):
        meta["metadata"] = maybe_json(meta["metadata"], sub(pre, "metadata"))
    yield Row(trace, "meta", line, meta)
    for i, s in enumerate(t.get("scores") or []):
        if isinstance(s, dict):
            yield from _score({**s, "traceId": s.get("traceId") or trace}, line,
                              sub(pre, f"scores[{i}]"))


def _score(s: dict, line: int | None, pre: str) -> Iterator[Row]:
    kind = str(s.get("dataType") or "").upper()
    if kind == "CORRECTION":      # a corrected output, not a judgement of the conversation
        return
    name = s.get("name")
    if not isinstance(name, str) or not name:
        raise FieldError(sub(pre, "name"), "a score needs a name")
    value = s.get("stringValue") if kind == "CATEGORICAL" else s.get("value")
    if kind == "BOOLEAN" and isinstance(value, (int, float)):
        value = bool(value)
    yield Row(nonempty_str(s.get("traceId"), sub(pre, "traceId")), "outcome", line,
              {"name": name, "value": outcome_value(value)})


def _tool_result(output: Any) -> dict | None:
    """A LangChain ToolMessage logged as some span's output is a tool result."""
    output = maybe_json(output, "output")
    if isinstance(output, dict) and output.get("type") == "tool" and output.get("tool_call_id"):
        return {"id": output["tool_call_id"], "name": output.get("name"),
                "output": as_text(output.get("content"))}
    return None


def _observation(o: dict, line: int | None, pre: str, trace: str | None, mb: int
                 ) -> Iterator[Row]:
    trace = nonempty_str(o.get("traceId") or trace, sub(pre, "traceId"))
    start = timestamp(o.get("startTime"), sub(pre, "startTime"))
    kind = str(o.get("type", "")).upper()
    if kind == "GENERATION":
        if o.get("input") is None and o.get("output") is None:
            return
        inp, tools = to_input(o.get("input"), sub(pre, "input"), mb) if o.get(
            "input") is not None else ([], [])
        out, echo = to_output(o.get("output"), sub(pre, "output"), mb)
        echoed, system = split_echo(echo)
        defined = to_tools(o.get("toolDefinitions") or None, sub(pre, "toolDefinitions"))
        yield Row(trace, "llm", line, {"input": with_system(inp, system), "output": out,
                                       "tools": defined or tools or echoed}, start, o.get("id"))
    elif kind == "TOOL":
        meta = maybe_json(o.get("metadata"), sub(pre, "metadata"))
        call_id = (dig(meta, "attributes", "gen_ai.tool.call.id")
                   or dig(meta, "attributes", "tool_call.id"))
        result = _tool_result(o.get("output"))
        yield Row(trace, "tool", line, result or {"id": call_id, "name": o.get("name"),
                                                  "output": as_text(maybe_json(
                                                      o.get("output"), sub(pre, "output")))},
                  start, o.get("id"))
    else:
        result = _tool_result(o.get("output"))
        if result:
            yield Row(trace, "tool", line, result, start, o.get("id"))

