"""Job functions the app can start. Each takes a JobContext and a TraceFilter and returns a
JSON-able result; the same function runs headless from the CLI through `workbench.jobs.run_job`.

Plug-in point: other modules register their jobs with `@register(...)`. `workbench check`
(`workbench.checks.run_checks(db, flt)`) and schema normalisation are registered lazily by
`_optional_jobs()` when their modules exist, so this module never depends on them.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from db.queries import TraceFilter
from db.traces import iter_trace_rows
from workbench.jobs import JobContext

JobFunction = Callable[[JobContext, TraceFilter], Any]


@dataclass
class JobSpec:
    kind: str
    description: str
    fn: JobFunction


REGISTRY: dict[str, JobSpec] = {}


def register(kind: str, description: str) -> Callable[[JobFunction], JobFunction]:
    def deco(fn: JobFunction) -> JobFunction:
        REGISTRY[kind] = JobSpec(kind, description, fn)
        return fn
    return deco


@register("recount", "Count tool calls per function over the filtered traces")
def recount(ctx: JobContext, flt: TraceFilter) -> dict:
    where, params = flt.where()
    total = ctx.db.execute(f"SELECT count(*) FROM traces WHERE {where}", params).fetchone()[0]
    ctx.progress(0, total, "counting")
    counts: Counter[str] = Counter()
    done = 0
    for rows in iter_trace_rows(ctx.db, where, params, batch=500):
        ids = [r["id"] for r in rows]
        marks = ",".join("?" * len(ids))
        for name, n in ctx.db.execute(f"SELECT name, count(*) FROM tool_calls WHERE trace_id"
                                      f" IN ({marks}) GROUP BY name", ids):
            counts[name] += n
        done += len(rows)
        if ctx.progress(done, total, f"{done}/{total} traces"):
            ctx.log("cancel requested: stopping")
            from workbench.jobs import Cancelled
            raise Cancelled()
    for name, n in counts.most_common():
        ctx.log(f"{name}: {n}")
    return {"traces": done, "calls": dict(counts)}


def _optional_jobs() -> None:
    """Register jobs whose modules are written elsewhere, when they are present."""
    try:
        checks = importlib.import_module("workbench.checks")
    except ImportError:
        return
    run_checks = getattr(checks, "run_checks", None)
    if run_checks is not None and "check" not in REGISTRY:
        def check(ctx: JobContext, flt: TraceFilter) -> Any:
            ctx.log("running checks")
            return run_checks(ctx.db, flt)
        REGISTRY["check"] = JobSpec("check", "Run the checks (flags) over the filtered traces", check)


def available_jobs() -> dict[str, JobSpec]:
    _optional_jobs()
    return dict(REGISTRY)
