"""The committee job: members vote on each doubtful turn; agreement becomes a revision (or a
confirmation), disagreement goes to the arbiter or to the analyst's review queue.

Per turn, with the rest of the conversation frozen:

1. a turn whose current label is an analyst's (a human revision, or dropped in review) is left
   alone: `human`, no call is made;
2. every member is asked once (`ctx.unit`: the key is a hash of the endpoint's model and request
   parameters and the prompt, so a resumed or re-run job never pays for a reply twice);
3. agreement (a strict majority, or all with `--agree unanimous`) that differs from the current
   label is an accepted revision (author kind `committee`, the votes as evidence): `revised`;
   agreement with the current label is `confirmed` (it also ends the turn's suspicion when the
   store setting `committee.confirm_ends_suspicion` is true);
4. no agreement: the arbiter, if named, picks one of the candidates (or the current call);
   otherwise each distinct candidate becomes a proposed revision for the review queue: `review`;
5. a member that keeps failing is recorded (`failed` when no member answered) and the job goes
   on with the other turns.

Every vote is stored (db.committee) with its raw reply, latency, tokens and cost.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from db import committee as store
from db.browse import get_setting
from db.flags import REVIEW_DROP, suspect_turns
from db.queries import TraceFilter, fts_query
from db.revisions import add_revision, current_revisions
from db.traces import original_messages
from workbench.committee.agreement import agreement
from workbench.committee.members import EndpointFailed, Member, tool_validators, validate_call
from workbench.committee.prompt import call_schema, member_messages
from workbench.committee.voting import agreed, candidates, label_call, same_call
from workbench.conversation_view import Conversation, iter_conversations, task_context
from workbench.endpoints import Endpoint
from workbench.jobs.context import JobContext

VOTE_UNIT = "committee.vote"
TURN_MODES = ("suspect", "all")


@dataclass
class Plan:
    """The turns to relabel, a conversation at a time."""

    turns: list[tuple[Conversation, int]] = field(default_factory=list)
    human: list[tuple[Conversation, int]] = field(default_factory=list)


def _human_turns(db: Database, ids: list[int]) -> set[tuple[int, int]]:
    """Turns whose label is the analyst's: the newest accepted revision is human, or dropped."""
    if not ids:
        return set()
    marks = ",".join("?" * len(ids))
    out = {(t, i) for t, i in db.execute(
        f"SELECT trace_id, message_idx FROM flags WHERE check_name = '{REVIEW_DROP}'"
        f" AND trace_id IN ({marks})", ids)}
    revs = current_revisions(db, ids)
    if revs:
        rev_ids = [r["id"] for r in revs.values()]
        human = {r[0] for r in db.execute(
            f"SELECT id FROM revisions WHERE author_kind = 'human' AND id IN"
            f" ({','.join('?' * len(rev_ids))})", rev_ids)}
        out |= {k for k, r in revs.items() if r["id"] in human}
    return out


def _query_turns(db: Database, ids: list[int], query: str) -> set[tuple[int, int]]:
    marks = ",".join("?" * len(ids))
    return {(t, i) for t, i in db.execute(
        f"SELECT trace_id, message_idx FROM search WHERE search MATCH ? AND trace_id IN ({marks})",
        [fts_query(query), *ids]) if i is not None}


def plan_turns(db: Database, selection: TraceFilter, turns: str) -> Plan:
    """Which assistant turns of the selection the committee votes on: `suspect` (an undecided
    error flag), `all`, or a full-text query (turns whose text or call matches)."""
    plan = Plan()
    for batch in iter_conversations(db, selection):
        ids = [c.trace_id for c in batch]
        human = _human_turns(db, ids)
        if turns == "suspect":
            chosen = {(t, i) for t, s in suspect_turns(db, ids).items() for i in s}
        elif turns == "all":
            chosen = {(c.trace_id, i) for c in batch for i, m in enumerate(c.messages)
                      if m["role"] == "assistant"}
        else:
            chosen = _query_turns(db, ids, turns)
        for c in batch:
            for i, m in enumerate(c.messages):
                if m["role"] != "assistant" or (c.trace_id, i) not in chosen:
                    continue
                (plan.human if (c.trace_id, i) in human else plan.turns).append((c, i))
    return plan


def _earlier_run(db: Database, job_id: int) -> tuple[set[tuple[int, int]], set[int]]:
    """What an earlier run of this job (killed, cancelled) recorded: its turns, and the
    revisions it wrote."""
    rows = db.execute("SELECT trace_id, message_idx, revision_id FROM committee_turns"
                      " WHERE job_id = ?", [job_id]).fetchall()
    return {(t, i) for t, i, _ in rows}, {r for _, _, r in rows if r is not None}


def _as_first_seen(db: Database, convs: list[Conversation], own: set[int]) -> None:
    """Take the job's own revisions out of the conversations, so that a resumed run shows the
    members what the first run showed them: same prompts, so its stored replies are reused."""
    if not own:
        return
    revs = current_revisions(db, [c.trace_id for c in convs])
    for conv in convs:
        for i, m in enumerate(conv.messages):
            rev = revs.get((conv.trace_id, i))
            if rev is None or rev["id"] not in own:
                continue
            before = db.execute(
                "SELECT content, tool_calls FROM revisions WHERE trace_id = ? AND message_idx = ?"
                " AND status = 'accepted' AND id < ? ORDER BY id DESC LIMIT 1",
                [conv.trace_id, i, rev["id"]]).fetchone()
            conv.messages[i] = (original_messages(db, conv.trace_id)[i] if before is None else
                                {**m, "content": before[0],
                                 "tool_calls": json.loads(before[1]) if before[1] else None})


class Committee:
    """Members (and an optional arbiter) voting on turns inside one job."""

    def __init__(self, ctx: JobContext, members: list[Endpoint], arbiter: Endpoint | None,
                 rule: str, task: str | None) -> None:
        self.ctx, self.rule, self.task = ctx, rule, task
        self.members = [Member(e, check=ctx.check_cancel) for e in members]
        self.arbiter = Member(arbiter, check=ctx.check_cancel) if arbiter else None
        self.calls: Counter[str] = Counter()
        self.tokens_in: Counter[str] = Counter()
        self.tokens_out: Counter[str] = Counter()
        self.cost: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    async def close(self) -> None:
        for m in [*self.members, *([self.arbiter] if self.arbiter else [])]:
            await m.close()

    async def vote(self, member: Member, conv: Conversation, turn: int, role: str,
                   cands: list[dict] | None = None) -> dict:
        """One member's vote on one turn (cached as a unit); raises EndpointFailed."""
        messages = member_messages(conv, turn, self.task, cands)
        schema = call_schema(conv.tools)
        inputs = {"endpoint": member.endpoint.identity(), "messages": messages,
                  "schema": schema, "tools": conv.tools if member.endpoint.mode == "tools"
                  else None}
        key_hit = self.ctx.cached_unit(VOTE_UNIT, inputs)
        if key_hit is not None:
            answer = key_hit
        else:
            got = await member.ask(messages, schema, conv.tools)
            answer = got.as_dict()
            self.ctx.save_unit(VOTE_UNIT, inputs, answer)
            self.calls[member.name] += 1
            self.tokens_in[member.name] += got.tokens_in
            self.tokens_out[member.name] += got.tokens_out
            cost = member.endpoint.cost(got.tokens_in, got.tokens_out)
            if cost is not None:
                self.cost[member.name] += cost
        call, reason = (None, answer["abstain_reason"])
        if reason is None:
            call, reason = validate_call(answer["value"], tool_validators(conv.tools))
        return {"member": member.name, "role": role, "model": member.endpoint.model,
                "raw": answer["raw"], "call": call, "abstain_reason": reason,
                "latency_s": answer["latency_s"], "tokens_in": answer["tokens_in"],
                "tokens_out": answer["tokens_out"],
                "cost": member.endpoint.cost(answer["tokens_in"], answer["tokens_out"])}

    async def _safe_vote(self, member: Member, conv: Conversation, turn: int, role: str,
                         cands: list[dict] | None = None) -> dict:
        try:
            return await self.vote(member, conv, turn, role, cands)
        except EndpointFailed as e:
            self.failures[member.name] += 1
            self.ctx.log(f"trace {conv.trace_id} turn {turn}: {e}")
            return {"member": member.name, "role": role, "model": member.endpoint.model,
                    "raw": None, "call": None, "abstain_reason": f"endpoint failed: {e}",
                    "failed": True}

    async def decide(self, conv: Conversation, turn: int) -> dict:
        """Vote on one turn and store the outcome; returns the committee turn row's fields."""
        votes = list(await asyncio.gather(*(self._safe_vote(m, conv, turn, "member")
                                            for m in self.members)))
        current = label_call(conv.messages[turn])
        decision = agreed(votes, len(self.members), self.rule)
        decided_by = self.rule if decision else None
        if decision is None and self.arbiter is not None and any(v["call"] for v in votes):
            cands = candidates(votes)
            if current is not None and not any(same_call(current, c) for c in cands):
                cands.append(current)
            arb = await self._safe_vote(self.arbiter, conv, turn, "arbiter", cands)
            votes.append(arb)
            if arb["call"] is not None and any(same_call(arb["call"], c) for c in cands):
                decision, decided_by = arb["call"], "arbiter"
        return self._write(conv, turn, votes, current, decision, decided_by)

    def _write(self, conv: Conversation, turn: int, votes: list[dict], current: dict | None,
               decision: dict | None, decided_by: str | None) -> dict:
        db, job_id = self.ctx.db, self.ctx.job_id
        stored = [{k: v for k, v in vote.items() if k != "failed"} for vote in votes]
        evidence = {"votes": [{"member": v["member"], "role": v["role"], "call": v["call"],
                               "abstain_reason": v["abstain_reason"]} for v in votes]}
        author = "committee:" + ",".join(m.name for m in self.members)
        if all(v.get("failed") for v in votes):
            outcome, rid = "failed", None
        elif decision is not None and same_call(decision, current):
            outcome, rid = "confirmed", None
            if get_setting(db, "committee.confirm_ends_suspicion", False):
                msg = conv.messages[turn]
                rid = add_revision(db, conv.trace_id, turn, tool_calls=msg["tool_calls"],
                                   content=msg["content"], author_kind="committee",
                                   author_name=author, reason=f"confirmed ({decided_by})",
                                   evidence={**evidence, "confirmed": True})
        elif decision is not None:
            outcome = "revised"
            rid = add_revision(db, conv.trace_id, turn, tool_calls=[_as_tool_call(decision, conv, turn)],
                               content=conv.messages[turn]["content"], author_kind="committee",
                               author_name=author, reason=f"committee ({decided_by})",
                               evidence=evidence)
        else:
            outcome, rid = "review", None
            for cand in candidates(votes):
                if not same_call(cand, current):
                    add_revision(db, conv.trace_id, turn,
                                 tool_calls=[_as_tool_call(cand, conv, turn)],
                                 content=conv.messages[turn]["content"], author_kind="committee",
                                 author_name=author, reason="committee: no agreement",
                                 evidence=evidence, status="proposed")
        store.record_turn(db, job_id, conv.trace_id, turn, stored, outcome,
                          decided_by=decided_by, call=decision, revision_id=rid)
        return {"outcome": outcome, "decided_by": decided_by}


def _as_tool_call(call: dict, conv: Conversation, turn: int) -> dict:
    """A decided call in the message form, keeping the turn's call id."""
    old = conv.messages[turn].get("tool_calls") or []
    return {"id": old[0]["id"] if old else f"committee-{conv.trace_id}-{turn}",
            "type": "function",
            "function": {"name": call["name"], "arguments": call["arguments"]}}


def run_committee(ctx: JobContext, selection: TraceFilter, members: list[Endpoint],
                  arbiter: Endpoint | None, turns: str, rule: str,
                  on_turn: Callable[[dict], None] | None = None) -> dict:
    """The job body: plan, vote turn by turn (bounded by each endpoint's concurrency), store."""
    db = ctx.db
    plan = plan_turns(db, selection, turns)
    done, own = _earlier_run(db, ctx.job_id)     # a resumed job: each turn is decided once
    if done:
        plan.turns = [(c, i) for c, i in plan.turns if (c.trace_id, i) not in done]
        plan.human = [(c, i) for c, i in plan.human if (c.trace_id, i) not in done]
        _as_first_seen(db, list({id(c): c for c, _ in plan.turns}.values()), own)
    for conv, i in plan.human:
        store.record_turn(db, ctx.job_id, conv.trace_id, i, [], "human",
                          detail="the analyst's label is kept")
    total = len(plan.turns)
    ctx.progress(0, total, f"{total} turns to vote on ({len(plan.human)} kept as the"
                 " analyst's)")
    committee = Committee(ctx, members, arbiter, rule, task_context(db).description)
    outcomes: Counter[str] = Counter({"human": len(plan.human)})
    workers = max(1, sum(m.max_concurrency for m in members))

    async def main() -> None:
        queue: asyncio.Queue = asyncio.Queue()
        for item in plan.turns:
            queue.put_nowait(item)
        done = 0

        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                conv, i = queue.get_nowait()
                res = await committee.decide(conv, i)
                outcomes[res["outcome"]] += 1
                done += 1
                ctx.progress(done, total, f"{done}/{total} turns: " + ", ".join(
                    f"{k} {v}" for k, v in sorted(outcomes.items()) if v))
                if on_turn:
                    on_turn(res)

        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            await committee.close()

    asyncio.run(main())
    revised = [t["trace_id"] for t in store.latest_turns(db, ctx.job_id)
               if t["outcome"] == "revised"]
    if revised:   # the flags of relabelled calls are checked again (none outlives its call)
        from workbench.checks import recheck_traces

        recheck_traces(db, revised)
    per_member = {m.name: {"calls": committee.calls[m.name],
                           "tokens_in": committee.tokens_in[m.name],
                           "tokens_out": committee.tokens_out[m.name],
                           "cost": round(committee.cost[m.name], 6) if m.name in committee.cost
                           else None, "failures": committee.failures[m.name]}
                  for m in [*committee.members, *([committee.arbiter] if committee.arbiter
                                                  else [])]}
    result: dict[str, Any] = {
        "turns": total + len(plan.human), "voted": total, "decided_earlier": len(done),
        "outcomes": {k: outcomes.get(k, 0) for k in store.OUTCOMES},
        "calls": sum(committee.calls.values()),
        "calls_per_turn": round(sum(committee.calls.values()) / total, 3) if total else 0.0,
        "members": per_member,
        "tokens_in": sum(committee.tokens_in.values()),
        "tokens_out": sum(committee.tokens_out.values()),
        "cost": round(sum(committee.cost.values()), 6) if committee.cost else None,
        "units": {"computed": ctx.units_computed, "reused": ctx.units_reused},
        "agreement": agreement(db, ctx.job_id)}
    ctx.log(f"{total} turns voted: " + ", ".join(f"{k} {v}" for k, v in
                                                 result["outcomes"].items() if v))
    return result
