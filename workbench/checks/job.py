"""The check job (flags over a selection) and recount (tool calls per function)."""

from __future__ import annotations

from dataclasses import dataclass

from db.queries import TraceFilter
from collections import Counter

from db.traces import call_counts, count_traces, iter_trace_rows
from workbench.jobs.context import JobContext
from workbench.jobs.spec import JobSpec, names, opt

SPECS: list[JobSpec] = []


@dataclass
class RecountParams:
    pass


def run_recount(ctx: JobContext, selection: TraceFilter, params: RecountParams) -> dict:
    where, args = selection.where()
    total = count_traces(ctx.db, where, args)
    ctx.progress(0, total, "counting")
    counts: Counter[str] = Counter()
    done = 0
    for rows in iter_trace_rows(ctx.db, where, args, batch=500):
        counts.update(call_counts(ctx.db, [r["id"] for r in rows]))
        done += len(rows)
        ctx.progress(done, total, f"{done}/{total} traces")
    for name, n in counts.most_common():
        ctx.log(f"{name}: {n}")
    return {"traces": done, "calls": dict(counts)}


SPECS.append(JobSpec("recount", "Count tool calls per function over the selected traces",
                 RecountParams, run_recount))


def _model_threads() -> int:
    from workbench.checks.base import default_threads

    return default_threads()


@dataclass
class CheckParams:
    only: list[str] = opt([], "run only these checks (default: every fast check)")
    model_checks: bool = opt(False, "also run the model-based checks (coherence_model: a small"
                             " local model through llama.cpp; minutes per hundred traces on a"
                             " CPU, cached)")
    threads: int = opt(_model_threads(), "llama.cpp threads for the model-based checks"
                       " (default: the usable cores less one, at most 8)")
    severity: list[str] = opt([], "per-check severity, kept in the store's settings:"
                              " CHECK=error|warning|auto (auto: from the check's precision"
                              " estimated on this corpus, the default)")

    def __post_init__(self) -> None:
        self.only = names(self.only)
        self.severity = names(self.severity)

    def validate(self) -> None:
        from workbench.checks import CHECKS

        unknown = [n for n in self.only if n not in CHECKS]
        if unknown:
            raise ValueError(f"unknown check {', '.join(unknown)} (known: {', '.join(CHECKS)})")
        from workbench.checks.calibration import parse_overrides

        parse_overrides(self.severity, CHECKS)
        if not 1 <= self.threads <= 1024:
            raise ValueError(f"--threads must be between 1 and 1024, not {self.threads}")

    def names(self) -> list[str]:
        from workbench.checks import DEFAULT_CHECKS, MODEL_CHECKS

        if self.only:
            return list(self.only)
        return DEFAULT_CHECKS + (MODEL_CHECKS if self.model_checks else [])


def run_check(ctx: JobContext, selection: TraceFilter, params: CheckParams) -> dict:
    from workbench.checks import CHECKS, run_checks
    from workbench.checks.calibration import describe, parse_overrides, save_overrides

    names = params.names()
    overrides = parse_overrides(params.severity, CHECKS)
    save_overrides(ctx.db, overrides)   # the store keeps them for later runs and re-checks
    ctx.log(f"running checks: {', '.join(names)}")
    report = run_checks(ctx.db, selection, names, job_ctx=ctx,
                        options={"coherence_model.threads": params.threads},
                        severity=overrides)
    errors = sum(f["severity"] == "error" for f in report["flags"])
    for row in report["calibration"]:
        p = row["precision"]
        ctx.log(f"{row['check']} ({row['level']}): {row['errors']} errors raised, precision"
                f" {'not estimated' if p is None else f'{p:.2f}'}: {describe(row)}")
    ctx.metrics({"step": 0, "calibration": report["calibration"]})
    ctx.log(f"{len(report['flags'])} flags ({errors} errors) on {report['traces']} traces")
    return {"traces": report["traces"], "assistant_turns": report["assistant_turns"],
            "flags": len(report["flags"]), "errors": errors, "checks": names,
            "timings": report["timings"], "model": report["model"],
            "calibration": report["calibration"]}


SPECS.append(JobSpec("check", "Run the checks over the selected traces and store their flags",
                 CheckParams, run_check))
