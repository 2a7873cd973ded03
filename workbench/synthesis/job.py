"""The `synth` job: seeds -> candidates (offline or a teacher) -> validation -> the store.

Batches of candidates are judged and recorded one transaction at a time; accepted ones stay
pending and become traces only when the job succeeds (a stopped job leaves no trace), and the
target counts what earlier runs of the same job kept. A resumed job goes on from its record:
the offline method counts what the job already accepted; the teacher's replies are job units, so a resumed job replays them from the
store and pays only for requests never answered. Topics are served by deficit: each candidate
goes to the topic furthest below its share of the target (offline: a `Shape` of the topic's
length: a seed, a seed's prefix ending on a complete exchange with a closing learned from the
seeds' endings, or such a prefix followed by another whole seed; a longer seed cut after any
assistant reply only when those run out), and offline no topic gets more than its share: a
topic the seeds cannot fill stays short, and so does the total, rather than another topic
making up for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections import Counter
from dataclasses import dataclass

from db import synthesis as record_store
from db.queries import TraceFilter
from db.revisions import current_messages_for
from db.tasks import current_task
from workbench.conversations.view import Conversation, conversations, task_context
from workbench.core.errors import InputError
from workbench.jobs.context import JobContext, JobStopped
from workbench.jobs.spec import JobSpec, at_least, names, opt
from workbench.synthesis import offline, teacher
from workbench.synthesis.corpus import (Topic, learn, load_topics, n_messages, select_seeds,
                                        tool_functions)
from workbench.synthesis.report import distribution
from workbench.synthesis.store import keep_pending, store_batch
from workbench.synthesis.validate import Candidate, Validator, default_max_chars, shingles

BATCH = 20
SPLICE_SHARE = 0.5   # offline candidates that join two seeds (where their structure allows)
DRAWS_PER_CANDIDATE = 5   # offline draws (repeats included) per candidate of the budget


@dataclass
class SynthParams:
    target: int = opt(100, "accepted conversations wanted")
    offline: bool = opt(False, "re-fill the seeds' tool values from the corpus; no model")
    teacher: str | None = opt(None, "endpoint that writes new conversations (a configured name,"
                              " URL#MODEL, local or local:MODEL)")
    seeds: str | None = opt(None, "full-text query choosing the seeds within the selection")
    topics: str | None = opt(None, "file of topics, one a line (default: the task's mutation"
                             " topics)")
    per_request: int = opt(2, "conversations asked of the teacher per request")
    examples: int = opt(2, "seed conversations shown per request (1 to 3)")
    max_tokens: int = opt(4096, "tokens a teacher reply may take")
    max_requests: int = opt(0, "teacher requests at most (default: 4 x target / per-request)")
    max_candidates: int = opt(0, "offline candidates judged at most (default: 10 x target);"
                              " draws, repeats of an earlier candidate included, at most 5 x"
                              " that")
    include_suspect: bool = opt(False, "also take traces with suspect turns as seeds")
    checks: list[str] = opt(["schema", "structure", "grounding", "coherence"],
                            "checks a candidate must pass (no error flag)")
    max_chars: int | None = opt(None, "longest candidate accepted (characters of its JSON;"
                                " default: twice the longest seed)")
    similarity: float = opt(0.9, "near-duplicate at this word-shingle overlap or more (with a"
                            " stored conversation, a test conversation or another candidate)")
    random_seed: int = opt(0, "seed of the random choices (same store, same result)")

    def __post_init__(self) -> None:
        self.checks = names(self.checks)

    def validate(self) -> None:
        from workbench.checks import CHECKS

        if self.offline == (self.teacher is not None):
            raise ValueError("give exactly one of --offline or --teacher NAME")
        if self.target < 1:
            raise ValueError("--target must be at least 1")
        if not 1 <= self.per_request <= 20:
            raise ValueError("--per-request must be between 1 and 20")
        if not 1 <= self.examples <= 3:
            raise ValueError("--examples must be 1, 2 or 3")
        at_least("max_tokens", self.max_tokens, 1)
        at_least("max_requests", self.max_requests, 0)
        at_least("max_candidates", self.max_candidates, 0)
        at_least("max_chars", self.max_chars, 1)
        if not 0.0 < self.similarity <= 1.0:
            raise ValueError("--similarity must be in (0, 1]")
        unknown = [n for n in self.checks if n not in CHECKS]
        if unknown:
            raise ValueError(f"unknown check {', '.join(unknown)} (known: {', '.join(CHECKS)})")


@dataclass
class State:
    """Where the job stands: accepted per topic, candidates judged, rejections by reason."""

    target: int
    topics: list[Topic]
    accepted: Counter
    candidates: int = 0
    repeats: int = 0                       # offline draws identical to an earlier candidate
    rejected: Counter = dataclasses.field(default_factory=Counter)

    @property
    def reached(self) -> int:
        return sum(self.accepted.values())

    def rate(self) -> float:
        return self.reached / self.candidates if self.candidates else 0.0

    def next_topic(self, usable: list[Topic]) -> Topic:
        share = self.target / len(self.topics)
        return max(usable, key=lambda t: (share - self.accepted[t.text], -self.topics.index(t)))

    def line(self, extra: str = "") -> str:
        return (f"{self.reached}/{self.target} accepted of {self.candidates} candidates"
                f" (acceptance {self.rate():.0%})" + (f" · {extra}" if extra else ""))

    def take(self, cands: list[Candidate]) -> None:
        for c in cands:
            self.candidates += 1
            if c.accepted:
                self.accepted[c.topic] += 1
            else:
                self.rejected[c.reasons[0]["reason"]] += 1


def _within_shares(batch: list[Candidate], state: State, cap: int) -> list[Candidate]:
    """The batch without what was not needed: accepted candidates of a topic that has its
    share already, and everything after the one that reaches the target."""
    counts, total, out = Counter(state.accepted), state.reached, []
    for c in batch:
        if total >= state.target:
            break
        if c.accepted:
            if counts[c.topic] >= cap:
                continue
            counts[c.topic] += 1
            total += 1
        out.append(c)
    return out


@dataclass
class Shape:
    """One way to make a candidate of a topic from a seed: the seed whole; its first `n`
    messages and a closing learned from the seeds' endings (`offline.closed`); or, as a
    fallback (tier 1) when no complete shape gives the topic enough, the seed cut after any
    assistant reply at one of `cuts`. The shapes of one seed and tier for one topic share
    `family`, which counts draws since the last accepted candidate (repeats and rejections)
    and repeats since the last new candidate: at `EXHAUSTED` or `REPEATED` they are drawn no
    more (another closing does not make a near-copy new)."""

    seed: Conversation
    tier: int = 0
    n: int | None = None
    closing: tuple[int, list[dict]] | None = None
    cuts: list[int] | None = None
    then: Conversation | None = None     # a whole seed after the first `n` messages
    draws: int = 0
    family: Counter = dataclasses.field(default_factory=Counter)

    @property
    def exhausted(self) -> bool:
        return (self.family["fruitless"] >= EXHAUSTED
                or self.family["repeats"] >= REPEATED)

    def conversation(self, rng: random.Random) -> Conversation:
        if self.then is not None:
            return offline.joined(self.seed, self.n, self.then)
        if self.closing is not None:
            return offline.closed(self.seed, self.n, self.closing[1])
        if self.cuts:
            return offline.shortened(self.seed, rng.choice(self.cuts))
        return self.seed

    def seeds(self) -> list[int]:
        extra = (self.then.trace_id if self.then is not None
                 else self.closing[0] if self.closing else None)
        return [self.seed.trace_id] + ([extra] if extra not in (None, self.seed.trace_id)
                                       else [])


EXHAUSTED = 30   # draws of a shape family without an accepted candidate
REPEATED = 10   # draws of a shape family that only repeat earlier candidates


def shapes_for(topic: Topic, seeds: list[Conversation], know,
               ends: list[tuple[int, list[dict]]]) -> list[Shape]:
    """The shapes that give a conversation of the topic's length: seeds of that length,
    complete prefixes with a closing, and complete prefixes followed by another whole seed
    (tier 0); plain cuts of longer seeds (tier 1)."""
    if topic.lo is None:
        return [Shape(s) for s in seeds]
    out = []
    for s in seeds:
        family = Counter()
        if topic.fits(n_messages(s.messages)):
            out.append(Shape(s, family=family))
        for n in offline.complete_points(s, know):
            head = n_messages(s.messages[:n])
            out += [Shape(s, 0, n, end, family=family) for end in ends
                    if topic.fits(head + n_messages(end[1]))]
            out += [Shape(s, 0, n, then=t, family=family) for t in seeds
                    if t.trace_id != s.trace_id and t.messages[0]["role"] == "user"
                    and topic.fits(head + n_messages(t.messages))]
        if n_messages(s.messages) > topic.hi and (cuts := offline.cut_points(s, know, topic.lo,
                                                                              topic.hi)):
            out.append(Shape(s, 1, cuts=cuts))
    return out


def _pick(shapes: list[Shape], rng: random.Random) -> Shape:
    """The next shape: of the best tier that is not exhausted (of all, when every one is),
    the least drawn seed's least drawn shape (so a seed with few variations does not take
    every draw)."""
    live = [s for s in shapes if not s.exhausted] or shapes
    tier = min(s.tier for s in live)
    live = [s for s in live if s.tier == tier]
    per_seed = Counter()
    for s in live:
        per_seed[s.seed.trace_id] += s.draws
    low = min(per_seed.values())
    live = [s for s in live if per_seed[s.seed.trace_id] == low]
    fewest = min(s.draws for s in live)
    return rng.choice([s for s in live if s.draws == fewest])


def _fit(made: dict | None, topic: Topic, know, rng: random.Random,
         ends: list[tuple[int, list[dict]]]) -> dict | None:
    """A spliced candidate within the topic's length: ended after a complete exchange with a
    closing where one fits, else cut after an assistant reply; None when neither fits."""
    if made is None or topic.lo is None or topic.fits(n_messages(made["messages"])):
        return made
    conv = Conversation(trace_id=0, messages=made["messages"], tools=None, system=None)
    done = [(n, end) for n in offline.complete_points(conv, know) for end in ends
            if topic.fits(n_messages(conv.messages[:n]) + n_messages(end[1]))]
    if done:
        n, end = rng.choice(done)
        return {**made, "messages": offline.closed(conv, n, end[1]).messages}
    cuts = offline.cut_points(conv, know, topic.lo, topic.hi)
    if not cuts:
        return None
    return {**made, "messages": made["messages"][:rng.choice(cuts)]}


def _offline(ctx: JobContext, state: State, seeds: list[Conversation], know, validator,
             params, seen: set[str]) -> None:
    done_before = state.candidates
    rng = random.Random(f"{params.random_seed}:{done_before}")
    budget = params.max_candidates or 10 * state.target
    ends = offline.closings(seeds, know)
    shapes = {t.text: shapes_for(t, seeds, know, ends) for t in state.topics}
    usable = [t for t in state.topics if shapes[t.text]]
    if not usable:   # no topic's length is reachable: every topic from the whole seeds
        usable = list(state.topics)
        shapes = {t.text: [Shape(s) for s in seeds] for t in state.topics}
    made_keys = set(seen)
    cap = math.ceil(state.target / len(state.topics))   # no topic beyond its share
    # the budget is of candidates judged; a draw that repeats one costs no validation, so
    # draws are bounded apart (a seed set with little variety stops there)
    attempts, draws = state.candidates, DRAWS_PER_CANDIDATE * budget
    while state.reached < state.target and state.candidates < budget and attempts < draws:
        batch = []
        planned: Counter = Counter(state.accepted)
        source: dict[int, Shape] = {}
        live = usable
        while (len(batch) < BATCH and attempts < draws
               and state.candidates + len(batch) < budget):
            live = [t for t in usable if state.accepted[t.text] < cap]
            if not live:
                break
            # topics whose shapes are all exhausted come last (drawn again only then)
            live = [t for t in live if any(not s.exhausted for s in shapes[t.text])] or live
            attempts += 1
            open_topics = [t for t in live if planned[t.text] < cap] or live
            topic = State(state.target, state.topics, planned).next_topic(open_topics)
            shape = _pick(shapes[topic.text], rng)
            shape.draws += 1
            seed = shape.seed
            planned[topic.text] += 1
            made, used = None, shape.seeds()
            if len(seeds) > 1 and rng.random() < SPLICE_SHARE:
                head = rng.choice([s for s in seeds if s.trace_id != seed.trace_id])
                made = _fit(offline.splice(head, seed, know, rng), topic, know, rng, ends)
                used = [head.trace_id, seed.trace_id]
            if made is None:
                used = shape.seeds()
                made = offline.refill(shape.conversation(rng), know, rng)
            cand = Candidate(messages=made["messages"], seeds=used, topic=topic.text,
                             method="offline", tools=seed.tools if seed.own_tools else None)
            if cand.key in made_keys:   # made before: a repeat, not a new candidate
                state.repeats += 1   # (still counted as planned: the next topic's turn)
                shape.family["fruitless"] += 1
                shape.family["repeats"] += 1
                continue
            shape.family["repeats"] = 0
            made_keys.add(cand.key)
            for p in made["problems"]:
                cand.reject(p["reason"], p["detail"])
            source[id(cand)] = shape
            batch.append(cand)
        if not batch:
            if not live:   # every topic has its share
                break
            continue
        ctx.progress(state.reached, state.target, state.line(f"validating {len(batch)}"))
        validator.validate(batch)
        for c in batch:
            shape = source[id(c)]
            shape.family["fruitless"] = 0 if c.accepted else shape.family["fruitless"] + 1
        batch = _within_shares(batch, state, cap)
        store_batch(ctx.db, ctx.job_id, batch)
        state.take(batch)
        ctx.progress(state.reached, state.target, state.line())


def _teacher(ctx: JobContext, state: State, seeds: list[Conversation], validator, params,
             seen: set[str]) -> dict:
    from workbench.committee.batched import Ask, answer_ahead
    from workbench.committee.members import EndpointFailed, Member
    from workbench.models.endpoints import get_endpoint

    ep = get_endpoint(params.teacher, db=ctx.db)
    ep = dataclasses.replace(ep, max_tokens=params.max_tokens)
    task = task_context(ctx.db)
    tools = task.tools or seeds[0].tools
    schema = teacher.reply_schema(params.per_request, tools, teacher.replies_in_text(seeds))
    label = f"{ep.name} ({ep.model})"
    stats = {"requests": 0, "replies_reused": 0, "failed": 0, "tokens_in": 0, "tokens_out": 0}
    errors: list[str] = []
    budget = params.max_requests or 4 * math.ceil(state.target / params.per_request)
    member = Member(ep, check=ctx.check_cancel)   # a cancel is seen before each request
    fit: dict[str, int | None] = {"budget": None}

    def plan(k: int, cuts: list | None = None) -> tuple[Topic, list[Conversation], list[dict]]:
        rng = random.Random(f"{params.random_seed}:request:{k}")
        topic = state.topics[k % len(state.topics)]
        chosen = teacher.choose_seeds(seeds, topic, rng, params.examples)
        return topic, chosen, teacher.request_messages(task.description, tools, chosen, topic,
                                                       params.per_request, fit["budget"], cuts)

    async def ask(k: int, again: bool = True) -> tuple[int, dict | None]:
        cuts: list[dict] = []
        topic, chosen, messages = plan(k, cuts)
        for cut in cuts:
            ctx.log(f"request {k}: {cut['examples']} of {cut['of']} examples fit the teacher's"
                    f" context of {member.context} tokens; messages left out of the middle of"
                    f" an example: {cut['messages_left_out'] or 'none'}")
        inputs = {"endpoint": ep.identity(), "messages": messages, "schema": schema}
        reply = ctx.cached_unit(teacher.UNIT, inputs)
        if reply is not None:
            stats["replies_reused"] += 1
        elif ctx.stop_requested() is not None:
            return k, None    # stopping: nothing new is asked
        else:
            try:
                got = await member.ask(messages, schema, None, parse="json")
            except EndpointFailed as e:
                if again and not ep.batch and member.learn_context(            # the server named its context
                        str(e), sum(len(m["content"]) for m in messages)):
                    fit["budget"] = member.budget_chars()
                    return await ask(k, again=False)
                stats["failed"] += 1
                errors.append(str(e))
                ctx.log(f"request {k}: {e}")
                return k, None
            reply = got.as_dict()
            ctx.save_unit(teacher.UNIT, inputs, reply)
            stats["requests"] += 1
            stats["tokens_in"] += got.tokens_in
            stats["tokens_out"] += got.tokens_out
        try:
            ctx.progress(state.reached, state.target, state.line(f"request {k + 1}"))
        except JobStopped:
            pass   # the requests in flight arrive and are stored; the round's end stops
        return k, reply

    async def main() -> None:
        k = 0
        await member.context_tokens()
        fit["budget"] = member.budget_chars()
        try:
            while state.reached < state.target and k < budget:
                n = min(budget - k, max(1, math.ceil((state.target - state.reached)
                                                     / params.per_request)))
                if ep.batch:     # the round's requests go as one batch (their units)
                    got = answer_ahead(ctx, member, teacher.UNIT, [
                        Ask({"endpoint": ep.identity(), "messages": m, "schema": schema}, m,
                            schema, None, "json") for m in (plan(i)[2] for i in range(k, k + n))])
                    stats["requests"] += got["calls"]
                    stats["replies_reused"] -= got["calls"]   # read back below: not reused
                    stats["tokens_in"] += got["tokens_in"]
                    stats["tokens_out"] += got["tokens_out"]
                replies = await asyncio.gather(*(ask(i) for i in range(k, k + n)))
                k += n
                batch: list[Candidate] = []
                batch_keys: set[str] = set()
                for i, reply in sorted(replies, key=lambda r: r[0]):
                    if reply is None:
                        continue
                    topic, chosen, _ = plan(i)
                    for messages, raw, why in teacher.parse_reply(reply["value"], reply["raw"],
                                                                  reply["abstain_reason"]):
                        cand = Candidate(messages=messages, seeds=[s.trace_id for s in chosen],
                                         topic=topic.text, method="teacher", teacher=label,
                                         raw=raw)
                        if why:
                            cand.reject("format", why)
                        if cand.key in seen:      # decided by an earlier run of the job
                            continue
                        if cand.key in batch_keys:
                            cand.reject("duplicate", "the same as another candidate")
                        batch_keys.add(cand.key)
                        batch.append(cand)
                validator.validate(batch)
                store_batch(ctx.db, ctx.job_id, batch)
                seen.update(batch_keys)
                state.take(batch)
                ctx.progress(state.reached, state.target, state.line(f"{k} requests"))
        finally:
            await member.close()

    with ctx.graceful():   # a stop lets the replies in flight arrive (stored as units)
        asyncio.run(main())
    ctx.check_cancel()
    if stats["failed"] and not stats["requests"] and not stats["replies_reused"]:
        raise RuntimeError(f"every request to the teacher failed ({stats['failed']}): {errors[0]}")
    from db.batches import job_summary

    return {**stats, "teacher": label, "cost": ep.cost(stats["tokens_in"], stats["tokens_out"]),
            "batch": job_summary(ctx.db, ctx.job_id)}


def run_synth(ctx: JobContext, selection: TraceFilter, params: SynthParams) -> dict:
    db = ctx.db
    seeds, skipped = select_seeds(db, selection, params.seeds, params.include_suspect)
    if not seeds:
        raise InputError("no seeds: the selection has no trace outside the test split without"
                         f" suspect turns (left out: {skipped})")
    topics = load_topics(db, params.topics)
    mine = ("id NOT IN (SELECT trace_id FROM synthesis WHERE job_id = ? AND trace_id IS NOT"
            " NULL)")
    corpus = conversations(db, where=f"split != 'test' AND {mine}", params=[ctx.job_id])
    test = conversations(db, TraceFilter(split="test"))
    tools = task_context(db).tools or seeds[0].tools
    know = learn(corpus, tools)
    prior = record_store.rows(db, ctx.job_id)
    prior_ids = [r["trace_id"] for r in prior if r["status"] == "accepted" and r["trace_id"]]
    prior_msgs = list((current_messages_for(db, prior_ids) if prior_ids else {}).values())
    prior_msgs += [r["messages"] for r in record_store.pending(db, ctx.job_id)]
    max_chars = params.max_chars or default_max_chars([s.messages for s in seeds])
    validator = Validator(corpus, test, tool_functions(tools), current_task(db),
                          checks=tuple(params.checks), max_chars=max_chars,
                          similarity=params.similarity, accepted=prior_msgs)
    # the target counts what earlier runs of the same job (same parameters and selection)
    # kept: a re-run after a success, or beside a resumed one, does not stack them
    earlier = record_store.kept_by_same_jobs(db, ctx.job_id)
    if earlier:
        ctx.log(f"{len(earlier)} kept by earlier runs of this job (jobs "
                f"{', '.join(str(j) for j in sorted({r['job_id'] for r in earlier}))}) count"
                " toward the target")
    state = State(params.target, topics, Counter([r["topic"] for r in prior
                                                  if r["status"] == "accepted"]
                                                 + [r["topic"] for r in earlier]),
                  candidates=len(prior),
                  rejected=Counter(r["reasons"][0]["reason"] for r in prior
                                   if r["status"] == "rejected" and r["reasons"]))
    ctx.log(f"{len(seeds)} seeds ({', '.join(f'{v} {k}' for k, v in skipped.items() if v)}"
            f" left out); {len(topics)} topics; {len(corpus)} conversations known,"
            f" {len(test)} test conversations guarded; candidates up to {max_chars:,}"
            " characters" + ("" if params.max_chars else " (twice the longest seed)"))
    ctx.progress(state.reached, params.target, state.line("starting"))
    extra: dict = {}
    if params.offline:
        _offline(ctx, state, seeds, know, validator, params,
                 {r["candidate_key"] for r in prior})
    else:
        extra = _teacher(ctx, state, seeds, validator, params,
                         {r["candidate_key"] for r in prior})
    ctx.check_cancel()   # a stop now keeps nothing: the candidates stay pending
    # what earlier runs of the same job kept meanwhile (one that ran beside this one) counts
    with ctx.graceful():   # a stop from here on: the job keeps them and succeeds
        kept = keep_pending(db, ctx.job_id, max(0, params.target - len(prior_ids) - len(
            record_store.kept_by_same_jobs(db, ctx.job_id))))
    rows = record_store.rows(db, ctx.job_id, "accepted")
    msgs = current_messages_for(db, [r["trace_id"] for r in rows]) if rows else {}
    report = distribution([(r["topic"], msgs[r["trace_id"]]) for r in rows],
                          [s.messages for s in seeds], topics, params.target, know)
    result = {"method": "offline" if params.offline else "teacher", "seeds": len(seeds),
              "seeds_left_out": skipped, "candidates": state.candidates,
              "repeats": state.repeats,
              "accepted": state.reached, "target": params.target, "max_chars": max_chars,
              "stored": len(kept["stored"]) + len(prior_ids),
              "kept_earlier": len(earlier), "duplicates_when_stored": kept["duplicates"],
              "surplus": kept["surplus"],
              "acceptance_rate": round(state.rate(), 3),
              "rejected": dict(state.rejected.most_common()),
              "test_leaks_stored": sum(
                  validator.test.nearest(shingles(m))[0] >= params.similarity
                  for m in msgs.values()), "report": report, **extra}
    ctx.log(state.line() + "; rejected: " + (", ".join(
        f"{k} {v}" for k, v in state.rejected.most_common()) or "none"))
    if state.reached < params.target:
        ctx.log(f"target not reached: {state.reached}/{params.target} (raise --max-candidates"
                " / --max-requests, or give more seeds)")
    return result


SPECS = [JobSpec("synth", "Synthesise new conversations from clean seeds (offline or by a"
                 " teacher LLM), validated by the checks before they are stored", SynthParams,
                 run_synth, resumable=True)]
