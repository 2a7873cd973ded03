"""Duplicates: a trace whose messages equal an earlier trace's (an error: train on it once), or
whose user side is the same conversation (a near-duplicate: a warning)."""

from __future__ import annotations

import hashlib
import json
import sys
from typing import NamedTuple

from workbench.checks.base import CheckContext, flag, message_text
from workbench.checks.grounding import norm

NAME = "duplicates"


def _digest(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class _First(NamedTuple):
    """Where a conversation was first seen: all a later copy's flag names (holding the trace
    itself would keep every conversation of the corpus in memory)."""
    source: str
    line: int
    id: int


def user_turns_key(messages: list[dict]) -> str | None:
    """A digest of what the user says (normalised), None when that is too little to tell a
    conversation by (under 20 characters): two conversations with the same key are
    near-duplicates."""
    users = [norm(m.get("content") or "") for m in messages if m["role"] == "user"]
    return _digest(users) if sum(len(u) for u in users) >= 20 else None


def run(ctx: CheckContext) -> list[dict]:
    exact: dict[str, _First] = {}
    near: dict[str, _First] = {}
    out = []
    for t in ctx.traces:
        full = _digest([(m["role"], norm(message_text(m))) for m in t.messages])
        user_key = user_turns_key(t.messages)
        if full in exact:
            first = exact[full]
            out.append(flag(t, None, NAME, "error", f"same conversation as {first.source}:"
                            f"{first.line} (trace {first.id}); it should be trained on once.",
                            pattern="duplicate"))
            continue
        exact[full] = seen = _First(sys.intern(t.source), t.line, t.id)
        if user_key is not None:
            if user_key in near:
                first = near[user_key]
                out.append(flag(t, None, NAME, "warning", "near-duplicate: the same user turns as"
                                f" {first.source}:{first.line} (trace {first.id}); keep both only"
                                " if the replies differ usefully.", pattern="near-duplicate"))
            else:
                near[user_key] = seen
    return out
