"""The relevance judge: is each trace on the assistant's task? (`workbench relevance`)

One request per trace to one endpoint (the task description, the tools' names, the whole
conversation; a JSON verdict `{"on_task": bool, "reason": str}`). Replies are cached as job
units keyed by the endpoint's identity, the messages and the schema, so a re-run or a resumed
run never pays twice. Verdicts become trace-level flags of the check `relevance`: an off-task
trace gets an error (the judge's reason in the detail), which excludes it from training unless
the analyst included it (`traces.excluded` = 0 wins over flags); an on-task verdict clears an
earlier one. A trace whose request failed, or whose reply is no verdict, keeps the flags it had,
and is logged and counted; the job goes on with the others, and ends `failed` when every request
failed (a wrong key, a dead server). Each batch's traces are claimed (`ctx.claim`): a second
relevance job over the same traces while this one runs skips them. A stop (SIGTERM, Ctrl-C, a
cancel) asks nothing new, lets the requests in flight arrive and stores their verdicts before
the job ends. A judge with `batch = true` gets every trace at once, as one batch
(`workbench.committee.batched`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from jsonschema import Draft202012Validator

from db.batches import job_summary
from db.flags import replace_flags
from db.queries import TraceFilter
from db.traces import count_traces
from workbench.committee.batched import Ask, answer_ahead
from workbench.committee.members import EndpointFailed, Member
from workbench.committee.prompt import RELEVANCE_SCHEMA, relevance_messages
from workbench.conversations.view import Conversation, iter_conversations, task_context
from workbench.models.endpoints import Endpoint
from workbench.jobs.context import JobContext
from workbench.core.safe_text import visible

CHECK = "relevance"
UNIT = "committee.relevance"
CLAIM = "relevance.trace"
_VALIDATOR = Draft202012Validator(RELEVANCE_SCHEMA)


def verdict_of(answer: dict) -> tuple[dict | None, str | None]:
    """(verdict, None) for a reply that is one, else (None, why not)."""
    if answer["abstain_reason"]:
        return None, answer["abstain_reason"]
    errors = sorted(_VALIDATOR.iter_errors(answer["value"]), key=lambda e: list(e.path))
    if errors:
        return None, visible(f"not a verdict: {errors[0].message}")[:200]
    return answer["value"], None


def run_relevance(ctx: JobContext, selection: TraceFilter, judge: Endpoint) -> dict[str, Any]:
    """The job body: judge every selected trace, batch by batch, and store the verdicts."""
    db = ctx.db
    task = task_context(db)
    where, args = selection.where()
    total = count_traces(db, where, args)
    ctx.progress(0, total, f"{total} traces to judge")
    counts: Counter[str] = Counter()
    errors: list[str] = []
    spent = {"tokens_in": 0, "tokens_out": 0, "cost": 0.0}

    async def judge_one(member: Member, conv: Conversation) -> dict | None:
        messages = relevance_messages(conv, task.description)
        inputs = {"endpoint": judge.identity(), "messages": messages,
                  "schema": RELEVANCE_SCHEMA}
        answer = ctx.cached_unit(UNIT, inputs)
        if answer is None:
            if ctx.stop_requested() is not None:
                return None   # stopping: nothing new is asked
            try:
                got = await member.ask(messages, RELEVANCE_SCHEMA, None, parse="json")
            except EndpointFailed as e:
                counts["failed"] += 1
                counts["requests_failed"] += 1
                errors.append(str(e))
                ctx.log(f"trace {conv.trace_id}: {e}")
                return None
            answer = got.as_dict()
            ctx.save_unit(UNIT, inputs, answer)
            counts["calls"] += 1
            spent["tokens_in"] += got.tokens_in
            spent["tokens_out"] += got.tokens_out
            spent["cost"] += judge.cost(got.tokens_in, got.tokens_out) or 0.0
        verdict, why = verdict_of(answer)
        if verdict is None:
            counts["failed"] += 1
            ctx.log(f"trace {conv.trace_id}: {judge.name}: {why}")
        return verdict

    def answer_ahead_all(member: Member) -> None:
        """A batch judge (`batch = true`) gets every selected trace at once, as a batch."""
        asks = []
        for batch in iter_conversations(db, selection, task=task):
            held = ctx.claim(CLAIM, [str(c.trace_id) for c in batch])
            asks += [Ask({"endpoint": judge.identity(), "messages": m,
                          "schema": RELEVANCE_SCHEMA}, m, RELEVANCE_SCHEMA, None, "json")
                     for m in (relevance_messages(c, task.description) for c in batch
                               if str(c.trace_id) not in held)]
        got = answer_ahead(ctx, member, UNIT, asks)
        counts["calls"] += got["calls"]
        spent["tokens_in"] += got["tokens_in"]
        spent["tokens_out"] += got["tokens_out"]
        spent["cost"] += judge.cost(got["tokens_in"], got["tokens_out"]) or 0.0

    async def main() -> None:
        member = Member(judge, check=ctx.check_cancel)       # one for the job: its semaphore bounds requests in flight
        done = 0
        try:
            if judge.batch:
                answer_ahead_all(member)
            for batch in iter_conversations(db, selection, task=task):
                ctx.check_cancel()
                held = ctx.claim(CLAIM, [str(c.trace_id) for c in batch])
                if held:   # another running job judges these: not paid for twice
                    counts["claimed_elsewhere"] += len(held)
                    done += len(batch) - len([c for c in batch if str(c.trace_id) not in held])
                    batch = [c for c in batch if str(c.trace_id) not in held]
                verdicts = await asyncio.gather(*(judge_one(member, c) for c in batch))
                judged = [(c, v) for c, v in zip(batch, verdicts) if v is not None]
                flags = [{"trace_id": c.trace_id, "message_idx": None, "check": CHECK,
                          "severity": "error",
                          "detail": visible(f"off-task ({judge.name}): {v['reason']}")[:500]}
                         for c, v in judged if not v["on_task"]]
                replace_flags(db, [c.trace_id for c, _ in judged], [CHECK], flags, ctx.job_id)
                counts["off_task"] += len(flags)
                counts["on_task"] += len(judged) - len(flags)
                done += len(batch)
                ctx.progress(done, total, f"{done}/{total} traces: {counts['on_task']} on"
                             f" task, {counts['off_task']} off task, {counts['failed']} failed")
        finally:
            await member.close()

    with ctx.graceful():
        asyncio.run(main())
    ctx.check_cancel()   # stopped during the last batch: its verdicts are stored
    result = {"judged": counts["on_task"] + counts["off_task"], "on_task": counts["on_task"],
              "off_task": counts["off_task"], "failed": counts["failed"],
              "calls": counts["calls"], "claimed_elsewhere": counts["claimed_elsewhere"],
              "tokens": {"in": spent["tokens_in"], "out": spent["tokens_out"]},
              "cost": round(spent["cost"], 6) if judge.cost(0, 0) is not None else None,
              "units": {"computed": ctx.units_computed, "reused": ctx.units_reused},
              "batch": job_summary(db, ctx.job_id)}
    ctx.log(f"{result['judged']} traces judged: {result['on_task']} on task,"
            f" {result['off_task']} off task; {result['failed']} failed")
    if counts["requests_failed"] and not counts["calls"] and not ctx.units_reused:
        raise RuntimeError(f"every request failed ({counts['requests_failed']}): {errors[0]}")
    return result
