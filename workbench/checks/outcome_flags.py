"""How the checks' flags relate to the outcomes logs carry: are failed conversations flagged
more often than successful ones? If the flags find real damage, they should be.

Per outcome name, conversations split into failed and successful: true/false outcomes by their
value; numbers with two values (0/1, -1/1) by the higher one; other numbers at the median (at
or above it: successful). Text outcomes are not split. Each side reports how many are flagged
(carry an error flag) with a 95% Wilson interval (scipy), so a difference on few conversations
is not read as one.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from sqlite_utils import Database

from db.queries import TraceFilter
from db.traces import outcomes_and_flags, outcomes_of

MIN_SIDE = 2   # conversations on each side for a comparison to be made


def _interval(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return round(float(ci.low), 3), round(float(ci.high), 3)


def _side(flags: list[bool]) -> dict:
    k, n = sum(flags), len(flags)
    low, high = _interval(k, n)
    return {"n": n, "flagged": k, "share": round(k / n, 3), "interval": [low, high]}


def _splitter(vals: list) -> tuple | None:
    """(is successful(value), how the values split) for one outcome's values; None for texts."""
    if not vals or not all(isinstance(v, (bool, int, float)) for v in vals):
        return None
    if all(isinstance(v, bool) for v in vals):
        return (lambda v: v is True), "true is successful"
    nums = [float(v) for v in vals]
    distinct = sorted(set(nums))
    if len(distinct) == 2:
        cut = distinct[1]
        split = f"{cut:g} is successful, {distinct[0]:g} failed"
    else:
        cut = statistics.median(nums)
        split = f"at or above the median {cut:g} is successful"
    return (lambda v, cut=cut: float(v) >= cut), split


def flags_by_outcome(db: Database, selection: TraceFilter | None = None) -> list[dict]:
    """Per outcome name that splits the selection: `{"outcome", "split", "failed": {n,
    flagged, share, interval}, "successful": {...}}`; empty when no trace has outcomes."""
    where, params = (selection or TraceFilter()).where()
    values: dict[str, list[tuple[object, bool]]] = defaultdict(list)
    for outcomes, flagged in outcomes_and_flags(db, where, params):
        for name, value in outcomes.items():
            if isinstance(value, (bool, int, float)):
                values[name].append((value, flagged))
    out = []
    for name, rows in sorted(values.items()):
        ok, split = _splitter([v for v, _ in rows])
        good = [f for v, f in rows if ok(v)]
        bad = [f for v, f in rows if not ok(v)]
        if len(good) < MIN_SIDE or len(bad) < MIN_SIDE:
            continue
        out.append({"outcome": name, "split": split, "failed": _side(bad),
                    "successful": _side(good)})
    return out


def outcome_sides(db: Database, selection: TraceFilter | None = None) -> list[dict]:
    """Per outcome name that splits the selection (as `flags_by_outcome`), the conversations
    on each side: `{"outcome", "split", "successful": {trace id: assistant turns},
    "failed": {...}}` (what the checks' calibration compares their flags against)."""
    where, params = (selection or TraceFilter()).where()
    values: dict[str, list[tuple[object, int, int]]] = defaultdict(list)
    for tid, outcomes, turns in outcomes_of(db, where, params):
        for name, value in outcomes.items():
            if isinstance(value, (bool, int, float)):
                values[name].append((value, tid, turns))
    out = []
    for name, rows in sorted(values.items()):
        ok, split = _splitter([v for v, _, _ in rows])
        good = {t: n for v, t, n in rows if ok(v)}
        bad = {t: n for v, t, n in rows if not ok(v)}
        if len(good) < MIN_SIDE or len(bad) < MIN_SIDE:
            continue
        out.append({"outcome": name, "split": split, "successful": good, "failed": bad})
    return out


def side(k: int, n: int) -> dict:
    """`{n, flagged, share, interval}` of k flagged among n (a Wilson 95% interval)."""
    return _side([True] * k + [False] * (n - k)) if n else {
        "n": 0, "flagged": 0, "share": 0.0, "interval": [0.0, 1.0]}
