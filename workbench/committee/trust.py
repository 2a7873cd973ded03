"""Whether a committee's decisions become labels or proposals for review.

Agreement of weak members is no evidence: two small models that agree on a wrong call agree all
the same. So a committee's decisions are accepted as labels only when it has earned it, and are
otherwise proposed for the analyst's review:

- `--accept`: the analyst accepts them explicitly, for this run;
- or every member's measured agreement with the analyst clears the threshold the store's
  setting `committee.accept_threshold` holds (default 0.9): over the turns the analyst decided
  after the member voted (`agreement.analyst_calls`, every run), the lower end of the 95% Wilson
  interval of the share of turns where the member's vote equalled the analyst's decision. A
  member that never voted on a turn the analyst decided has the interval 0..1: not earned.

The job's result carries the verdict and, per member, the figures it rests on (`accepting`).
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from db.browse import get_setting
from workbench.committee.agreement import agreement
from workbench.core.errors import InputError

THRESHOLD_KEY = "committee.accept_threshold"
DEFAULT_THRESHOLD = 0.9
CONFIDENCE = 0.95


def threshold(db: Database) -> float:
    value = get_setting(db, THRESHOLD_KEY, DEFAULT_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InputError(f"the store's setting {THRESHOLD_KEY} must be a number from 0 to 1,"
                         f" not {value!r}")
    return float(value)


def interval(agreed: int, over: int) -> tuple[float, float]:
    """The Wilson score interval of agreed/over at `CONFIDENCE` (0..1 when over is 0)."""
    if not over:
        return 0.0, 1.0
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(agreed, over, alpha=1 - CONFIDENCE, method="wilson")
    return round(float(lo), 4), round(float(hi), 4)


def accepting(db: Database, members: list[str], accept: bool) -> dict[str, Any]:
    """{"accept": bool, "why": str, "threshold": float, "members": {name: figures}}."""
    limit = threshold(db)
    figures = agreement(db)["members"]
    per: dict[str, dict] = {}
    for name in members:
        share = (figures.get(name) or {}).get("analyst") or {"agreed": 0, "over": 0}
        lo, hi = interval(share["agreed"], share["over"])
        per[name] = {"agreed": share["agreed"], "over": share["over"], "interval": [lo, hi],
                     "clears": lo >= limit}
    short = [n for n, m in per.items() if not m["clears"]]
    if accept:
        why = "--accept: the analyst accepts the committee's decisions as labels for this run"
    elif not short:
        why = (f"every member agreed with the analyst well enough: the lower end of its"
               f" {CONFIDENCE:.0%} interval is at least {limit:g} ({THRESHOLD_KEY})")
    else:
        worst = ", ".join(f"{n}: {per[n]['agreed']}/{per[n]['over']} turns, interval"
                          f" {per[n]['interval'][0]:.2f}-{per[n]['interval'][1]:.2f}"
                          for n in short)
        why = (f"decisions are proposed for review: agreement with the analyst not earned"
               f" ({worst}; the lower end must be at least {limit:g}, setting"
               f" {THRESHOLD_KEY}); --accept accepts them")
    return {"accept": accept or not short, "explicit": accept, "why": why,
            "threshold": limit, "confidence": CONFIDENCE, "members": per}
