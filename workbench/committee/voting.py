"""Comparing votes and deciding a turn.

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
    args = call.get("arguments") or {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return (call.get("name"), args)
    return (call.get("name"), canonical_value(args))


def label_call(message: dict) -> dict | None:
    """A turn's current label as one call {name, arguments} (None: no call, or several)."""
    calls = message.get("tool_calls") or []
    if len(calls) != 1:
        return None
    fn = calls[0]["function"]
    args = fn["arguments"]
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    return {"name": fn["name"], "arguments": args}


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
