"""Comparing votes and deciding a turn.

A vote (an answer) is what the assistant should have done at the turn: one call
`{"name", "arguments"}`, several calls at once `{"calls": [...]}` (compared as a set), or a text
reply `{"text": "..."}`. Members vote on the decision (text, or which calls: `decision_key`) and
on its content (`call_key`): a text equals another after case, punctuation and spacing.

Two calls are the same vote when they call the same function with equal arguments after the
tolerant normalisation the grounding check uses: case and punctuation, clock times ("4:45 pm" =
"16:45"), number words ("two" = 2), numbers as numbers. A strict majority of the members (an
abstention counts as no vote for anything) or all of them (`unanimous`) decide; otherwise the
arbiter, if one is named, picks among the candidates; otherwise the analyst does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from workbench.checks.grounding import CLOCK, INT, norm, spell_numbers

RULES = ("majority", "unanimous")


def canonical_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return int(value) if float(value).is_integer() else round(float(value), 6)
    if isinstance(value, str):
        s = value.strip()
        m = CLOCK.match(s)
        if m:
            h, minute, suffix = int(m.group(1)), int(m.group(2)), (m.group(3) or "").lower()
            if suffix == "pm" and h < 12:
                h += 12
            elif suffix == "am" and h == 12:
                h = 0
            return f"{h:02d}:{minute:02d}"
        if INT.match(s):
            return int(s)
        if s.lower() in ("true", "false"):
            return s.lower() == "true"
        words = norm(spell_numbers(s.lower()))
        return int(words) if INT.match(words) else words
    if isinstance(value, list):
        return tuple(canonical_value(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, canonical_value(v)) for k, v in value.items()))
    return json.dumps(value, sort_keys=True)


def call_key(call: dict | None) -> tuple | None:
    """What two equal votes share (None for an abstention)."""
    if not call:
        return None
    if isinstance(call.get("text"), str):
        return ("text", " ".join(norm(call["text"]).split()))
    if isinstance(call.get("calls"), list):
        return ("calls", tuple(sorted((call_key(c) for c in call["calls"]), key=repr)))
    args = call.get("arguments") or {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return (call.get("name"), args)
    return (call.get("name"), canonical_value(args))


def decision_key(call: dict | None) -> str | None:
    """What a vote decides, without its content: "text", or the names of the calls."""
    if not call:
        return None
    if isinstance(call.get("text"), str):
        return "text"
    if isinstance(call.get("calls"), list):
        return ",".join(sorted(str(c.get("name")) for c in call["calls"]))
    return str(call.get("name"))


def _one(call: dict) -> dict:
    fn = call.get("function") or call
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    return {"name": fn.get("name"), "arguments": args}


def label_call(message: dict) -> dict | None:
    """A turn's current label as a vote: one call {name, arguments}, several {"calls": [...]},
    or a text reply {"text": ...} (None: neither)."""
    calls = message.get("tool_calls") or []
    if len(calls) == 1:
        return _one(calls[0])
    if calls:
        return {"calls": [_one(c) for c in calls]}
    content = message.get("content")
    return {"text": content} if isinstance(content, str) and content.strip() else None


def groups(votes: Sequence[dict]) -> list[list[dict]]:
    """Valid votes grouped by equal call, the largest group first (ties: first cast first)."""
    by_key: dict[tuple, list[dict]] = {}
    for v in votes:
        key = call_key(v.get("call"))
        if key is not None:
            by_key.setdefault(key, []).append(v)
    return sorted(by_key.values(), key=len, reverse=True)


def agreed(votes: Sequence[dict], n_members: int, rule: str) -> dict | None:
    """The call the members agree on under `rule`, or None."""
    if rule not in RULES:
        raise ValueError(f"--agree must be one of {', '.join(RULES)}, not {rule!r}")
    found = groups(votes)
    if not found:
        return None
    top = found[0]
    if rule == "unanimous":
        return top[0]["call"] if len(top) == n_members else None
    tie = len(found) > 1 and len(found[1]) == len(top)
    return top[0]["call"] if len(top) * 2 > n_members and not tie else None


def candidates(votes: Sequence[dict]) -> list[dict]:
    """One call per distinct vote, the most voted first."""
    return [g[0]["call"] for g in groups(votes)]


def same_call(a: dict | None, b: dict | None) -> bool:
    return a is not None and b is not None and call_key(a) == call_key(b)
