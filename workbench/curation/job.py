"""The normalize job: drifted tool and argument names mapped onto the task's tools."""

from __future__ import annotations

from dataclasses import dataclass

from db.queries import TraceFilter
from workbench.jobs.context import JobContext
from workbench.jobs.spec import JobSpec

SPECS: list[JobSpec] = []


@dataclass
class NormalizeParams:
    pass


def run_normalize(ctx: JobContext, selection: TraceFilter, params: NormalizeParams) -> dict:
    from workbench.curation.normalize import normalize

    ctx.progress(0, 1, "learning the mapping")
    result = normalize(ctx.db, selection)
    ctx.log(f"{result['revisions']} revisions: {result['accepted']} accepted,"
            f" {result['proposed']} proposed for review")
    ctx.progress(1, 1, "done")
    return result


SPECS.append(JobSpec("normalize", "Map drifted tool and argument names onto the canonical tools",
                 NormalizeParams, run_normalize))
