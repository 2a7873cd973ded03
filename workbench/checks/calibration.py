"""Severity from measured evidence: a check's error takes a turn out of the training loss (a
conversation-level one, the whole conversation), so it must be right almost always on this
corpus. After the checks ran, each check's precision is estimated on the corpus itself, and a
check whose estimate is below ERROR_PRECISION raises warnings instead of errors (warnings stay
in training and in the review queue).

The estimate: false alarms are counted on conversations that look clean by evidence the checks
do not use, then scaled to the whole corpus:

    fa = flagged units (turns, or conversations) among the clean-looking ones / their units
    precision ~= 1 - fa * N / F          (N units, F error flags of the check on the corpus)

with fa's 95% Wilson interval carried through. Clean-looking conversations are the successful
ones where conversations carry an outcome (a reward, a score; see `outcome_sides`). Damage on a
successful conversation counts as a false alarm, so the estimate is conservative. Where no
outcome splits the corpus, `heldout.py` plants damage of the kinds the checks look for into
held-out conversations that no check flags and measures false alarms on their untouched turns
with the checks fitted on the rest.

A per-check override in the store's settings (`checks.severity.<check>` = error | warning |
auto), set by `workbench check --severity CHECK=...` or the pipeline file's [check] stage,
wins over the estimate. What each run decided is kept (`USED_KEY`) so a re-check of a few
relabelled conversations gives the severities the last run gave.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlite_utils import Database

from db.browse import get_setting, set_setting
from db.queries import TraceFilter

ERROR_PRECISION = 0.95   # an error flag must be right at least this often on the corpus
MIN_REFERENCE = 10       # clean-looking conversations needed for an estimate
LEVELS = ("turn", "trace")
CHOICES = ("error", "warning", "auto")
SEVERITY_KEY = "checks.severity"       # + ".<check>": the analyst's override
USED_KEY = "checks.severity_used"      # {check: {level: severity}} of the last run


def parse_overrides(items: Iterable[str], known: Iterable[str]) -> dict[str, str]:
    """`["grounding=warning", "coherence=auto"]` -> {check: choice}; a bad item raises
    ValueError naming it."""
    known = list(known)
    out = {}
    for item in items:
        name, sep, choice = str(item).partition("=")
        name, choice = name.strip(), choice.strip()
        if not sep or not name:
            raise ValueError(f"--severity takes CHECK=error|warning|auto, not {item!r}")
        if name not in known:
            raise ValueError(f"--severity: unknown check {name!r} (known: {', '.join(known)})")
        if choice not in CHOICES:
            raise ValueError(f"--severity {name}: must be one of {', '.join(CHOICES)},"
                             f" not {choice!r}")
        out[name] = choice
    return out


def stored_overrides(db: Database, names: Iterable[str]) -> dict[str, str]:
    """The store's overrides of these checks (auto ones left out)."""
    out = {}
    for name in names:
        value = get_setting(db, f"{SEVERITY_KEY}.{name}")
        if value in ("error", "warning"):
            out[name] = value
    return out


def save_overrides(db: Database, overrides: dict[str, str]) -> None:
    for name, choice in overrides.items():
        set_setting(db, f"{SEVERITY_KEY}.{name}", choice)


def used_severities(db: Database) -> dict[str, dict[str, str]]:
    """What the last check run decided per check and level (a re-check applies it)."""
    return get_setting(db, USED_KEY, {}) or {}


def apply_used(flags: list[dict], used: dict[str, dict[str, str]]) -> list[dict]:
    """Flags of a re-check with the severities the last run decided for their check."""
    for f in flags:
        level = "trace" if f["message_idx"] is None else "turn"
        if f["severity"] == "error" and used.get(f["check"], {}).get(level) == "warning":
            f["severity"] = "warning"
    return flags


def wilson(k: int, n: int) -> tuple[float, float]:
    from workbench.checks.outcome_flags import _interval

    return _interval(k, n) if n else (0.0, 1.0)


def precision_from(k: int, n: int, flags: int, units: int) -> tuple[float, float, float]:
    """Precision (point, low, high) of `flags` error flags on `units` units, with k false
    alarms measured on n clean-looking units (see the module's docstring)."""
    lo_fa, hi_fa = wilson(k, n)

    def clip(x: float) -> float:
        return round(min(1.0, max(0.0, x)), 3)

    scale = units / flags
    return clip(1 - k / n * scale), clip(1 - hi_fa * scale), clip(1 - lo_fa * scale)


def _outcome_reference(db: Database, stage, selection: TraceFilter | None) -> dict | None:
    from workbench.checks.outcome_flags import outcome_sides

    sides = [s for s in outcome_sides(db, selection) if len(s["successful"]) >= MIN_REFERENCE]
    if not sides:
        return None
    s = sides[0]
    good, bad = s["successful"], s["failed"]
    both = {**good, **bad}
    return {"outcome": s["outcome"], "split": s["split"],
            "method": f"successful conversations ({s['outcome']}: {s['split']}) taken as clean",
            "clean": stage.error_units(list(good)), "all": stage.error_units(list(both)),
            "units": {"turn": (sum(good.values()), sum(both.values())),
                      "trace": (len(good), len(both))},
            "traces_good": stage.error_traces(list(good)), "n_good": len(good),
            "traces_bad": stage.error_traces(list(bad)), "n_bad": len(bad)}


def calibrate(db: Database, stage, names: list[str], selection: TraceFilter | None,
              overrides: dict[str, str], heldout: dict | None = None) -> list[dict]:
    """Estimate each check's precision from the staged flags of a run, decide its severity
    per level (turn, trace), demote what falls short in `stage`, and record the decisions.
    `heldout`: {(check, level): (false alarms, clean units)} measured by `heldout.py`, used
    where no outcome gives a reference. Returns one entry per check and level (see
    `workbench check`'s report)."""
    from workbench.checks.outcome_flags import side

    raised = stage.error_units()
    ref = _outcome_reference(db, stage, selection)
    out = []
    used: dict[str, dict[str, str]] = {}
    for name in names:
        outcome = None
        if ref is not None:
            failed = side(ref["traces_bad"].get(name, 0), ref["n_bad"])
            good = side(ref["traces_good"].get(name, 0), ref["n_good"])
            outcome = {"outcome": ref["outcome"], "split": ref["split"],
                       "failed": failed, "successful": good}
            if good["share"] > failed["share"]:
                outcome["warning"] = (
                    f"flags successful conversations more often than failed ones"
                    f" ({good['share']:.0%} against {failed['share']:.0%}): its flags are not"
                    " evidence of damage on this corpus")
        for level in LEVELS:
            flags = raised.get((name, level), 0)
            if level == "trace" and not flags:
                continue
            row = {"check": name, "level": level, "errors": flags, "precision": None,
                   "interval": None, "method": None, "outcomes": outcome}
            if ref is not None:
                n_clean, n_all = ref["units"][level]
                f_all = ref["all"].get((name, level), 0)
                if f_all and n_clean:
                    k = ref["clean"].get((name, level), 0)
                    p, lo, hi = precision_from(k, n_clean, f_all, n_all)
                    row.update(precision=p, interval=[lo, hi], method=ref["method"],
                               false_alarms=[k, n_clean])
            elif heldout and (name, level) in heldout and flags:
                k, n, n_all, detail, found = heldout[(name, level)]
                if n:
                    p, lo, hi = precision_from(k, n, flags, n_all)
                    row.update(precision=p, interval=[lo, hi], false_alarms=[k, n],
                               method=detail, planted_found=found)
            row["severity"], row["reason"] = _decide(row, overrides.get(name))
            if row["severity"] == "warning" and flags:
                stage.demote(name, level)
            used.setdefault(name, {})[level] = row["severity"]
            out.append(row)
    set_setting(db, USED_KEY, {**used_severities(db), **used})
    return out


def _decide(row: dict, override: str | None) -> tuple[str, str]:
    if override in ("error", "warning"):
        return override, f"set by the store's setting {SEVERITY_KEY}.{row['check']}"
    if not row["errors"]:
        return "error", "no errors raised"
    if row["precision"] is None:
        return "error", "no estimate (too few clean-looking conversations); kept as raised"
    lo, hi = row["interval"]
    shown = f"precision {row['precision']:.2f} [{lo:.2f}, {hi:.2f}]"
    if row["precision"] < ERROR_PRECISION:
        return "warning", f"{shown} below {ERROR_PRECISION}"
    if row["outcomes"] and row["outcomes"].get("warning"):
        return "warning", "it flags successful conversations more often than failed ones"
    return "error", f"{shown} at or above {ERROR_PRECISION}"


def describe(row: dict) -> str:
    """The severity a check used, as `workbench check` prints it."""
    if row["severity"] == "error" and not row["reason"].startswith("set by"):
        return "error"
    return f"{row['severity']} ({row['reason']})"
