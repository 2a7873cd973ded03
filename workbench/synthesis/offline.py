"""Offline synthesis: a seed becomes a template whose slots are the values that flow through
the tools, and the slots are re-filled consistently across the whole conversation.

A slot is a value of a service call's arguments or of its result's records (not a flag field,
see `corpus.learn`). Each service call of the seed borrows a *donor*: a call of the same tool
elsewhere in the corpus (or its own, when it returned several records) with the result that
answered it, so a restaurant arrives with its own city, phone and address taken together. The
seed's values map onto the donor's (arguments onto arguments, each record onto one of the
donor's, drawn in random order); a value the donor does not give comes from
the values the same argument takes elsewhere (same form: "18:30" for "12:30"). One mapping is
then applied everywhere: the user's words, the calls, the results and the assistant's replies,
free text included.

What the user never said literally before the call (a cuisine the assistant inferred from "Oriental", a date
from "the 13th") is *pinned*: it stays, and donors that agree on it are preferred, so the text
and the calls cannot drift apart. A candidate that still mentions part of a replaced value (a
restaurant's short name) is marked `stale_mention` and never stored.

Seeds combine where the structure allows (`splice`): one seed's opening up to its first search,
another's search and everything after it, re-filled onto the first one's call and records.
Shorter conversations end a seed after a complete exchange (the assistant's reply to a service
result) with a closing learned from how the seeds end (`closings`); longer ones follow such a
prefix with another whole seed (`joined`). What a call asks rather than what its entity is
(`Knowledge.request_fields`: a reservation's time, date, party size) takes any value of its
argument, not the donor's.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import re

from workbench.checks.base import calls_of, result_records
from workbench.conversations.view import Conversation
from workbench.synthesis.corpus import (Donor, Knowledge, dumps_records, leaves, remap, shape,
                                        value_text)


def _word_re(values: list[str]) -> re.Pattern | None:
    if not values:
        return None
    alts = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
    return re.compile(rf"(?<![\w])(?:{alts})(?![\w])", re.I)


def _mentioned(value: str, text: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", text, re.I) is not None


def _said_before(messages: list[dict], upto: int) -> tuple[str, set[str]]:
    """What the user said before message `upto`, and the values earlier results gave: where a
    call's value can come from. (The assistant's own words are derived: "for 2" after "for
    two".) A result gives a value only as a whole field ("2" is not given by "2 Main Street";
    a result that is not records counts as text)."""
    parts, values = [], set()
    for m in messages[:upto]:
        if m["role"] == "tool":
            recs = result_records(m)
            if recs:
                values |= {str(v).lower() for r in recs for _, _, v in leaves(r)}
            else:
                parts.append(m["content"] or "")
        elif m["role"] == "user":
            parts.append(m.get("content") or "")
    return "\n".join(parts), values


def service_positions(conv: Conversation, know: Knowledge) -> list[tuple[int, str, dict, list[dict]]]:
    """(message index, tool, arguments, result records) of each service call."""
    out = []
    msgs = conv.messages
    for i, m in enumerate(msgs):
        for name, args in calls_of(m):
            if know.is_service(name) and isinstance(args, dict):
                recs = (result_records(msgs[i + 1]) if i + 1 < len(msgs)
                        and msgs[i + 1]["role"] == "tool" else [])
                out.append((i, name, args, recs))
    return out


class Refill:
    """One candidate's value mapping, built call by call."""

    def __init__(self, seed: Conversation, know: Knowledge, rng: random.Random,
                 forced: dict[int, Donor] | None = None) -> None:
        self.seed, self.know, self.rng = seed, know, rng
        self.forced = forced or {}             # message index -> the donor it must take
        self.sub: dict[str, str] = {}          # old value (lower) -> new value
        self.old: dict[str, str] = {}          # old value (lower) -> as written
        self.new_used: set[str] = set()
        self.pinned: set[str] = set()
        self.seed_values: set[str] = set()
        self.donors: list[int] = []

    def _slot_values(self, key: str, value) -> str | None:
        return value_text(value) if self.know.is_slot(key, value) else None

    def plan(self) -> None:
        positions = service_positions(self.seed, self.know)
        for i, _, args, recs in positions:
            said, given = _said_before(self.seed.messages, i)
            for _, k, v in leaves(args):
                s = self._slot_values(k, v)
                if s:
                    self.seed_values.add(s.lower())
                    if s.lower() not in given and not _mentioned(s, said):
                        self.pinned.add(s.lower())
            for r in recs:
                self.seed_values |= {s.lower() for _, k, v in leaves(r)
                                     if (s := self._slot_values(k, v))}
        for i, name, args, recs in positions:
            forced = self.forced.get(i)
            donor = forced or self._donor(name, args, recs)
            # what the call asks (a time, a party size) is the user's, not the donor's: it
            # comes from the values the argument takes anywhere (unless spliced: forced)
            asked = set() if forced else self.know.request_fields.get(name, set())
            if donor is not None:
                self.donors.append(donor.trace_id)
                # values line up by their place, nested ones too (a list's n-th object)
                theirs = {p: v for p, _, v in leaves(donor.args)}
                for p, k, v in leaves(args):
                    if p in theirs and p.split(".")[0] not in asked:
                        self._map(k, v, theirs[p], force=forced is not None)
                # the records in another order: which of them the conversation is about
                drecs = (donor.records if forced else
                         self.rng.sample(donor.records, len(recs)) if recs else [])
                for rec, drec in zip(recs, drecs):
                    theirs = {p: v for p, _, v in leaves(drec)}
                    for p, k, v in leaves(rec):
                        if p in theirs and p.split(".")[0] not in asked:
                            self._map(k, v, theirs[p], force=forced is not None)
            for _, k, v in leaves(args):   # what the donor did not give: another value
                s = self._slot_values(k, v)
                if s and s.lower() not in self.sub and s.lower() not in self.pinned:
                    pool = [p for p in self.know.pools.get((name, k), ())
                            if shape(p) == shape(s) and p.lower() != s.lower()
                            and p.lower() not in self.new_used
                            and p.lower() not in self.seed_values]
                    if pool:
                        self._map(k, v, self.rng.choice(pool))

    def _map(self, key: str, old, new, force: bool = False) -> None:
        """old -> new everywhere, unless old is pinned (`force`: a splice, where the words
        before the call are another seed's and the call must follow them)."""
        s, n = self._slot_values(key, old), value_text(new)
        if not s or not n or (s.lower() in self.pinned and not force) or s.lower() in self.sub:
            return
        if n.lower() != s.lower() and (n.lower() in self.new_used
                                       or n.lower() in self.seed_values):
            return   # two old values must not become one (nor one the seed already has)
        self.sub[s.lower()] = n
        self.old[s.lower()] = s
        self.new_used.add(n.lower())

    def _donor(self, name: str, args: dict, recs: list[dict]) -> Donor | None:
        """A donor of the same tool with enough records, drawn at random; more likely the more
        it agrees on the pinned arguments (a search for what the user implied finds records of
        that kind). The seed's own call is a donor too when it returned several records (the
        conversation then picks another of them), else only when there is no other. Values
        mapped already stay as they are, so a later call may borrow from another donor: its
        time and party size vary the conversation further."""
        found = [d for d in self.know.donors.get(name, ()) if len(d.records) >= len(recs)
                 and (bool(d.records) == bool(recs))]
        if not found:
            return None

        def weight(d: Donor) -> int:
            theirs = {p: v for p, _, v in leaves(d.args)}
            agree = sum(1 for p, _, v in leaves(args) if (s := value_text(v)) is not None
                        and s.lower() in self.pinned and p in theirs
                        and str(theirs[p]).lower() == s.lower())
            own = d.trace_id == self.seed.trace_id and d.args == args
            return 0 if own and len(d.records) < 2 else 1 + 2 * agree
        weights = [weight(d) for d in found]
        if not any(weights):
            return found[0]
        return self.rng.choices(found, weights)[0]

    # ---------------------------------------------------------------------------- applying

    def text(self, s: str | None, keys: list[str] | None = None) -> str | None:
        keys = list(self.sub) if keys is None else keys
        if not s or not keys:
            return s
        pat = _word_re([self.old[k] for k in keys])

        def repl(m: re.Match) -> str:
            new = self.sub[m.group(0).lower()]
            return new.lower() if m.group(0).islower() and not m.group(0).isdigit() else new
        return pat.sub(repl, s)

    def introduced(self) -> dict[str, int]:
        """Where each replaced value enters the conversation: the first user message that says
        it, or the first call or result that carries it. Free text before that cannot mean it
        ("the number 1 hit" before "a table for 1"), so it is left alone."""
        out: dict[str, int] = {}
        for i, m in enumerate(self.seed.messages):
            found: set[str] = set()
            if m["role"] == "user":
                found = {k for k in self.sub if _mentioned(self.old[k], m["content"] or "")}
            elif m["role"] == "tool":
                recs = result_records(m)
                vals = ({str(v).lower() for r in recs for _, _, v in leaves(r)} if recs
                        else set())
                found = {k for k in self.sub if k in vals
                         or (not recs and _mentioned(self.old[k], m["content"] or ""))}
            for name, args in calls_of(m):
                if self.know.is_service(name) and isinstance(args, dict):
                    found |= {str(v).lower() for _, _, v in leaves(args)} & set(self.sub)
            for k in found:
                out.setdefault(k, i)
        return out

    def value(self, v):
        """`v` re-filled, of its own type: a number stays a number (a schema that wants an
        integer gets one); a number whose replacement is no number stays as it was."""
        s = value_text(v)
        if s is None or s.lower() not in self.sub:
            return v
        new = self.sub[s.lower()]
        if isinstance(v, (int, float)):
            try:
                return int(new) if isinstance(v, int) else float(new)
            except ValueError:
                return v
        return new

    def apply(self) -> list[dict]:
        out = []
        since = self.introduced()
        for i, m in enumerate(self.seed.messages):
            m = copy.deepcopy(m)
            keys = [k for k in self.sub if since.get(k, len(self.seed.messages)) <= i]
            if m["role"] == "tool":
                recs = result_records(m)
                if recs:
                    m["content"] = dumps_records([remap(r, self.value) for r in recs],
                                                 m["content"])
                else:
                    m["content"] = self.text(m["content"], keys)
            else:
                m["content"] = self.text(m["content"], keys)
            for c in m.get("tool_calls") or ():
                fn = c["function"]
                args = fn["arguments"]
                if not isinstance(args, dict):
                    continue
                if self.know.is_service(fn["name"]):
                    # a slot value is replaced whole; other text (an expression over a
                    # result's prices) as free text is
                    fn["arguments"] = remap(args, lambda v: self.value(v) if (
                        value_text(v) or "").lower() in self.sub or not isinstance(v, str)
                        else self.text(v, keys))
                else:
                    fn["arguments"] = remap(args, lambda v: self.text(v, keys)
                                            if isinstance(v, str) else v)
            out.append(m)
        return out

    def stale(self, messages: list[dict]) -> list[str]:
        """Parts of replaced values still mentioned (a name's first words)."""
        text = json.dumps(messages, ensure_ascii=False)
        new_text = " ".join(self.sub.values()).lower()
        out = []
        for low, new in self.sub.items():
            words = self.old[low].split()
            if len(words) < 2 or new.lower() == low:
                continue
            head = " ".join(words[:2])
            if head.lower() not in new_text and _mentioned(head, text):
                out.append(head)
        return out


def refill(seed: Conversation, know: Knowledge, rng: random.Random,
           forced: dict[int, Donor] | None = None) -> dict:
    """One candidate from `seed`: `{"messages", "mapping", "donors", "problems"}`."""
    r = Refill(seed, know, rng, forced)
    r.plan()
    messages = r.apply()
    problems = [{"reason": "stale_mention", "detail": f"still mentions {h!r} of a replaced"
                 " value"} for h in r.stale(messages)]
    if not r.sub:
        problems.append({"reason": "no_slots", "detail": "no value to re-fill"})
    return {"messages": messages, "mapping": {r.old[k]: v for k, v in r.sub.items()},
            "donors": sorted(set(r.donors)), "problems": problems}


def _first_answered(conv: Conversation, know: Knowledge) -> tuple[int, str, dict, list] | None:
    for i, name, args, recs in service_positions(conv, know):
        if recs:
            return i, name, args, recs
    return None


def splice(head: Conversation, tail: Conversation, know: Knowledge,
           rng: random.Random) -> dict | None:
    """`head`'s conversation up to its first answered service call, then `tail`'s from its
    first call of the same tool on: where the structure allows it (same tool, the head's
    result has as many records as the tail's shows). The tail's call, result and everything
    after are re-filled onto the head's call and records (forced: the user asked for those),
    the rest as in `refill`. None when the two do not join."""
    h, t = _first_answered(head, know), _first_answered(tail, know)
    if h is None or t is None or h[1] != t[1] or len(h[3]) < len(t[3]):
        return None
    joined = dataclasses.replace(
        tail, messages=[*head.messages[:h[0]], *tail.messages[t[0]:]],
        suspect=frozenset(i - t[0] + h[0] for i in tail.suspect if i >= t[0]))
    return refill(joined, know, rng, {h[0]: Donor(head.trace_id, h[2], h[3][:len(t[3])])})


def cut_points(conv: Conversation, know: Knowledge, lo: int, hi: int) -> list[int]:
    """Where a seed can end early: after an assistant turn that only talks to the user (the
    user speaks next), at `lo`..`hi` messages. A service call is never cut from its result."""
    out = []
    for i, m in enumerate(conv.messages):
        n = i + 1
        if m["role"] != "assistant" or not lo <= n <= hi or n >= len(conv.messages):
            continue
        if all(not know.is_service(name) for name, _ in calls_of(m)):
            out.append(n)
    return out


def shortened(conv: Conversation, n: int) -> Conversation:
    return dataclasses.replace(conv, messages=conv.messages[:n],
                               suspect=frozenset(i for i in conv.suspect if i < n))


# ------------------------------------------------------------- complete shorter conversations

def _known_values(know: Knowledge, convs: list[Conversation]) -> list[str]:
    """Every slot value the corpus knows: arguments' pools and the seeds' result fields."""
    out = {v for (_, k), vs in know.pools.items() if k not in know.flag_fields for v in vs}
    for c in convs:
        for _, _, args, recs in service_positions(c, know):
            out |= {s for _, k, v in leaves(args) if (s := value_text(v)) and know.is_slot(k, v)}
            out |= {s for r in recs for _, k, v in leaves(r)
                    if (s := value_text(v)) and know.is_slot(k, v)}
    return sorted(out)


def _says(m: dict, know: Knowledge) -> str | None:
    """The text of a user message or of an assistant message that only talks to the user
    (content, message-tool arguments); None for a service call or a result."""
    if m["role"] == "user":
        return m.get("content") or ""
    if m["role"] != "assistant":
        return None
    parts = [m.get("content") or ""]
    for name, args in calls_of(m):
        if know.is_service(name):
            return None
        parts += [str(v) for v in (args.values() if isinstance(args, dict) else [args])]
    return " ".join(parts)


def closings(seeds: list[Conversation], know: Knowledge) -> list[tuple[int, list[dict]]]:
    """How the seeds end, learned from them: the exchanges after the assistant's reply to the
    last service result, user and assistant in turn, ending on the assistant, that carry no
    value the tools know ("Thanks a lot!" / "Do you need anything else?" / "No thanks, that's
    all." / "Okay, enjoy your meal."). Each such suffix of whole exchanges is a closing, so a
    conversation can end after 1 or more of them. None from a seed without a service result.
    Returns (the seed's trace id, the closing's messages)."""
    pattern = _word_re(_known_values(know, seeds))
    out: dict[str, tuple[int, list[dict]]] = {}
    for s in seeds:
        msgs = s.messages
        last = max((i for i, m in enumerate(msgs) if m["role"] == "tool"), default=None)
        if last is None or msgs[-1]["role"] != "assistant":
            continue
        j = len(msgs)
        while j - 2 > last + 1:   # after the reply to the last result
            user, reply = _says(msgs[j - 2], know), _says(msgs[j - 1], know)
            if (msgs[j - 2]["role"] != "user" or msgs[j - 1]["role"] != "assistant"
                    or user is None or reply is None
                    or (pattern and pattern.search(f"{user}\n{reply}"))):
                break
            j -= 2
            tail = copy.deepcopy(msgs[j:])
            out.setdefault(json.dumps([_says(m, know) for m in tail]), (s.trace_id, tail))
    return list(out.values())


def complete_points(conv: Conversation, know: Knowledge) -> list[int]:
    """Where a seed can end early with its exchange complete: right after the assistant's
    reply to a service result (the user has what the tool gave), before the seed's end."""
    msgs = conv.messages
    return [i + 1 for i in range(1, len(msgs) - 1)
            if msgs[i - 1]["role"] == "tool" and _says(msgs[i], know) is not None
            and msgs[i]["role"] == "assistant"]


def closed(conv: Conversation, n: int, closing: list[dict]) -> Conversation:
    """The seed's first `n` messages, then a closing learned from the seeds' endings."""
    return dataclasses.replace(conv, messages=[*conv.messages[:n], *copy.deepcopy(closing)],
                               suspect=frozenset(i for i in conv.suspect if i < n))


def joined(head: Conversation, n: int, tail: Conversation) -> Conversation:
    """`head`'s first `n` messages (ending on a complete exchange), then the whole of `tail`
    from its opening: the user, served, starts another request. One re-fill covers both."""
    return dataclasses.replace(
        head, messages=[*head.messages[:n], *copy.deepcopy(tail.messages)],
        suspect=frozenset({i for i in head.suspect if i < n} | {i + n for i in tail.suspect}))
