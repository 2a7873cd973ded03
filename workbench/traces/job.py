"""The import job: trace and task files into the store, all or nothing.

The CLI's `workbench import` runs the importer directly (its output is a per-file report); this
spec is how a pipeline's `[import]` stage runs it as a child job, so `jobs show`, `jobs rerun`
and the pipeline's skip/resume treat it like every other stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from db.queries import TraceFilter
from workbench.jobs.context import JobContext
from workbench.jobs.spec import JobSpec, opt


@dataclass
class ImportParams:
    paths: list[str] = opt([], "trace files, task files or folders")
    split: str | None = opt(None, "train | test | unassigned (default: test for files named"
                            " test*, else unassigned)")
    task: str | None = opt(None, "job_description.json or task.txt")
    max_message_bytes: int | None = opt(None, "reject larger messages (default: 1 MiB)")
    outcome: list[str] | None = opt(None, "fields of each record that are outcomes")

    def validate(self) -> None:
        from workbench.traces.formats import SPLITS

        if not self.paths:
            raise ValueError("give the files or folders to import")
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {self.split!r}")
        if self.max_message_bytes is not None and self.max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")


def run_import(ctx: JobContext, selection: TraceFilter, params: ImportParams) -> dict:
    from workbench.traces.importing import import_files, report_dict
    from workbench.conversations.messages import MAX_MESSAGE_BYTES

    ctx.progress(0, None, "importing")
    reports = import_files(ctx.db, params.paths, split=params.split, task=params.task,
                           notify=ctx.log,
                           max_message_bytes=params.max_message_bytes or MAX_MESSAGE_BYTES,
                           outcomes=params.outcome or ())
    for r in reports:
        ctx.log(f"{r.source}: {r.added} added, {r.duplicates} already stored")
    return {"files": [report_dict(r) for r in reports], "added": sum(r.added for r in reports)}


SPECS = [JobSpec("import", "Import trace and task files (all or nothing)", ImportParams,
                 run_import, in_app=False, takes_selection=False)]
