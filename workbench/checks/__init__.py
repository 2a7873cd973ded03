"""Deterministic, local checks over current labels. Each check module has `NAME` and
`run(ctx) -> list[flag]`; `run_checks` runs them as a job and stores their flags."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator, Sequence

from sqlite_utils import Database

from db.browse import raw_setting
from db.flags import FlagStage, count_flags, flags_of_traces, iter_flags
from db.queries import TraceFilter
from db.tasks import current_task
from db.jobs import save_unit, unit_result
from db.traces import assistant_turns_of
from workbench.checks import (
    calibration,
    coherence,
    coherence_model,
    duplicates,
    grounding,
    heldout,
    schema,
    structure,
)
from workbench.checks.base import CheckContext, TraceView, flag
from workbench.checks.stored import StoredTraces
from workbench.conversations.view import conversations, task_context

CHECKS = {m.NAME: m for m in (schema, structure, grounding, coherence, duplicates,
                              coherence_model)}
# what `workbench check` runs by default: fast, no model (coherence_model is opt-in)
DEFAULT_CHECKS = [n for n in CHECKS if n != coherence_model.NAME]
MODEL_CHECKS = [coherence_model.NAME]


def load_context(db: Database, flt: TraceFilter | None = None,
                 message_tools: Iterable[str] | None = None) -> CheckContext:
    """The selected traces in a list (callers that change them in memory, or pick a few)."""
    task = task_context(db)
    return _context(db, task, conversations(db, flt, task=task, batch=500), message_tools)


def stored_context(db: Database, flt: TraceFilter | None = None, batch: int = 500,
                   message_tools: Iterable[str] | None = None) -> CheckContext:
    """The selected traces read from the store `batch` at a time on every pass (`StoredTraces`):
    what `run_checks` uses, so memory holds a batch or one coherence group, not the corpus."""
    task = task_context(db)
    return _context(db, task, StoredTraces.select(db, flt, task, batch), message_tools)


def _context(db: Database, task, traces, message_tools: Iterable[str] | None) -> CheckContext:
    tools = {}
    for tool in task.tools or ():
        fn = tool.get("function") or tool
        tools[fn["name"]] = fn
    if message_tools is None:
        stored = raw_setting(db, "checks.message_tools")
        message_tools = stored.split() if stored else None
    return CheckContext(traces=traces, tools=tools, task=current_task(db),
                        message_tools=set(message_tools) if message_tools is not None else None)


def compute_flags(ctx: CheckContext, names: Iterable[str] | None = None,
                  on_check=None, sink=None) -> tuple[list[dict], dict]:
    """Run the checks in order; `on_check(done, total, name)` is told as each one starts.
    With `sink`, each check's flags go to `sink(flags)` as it ends instead of into the list
    returned (so a caller can keep them compactly)."""
    flags, timings = [], {}
    names = list(names or DEFAULT_CHECKS)
    options = dict(ctx.cache)   # what the caller put there, before any check adds its statistics
    for n, name in enumerate(names):
        if on_check is not None:
            on_check(n, len(names), name)
        t0 = time.perf_counter()
        try:
            found = CHECKS[name].run(ctx)
        except Exception:  # noqa: BLE001 - one bad trace must not stop the checks of the rest
            found = _without_failing_traces(ctx, name, options)
            if found is None:
                raise
        if sink is None:
            flags += found
        else:
            sink(found)
        del found
        timings[name] = round(time.perf_counter() - t0, 3)
    return flags, timings


def _without_failing_traces(ctx: CheckContext, name: str, options: dict) -> list[dict] | None:
    """Check `name` failed on the whole selection: find the traces it fails on (one at a time),
    flag each of them as an error saying why, and run it again on the others. None when no
    single trace fails: then the failure is the check's, not the data's."""
    bad: list[tuple[TraceView, Exception]] = []
    for t in ctx.traces:
        try:
            CHECKS[name].run(dataclasses.replace(ctx, traces=[t], cache=dict(options)))
        except Exception as e:  # noqa: BLE001
            bad.append((t, e))
    if not bad:
        return None
    failed = {t.id for t, _ in bad}
    kept = (ctx.traces.without(failed) if isinstance(ctx.traces, StoredTraces)
            else [t for t in ctx.traces if t.id not in failed])
    rest = dataclasses.replace(ctx, traces=kept, cache=dict(options))
    out = CHECKS[name].run(rest) if rest.traces else []
    return out + [flag(t, None, name, "error", f"the {name} check failed on this trace"
                       f" ({type(e).__name__}: {str(e)[:200]})") for t, e in bad]


def report_flag(f: dict) -> dict:
    """A stored flag (`db.flags.iter_flags`) as reports show it."""
    return {"source": f["source"], "line": f["line"], "message_index": f["message_idx"],
            **{k: f[k] for k in ("check", "severity", "detail", "evidence", "pattern",
                                 "demoted_from", "dismissed_like")}}


class FlagList(Sequence):
    """A run's flags as the report shows them (source, line, message_index, check, severity,
    detail, evidence, pattern, demoted_from, dismissed_like; by trace, turn and check), read from the store when asked for: at
    100,000 traces a run finds over half a million flags, too many to hold."""

    def __init__(self, db: Database, ids: list[int], names: list[str]):
        self.db, self.ids, self.names = db, sorted(ids), list(names)
        self._len: int | None = None

    def __len__(self) -> int:
        if self._len is None:
            self._len = count_flags(self.db, self.ids, self.names)
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        for i, f in enumerate(self):
            if i == index:
                return f
        raise IndexError(index)

    def __iter__(self) -> Iterator[dict]:
        return map(report_flag, flags_of_traces(self.db, self.ids, self.names))


def run_checks(db: Database, flt: TraceFilter | None = None, names: Iterable[str] | None = None,
               job_ctx=None, unit_db: Database | None = None,
               options: dict | None = None, batch: int = 500,
               severity: dict[str, str] | None = None) -> dict:
    """Run the checks on the selected traces, replace their flags, and return the report
    `{"traces", "assistant_turns", "flags": [...], "timings"}`. Model scores are cached in
    `job_units` of `unit_db` (default: `db`); `options` go to the checks' context cache
    (e.g. `{"coherence_model.only": trace_ids}` scores only those traces with the model).

    The checks read the conversations from the store `batch` at a time on each pass (see
    `StoredTraces`), so memory stays bounded whatever the corpus' size; "flags" is a
    `FlagList` and "conversations_held" the most conversations that were in memory at once.

    Before the flags are stored, each check's precision on this corpus is estimated and a
    check short of `calibration.ERROR_PRECISION` raises warnings instead of errors
    ("calibration": one entry per check and level). `severity` ({check: error|warning|auto})
    overrides the store's settings for this run; both win over the estimate."""
    names = list(names or DEFAULT_CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check {', '.join(unknown)} (known: {', '.join(CHECKS)})")
    ctx = stored_context(db, flt, batch)
    udb = unit_db if unit_db is not None else db
    job_id = job_ctx.job_id if job_ctx else None
    ctx.cache["units"] = (lambda kind, key: unit_result(udb, kind, key),
                          lambda kind, key, value: save_unit(udb, kind, key, value, job_id))
    if job_ctx is not None:   # model scoring reports progress and stops when asked (scores kept)
        ctx.cache["progress"] = lambda done, total: job_ctx.progress(
            done, total, "scoring turns with the model")
    ctx.cache.update(options or {})
    def on_check(done: int, total: int, name: str) -> None:
        # the jobs panel shows which check runs; a cancel stops before any flag is stored
        if job_ctx is not None:
            job_ctx.progress(done, total, f"check {done + 1}/{total}: {name}")
    with FlagStage(db, names) as stage:   # on disk as found; stored all at once at the end
        _, timings = compute_flags(ctx, names, on_check, sink=stage.add)
        ids = ctx.traces.ids
        overrides = {**calibration.stored_overrides(db, names), **(severity or {})}
        overrides = {k: v for k, v in overrides.items() if v != "auto"}
        t0 = time.perf_counter()
        heldout_fa = None
        if not _has_outcomes(db, flt) and "calibration.heldout" not in ctx.cache:
            heldout_fa = heldout.false_alarms(db, ctx, names, stage)
        estimates = calibration.calibrate(db, stage, names, flt, overrides, heldout_fa)
        timings["calibration"] = round(time.perf_counter() - t0, 3)
        stage.commit(ids, job_id=job_id)
    save_learned(db, ctx, [n for n in names if n in PER_TRACE_CHECKS or n == coherence.NAME])
    return {
        "traces": len(ctx.traces),
        # as counted at import (a label changes a turn's content and calls, never its role)
        "assistant_turns": assistant_turns_of(db, ids),
        "flags": FlagList(db, ids, names),
        "timings": timings,
        "model": ctx.cache.get("coherence_model.report"),
        "conversations_held": ctx.traces.peak,
        "calibration": estimates,
    }


def _has_outcomes(db: Database, flt: TraceFilter | None) -> bool:
    from workbench.checks.outcome_flags import outcome_sides

    return any(len(s["successful"]) >= calibration.MIN_REFERENCE
               for s in outcome_sides(db, flt))


def stored_report(db: Database, selection: dict | TraceFilter | None,
                  names: Iterable[str]) -> Iterator[dict]:
    """The stored flags of these checks on the selected traces (what a check job left), one at
    a time: at 100k traces they are hundreds of thousands."""
    flt = selection if isinstance(selection, TraceFilter) else TraceFilter.from_dict(selection)
    where, params = flt.where()
    return map(report_flag, iter_flags(db, where, params, names))


# last: recheck builds on the checks (re-runs the per-trace ones when labels change)
from workbench.checks.recheck import (  # noqa: E402, F401
    PER_TRACE_CHECKS,
    recheck_traces,
    save_learned,
)

