"""Running an ad-hoc body under a job row, for tests of the job runtime itself (the product
makes every row from a registered spec: `workbench.jobs.runner.submit`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from db import jobs as store
from workbench.jobs.context import JobContext, Listener
from workbench.jobs.runner import run_job


def run_body(db: Any, kind: str, fn: Callable[[JobContext], Any], *,
             listeners: list[Listener] | None = None) -> dict:
    return run_job(db, store.create_job(db, kind), fn, listeners=listeners)


def evaluate(db: Any, backend: Any, sel: Any = None, *, listeners: list[Listener] | None = None,
             **kwargs: Any) -> dict:
    """An evaluation of an in-process backend object (scripted replies, a model already loaded)
    as a job: the `eval` kind's body under a row. The product's `eval` jobs name their model or
    endpoint and are stored from the spec; tests hand the body a backend directly."""
    from workbench.evaluation import Selection, evaluation_body

    return run_body(db, "eval", evaluation_body(backend, sel or Selection(), **kwargs),
                    listeners=listeners)
