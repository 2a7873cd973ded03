"""How far the committee's members agree: with the committee, with the analyst, with each other.

Read from the stored votes (m004), for one relabel job or for every run:

- per member, the share of turns where its vote equals the committee's decision (over the turns
  that got one: agreement or the arbiter), and the share where it equals the analyst's later
  decision: the turn's current label when the analyst set it after the votes (a human revision,
  or a committee proposal the analyst accepted from the review queue). An abstention counts as
  not agreeing; a turn the analyst dropped has no call and is not counted;
- a vote's "function" is its decision (`voting.decision_key`: a text reply, or which calls);
- Cohen's kappa for each pair of members and Fleiss' kappa for all of them, on the function name
  and on the whole call (the category of a vote is its `call_key`, so "4:45 pm" = "16:45").
  Kappa is agreement corrected for chance: 1 is perfect, 0 is what raters answering at random
  with the same frequencies would reach, below 0 is worse than chance. Abstentions are left out:
  Cohen's figure is over the turns both members answered, Fleiss' over the turns every member
  answered; each says how many turns it is over. A figure is None when it is undefined (no turn,
  or every vote in one category, where chance agreement is already perfect).

The kappas are statsmodels' (`cohens_kappa` on the contingency table, `fleiss_kappa` on the
`aggregate_raters` counts), not a formula of ours.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Sequence
from itertools import combinations
from typing import Any

from sqlite_utils import Database

from db.committee import voted_turns
from db.revisions import newest_accepted
from workbench.committee.voting import call_key, decision_key, label_call, same_call

DECIDED = ("revised", "confirmed")


def _undefined_or(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def cohen(pairs: Sequence[tuple[Hashable, Hashable]]) -> dict:
    """Cohen's kappa of two raters from their (a, b) ratings of the same subjects."""
    import numpy as np
    from statsmodels.stats.inter_rater import cohens_kappa

    cats = sorted({c for p in pairs for c in p}, key=repr)
    if not pairs or len(cats) < 2:
        return {"kappa": None, "turns": len(pairs)}
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)))
    for a, b in pairs:
        table[index[a], index[b]] += 1
    with np.errstate(all="ignore"):
        kappa = cohens_kappa(table).kappa
    return {"kappa": _undefined_or(kappa), "turns": len(pairs)}


def fleiss(ratings: Sequence[Sequence[Hashable]]) -> dict:
    """Fleiss' kappa from each subject's ratings (the same number of raters per subject; who
    they are may differ)."""
    import numpy as np
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    if len({len(r) for r in ratings}) > 1:
        raise ValueError("Fleiss' kappa needs the same number of ratings for every subject")
    cats = sorted({c for r in ratings for c in r}, key=repr)
    raters = len(ratings[0]) if ratings else 0
    if not ratings or raters < 2 or len(cats) < 2:
        return {"kappa": None, "turns": len(ratings), "raters": raters}
    index = {c: i for i, c in enumerate(cats)}
    codes = np.array([[index[c] for c in r] for r in ratings])
    table, _ = aggregate_raters(codes, n_cat=len(cats))
    with np.errstate(all="ignore"):
        kappa = fleiss_kappa(table, method="fleiss")
    return {"kappa": _undefined_or(kappa), "turns": len(ratings), "raters": raters}


def _key(call: dict) -> str:
    """A vote's category on the whole call: its call_key, as text (hashable, printable)."""
    return json.dumps(call_key(call), ensure_ascii=False, default=str)


def analyst_calls(db: Database, turns: list[dict]) -> dict[tuple[int, int], dict | None]:
    """The analyst's decision on each turn taken after its votes: the call of the turn's current
    label when the analyst wrote it (a human revision) or accepted it (a proposal) after the
    committee's turn was recorded. Turns without one are absent; None is "no single call"."""
    if not turns:
        return {}
    after = {(t["trace_id"], t["message_idx"]): t["created_at"] for t in turns}
    ids = sorted({t["trace_id"] for t in turns})
    out: dict[tuple[int, int], dict | None] = {}
    for tid, idx, kind, tool_calls, created, decided, content in newest_accepted(db, ids):
        since = after.get((tid, idx))
        if since is None:
            continue
        written = kind == "human" and created > since
        accepted = decided is not None and decided > created and decided > since
        if written or accepted:
            out[(tid, idx)] = label_call({"tool_calls": tool_calls, "content": content})
    return out


def _share(agreed: int, over: int) -> dict:
    return {"agreed": agreed, "over": over, "share": round(agreed / over, 4) if over else None}


def agreement(db: Database, job_id: int | None = None) -> dict[str, Any]:
    """The agreement figures of one job's votes (or of every run's newest votes per turn)."""
    turns = voted_turns(db, job_id)
    analyst = analyst_calls(db, turns)
    members: dict[str, dict] = {}
    tallies: dict[str, dict[str, int]] = {}
    rated: list[dict[str, dict | None]] = []     # per turn: member -> call (None: abstained)
    decided = 0
    for t in turns:
        decision = t["call"] if t["outcome"] in DECIDED else None
        decided += decision is not None
        later = (t["trace_id"], t["message_idx"])
        per_member: dict[str, dict | None] = {}
        for v in t["votes"]:
            name = v["member"]
            members.setdefault(name, {"role": v["role"]})
            tally = tallies.setdefault(name, dict.fromkeys(
                ("votes", "abstained", "committee", "committee_over", "analyst",
                 "analyst_over"), 0))
            tally["votes"] += 1
            tally["abstained"] += v["call"] is None
            if decision is not None:
                tally["committee_over"] += 1
                tally["committee"] += same_call(v["call"], decision)
            if later in analyst:
                tally["analyst_over"] += 1
                tally["analyst"] += same_call(v["call"], analyst[later])
            if v["role"] == "member":
                per_member[name] = v["call"]
        rated.append(per_member)
    for name, m in members.items():
        tally = tallies[name]
        m.update(votes=tally["votes"], abstained=tally["abstained"],
                 committee=_share(tally["committee"], tally["committee_over"]),
                 analyst=_share(tally["analyst"], tally["analyst_over"]))
    voters = [n for n, m in members.items() if m["role"] == "member"]
    pairs = []
    for a, b in combinations(voters, 2):
        both = [(r[a], r[b]) for r in rated if r.get(a) and r.get(b)]
        pairs.append({"a": a, "b": b,
                      "function": cohen([(decision_key(x), decision_key(y)) for x, y in both]),
                      "call": cohen([(_key(x), _key(y)) for x, y in both])})
    answered = [[c for c in r.values() if c is not None] for r in rated]
    raters = max((len(a) for a in answered), default=0)
    full = [a for a in answered if len(a) == raters]
    return {
        "job_id": job_id, "turns": len(turns), "decided": decided,
        "analyst_decided": len(analyst), "members": members, "cohen": pairs,
        "fleiss": {"function": fleiss([[decision_key(c) for c in a] for a in full]),
                   "call": fleiss([[_key(c) for c in a] for a in full])}}
