"""Structure: the conversation has the shape the task implies.

A service call is answered by its result; a message-only tool (no result) is followed by a user
utterance; a result answers a call; the conversation starts with a user turn; roles alternate
(user, assistant, [result, assistant]...).

A service call that ends the conversation has no result. Where the corpus shows that service
calls are answered (results follow a good share of the calls that are not last, even in a noisy
corpus), such a call is an error: the conversation was complete, yet the call was never
answered, so it is not what the assistant did there (typically a reply replaced by a call).
Otherwise it is only a warning.

Roles follow the agent's protocol. What no protocol allows is an error: a result that answers
no call (more results than the calls before them), an assistant turn right after another (it
answers nothing). Other turns out of the usual order (a user turn right after results, where an
agent's logs leave out its reply; two user turns in a row) are the agent's protocol where the
corpus shows them in a good share of its conversations (`protocol`), and errors elsewhere.

A tool result or arguments nested deeper than `safe_json.MAX_JSON_DEPTH` (a store filled
before imports refused them) is an error: no check can read it.
"""

from __future__ import annotations

from workbench.core import safe_json
from workbench.checks.base import CheckContext, calls_of, evidence_item, flag

NAME = "structure"


def answered_rate(ctx: CheckContext) -> float:
    """Share of service calls, not last in their conversation, that a result answers (cached;
    a re-check of a few traces is given the corpus' rate, see `recheck_traces`)."""
    if "structure.answered_rate" in ctx.cache:
        return ctx.cache["structure.answered_rate"]
    answered = total = 0
    for t in ctx.traces:
        msgs = t.messages
        for i, m in enumerate(msgs[:-1]):
            if m["role"] == "assistant" and any(ctx.is_service(n) for n, _ in calls_of(m)):
                total += 1
                answered += msgs[i + 1]["role"] == "tool"
    ctx.cache["structure.answered_rate"] = answered / total if total >= 5 else 0.0
    return ctx.cache["structure.answered_rate"]


PROTOCOL_SHARE = 0.3   # an order this share of the conversations show is the agent's protocol
PROTOCOL_MIN = 5       # ... in this many conversations at least
LEARNABLE = (("tool", "user"), ("user", "user"))


def _transitions(msgs: list[dict]) -> set[tuple[str, str]]:
    body = [m["role"] for m in msgs if m["role"] != "system"]
    return {(a, b) for a, b in zip(body, body[1:]) if (a, b) in LEARNABLE}


def protocol(ctx: CheckContext) -> dict[tuple[str, str], float]:
    """The orders out of the usual user, assistant, [result, assistant] that this corpus shows
    consistently, with the share of conversations showing each (cached; a re-check of a few
    traces is given the corpus' protocol, see `recheck_traces`)."""
    if "structure.protocol" in ctx.cache:
        return ctx.cache["structure.protocol"]
    seen: dict[tuple[str, str], int] = {}
    n = 0
    for t in ctx.traces:
        n += 1
        for pair in _transitions(t.messages):
            seen[pair] = seen.get(pair, 0) + 1
    ctx.cache["structure.protocol"] = {
        pair: c / n for pair, c in seen.items()
        if c >= PROTOCOL_MIN and c >= PROTOCOL_SHARE * n}
    return ctx.cache["structure.protocol"]


def too_deep(message: dict) -> str | None:
    """What of a message nests deeper than the JSON depth limit, if anything."""
    content = message.get("content") or ""
    if content.lstrip()[:1] in ("[", "{"):
        try:
            safe_json.check_depth(content)
        except safe_json.TooDeep:
            return "the content"
    for name, args in calls_of(message):
        if isinstance(args, dict) and safe_json.value_depth(args) > safe_json.MAX_JSON_DEPTH:
            return f"the arguments of {name}"
    return None


def _service_evidence(ctx: CheckContext, name: str) -> dict:
    return evidence_item("corpus", f"{name} is a service tool: results answer"
                         f" {100 * answered_rate(ctx):.0f}% of service calls in this corpus")


def _message_evidence(ctx: CheckContext, name: str) -> dict:
    if ctx.message_tools is not None:
        return evidence_item("task", f"{name} is configured as a message-only tool")
    return evidence_item("corpus", f"{name} is message-only: a user turn, not a result, follows"
                         " most of its calls in this corpus (or its schema says it returns"
                         " nothing)")


def _a(role: str) -> str:
    """A role with its article: "an assistant", "a user"."""
    return ("an " if role[:1] in "aeio" else "a ") + role


def run(ctx: CheckContext) -> list[dict]:
    out = []
    unanswered_last = "error" if answered_rate(ctx) >= 0.3 else "warning"
    for t in ctx.traces:
        msgs = t.messages
        for i, m in enumerate(msgs):
            what = too_deep(m)
            if what:
                out.append(flag(t, i, NAME, "error", f"JSON nested more than"
                                f" {safe_json.MAX_JSON_DEPTH} levels deep in {what}: no check"
                                " can read it", pattern="too-deep"))
        body = [(i, m) for i, m in enumerate(msgs) if m["role"] != "system"]
        if not body:
            out.append(flag(t, None, NAME, "error", "no messages besides the system prompt",
                            pattern="empty"))
            continue
        if body[0][1]["role"] != "user":
            out.append(flag(t, None, NAME, "error",
                            f"starts with {_a(body[0][1]['role'])} message, not a user turn;"
                            " a conversation should start with what the user says",
                            pattern="first-turn"))
        allowed = protocol(ctx)
        order_breaks = []
        pending = 0   # results still owed to the last assistant turn's calls
        for k, (i, m) in enumerate(body):
            nxt = body[k + 1][1] if k + 1 < len(body) else None
            prev = body[k - 1][1] if k else None
            if m["role"] == "assistant":
                calls = calls_of(m)
                service = [n for n, _ in calls if ctx.is_service(n)]
                pending = len(calls)
                if service:
                    if nxt is None:
                        out.append(flag(t, i, NAME, unanswered_last,
                                        f"{service[0]} is the last message: its result is missing"
                                        + (" (elsewhere in the corpus results answer calls)"
                                           if unanswered_last == "error" else "")
                                        + "; a call should be answered by its result.",
                                        pattern=f"unanswered-last:{service[0]}"))
                    elif nxt["role"] != "tool":
                        out.append(flag(t, i, NAME, "error",
                                        f"service call {service[0]} is followed by"
                                        f" {_a(nxt['role'])} message instead of its result; its"
                                        " result should come next.",
                                        [_service_evidence(ctx, service[0])],
                                        pattern=f"unanswered:{service[0]}"))
                elif calls and nxt is not None and nxt["role"] == "tool":
                    out.append(flag(t, i, NAME, "error",
                                    f"{calls[0][0]} returns nothing, yet a tool result follows it;"
                                    " a user turn should follow it.",
                                    [_message_evidence(ctx, calls[0][0])],
                                    pattern=f"result-after-message-tool:{calls[0][0]}"))
                if prev is not None and prev["role"] == "assistant":
                    order_breaks.append((i, "an assistant turn right after another answers"
                                         " nothing (a user turn or a result belongs"
                                         " between)"))
            elif m["role"] == "tool":
                if prev is None or prev["role"] not in ("assistant", "tool") or pending <= 0:
                    order_breaks.append((i, "a result answers no call (a call belongs"
                                         " before it)"))
                pending -= 1
                if nxt is not None and nxt["role"] not in ("assistant", "tool") and (
                        "tool", nxt["role"]) not in allowed:
                    order_breaks.append((i + 1, f"{_a(nxt['role'])} turn follows results"
                                         " without an assistant reply (the assistant should"
                                         " answer the results first)"))
            elif m["role"] == "user" and prev is not None and prev["role"] == "user" and (
                    "user", "user") not in allowed:
                order_breaks.append((i, "two user turns in a row (an assistant reply"
                                     " should come between them)"))
        if order_breaks:
            at = sorted({i for i, _ in order_breaks})
            what = list(dict.fromkeys(w for _, w in sorted(order_breaks)))
            out.append(flag(t, None, NAME, "error",
                            f"role order broken at message{'s' if len(at) > 1 else ''} "
                            + ", ".join(map(str, at[:6])) + f": {'; '.join(what[:2])}"
                            + (f"; and {len(what) - 2} more" if len(what) > 2 else "") + ".",
                            [evidence_item("statistics", "orders this corpus shows in a good share"
                                           " of its conversations (its protocol): "
                                           + (", ".join(f"{a} then {b} in {100 * s:.0f}%"
                                                        for (a, b), s in sorted(allowed.items()))
                                              or "none"))],
                            pattern="role-order"))
    return out
