"""OpenTelemetry GenAI spans as OTLP JSON (what the collector's file exporter writes: one
`{"resourceSpans": [...]}` or `{"resourceLogs": [...]}` object per line).

Model calls carry `gen_ai.input.messages`, `gen_ai.output.messages`,
`gen_ai.system_instructions` and `gen_ai.tool.definitions` (current conventions), or the older
per-message events (`gen_ai.system.message`, `gen_ai.user.message`, `gen_ai.assistant.message`,
`gen_ai.tool.message`, `gen_ai.choice`) as span events or log records, or `gen_ai.prompt` /
`gen_ai.completion`. `execute_tool` spans give tool results, `gen_ai.evaluation.result`
events outcomes. Spans that follow the OpenInference conventions are read as such.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from workbench.traces.spans import openinference
from workbench.traces.spans.chat import (
    as_text,
    maybe_json,
    system_message,
    to_messages,
    to_output,
    to_tools,
)
from workbench.traces.spans.common import outcome_value, sub, timestamp, unflatten
from workbench.traces.spans.staging import Row
from workbench.conversations.messages import FieldError

_EVENT_ROLES = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
_CONTENT = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
            "gen_ai.prompt", "gen_ai.completion")


def looks_like(obj: Any) -> bool:
    return isinstance(obj, dict) and ("resourceSpans" in obj or "resourceLogs" in obj)


def any_value(v: Any) -> Any:
    """An OTLP JSON AnyValue as a plain value."""
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [any_value(x) for x in (v["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in v:
        return attributes((v["kvlistValue"] or {}).get("values"))
    if "bytesValue" in v:
        return base64.b64decode(v["bytesValue"]).hex()
    return None


def attributes(kvs: Any, field: str = "attributes") -> dict:
    """OTLP key-value pairs as a dict; a malformed value is a FieldError naming it."""
    out = {}
    for i, kv in _each(kvs, field):
        if isinstance(kv.get("key"), str):
            try:
                out[kv["key"]] = any_value(kv.get("value"))
            except (TypeError, ValueError, AttributeError):
                raise FieldError(f"{field}[{i}].value", "is not a valid OTLP AnyValue") from None
    return out


def _each(value: Any, field: str) -> list[tuple[int, dict]]:
    """The objects of an OTLP list, numbered; anything else is a FieldError."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise FieldError(field, "must be a list")
    for i, v in enumerate(value):
        if not isinstance(v, dict):
            raise FieldError(f"{field}[{i}]", "must be an object")
    return list(enumerate(value))


def rows(obj: dict, line: int | None, pre: str, mb: int) -> Iterator[Row]:
    if not looks_like(obj):
        raise FieldError(pre or "line", "not OTLP JSON ('resourceSpans' or 'resourceLogs')")
    for ri, rs in _each(obj.get("resourceSpans"), sub(pre, "resourceSpans")):
        at = sub(pre, f"resourceSpans[{ri}]")
        res = rs.get("resource") if isinstance(rs.get("resource"), dict) else {}
        resource = attributes(res.get("attributes"), sub(at, "resource.attributes"))
        for si, ss in _each(rs.get("scopeSpans"), sub(at, "scopeSpans")):
            for k, span in _each(ss.get("spans"), sub(at, f"scopeSpans[{si}].spans")):
                yield from _span(span, resource, line, sub(at, f"scopeSpans[{si}].spans[{k}]"),
                                 mb)
    for ri, rl in _each(obj.get("resourceLogs"), sub(pre, "resourceLogs")):
        at = sub(pre, f"resourceLogs[{ri}]")
        for si, sl in _each(rl.get("scopeLogs"), sub(at, "scopeLogs")):
            for k, rec in _each(sl.get("logRecords"), sub(at, f"scopeLogs[{si}].logRecords")):
                field = sub(at, f"scopeLogs[{si}].logRecords[{k}]")
                attrs = attributes(rec.get("attributes"), sub(field, "attributes"))
                name = rec.get("eventName") or attrs.get("event.name")
                if rec.get("traceId") and isinstance(name, str):
                    body = attributes([{"key": "body", "value": rec.get("body")}],
                                      sub(field, "body"))["body"]
                    yield from _event(str(rec["traceId"]), rec.get("spanId"), name,
                                      body if isinstance(body, dict) else attrs,
                                      timestamp(rec.get("timeUnixNano"),
                                                sub(field, "timeUnixNano")),
                                      line, sub(field, "body"), mb)


def _event(trace: str, span: Any, name: str, body: dict, time: float | None,
           line: int | None, field: str, mb: int) -> Iterator[Row]:
    if name == "gen_ai.evaluation.result" and body.get("gen_ai.evaluation.name"):
        value = body.get("gen_ai.evaluation.score.value")
        yield Row(trace, "outcome", line, {"name": body["gen_ai.evaluation.name"],
                                           "value": outcome_value(
                                               value if value is not None
                                               else body.get("gen_ai.evaluation.score.label"))})
        return
    if name not in _EVENT_ROLES and name != "gen_ai.choice":
        return
    inner = maybe_json(body.get("gen_ai.event.content", body.get("body")), field)
    if isinstance(inner, dict):
        body = inner
    if name == "gen_ai.choice":
        message = body.get("message") if isinstance(body.get("message"), dict) else body
        msgs = to_messages({**message, "role": message.get("role") or "assistant"}, field,
                           "assistant", mb)[0]
        side = "output"
    else:
        role = _EVENT_ROLES[name]
        msg = {k: v for k, v in body.items() if not k.startswith("gen_ai.")}
        if role == "tool" and "tool_call_id" not in msg:
            msg["tool_call_id"] = msg.pop("id", None)
        msgs = to_messages({**msg, "role": msg.get("role") or role}, field, role, mb)[0]
        side = "input"
    yield Row(trace, "event", line, {"side": side, "messages": msgs, "time": time}, time,
              str(span) if span else None)


def _span(span: dict, resource: dict, line: int | None, pre: str, mb: int) -> Iterator[Row]:
    trace = span.get("traceId")
    if not isinstance(trace, str) or not trace:
        raise FieldError(sub(pre, "traceId"), "must be a non-empty string")
    span_id = span.get("spanId")
    start = timestamp(span.get("startTimeUnixNano"), sub(pre, "startTimeUnixNano"))
    field = sub(pre, "attributes")
    attrs = attributes(span.get("attributes"), field)
    if "openinference.span.kind" in attrs:
        links = [{"trace_id": lk.get("traceId")} for _, lk in _each(span.get("links"),
                                                                    sub(pre, "links"))]
        yield from openinference.span_rows(trace, span_id, span.get("parentSpanId"), start,
                                           span.get("name"), unflatten(attrs), links, line,
                                           field, mb)
        return
    if not span.get("parentSpanId"):
        yield Row(trace, "meta", line, {"name": span.get("name"), "resource": resource})
    for i, ev in _each(span.get("events"), sub(pre, "events")):
        if isinstance(ev.get("name"), str):
            yield from _event(trace, span_id, ev["name"],
                              attributes(ev.get("attributes"), sub(pre, f"events[{i}].attributes")),
                              timestamp(ev.get("timeUnixNano"), sub(pre, f"events[{i}]")),
                              line, sub(pre, f"events[{i}].attributes"), mb)
    op = attrs.get("gen_ai.operation.name")
    if op == "execute_tool":
        result = attrs.get("gen_ai.tool.call.result", attrs.get("output"))
        yield Row(trace, "tool", line, {"id": attrs.get("gen_ai.tool.call.id"),
                                        "name": attrs.get("gen_ai.tool.name"),
                                        "output": as_text(maybe_json(result, field))},
                  start, span_id)
        return
    if not any(k in attrs for k in _CONTENT) and "gen_ai.tool.definitions" not in attrs:
        if span_id:
            yield Row(trace, "span", line, {}, start, span_id)
        return
    inp = system_message(attrs.get("gen_ai.system_instructions"),
                         sub(field, "gen_ai.system_instructions"), mb)
    key = "gen_ai.input.messages" if "gen_ai.input.messages" in attrs else "gen_ai.prompt"
    if attrs.get(key) is not None:
        inp += to_messages(attrs[key], sub(field, key), "user", mb)[0]
    key = "gen_ai.output.messages" if "gen_ai.output.messages" in attrs else "gen_ai.completion"
    out = to_output(attrs.get(key), sub(field, key), mb)[0]
    tools = to_tools(attrs.get("gen_ai.tool.definitions"), sub(field, "gen_ai.tool.definitions"))
    yield Row(trace, "llm", line, {"input": inp, "output": out, "tools": tools}, start, span_id)
