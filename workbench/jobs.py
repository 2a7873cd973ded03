"""The job runtime: one runner for every job, in the foreground or in a detached worker.

A job is a row (``db.jobs``) naming a kind, a selection and the kind's parameters. Its body
takes a :class:`JobContext`, reports progress through it (stored, so any process sees it), and
does costly work in idempotent units (``ctx.unit``), so a killed job resumes without repeating
a model call. :func:`run_job` runs a body under a row and ends the row on every path:

* the body returns: ``succeeded`` with its result;
* it raises: ``failed`` with the message (the traceback goes to the log);
* every log line, progress message and error is redacted first (:mod:`workbench.redaction`):
  a server that echoes the API key in an error body does not put it in the store or a log;
* a cancel request (``workbench jobs cancel``, the app) or Ctrl-C: ``cancelled``;
* SIGTERM / SIGHUP: ``interrupted`` (resumable); kill -9: the next process that opens the store
  sees the dead pid or the stale heartbeat and marks the row ``interrupted``.

:func:`execute` runs a stored row through its kind's spec (``workbench.job_specs``);
:func:`start_worker` runs one in a detached ``workbench job run ID`` process (its own session and
log file), which is how the app starts jobs that must outlive it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from db import jobs as store
from workbench.redaction import redact

T = TypeVar("T")
Listener = Callable[[str, Any], None]


class JobStopped(BaseException):
    """A job told to stop. BaseException: no `except Exception` in a job body swallows it."""

    status = "interrupted"


class Cancelled(JobStopped):
    status = "cancelled"


class Interrupted(JobStopped):
    status = "interrupted"


def content_key(value: Any) -> str:
    """A stable hash of JSON-able inputs (the identity of an idempotent unit)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class JobContext:
    db: Database
    job_id: int
    listeners: list[Listener] = field(default_factory=list)
    resume: bool = False                 # run again after a stop: keep what was done
    units_computed: int = 0
    units_reused: int = 0
    _stop: JobStopped | None = None      # a signal that arrived while the job was graceful
    _graceful: int = 0

    def progress(self, done: int, total: int | None = None, message: str | None = None) -> None:
        """Record progress, tell the listeners, and raise `Cancelled` if asked to stop."""
        message = None if message is None else redact(message)
        store.progress(self.db, self.job_id, done, total, message)
        for fn in self.listeners:
            fn("progress", (done, total, message))
        self.check_cancel()

    def log(self, line: str) -> None:
        line = redact(line)
        store.log(self.db, self.job_id, line)
        for fn in self.listeners:
            fn("log", line)

    def stop_requested(self) -> JobStopped | None:
        """Why the job should stop (a signal or a cancel request), without raising: for code
        that must first leave its work in a resumable state (training saves a checkpoint)."""
        if self._stop is None and store.cancel_requested(self.db, self.job_id):
            self._stop = Cancelled("cancel requested")
        return self._stop

    def check_cancel(self) -> None:
        stop = self.stop_requested()
        if stop is not None:
            raise stop

    @contextmanager
    def graceful(self) -> Iterator[None]:
        """Inside, a first SIGINT/SIGTERM/SIGHUP only asks to stop (see `stop_requested`);
        a second one stops at once."""
        self._graceful += 1
        try:
            yield
        finally:
            self._graceful -= 1

    def unit(self, kind: str, inputs: Any, compute: Callable[[], T]) -> T:
        """The result of `compute()` for these inputs, computed once across jobs and runs.

        `inputs` must hold everything the result depends on (endpoint, model, parameters,
        prompt): its content hash is the key in `job_units`."""
        cached = self.cached_unit(kind, inputs)
        if cached is not None:
            return cached
        value = compute()
        self.save_unit(kind, inputs, value)
        return value

    def cached_unit(self, kind: str, inputs: Any) -> Any | None:
        """A unit's stored result, or None (for work that computes it asynchronously, then
        calls `save_unit`)."""
        cached = store.unit_result(self.db, kind, content_key(inputs))
        if cached is not None:
            self.units_reused += 1
        return cached

    def save_unit(self, kind: str, inputs: Any, value: Any) -> None:
        if value is None:
            raise ValueError(f"a {kind} unit must produce a value")
        store.save_unit(self.db, kind, content_key(inputs), value, self.job_id)
        self.units_computed += 1


def db_file(db: Database) -> str | None:
    """The store's file, or None for an in-memory one."""
    path = db.execute("PRAGMA database_list").fetchone()[2]
    return path or None


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


def run_job(db: Database, kind: str, fn: Callable[[JobContext], Any], params: Any = None,
            listeners: list[Listener] | None = None, job_id: int | None = None,
            selection: Any = None, resume: bool = False) -> dict:
    """Run `fn` under a job row (created unless `job_id` is given) and return the final row.

    Failures are recorded, not raised: the caller reads `status` and `error`."""
    if job_id is None:
        job_id = store.create_job(db, kind, params, selection)
    ctx = JobContext(db, job_id, list(listeners or []), resume=resume)
    # the signal handlers come first: a Ctrl-C just after the row says running must end it
    with _signals(ctx):
        try:
            store.start_job(db, job_id)
            with _Heartbeat(db, job_id):
                result = fn(ctx)
        except JobStopped as e:
            ctx.log(f"{e.status}: {e}")
            store.finish_job(db, job_id, e.status, error=redact(e) or None)
        except Exception as e:  # noqa: BLE001 - a job's failure is data, shown to the analyst
            store.log(db, job_id, redact(traceback.format_exc()))
            store.finish_job(db, job_id, "failed", error=redact(f"{type(e).__name__}: {e}"))
        else:
            if ctx.units_computed or ctx.units_reused:
                ctx.log(f"units: {ctx.units_computed} computed, {ctx.units_reused} reused")
            store.finish_job(db, job_id, "succeeded", result=result)
    return store.get_job(db, job_id)


# -------------------------------------------------------------------- stored jobs, by their spec

def submit(db: Database, kind: str, selection: Any = None, params: Any = None, *,
           parent_id: int | None = None) -> int:
    """Validate a job's parameters and store it, queued. Returns its id."""
    from workbench.job_specs import get_spec

    spec = get_spec(kind)
    p = spec.make_params(params)
    sel = spec.make_selection(selection)
    return store.create_job(db, kind, spec.dump_params(p), sel.to_dict(), parent_id=parent_id)


def execute(db: Database, job_id: int, listeners: list[Listener] | None = None,
            resume: bool = False) -> dict:
    """Run a stored job through its kind's spec, in this process."""
    from workbench.job_specs import get_spec

    row = store.get_job(db, job_id)
    if row is None:
        raise ValueError(f"no job {job_id}")
    spec = get_spec(row["kind"])
    params = spec.make_params(row["params"])
    selection = spec.make_selection(row["selection"])
    return run_job(db, row["kind"], lambda ctx: spec.run(ctx, selection, params),
                   listeners=listeners, job_id=job_id, resume=resume)


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
    threading.Thread(target=proc.wait, name=f"reap-job-{job_id}", daemon=True).start()
    return proc


def resume(db: Database, job_id: int) -> dict:
    """Check that a stopped job can resume and make it runnable again; returns its row."""
    from workbench.job_specs import get_spec

    row = store.get_job(db, job_id)
    if row is None:
        raise ValueError(f"no job {job_id}")
    if row["status"] not in ("failed", "cancelled", "interrupted"):
        raise ValueError(f"job {job_id} is {row['status']}: only a failed, cancelled or"
                         " interrupted job resumes")
    if not get_spec(row["kind"]).resumable:
        raise ValueError(f"{row['kind']} jobs do not resume: `workbench jobs rerun {job_id}`"
                         " runs it again")
    store.requeue(db, job_id)
    return store.get_job(db, job_id)


def rerun(db: Database, job_id: int) -> int:
    """A new job with the same kind, selection and parameters."""
    row = store.get_job(db, job_id)
    if row is None:
        raise ValueError(f"no job {job_id}")
    return submit(db, row["kind"], row["selection"], row["params"])
