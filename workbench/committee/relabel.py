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

A paid call is made once: the job claims its turns (`ctx.claim`), so a second relabel job over
the same turns while this one runs skips them (its result counts them as `claimed_elsewhere`);
a stop (SIGTERM, Ctrl-C, a cancel) lets the requests in flight arrive and stores them (for up
to `GRACE_S` seconds; a second signal stops at once) before the job ends.

Every vote is stored (db.committee) with its raw reply, latency, tokens and cost.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from db import committee as store
from db.browse import get_setting
from db.batches import job_summary
from db.flags import dropped_turns, suspect_turns
from db.queries import TraceFilter
from db.revisions import (accepted_before, add_revision, changed_since, current_revisions,
                          written_by)
from db.traces import original_messages, turns_matching
from db.tx import now, write_tx
from workbench.committee.agreement import agreement
from workbench.committee.batched import Ask, answer_ahead
from workbench.committee.members import EndpointFailed, Member, tool_validators, validate_answer
from workbench.committee.prompt import (answer_schema, answers_in_text, calls_at_once,
                                        member_messages)
from workbench.committee.trust import accepting
from workbench.committee.voting import agreed, candidates, label_call, same_call
from workbench.conversations.view import Conversation, iter_conversations, task_context
from workbench.models.endpoints import Endpoint
from workbench.jobs.context import JobContext, JobStopped

VOTE_UNIT = "committee.vote"
CLAIM = "relabel.turn"
GRACE_S = 30.0      # a stopped job waits this long for the replies in flight
FLUSH_S = 0.05      # voted turns are stored (and the stop checked) this often


@dataclass
class Plan:
    """The turns to relabel, a conversation at a time."""

    turns: list[tuple[Conversation, int]] = field(default_factory=list)
    human: list[tuple[Conversation, int]] = field(default_factory=list)


def _human_turns(db: Database, ids: list[int]) -> set[tuple[int, int]]:
    """Turns whose label is the analyst's: the newest accepted revision is human, or dropped."""
    if not ids:
        return set()
    out = dropped_turns(db, ids)
    revs = current_revisions(db, ids)
    if revs:
        human = written_by(db, [r["id"] for r in revs.values()], "human")
        out |= {k for k, r in revs.items() if r["id"] in human}
    return out


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
            chosen = turns_matching(db, ids, turns)
        for c in batch:
            for i, m in enumerate(c.messages):
                if m["role"] != "assistant" or (c.trace_id, i) not in chosen:
                    continue
                (plan.human if (c.trace_id, i) in human else plan.turns).append((c, i))
    return plan


def _earlier_run(db: Database, job_id: int) -> tuple[set[tuple[int, int]], set[int]]:
    """What an earlier run of this job (killed, cancelled, failed) recorded: its turns (a turn
    that failed is asked again), and the revisions it wrote."""
    rows = store.earlier_turns(db, job_id)
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
            before = accepted_before(db, conv.trace_id, i, rev["id"])
            conv.messages[i] = (original_messages(db, conv.trace_id)[i] if before is None else
                                {**m, **before})


class Committee:
    """Members (and an optional arbiter) voting on turns inside one job."""

    def __init__(self, ctx: JobContext, members: list[Endpoint], arbiter: Endpoint | None,
                 rule: str, task: str | None, *, read_at: str, accept: bool = True) -> None:
        self.ctx, self.rule, self.task = ctx, rule, task
        self.read_at = read_at    # the turns were read after this time (see `_write`)
        self.accept = accept      # decisions become labels (else proposals: committee.trust)
        self.members = [Member(e, check=ctx.check_cancel) for e in members]
        self.arbiter = Member(arbiter, check=ctx.check_cancel) if arbiter else None
        self.calls: Counter[str] = Counter()
        self.tokens_in: Counter[str] = Counter()
        self.tokens_out: Counter[str] = Counter()
        self.cost: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.first_failure = ""
        self.cut_logged: set[tuple[int, int, str]] = set()
        self.proposed = 0         # agreed decisions proposed for review (agreement not earned)
        self.changed = 0          # turns whose label changed while the members were asked

    async def close(self) -> None:
        for m in [*self.members, *([self.arbiter] if self.arbiter else [])]:
            await m.close()

    def ask_of(self, member: Member, conv: Conversation, turn: int,
               cands: list[dict] | None = None) -> tuple[Ask, list[int]]:
        """The request a member is sent for a turn (and the messages cut to fit its context)."""
        text, several = answers_in_text(conv), calls_at_once(conv)
        schema = answer_schema(conv.tools, text, several)
        messages, cut = member_messages(conv, turn, self.task, cands, text=text,
                                        several=several, budget_chars=member.budget_chars())
        inputs = {"endpoint": member.endpoint.identity(), "messages": messages,
                  "schema": schema, "tools": conv.tools if member.endpoint.mode == "tools"
                  else None}
        return Ask(inputs, messages, schema, conv.tools, "call", text), cut

    async def vote(self, member: Member, conv: Conversation, turn: int, role: str,
                   cands: list[dict] | None = None) -> dict:
        """One member's vote on one turn (cached as a unit); raises EndpointFailed. A prompt
        over the member's context is cut from the middle (logged); a refusal that names the
        context teaches it, and the cut prompt is asked once more."""
        text, several = answers_in_text(conv), calls_at_once(conv)
        await member.context_tokens()
        for attempt in range(2):
            ask, cut = self.ask_of(member, conv, turn, cands)
            messages, schema, inputs = ask.messages, ask.schema, ask.inputs
            key_hit = self.ctx.cached_unit(VOTE_UNIT, inputs)
            if cut and (conv.trace_id, turn, member.name) not in self.cut_logged:
                self.cut_logged.add((conv.trace_id, turn, member.name))
                self.ctx.log(f"trace {conv.trace_id} turn {turn}: {member.name}: the conversation"
                             f" was cut from the middle to fit its context of {member.context}"
                             f" tokens ({len(cut)} of {len(conv.messages)} messages left out:"
                             f" {cut[0]}-{cut[-1]})")
            if key_hit is not None:
                answer = key_hit
                break
            try:
                got = await member.ask(messages, schema, conv.tools, text=text)
            except EndpointFailed as e:
                if attempt == 0 and not member.endpoint.batch and member.learn_context(
                        str(e), sum(len(m["content"]) for m in messages)):
                    continue
                raise
            answer = got.as_dict()
            self.ctx.save_unit(VOTE_UNIT, inputs, answer)
            self._spent(member, got.tokens_in, got.tokens_out, 1)
            break
        call, reason = (None, answer["abstain_reason"])
        if reason is None:
            call, reason = validate_answer(answer["value"], tool_validators(conv.tools),
                                           text=text, several=several)
        return {"member": member.name, "role": role, "model": member.endpoint.model,
                "raw": answer["raw"], "call": call, "abstain_reason": reason,
                "latency_s": answer["latency_s"], "tokens_in": answer["tokens_in"],
                "tokens_out": answer["tokens_out"],
                "cost": member.endpoint.cost(answer["tokens_in"], answer["tokens_out"])}

    def _spent(self, member: Member, tokens_in: int, tokens_out: int, calls: int) -> None:
        self.calls[member.name] += calls
        self.tokens_in[member.name] += tokens_in
        self.tokens_out[member.name] += tokens_out
        cost = member.endpoint.cost(tokens_in, tokens_out)
        if cost is not None:
            self.cost[member.name] += cost

    async def answer_ahead(self, turns: list[tuple[Conversation, int]]) -> None:
        """Batch members (`batch = true`) are asked about every turn at once, as a batch,
        before the turns are decided (their replies become the votes' units); a batch arbiter
        then gets the turns the members leave undecided, as a second batch."""
        for member in self.members:
            if member.endpoint.batch:
                await member.context_tokens()
                got = answer_ahead(self.ctx, member, VOTE_UNIT,
                                   [self.ask_of(member, c, i)[0] for c, i in turns])
                self._spent(member, got["tokens_in"], got["tokens_out"], got["calls"])
        if self.arbiter is None or not self.arbiter.endpoint.batch:
            return
        reused = self.ctx.units_reused   # the votes are read again when the turns are decided
        await self.arbiter.context_tokens()

        async def quiet_vote(member: Member, conv: Conversation, turn: int) -> dict:
            try:
                return await self.vote(member, conv, turn, "member")
            except EndpointFailed:
                return {"call": None}   # logged when the turn is decided

        async def arbiter_ask(conv: Conversation, turn: int) -> Ask | None:
            votes = await asyncio.gather(*(quiet_vote(m, conv, turn) for m in self.members))
            cands = self._arbiter_candidates(list(votes), label_call(conv.messages[turn]))
            return None if cands is None else self.ask_of(self.arbiter, conv, turn, cands)[0]

        asks = [a for a in await asyncio.gather(*(arbiter_ask(c, i) for c, i in turns)) if a]
        self.ctx.units_reused = reused
        got = answer_ahead(self.ctx, self.arbiter, VOTE_UNIT, asks)
        self._spent(self.arbiter, got["tokens_in"], got["tokens_out"], got["calls"])

    def _arbiter_candidates(self, votes: list[dict], current: dict | None) -> list[dict] | None:
        """What the arbiter chooses from, when the members did not agree (else None)."""
        if self.arbiter is None or agreed(votes, len(self.members), self.rule) is not None \
                or not any(v["call"] for v in votes):
            return None
        cands = candidates(votes)
        if current is not None and not any(same_call(current, c) for c in cands):
            cands.append(current)
        return cands

    async def _safe_vote(self, member: Member, conv: Conversation, turn: int, role: str,
                         cands: list[dict] | None = None) -> dict:
        try:
            return await self.vote(member, conv, turn, role, cands)
        except EndpointFailed as e:
            self.failures[member.name] += 1
            self.first_failure = self.first_failure or str(e)
            self.ctx.log(f"trace {conv.trace_id} turn {turn}: {e}")
            return {"member": member.name, "role": role, "model": member.endpoint.model,
                    "raw": None, "call": None, "abstain_reason": f"endpoint failed: {e}",
                    "failed": True}

    async def decide(self, conv: Conversation, turn: int) -> dict:
        """Vote on one turn and store the outcome; returns the committee turn row's fields."""
        return self._write(*await self.votes_on(conv, turn))

    async def votes_on(self, conv: Conversation, turn: int) -> tuple:
        """Vote on one turn (each vote stored as a unit as it arrives): the arguments of
        `_write`, which stores the outcome."""
        votes = list(await asyncio.gather(*(self._safe_vote(m, conv, turn, "member")
                                            for m in self.members)))
        current = label_call(conv.messages[turn])
        decision = agreed(votes, len(self.members), self.rule)
        decided_by = self.rule if decision else None
        cands = self._arbiter_candidates(votes, current)
        if cands is not None and self.arbiter is not None:
            arb = await self._safe_vote(self.arbiter, conv, turn, "arbiter", cands)
            votes.append(arb)
            if arb["call"] is not None and any(same_call(arb["call"], c) for c in cands):
                decision, decided_by = arb["call"], "arbiter"
        return conv, turn, votes, current, decision, decided_by

    def write_many(self, decided: list[tuple]) -> list[dict]:
        """Store several voted turns in one transaction (each in a savepoint of its own)."""
        with write_tx(self.ctx.db):
            return [self._write(*d) for d in decided]

    def _write(self, conv: Conversation, turn: int, votes: list[dict], current: dict | None,
               decision: dict | None, decided_by: str | None) -> dict:
        """Store the turn's votes and outcome, in one transaction that first re-reads the turn:
        when its label changed (or the analyst decided on it) since the job read it, nothing
        is written over it and the outcome says so."""
        db = self.ctx.db
        with write_tx(db):
            who = changed_since(db, conv.trace_id, turn, self.read_at)
            if who is not None:
                self.changed += 1
                return self._record(conv, turn, votes, "human", None, None, None, detail=(
                    "the analyst decided meanwhile" if who == "the analyst" else
                    f"the label changed meanwhile ({who})") + ": nothing written")
            return self._decide_and_write(conv, turn, votes, current, decision, decided_by)

    def _record(self, conv: Conversation, turn: int, votes: list[dict], outcome: str,
                decided_by: str | None, decision: dict | None, rid: int | None,
                detail: str = "") -> dict:
        stored = [{k: v for k, v in vote.items() if k != "failed"} for vote in votes]
        store.record_turn(self.ctx.db, self.ctx.job_id, conv.trace_id, turn, stored, outcome,
                          decided_by=decided_by, call=decision, revision_id=rid, detail=detail)
        return {"outcome": outcome, "decided_by": decided_by, "detail": detail}

    def _decide_and_write(self, conv: Conversation, turn: int, votes: list[dict],
                          current: dict | None, decision: dict | None,
                          decided_by: str | None) -> dict:
        db = self.ctx.db
        evidence = {"votes": [{"member": v["member"], "role": v["role"], "call": v["call"],
                               "abstain_reason": v["abstain_reason"]} for v in votes]}
        author = "committee:" + ",".join(m.name for m in self.members)
        detail = ""
        if all(v.get("failed") for v in votes):
            outcome, rid = "failed", None
        elif decision is not None and same_call(decision, current):
            outcome, rid = "confirmed", None
            if self.accept and get_setting(db, "committee.confirm_ends_suspicion", False):
                msg = conv.messages[turn]
                rid = add_revision(db, conv.trace_id, turn, tool_calls=msg["tool_calls"],
                                   content=msg["content"], author_kind="committee",
                                   author_name=author, reason=f"confirmed ({decided_by})",
                                   evidence={**evidence, "confirmed": True})
        elif decision is not None and self.accept:
            outcome = "revised"
            rid = add_revision(db, conv.trace_id, turn, **_as_label(decision, conv, turn),
                               author_kind="committee", author_name=author,
                               reason=f"committee ({decided_by})", evidence=evidence)
        elif decision is not None:      # agreement not earned: a proposal for the analyst
            outcome, detail = "review", "proposed: the committee's agreement is not earned"
            self.proposed += 1
            rid = add_revision(db, conv.trace_id, turn, **_as_label(decision, conv, turn),
                               author_kind="committee",
                               author_name=author, reason=f"committee ({decided_by}), proposed:"
                               " agreement with the analyst not earned",
                               evidence=evidence, status="proposed")
        else:
            outcome, rid = "review", None
            for cand in candidates(votes):
                if not same_call(cand, current):
                    add_revision(db, conv.trace_id, turn, **_as_label(cand, conv, turn),
                                 author_kind="committee", author_name=author,
                                 reason="committee: no agreement", evidence=evidence,
                                 status="proposed")
        return self._record(conv, turn, votes, outcome, decided_by, decision, rid, detail)


def _as_label(answer: dict, conv: Conversation, turn: int) -> dict:
    """A decided answer as a revision's content and calls: a text reply replaces the turn's text
    (no calls); calls replace its calls (its text stays), keeping the turn's call ids in order."""
    if isinstance(answer.get("text"), str):
        return {"content": answer["text"], "tool_calls": None}
    old = conv.messages[turn].get("tool_calls") or []
    calls = answer["calls"] if isinstance(answer.get("calls"), list) else [answer]
    return {"content": conv.messages[turn]["content"], "tool_calls": [
        {"id": old[n]["id"] if n < len(old) and old[n].get("id") else
         f"committee-{conv.trace_id}-{turn}" + (f"-{n}" if n else ""),
         "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for n, c in enumerate(calls)]}


def run_committee(ctx: JobContext, selection: TraceFilter, members: list[Endpoint],
                  arbiter: Endpoint | None, turns: str, rule: str,
                  on_turn: Callable[[dict], None] | None = None, *, accept: bool = False) -> dict:
    """The job body: plan, vote turn by turn (bounded by each endpoint's concurrency), store."""
    db = ctx.db
    trust = accepting(db, [m.name for m in members], accept)
    ctx.log(trust["why"])
    read_at = now()          # every label read from here on is checked again before a write
    plan = plan_turns(db, selection, turns)
    done, own = _earlier_run(db, ctx.job_id)     # a resumed job: each turn is decided once
    if done:
        plan.turns = [(c, i) for c, i in plan.turns if (c.trace_id, i) not in done]
        plan.human = [(c, i) for c, i in plan.human if (c.trace_id, i) not in done]
        _as_first_seen(db, list({id(c): c for c, _ in plan.turns}.values()), own)
    for conv, i in plan.human:
        store.record_turn(db, ctx.job_id, conv.trace_id, i, [], "human",
                          detail="the analyst's label is kept")
    held = ctx.claim(CLAIM, [f"{c.trace_id}:{i}" for c, i in plan.turns])
    if held:   # another running job votes on these: not paid for twice
        plan.turns = [(c, i) for c, i in plan.turns if f"{c.trace_id}:{i}" not in held]
        ctx.log(f"{len(held)} turns skipped: job(s) "
                f"{', '.join(str(j) for j in sorted(set(held.values())))} vote on them")
    total = len(plan.turns)
    committee = Committee(ctx, members, arbiter, rule, task_context(db).description,
                          read_at=read_at, accept=trust["accept"])
    ctx.progress(0, total, f"{total} turns to vote on ({len(plan.human)} kept as the"
                 " analyst's)")
    outcomes: Counter[str] = Counter({"human": len(plan.human)})
    workers = max(1, sum(m.max_concurrency for m in members))

    async def main() -> None:
        queue: asyncio.Queue = asyncio.Queue()
        for item in plan.turns:
            queue.put_nowait(item)
        done = 0
        voted: list[tuple] = []    # voted turns not stored yet (their votes are, as units)
        await committee.answer_ahead(plan.turns)

        def store_voted() -> None:
            """Store the voted turns in one transaction, then say how far the job is."""
            nonlocal done
            if not voted:
                return
            batch = voted[:]
            del voted[:]
            results = committee.write_many(batch)
            for res in results:
                outcomes[res["outcome"]] += 1
            done += len(results)
            try:
                ctx.progress(done, total, f"{done}/{total} turns: " + ", ".join(
                    f"{k} {v}" for k, v in sorted(outcomes.items()) if v))
            except JobStopped:
                pass   # noted: no new turn is taken, the ones in flight finish
            if on_turn:
                for res in results:
                    on_turn(res)

        async def worker() -> None:
            # a voted turn waits (at most FLUSH_S) to be stored with others, so a slot's
            # next request goes out before the store writes of a burst of replies
            while not queue.empty() and ctx.stop_requested() is None:
                conv, i = queue.get_nowait()
                voted.append(await committee.votes_on(conv, i))

        tasks = [asyncio.create_task(worker()) for _ in range(workers)]
        try:
            while True:
                _, pending = await asyncio.wait(tasks, timeout=FLUSH_S,
                                                return_when=asyncio.FIRST_EXCEPTION)
                store_voted()
                if not pending or any(t.done() and t.exception() for t in tasks):
                    break
                if ctx.stop_requested() is not None:   # let the replies in flight arrive
                    ctx.log(f"stopping: storing the replies in flight (at most {GRACE_S:.0f} s;"
                            " a second Ctrl-C stops at once)")
                    _, pending = await asyncio.wait(pending, timeout=GRACE_S)
                    break
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            store_voted()
            for t in tasks:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()   # type: ignore[misc]
        finally:
            await committee.close()

    with ctx.graceful():
        asyncio.run(main())
    ctx.check_cancel()   # stopped: what arrived is stored, the job ends here
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
        "claimed_elsewhere": len(held),
        "outcomes": {k: outcomes.get(k, 0) for k in store.OUTCOMES},
        "calls": sum(committee.calls.values()),
        "calls_per_turn": round(sum(committee.calls.values()) / total, 3) if total else 0.0,
        "members": per_member,
        "tokens_in": sum(committee.tokens_in.values()),
        "tokens_out": sum(committee.tokens_out.values()),
        "cost": round(sum(committee.cost.values()), 6) if committee.cost else None,
        "units": {"computed": ctx.units_computed, "reused": ctx.units_reused},
        "batch": job_summary(db, ctx.job_id),
        "agreement": agreement(db, ctx.job_id), "accepting": trust,
        "proposed_decisions": committee.proposed, "changed_meanwhile": committee.changed}
    ctx.log(f"{total} turns voted: " + ", ".join(f"{k} {v}" for k, v in
                                                 result["outcomes"].items() if v))
    if total and not sum(committee.calls.values()) and not ctx.units_reused \
            and sum(committee.failures.values()):
        raise RuntimeError(f"every request failed ({sum(committee.failures.values())}): "
                           f"{committee.first_failure}")
    return result
