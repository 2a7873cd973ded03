"""What a job body sees: its context, the ways it is told to stop, and the events it sends.

A body takes a :class:`JobContext`: it reports progress through it (stored, so any process sees
it), logs, records metrics, and does costly work in idempotent units (``ctx.unit``), so a killed
job resumes without repeating a model call. Code that also runs outside a job (the trainer from a
test, a check from a bench) takes a :class:`NullContext`, which has the same methods and stores
nothing, instead of testing ``if ctx is not None`` at every step.

This module knows no job kind and no runner: the dependencies of the job runtime run one way,
context <- spec <- each feature's ``job.py`` <- registry <- runner <- CLI, app, pipeline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from sqlite_utils import Database

from db import jobs as store
from workbench.core.redaction import redact

T = TypeVar("T")


class JobStatus(StrEnum):
    """A job row's status (stored as its value)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


STOPPED = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)


class JobStopped(BaseException):
    """A job told to stop. BaseException: no `except Exception` in a job body swallows it."""

    status: JobStatus = JobStatus.INTERRUPTED


class Cancelled(JobStopped):
    status = JobStatus.CANCELLED


class Interrupted(JobStopped):
    status = JobStatus.INTERRUPTED


# ------------------------------------------------------------------------------ events

@dataclass(frozen=True)
class Progress:
    done: int
    total: int | None
    message: str | None


@dataclass(frozen=True)
class LogLine:
    text: str


@dataclass(frozen=True)
class Metrics:
    """One step's numbers (training: step, loss, lr, tokens_per_s, eta_s)."""

    values: dict[str, Any]


JobEvent = Progress | LogLine | Metrics


class Listener(Protocol):
    """Told of every event of a running job (the CLI's progress line, the pipeline forwarding a
    child's progress to its own row)."""

    def __call__(self, event: JobEvent, /) -> None: ...


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

    def emit(self, event: JobEvent) -> None:
        for fn in self.listeners:
            fn(event)

    def progress(self, done: int, total: int | None = None, message: str | None = None) -> None:
        """Record progress, tell the listeners, and raise `Cancelled` if asked to stop."""
        message = None if message is None else redact(message)
        store.progress(self.db, self.job_id, done, total, message)
        self.emit(Progress(done, total, message))
        self.check_cancel()

    def log(self, line: str) -> None:
        line = redact(line)
        store.log(self.db, self.job_id, line)
        self.emit(LogLine(line))

    def metrics(self, values: dict[str, Any]) -> None:
        """Store one step's metrics as data (the app draws the curve from them)."""
        store.add_metrics(self.db, self.job_id, values)
        self.emit(Metrics(values))

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

    def claim(self, scope: str, keys: list[str]) -> dict[str, int]:
        """Claim units of work (turns, traces) for this job until it ends, so that a second
        job over the same ones skips them. Returns those another running job holds (key ->
        its job id): skip them."""
        return store.claim(self.db, self.job_id, scope, keys)

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

    def has_unit(self, kind: str, inputs: Any) -> bool:
        """Whether a unit is stored, without counting it as reused (work planned ahead)."""
        return store.unit_result(self.db, kind, content_key(inputs)) is not None

    def save_unit(self, kind: str, inputs: Any, value: Any) -> None:
        if value is None:
            raise ValueError(f"a {kind} unit must produce a value")
        store.save_unit(self.db, kind, content_key(inputs), value, self.job_id)
        self.units_computed += 1


class NullContext:
    """A context for code run outside a job: events go to the listeners only, nothing is
    stored, units are computed every time, and nothing asks it to stop."""

    job_id: int | None = None
    resume = False

    def __init__(self, listeners: list[Listener] | None = None) -> None:
        self.listeners = list(listeners or [])

    def emit(self, event: JobEvent) -> None:
        for fn in self.listeners:
            fn(event)

    def progress(self, done: int, total: int | None = None, message: str | None = None) -> None:
        self.emit(Progress(done, total, message))

    def log(self, line: str) -> None:
        self.emit(LogLine(line))

    def metrics(self, values: dict[str, Any]) -> None:
        self.emit(Metrics(values))

    def stop_requested(self) -> JobStopped | None:
        return None

    def check_cancel(self) -> None:
        return None

    @contextmanager
    def graceful(self) -> Iterator[None]:
        yield

    def claim(self, scope: str, keys: list[str]) -> dict[str, int]:
        return {}

    def unit(self, kind: str, inputs: Any, compute: Callable[[], T]) -> T:
        return compute()
