"""Running a job: the same function runs headless from the CLI or in an app worker.

A job function takes a `JobContext` and returns a JSON-able result. It reports progress
through the context (stored in the jobs table, so any process sees it) and stops early when
`ctx.progress()` returns True (cancel requested). An exception marks the job failed with its
message; the work it did inside its own transactions stays consistent.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from db import jobs as store


class Cancelled(Exception):
    """Raised by a job that noticed a cancel request."""


@dataclass
class JobContext:
    db: Database
    job_id: int
    listeners: list[Callable[[str, Any], None]] = field(default_factory=list)

    def progress(self, done: int, total: int | None = None, message: str | None = None) -> bool:
        cancel = store.progress(self.db, self.job_id, done, total, message)
        for fn in self.listeners:
            fn("progress", (done, total, message))
        return cancel

    def log(self, line: str) -> None:
        store.log(self.db, self.job_id, line)
        for fn in self.listeners:
            fn("log", line)

    def check_cancel(self) -> None:
        job = store.get_job(self.db, self.job_id)
        if job and job["cancel_requested"]:
            raise Cancelled()


JobFn = Callable[[JobContext], Any]


def run_job(db: Database, kind: str, fn: JobFn, params: Any = None,
            listeners: list[Callable[[str, Any], None]] | None = None,
            job_id: int | None = None) -> dict:
    """Create (or take) a job row, run `fn`, record the outcome; returns the final job row.

    Exceptions are recorded, not raised: the caller reads `status` and `error`.
    """
    if job_id is None:
        job_id = store.create_job(db, kind, params)
    store.start_job(db, job_id)
    ctx = JobContext(db, job_id, list(listeners or []))
    try:
        result = fn(ctx)
    except Cancelled:
        store.finish_job(db, job_id, "cancelled")
    except Exception as e:  # noqa: BLE001 - a job's failure is data, shown to the analyst
        store.log(db, job_id, traceback.format_exc())
        store.finish_job(db, job_id, "failed", error=f"{type(e).__name__}: {e}")
    else:
        store.finish_job(db, job_id, "succeeded", result=result)
    return store.get_job(db, job_id)
