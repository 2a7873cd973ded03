"""Duplicates: a trace whose messages equal an earlier trace's (an error: train on it once), or
whose user side is the same conversation (a near-duplicate: a warning)."""

from __future__ import annotations

import hashlib
import json

from workbench.checks.base import CheckContext, flag, message_text
from workbench.checks.grounding import norm

NAME = "duplicates"


def _digest(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def run(ctx: CheckContext) -> list[dict]:
    exact: dict[str, object] = {}
    near: dict[str, object] = {}
    out = []
    for t in ctx.traces:
        full = _digest([(m["role"], norm(message_text(m))) for m in t.messages])
        users = [norm(m["content"] or "") for m in t.messages if m["role"] == "user"]
        user_key = _digest(users) if sum(len(u) for u in users) >= 20 else None
        if full in exact:
            first = exact[full]
            out.append(flag(t, None, NAME, "error", f"same conversation as {first.source}:"
                            f"{first.line} (trace {first.id})"))
            continue
        exact[full] = t
        if user_key is not None:
            if user_key in near:
                first = near[user_key]
                out.append(flag(t, None, NAME, "warning", "near-duplicate: the same user turns as"
                                f" {first.source}:{first.line} (trace {first.id})"))
            else:
                near[user_key] = t
    return out
