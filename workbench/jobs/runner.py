"""The job runtime: the one way a job row is made, run, resumed, re-run and detached.

A job is a row (``db.jobs``) naming a kind, a selection and the kind's parameters; the kind's
spec (:mod:`workbench.jobs.registry`) says how to run it. :func:`run_job` runs a body under a
row and ends the row on every path:

* the body returns: ``succeeded`` with its result;
* it raises: ``failed`` with the message (the traceback goes to the log);
* every log line, progress message and error is redacted first (:mod:`workbench.core.redaction`):
  a server that echoes the API key in an error body does not put it in the store or a log;
* a cancel request (``workbench jobs cancel``, the app) or Ctrl-C: ``cancelled``;
* SIGTERM / SIGHUP: ``interrupted`` (resumable); kill -9: the next process that opens the store
  sees the dead pid (this host) or the stale heartbeat (another host) and marks the row
  ``interrupted``; a live pid on this host (a process stopped by SIGSTOP or Ctrl-Z) keeps its
  job however old its heartbeat, and a resume is refused while it lives;
* a row no longer queued when the body would start (cancelled meanwhile) is not run;
* the claims the job made (``ctx.claim``) are released when it ends.

:func:`submit` stores a job from its spec, :func:`execute` runs a stored row in this process,
:func:`start_worker` runs one in a detached ``workbench job run ID`` process (its own session and
log file), which is how the app starts jobs that must outlive it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from db import jobs as store
from db.connection import db_file
from workbench.jobs.context import (STOPPED, Cancelled, Interrupted, JobContext, JobStatus,
                                    JobStopped, Listener)
from workbench.jobs.registry import get_spec
from workbench.core.redaction import redact


def _row(db: Database, job_id: int) -> dict:
    row = store.get_job(db, job_id)
    if row is None:
        raise ValueError(f"no job {job_id}")
    return row


class _Heartbeat:
    """Touches the row every few seconds from its own connection (the job's may be inside a
    long transaction), so another host can tell a live worker from a dead one."""

    def __init__(self, db: Database, job_id: int) -> None:
        self.path, self.job_id = db_file(db), job_id
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"job-{job_id}-heartbeat",
                                       daemon=True)

    def __enter__(self) -> _Heartbeat:
        if self.path:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)

    def _run(self) -> None:
        from db import open_db

        assert self.path is not None   # started only for a store with a file
        db = open_db(self.path, migrate=False)
        try:
            while not self.stopped.wait(store.HEARTBEAT_S):
                try:
                    store.heartbeat(db, self.job_id)
                except Exception:  # noqa: BLE001 - a busy store skips one beat, no more
                    pass
        finally:
            db.conn.close()


@contextmanager
def _signals(ctx: JobContext) -> Iterator[None]:
    """Ctrl-C cancels the job; SIGTERM and SIGHUP interrupt it (resumable)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        stop: JobStopped = (Cancelled(f"stopped by {name} (Ctrl-C)") if signum == signal.SIGINT
                            else Interrupted(f"stopped by {name}"))
        if ctx._graceful and ctx._stop is None:
            ctx._stop = stop
            return
        raise stop

    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, handler) for s in watched}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_job(db: Database, job_id: int, fn: Callable[[JobContext], Any],
            listeners: list[Listener] | None = None, resume: bool = False) -> dict:
    """Run `fn` under the stored job row `job_id` and return the final row.

    Failures are recorded, not raised: the caller reads `status` and `error`."""
    ctx = JobContext(db, job_id, list(listeners or []), resume=resume)
    # the signal handlers come first: a Ctrl-C just after the row says running must end it
    with _signals(ctx):
        try:
            if not store.start_job(db, job_id):
                return _row(db, job_id)   # cancelled before it started, or run elsewhere
            with _Heartbeat(db, job_id):
                result = fn(ctx)
        except JobStopped as e:
            ctx.log(f"{e.status}: {e}")
            store.finish_job(db, job_id, e.status, error=redact(e) or None)
        except Exception as e:  # noqa: BLE001 - a job's failure is data, shown to the analyst
            store.log(db, job_id, redact(traceback.format_exc()))
            store.finish_job(db, job_id, JobStatus.FAILED, error=redact(f"{type(e).__name__}: {e}"))
        else:
            if ctx.units_computed or ctx.units_reused:
                ctx.log(f"units: {ctx.units_computed} computed, {ctx.units_reused} reused")
            store.finish_job(db, job_id, JobStatus.SUCCEEDED, result=result)
    return _row(db, job_id)


# -------------------------------------------------------------------- stored jobs, by their spec

def submit(db: Database, kind: str, selection: Any = None, params: Any = None, *,
           parent_id: int | None = None) -> int:
    """Validate a job's parameters and store it, queued. Returns its id."""
    spec = get_spec(kind)
    p = spec.make_params(params)
    sel = spec.make_selection(selection)
    return store.create_job(db, kind, spec.dump_params(p), sel.to_dict(), parent_id=parent_id)


def execute(db: Database, job_id: int, listeners: list[Listener] | None = None,
            resume: bool = False) -> dict:
    """Run a stored job through its kind's spec, in this process."""
    row = _row(db, job_id)
    spec = get_spec(row["kind"])
    params = spec.make_params(row["params"])
    selection = spec.make_selection(row["selection"])
    return run_job(db, job_id, lambda ctx: spec.run(ctx, selection, params),
                   listeners=listeners, resume=resume)


def run(db: Database, kind: str, selection: Any = None, params: Any = None, *,
        listeners: list[Listener] | None = None, parent_id: int | None = None) -> dict:
    """Submit a job and run it in this process (the CLI's foreground run, tests, benches)."""
    return execute(db, submit(db, kind, selection, params, parent_id=parent_id),
                   listeners=listeners)


def log_path_for(db_path: str | Path, job_id: int) -> Path:
    """Worker logs live beside the store: `STORE.jobs/ID.log`."""
    p = Path(db_path).resolve()
    return p.with_name(p.name + ".jobs") / f"{job_id}.log"


def start_worker(db_path: str | Path, job_id: int, *, resume: bool = False,
                 cwd: str | None = None) -> subprocess.Popen:
    """Start `workbench job run ID` detached: its own session (closing the app or its terminal
    does not stop it) and its own log file. Returns the process (reaped by a thread)."""
    log_file = log_path_for(db_path, job_id)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "workbench", "--db", str(Path(db_path).resolve()), "job", "run",
           str(job_id)] + (["--resume"] if resume else [])
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with open(log_file, "ab") as fh:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=cwd, env=env, close_fds=True)
    _hand_over(db_path, job_id, proc.pid)
    threading.Thread(target=proc.wait, name=f"reap-job-{job_id}", daemon=True).start()
    return proc


def _hand_over(db_path: str | Path, job_id: int, pid: int) -> None:
    """The queued row now belongs to the worker: if it dies before it starts the job, the
    next open marks the job (it never stays queued)."""
    from db import open_db

    db = open_db(db_path, migrate=False)
    try:
        store.hand_over(db, job_id, pid)
    finally:
        db.conn.close()


def resume(db: Database, job_id: int) -> dict:
    """Check that a stopped job can resume and make it runnable again; returns its row.
    Refused while the process that ran it lives (stopped, say, with Ctrl-Z): two processes
    would make the same paid calls side by side."""
    row = _row(db, job_id)
    pid = row["pid"]
    if (row["status"] in STOPPED and pid != os.getpid()
            and store.process_alive(pid, row["host"])):
        raise ValueError(f"job {job_id} is {row['status']} but its process (pid {pid}) still"
                         f" lives (stopped? `kill -CONT {pid}` lets it go on, `kill {pid}`"
                         " ends it): resume it once that process has ended")
    if row["status"] not in STOPPED:
        raise ValueError(f"job {job_id} is {row['status']}: only a failed, cancelled or"
                         " interrupted job resumes")
    if not get_spec(row["kind"]).resumable:
        raise ValueError(f"{row['kind']} jobs do not resume: `workbench jobs rerun {job_id}`"
                         " runs it again")
    store.requeue(db, job_id)
    return _row(db, job_id)


def rerun(db: Database, job_id: int) -> int:
    """A new job with the same kind, selection and parameters."""
    row = _row(db, job_id)
    return submit(db, row["kind"], row["selection"], row["params"])
