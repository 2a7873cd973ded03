"""Job functions the app can start. Each takes a JobContext and a TraceFilter and returns a
JSON-able result; the same function runs headless from the CLI through `workbench.jobs.run_job`.

Plug-in point: other modules register their jobs with `@register(...)`. The heavy modules
(checks, normalisation, training) are imported only when their job runs, so opening the app
stays fast.
"""

from __future__ import annotations

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


@register("check", "Run the checks over the filtered traces and store their flags")
def check(ctx: JobContext, flt: TraceFilter) -> dict:
    from workbench.checks import run_checks

    ctx.log("running checks")
    report = run_checks(ctx.db, flt, job_ctx=ctx)
    errors = sum(f["severity"] == "error" for f in report["flags"])
    ctx.log(f"{len(report['flags'])} flags ({errors} errors) on {report['traces']} traces")
    return {k: report[k] for k in ("traces", "assistant_turns")} | {
        "flags": len(report["flags"]), "errors": errors}


@register("normalize", "Map drifted tool and argument names onto the canonical tools")
def normalize(ctx: JobContext, flt: TraceFilter) -> dict:
    from workbench.normalize import normalize as run_normalize

    result = run_normalize(ctx.db, flt)
    ctx.log(f"{result['revisions']} revisions: {result['accepted']} accepted,"
            f" {result['proposed']} proposed for review")
    return result


@register("train", "Train a LoRA on the filtered traces (default base model, q8_0 GGUF in runs/)")
def train(ctx: JobContext, flt: TraceFilter) -> dict:
    from workbench.training.data import DataOptions
    from workbench.training.trainer import TrainConfig, train_job

    output = f"runs/job-{ctx.job_id}"
    ctx.log(f"training into {output}")
    return train_job(TrainConfig(output=output), DataOptions(selection=flt))(ctx)


def available_jobs() -> dict[str, JobSpec]:
    return dict(REGISTRY)
