"""Asks of a batch endpoint answered ahead, as one batch: each ask's request is built and its
reply parsed by the member exactly as online (`Member.request_body`, `Member.answer_from`),
then stored as the ask's unit, so the caller's online path finds every reply cached. A request
whose batch gave no reply is remembered by the member, whose `ask` then fails with why (a
failed request: never a vote, a verdict or a score)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from workbench.models.batch_calls import BatchCaller
from workbench.committee.members import EndpointFailed, Member
from workbench.jobs.context import JobContext, content_key


@dataclass
class Ask:
    """One request as the online path makes it, and the unit its reply is stored as."""

    inputs: Any                 # the unit's inputs (its key)
    messages: list[dict]
    schema: dict
    tools: list[dict] | None = None
    parse: str = "call"
    text: bool = False


def answer_ahead(ctx: JobContext, member: Member, kind: str, asks: list[Ask]) -> Counter[str]:
    """Send the asks not yet answered (no unit stored) as a batch and store their replies as
    units of `kind`; returns {calls, tokens_in, tokens_out, failed}."""
    counts: Counter[str] = Counter()
    todo: dict[str, tuple[Ask, dict]] = {}
    for ask in asks:
        key = content_key(ask.inputs)
        if key in todo or ctx.has_unit(kind, ask.inputs):
            continue
        todo[key] = (ask, member.request_body(ask.messages, ask.schema, ask.tools, ask.parse,
                                              ask.text))
    if not todo:
        return counts
    ctx.log(f"{member.name}: {len(todo)} requests go as a batch")
    out = BatchCaller(ctx, member.endpoint).run({k: body for k, (_, body) in todo.items()})
    for key, (ask, body) in todo.items():
        reply = out.replies.get(key)
        why = out.errors.get(key, "no reply in its batch")
        if reply is not None:
            try:
                got = member.answer_from(json.dumps(reply).encode(), ask.parse, ask.text,
                                         "tools" in body)
            except EndpointFailed as e:
                why = str(e).removeprefix(f"{member.name}: ")
            else:
                ctx.save_unit(kind, ask.inputs, got.as_dict())
                ctx.units_reused -= 1    # the caller reads it back once: that is no reuse
                counts["calls"] += 1
                counts["tokens_in"] += got.tokens_in
                counts["tokens_out"] += got.tokens_out
                continue
        member.batch_failed[content_key(body)] = f"batch: {why}"
        counts["failed"] += 1
    return counts
