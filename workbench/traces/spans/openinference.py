"""OpenInference spans (Arize Phoenix exports; also inside OTLP JSON).

A line is a span as Phoenix exports it (`context.trace_id`, `context.span_id`, `parent_id`,
`start_time`, `attributes` nested or with dotted names) or an annotation (`name` with
`result: {score, label}` or `score`/`label`, and `span_id` or `trace_id`). LLM spans give
`llm.input_messages.*`, `llm.output_messages.*` and `llm.tools.*.tool.json_schema`; TOOL spans
the tool results; `annotations.*` / `evaluations.*` attributes (on the span, its trace, or a
linked span) the trace's outcomes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from workbench.traces.spans.chat import (
    as_text,
    maybe_json,
    to_input,
    to_messages,
    to_output,
    to_tools,
)
from workbench.traces.spans.common import dig, outcome_value, sub, timestamp, unflatten
from workbench.traces.spans.staging import Row
from workbench.conversations.messages import FieldError


def looks_like(obj: Any) -> bool:
    return isinstance(obj, dict) and (
        isinstance(obj.get("context"), dict) and "span_id" in obj["context"]
        or "context.span_id" in obj)


def rows(obj: dict, line: int | None, pre: str, mb: int) -> Iterator[Row]:
    if "context.span_id" in obj or "context.trace_id" in obj:    # a dataframe row
        obj = unflatten(obj)
    ctx = obj.get("context")
    if isinstance(ctx, dict) and ctx.get("span_id"):
        trace = ctx.get("trace_id")
        if not isinstance(trace, str) or not trace:
            raise FieldError(sub(pre, "context.trace_id"), "must be a non-empty string")
        attrs = obj.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise FieldError(sub(pre, "attributes"), "must be an object")
        yield from span_rows(trace, ctx["span_id"], obj.get("parent_id"),
                             timestamp(obj.get("start_time"), sub(pre, "start_time")),
                             obj.get("name"), unflatten(attrs), obj.get("links") or [],
                             line, sub(pre, "attributes"), mb)
    elif isinstance(obj.get("name"), str) and ("span_id" in obj or "trace_id" in obj):
        result = obj.get("result") if isinstance(obj.get("result"), dict) else obj
        body = {"name": obj["name"], "value": _value(result)}
        if obj.get("trace_id") and not obj.get("span_id"):
            yield Row(str(obj["trace_id"]), "outcome", line, body)
        else:
            yield Row(None, "outcome", line, body, ref=str(obj["span_id"]))
    else:
        raise FieldError(pre or "line", "not an OpenInference span ('context' with 'trace_id'"
                         " and 'span_id') or annotation ('name' with 'span_id' or 'trace_id')")


def _value(a: dict) -> Any:
    return outcome_value(a["score"] if a.get("score") is not None else a.get("label"))


def _message(m: Any, field: str) -> dict:
    """An OpenInference message (`message.role`, `message.content` or `message.contents`,
    `message.tool_calls`) as an OpenAI chat message."""
    m = m.get("message", m) if isinstance(m, dict) else m
    if not isinstance(m, dict):
        raise FieldError(field, "must be a message object")
    content = m.get("content")
    if content is None and isinstance(m.get("contents"), list):
        content = [{"type": dig(c, "message_content", "type") or "text",
                    "text": dig(c, "message_content", "text")} for c in m["contents"]]
    calls = []
    if not isinstance(m.get("tool_calls") or [], list):
        raise FieldError(f"{field}.tool_calls", "must be a list")
    for c in m.get("tool_calls") or []:
        tc = c.get("tool_call", c) if isinstance(c, dict) else {}
        calls.append({"id": tc.get("id"), "type": "function",
                      "function": {"name": dig(tc, "function", "name"),
                                   "arguments": dig(tc, "function", "arguments") or {}}})
    return {"role": m.get("role"), "content": content, "tool_calls": calls or None,
            "tool_call_id": m.get("tool_call_id"), "name": m.get("name")}


def _messages(raw: Any, field: str, role: str, mb: int) -> list[dict]:
    if not isinstance(raw, list):
        raise FieldError(field, "must be a list of messages")
    return to_messages([_message(m, f"{field}[{i}]") for i, m in enumerate(raw)], field,
                       role, mb)[0]


def _annotations(attrs: dict) -> Iterator[tuple[str, Any]]:
    for scope in (attrs, attrs.get("trace") or {}):
        for key, inner in (("annotations", "annotation"), ("evaluations", "evaluation")):
            for a in scope.get(key) or [] if isinstance(scope, dict) else []:
                a = a.get(inner, a) if isinstance(a, dict) else None
                if isinstance(a, dict) and isinstance(a.get("name"), str):
                    yield a["name"], _value(a)


def span_rows(trace: str, span_id: Any, parent: Any, start: float | None, name: Any,
              attrs: dict, links: list, line: int | None, pre: str, mb: int) -> Iterator[Row]:
    kind = str(dig(attrs, "openinference", "span", "kind") or "").upper()
    span_id = str(span_id) if span_id else None
    found = list(_annotations(attrs))
    targets = [str(dig(lk, "trace_id") or dig(lk, "traceId") or "") for lk in links
               if isinstance(lk, dict)]
    target = next((t for t in targets if t), trace) if kind == "EVALUATOR" else trace
    for n, v in found:
        yield Row(target, "outcome", line, {"name": n, "value": v})
    if not parent:
        meta = {k: v for k, v in (("name", name), ("session_id", dig(attrs, "session", "id")),
                                  ("user_id", dig(attrs, "user", "id")),
                                  ("metadata", maybe_json(attrs.get("metadata"), "metadata")),
                                  ("tags", dig(attrs, "tag", "tags"))) if v is not None}
        if meta and kind != "EVALUATOR":
            yield Row(trace, "meta", line, meta)
    llm = attrs.get("llm") if isinstance(attrs.get("llm"), dict) else {}
    if kind == "LLM":
        if llm.get("input_messages") is not None:
            inp = _messages(llm["input_messages"], sub(pre, "llm.input_messages"), "user", mb)
            tools: list = []
        elif dig(attrs, "input", "value") is not None:
            inp, tools = to_input(dig(attrs, "input", "value"), sub(pre, "input.value"), mb)
        else:
            inp, tools = [], []
        if llm.get("output_messages") is not None:
            out = _messages(llm["output_messages"], sub(pre, "llm.output_messages"),
                            "assistant", mb)
        else:
            out = to_output(dig(attrs, "output", "value"), sub(pre, "output.value"), mb)[0]
        schemas = [dig(t, "tool", "json_schema") for t in llm.get("tools") or []]
        tools = to_tools([s for s in schemas if s], sub(pre, "llm.tools")) or tools
        yield Row(trace, "llm", line, {"input": inp, "output": out, "tools": tools}, start,
                  span_id)
    elif kind == "TOOL":
        call_id = dig(attrs, "tool_call", "id") or dig(attrs, "tool", "id")
        yield Row(trace, "tool", line, {"id": call_id, "name": dig(attrs, "tool", "name") or name,
                                        "output": as_text(dig(attrs, "output", "value"))},
                  start, span_id)
    elif span_id:
        yield Row(trace, "span", line, {}, start, span_id)
