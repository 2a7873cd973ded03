"""A trace's spans -> one conversation.

The conversation of a trace is its latest LLM call's input plus its output (the latest by
start time, file order where times are missing or equal: exports do not keep spans in order).
A tool call that no message answers gets its result from the trace's tool spans (by call id,
else by tool name in order). The tools are the call's own definitions, else those of another
call of the trace. Scores, feedback and annotations are the trace's outcomes by name.
"""

from __future__ import annotations

from workbench.traces.formats import Record
from workbench.traces.spans.staging import Row
from workbench.conversations.messages import normalize_message


def _key(row: Row) -> tuple:
    return (row.start is not None, row.start or 0.0)


def _events_as_calls(rows: list[Row]) -> list[Row]:
    """Per-message events (older OpenTelemetry GenAI) grouped by span into LLM rows; an LLM
    span's own messages, where it has them, win."""
    by_span: dict[str, list[Row]] = {}
    for r in rows:
        if r.kind == "event":
            by_span.setdefault(r.span_id or "", []).append(r)
    if not by_span:
        return [r for r in rows if r.kind == "llm"]
    calls: dict[str, Row] = {}
    for r in rows:
        if r.kind == "llm":
            calls[r.span_id or f"#{id(r)}"] = r
    for span, events in by_span.items():
        events.sort(key=lambda e: (e.body.get("time") or 0.0))
        inp = [m for e in events if e.body["side"] == "input" for m in e.body["messages"]]
        out = [m for e in events if e.body["side"] == "output" for m in e.body["messages"]]
        call = calls.get(span)
        if call is None:
            call = Row(events[0].trace, "llm", events[0].line, {"input": [], "output": []},
                       events[0].start, span)
            calls[span] = call
        call.body["input"] = call.body.get("input") or inp
        call.body["output"] = call.body.get("output") or out
    return list(calls.values())


def _answer_calls(messages: list[dict], tools: list[Row], max_bytes: int) -> list[dict]:
    """Tool results for calls that no tool message answers, placed after the call's turn."""
    pool = [t.body for t in sorted(tools, key=_key)]
    used: set[int] = set()

    def take(call: dict) -> dict | None:
        for pick in (lambda b: call["id"] and b.get("id") == call["id"],
                     lambda b: not b.get("id") and b.get("name") == call["function"]["name"]):
            for i, b in enumerate(pool):
                if i not in used and pick(b):
                    used.add(i)
                    return b
        return None

    out: list[dict] = []
    i = 0
    while i < len(messages):
        m = messages[i]
        out.append(m)
        i += 1
        if m["role"] != "assistant" or not m["tool_calls"]:
            continue
        answered = set()
        while i < len(messages) and messages[i]["role"] == "tool":
            answered.add(messages[i]["tool_call_id"])
            out.append(messages[i])
            i += 1
        open_calls = [c for c in m["tool_calls"] if c["id"] not in answered or c["id"] is None]
        if len(answered) >= len(m["tool_calls"]):
            continue
        for c in open_calls:
            got = take(c)
            if got is not None:
                out.append(normalize_message({"role": "tool", "content": got.get("output"),
                                              "tool_call_id": c["id"]}, "tool", max_bytes))
    return out


def stitch(trace: str, rows: list[Row], max_bytes: int) -> Record | None:
    """The trace's conversation, or None when it has no LLM call (nothing to learn from)."""
    calls = _events_as_calls(rows)
    calls = [c for c in calls if c.body.get("input") or c.body.get("output")]
    if not calls:
        return None
    latest = max(enumerate(calls), key=lambda ic: (_key(ic[1]), ic[0]))[1]
    messages = list(latest.body.get("input") or []) + list(latest.body.get("output") or [])
    messages = _answer_calls(messages, [r for r in rows if r.kind == "tool"], max_bytes)
    tools = latest.body.get("tools") or next(
        (c.body["tools"] for c in sorted(calls, key=_key, reverse=True) if c.body.get("tools")),
        None)
    outcomes: dict = {}
    meta: dict = {}
    for r in rows:
        if r.kind == "outcome":
            outcomes[r.body["name"]] = r.body["value"]
        elif r.kind == "meta":
            meta.update(r.body)
    meta["source_trace_id"] = trace
    return Record(latest.line or 1, messages, tools or None, meta, outcomes or None)
