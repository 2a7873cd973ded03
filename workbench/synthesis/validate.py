"""Validation of synthetic candidates before anything is stored, reusing the checks.

A candidate is rejected, with every reason found, when:

* `format`: it does not parse as a conversation in the OpenAI message format (teacher replies);
* `test_leak`: it is a near-duplicate of a test-split conversation (the worst silent failure:
  the test set leaking into training);
* `duplicate`: a near-duplicate of a stored conversation (a seed or any other) or of a
  candidate accepted before it, or one whose user says exactly what the user of one of them
  says (the same user turns: the `duplicates` check's near-duplicate; the model would learn
  nothing new about the user's side);
* `too_long`: over the maximum length (characters of its JSON; by default twice the longest
  seed, see `default_max_chars`);
* `stale_mention` / `no_slots`: an offline re-fill that left part of a replaced value behind
  or had nothing to re-fill;
* `schema`, `structure`, `grounding`: an error flag of that check. These per-trace checks judge
  the candidate with what they learned from the real corpus (which tools return results, how
  strictly each argument is held), as `recheck_traces` does, never from the candidates;
* `coherence`: an error flag of the coherence check run over the corpus and the candidates
  (off-domain content; its turn-level part needs 20 conversations, below that it stays silent).

Near-duplicates: the overlap of the word 3-shingles of the normalised text (message text, call
names and argument values, nested ones included), |A & B| / min(|A|, |B|), at or above
`similarity` (default 0.9). System messages are left out: the system prompt is the agent's
policy, shared by the whole corpus (a 6,000-character policy was 3/4 of every conversation's
words, so every candidate was a "duplicate" of every seed); what is said in the conversation
is what makes it new. Tools were never part of the text.
Overlap rather than Jaccard: a candidate that is most of a known conversation (a prefix of a
seed, or of a test conversation, whose turns training or evaluation already has) or that
contains one whole is as much a copy as an identical one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from workbench.checks import CHECKS, grounding, schema, structure
from workbench.checks.base import CheckContext
from workbench.checks.recheck import PER_TRACE_CHECKS, _context_for, learned_of
from workbench.conversations.view import Conversation
from workbench.checks.duplicates import user_turns_key
from workbench.conversations.messages import content_hash
from workbench.synthesis.corpus import leaves

REASONS = ("format", "test_leak", "duplicate", "too_long", "stale_mention", "no_slots",
           "schema", "structure", "grounding", "coherence")
DEFAULT_CHECKS = ("schema", "structure", "grounding", "coherence")


@dataclass
class Candidate:
    """A synthetic conversation on its way to the store."""

    messages: list[dict] | None              # canonical messages; None: did not parse
    seeds: list[int]
    topic: str | None
    method: str
    teacher: str | None = None
    tools: list[dict] | None = None          # the seed's own tools, else None (the task's)
    raw: object = None                       # what came back, when it did not parse
    reasons: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        if self.messages is None:
            return content_hash([{"raw": json.dumps(self.raw, default=str)[:100_000]}], None)
        return content_hash(self.messages, self.tools)

    @property
    def accepted(self) -> bool:
        return self.messages is not None and not self.reasons

    def reject(self, reason: str, detail: str) -> None:
        self.reasons.append({"reason": reason, "detail": detail[:300]})

    def sort_reasons(self) -> None:
        self.reasons.sort(key=lambda r: REASONS.index(r["reason"]) if r["reason"] in REASONS
                          else len(REASONS))


WORD = re.compile(r"[a-z0-9]+")


def conversation_text(messages: list[dict]) -> str:
    """What is said in the conversation: every message but the system prompt, the calls'
    names and argument values (nested ones too)."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            continue
        parts.append(m.get("content") or "")
        for c in m.get("tool_calls") or ():
            fn = c["function"]
            args = fn["arguments"]
            parts.append(fn["name"])
            parts += ([str(v) for _, _, v in leaves(args)] if isinstance(args, (dict, list))
                      else [str(args)])
    return " ".join(parts)


def default_max_chars(seeds: list[list[dict]]) -> int:
    """Twice the longest seed (characters of its JSON): a candidate joins at most a seed's
    opening and another whole seed, and nothing real is longer than the longest seed. A fixed
    default (20,000) was below the average conversation of an agent with a long policy."""
    return 2 * max((len(json.dumps(m, ensure_ascii=False)) for m in seeds), default=10_000)


def shingles(messages: list[dict], k: int = 3) -> frozenset[int]:
    words = WORD.findall(conversation_text(messages).lower())
    if len(words) < k:
        return frozenset({hash(" ".join(words))})
    return frozenset(hash(" ".join(words[i:i + k])) for i in range(len(words) - k + 1))


def overlap(a: frozenset, b: frozenset) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


class ShingleIndex:
    """Conversations' shingle sets, searched for the most overlapping one (an inverted index, so
    a candidate is compared only with conversations that share a shingle)."""

    def __init__(self) -> None:
        self.sets: list[frozenset] = []
        self.names: list[str] = []
        self.postings: dict[int, list[int]] = {}

    def add(self, s: frozenset, name: str) -> None:
        n = len(self.sets)
        self.sets.append(s)
        self.names.append(name)
        for h in s:
            self.postings.setdefault(h, []).append(n)

    def nearest(self, s: frozenset) -> tuple[float, str | None]:
        counts: dict[int, int] = {}
        for h in s:
            for n in self.postings.get(h, ()):
                counts[n] = counts.get(n, 0) + 1
        best, name = 0.0, None
        for n, inter in counts.items():
            sim = inter / min(len(s), len(self.sets[n]))
            if sim > best:
                best, name = sim, self.names[n]
        return best, name


class Validator:
    """Judges candidates against the corpus (non-test conversations) and the test split."""

    def __init__(self, corpus: list[Conversation], test: list[Conversation],
                 tools: dict[str, dict], task: dict | None, *,
                 checks: tuple[str, ...] = DEFAULT_CHECKS, max_chars: int = 20000,
                 similarity: float = 0.9, accepted: list[list[dict]] = ()) -> None:
        unknown = [c for c in checks if c not in CHECKS]
        if unknown:
            raise ValueError(f"unknown check {', '.join(unknown)}")
        self.corpus, self.tools, self.task = corpus, tools, task
        self.checks, self.max_chars, self.similarity = tuple(checks), max_chars, similarity
        base = CheckContext(traces=corpus, tools=tools, task=task)
        self.learned = learned_of(base, [c for c in checks if c in PER_TRACE_CHECKS])
        self.known = ShingleIndex()
        for c in corpus:
            self.known.add(shingles(c.messages), f"trace {c.trace_id}")
        self.test = ShingleIndex()
        for c in test:
            self.test.add(shingles(c.messages), f"test trace {c.trace_id}")
        self.accepted = ShingleIndex()
        for messages in accepted:
            self.accepted.add(shingles(messages), "an accepted candidate")
        # what the user says, conversation by conversation (stored ones, accepted candidates)
        self.user_turns: dict[str, str] = {}
        for c in corpus:
            self._said(c.messages, f"trace {c.trace_id}")
        for messages in accepted:
            self._said(messages, "an accepted candidate")
        self._next_id = -1

    def _said(self, messages: list[dict], name: str) -> None:
        key = user_turns_key(messages)
        if key is not None:
            self.user_turns.setdefault(key, name)

    def _conv(self, cand: Candidate) -> Conversation:
        conv = Conversation(trace_id=self._next_id, messages=cand.messages, tools=cand.tools,
                            system=None, split="train", origin="synthetic")
        self._next_id -= 1
        return conv

    def validate(self, cands: list[Candidate]) -> None:
        """Sets each candidate's reasons (empty: accepted). Candidates accepted here count as
        known for the ones after them (no two near-duplicates are both accepted)."""
        live = [c for c in cands if c.messages is not None]
        for c in cands:
            if c.messages is None and not any(r["reason"] == "format" for r in c.reasons):
                c.reject("format", "not a conversation")
        convs = {id(c): self._conv(c) for c in live}
        by_id = {convs[id(c)].trace_id: c for c in live}
        for c in live:
            size = len(json.dumps(c.messages, ensure_ascii=False))
            if size > self.max_chars:
                c.reject("too_long", f"{size} characters (at most {self.max_chars})")
        self._run_checks(list(convs.values()), by_id)
        for c in live:
            s = shingles(c.messages)
            sim, name = self.test.nearest(s)
            if sim >= self.similarity:
                c.reject("test_leak", f"{sim:.2f} similar to {name}")
            sim, name = self.known.nearest(s)
            if sim >= self.similarity:
                c.reject("duplicate", f"{sim:.2f} similar to {name}")
            else:
                sim, name = self.accepted.nearest(s)
                if sim >= self.similarity:
                    c.reject("duplicate", f"{sim:.2f} similar to {name}")
                elif (same := self.user_turns.get(user_turns_key(c.messages) or "")):
                    c.reject("duplicate", f"the user says the same as in {same}")
            c.sort_reasons()
            if c.accepted:
                self.accepted.add(s, "an accepted candidate")
                self._said(c.messages, "an accepted candidate")

    def _run_checks(self, convs: list[Conversation], by_id: dict[int, Candidate]) -> None:
        if not convs:
            return
        flags = []
        base = CheckContext(traces=convs, tools=self.tools, task=self.task)
        for name in self.checks:
            if name in self.learned:
                flags += CHECKS[name].run(_context_for(base, name, self.learned[name]))
            elif name in (schema.NAME, structure.NAME, grounding.NAME):
                flags += CHECKS[name].run(base)
            else:   # corpus-wide: over the corpus and the candidates together
                ctx = CheckContext(traces=[*self.corpus, *convs], tools=self.tools,
                                   task=self.task)
                flags += [f for f in CHECKS[name].run(ctx) if f["trace_id"] < 0]
        for f in flags:
            cand = by_id.get(f["trace_id"])
            if cand is None:
                continue
            where = "" if f["message_idx"] is None else f"message {f['message_idx']}: "
            if f["severity"] == "error":
                cand.reject(f["check"], where + f["detail"])
            else:
                cand.warnings.append(f"{f['check']}: {where}{f['detail']}"[:200])
