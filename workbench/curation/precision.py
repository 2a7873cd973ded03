"""A check's precision as the analyst judges it: a random sample of the check's stored flags
(`workbench review sample`, or `S` in the app's review queue), each judged by the decision
taken on it (keep or "not a problem": a false alarm; drop, edit, an accepted proposal or an
exclusion: a real problem), gives the share of its flags that are real with a 95% Wilson
interval. Samples and verdicts are stored (`flag_samples`), so the estimate survives restarts
and grows as more flags are judged."""

from __future__ import annotations

from sqlite_utils import Database

from db import teaching
from db.queries import TraceFilter

DEFAULT_N = 30


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of k/n (0..1 when nothing was judged)."""
    if not n:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return round(float(ci.low), 3), round(float(ci.high), 3)


def draw(db: Database, check: str, n: int = DEFAULT_N, selection: TraceFilter | None = None,
         *, seed: int | None = None, severity: str | None = None,
         turns_only: bool = False) -> dict:
    """Draw `n` flags of `check` at random (on the selected traces) that no earlier sample of
    it holds. Returns {"check", "sample", "drawn", "population"}; a check with no flag left to
    draw is an error naming the checks that have flags."""
    where, params = (selection or TraceFilter()).where()
    out = teaching.draw_sample(db, check, n, where, params, seed=seed, severity=severity,
                               turns_only=turns_only)
    if not out["drawn"]:
        known = flagged_checks(db)
        if check not in known:
            raise ValueError(f"no flag of check {check!r} is stored (checks with flags:"
                             f" {', '.join(known) or 'none'})")
    return {"check": check, **out}


def flagged_checks(db: Database) -> list[str]:
    from db.browse import filter_choices

    return [c for c in filter_choices(db)["checks"] if c != "review.drop"]


def report(db: Database) -> list[dict]:
    """Per check with a sample: {check, drawn, judged, real, not_a_problem, open, precision
    (None before any verdict), interval [low, high]}."""
    out = []
    for c in teaching.sample_counts(db):
        judged = c["real"] + c["not_a_problem"]
        out.append({**c, "judged": judged,
                    "precision": round(c["real"] / judged, 3) if judged else None,
                    "interval": list(wilson(c["real"], judged))})
    return out


def describe(row: dict) -> str:
    """One check's estimate in a line."""
    if not row["judged"]:
        return (f"{row['check']}: {row['drawn']} flag(s) sampled, none judged yet")
    lo, hi = row["interval"]
    return (f"{row['check']}: precision {row['precision']:.0%} (95% interval {lo:.0%} to"
            f" {hi:.0%}): {row['real']} real of {row['judged']} judged"
            + (f", {row['open']} waiting" if row["open"] else ""))
