"""The eval job: every selected test turn predicted by a model and scored."""

from __future__ import annotations

from dataclasses import dataclass

from db.queries import TraceFilter
from workbench.jobs.context import JobContext
from workbench.jobs.spec import JobSpec, at_least, opt

SPECS: list[JobSpec] = []


@dataclass
class EvalParams:
    model: str | None = opt(None, "registered model (name or id), GGUF file or `local`, run"
                            " in-process")
    endpoint: str | None = opt(None, "configured endpoint name (or URL#MODEL, without"
                               " credentials, or `local` / `local:MODEL` in-process)")
    test: str | None = opt(None, "a trace file (imported into the test split first) or a"
                           " search query within the test split")
    judge: str | None = opt(None, "endpoint for llm_as_a_judge")
    max_tokens: int = opt(256, "tokens generated per turn at most")
    n_ctx: int | None = opt(None, "llama.cpp context size (default: the context the model was"
                            " trained for, at most 32,768)")
    threads: int = opt(2, "llama.cpp threads")
    timeout: float | None = opt(None, "seconds to wait for each reply of the endpoint and the"
                                " judge (default: the endpoint's `timeout`, else 60; one retry)")
    move_to_test: bool = opt(False, "traces of the --test file already stored in another split"
                             " (a leak) move to the test split instead of refusing")
    resume: bool = opt(False, "continue the newest unfinished run of this model on this test"
                       " selection (after a cancel, a failure or a kill)")

    def validate(self) -> None:
        from workbench.models.endpoints import check_url

        if (self.model is None) == (self.endpoint is None):
            raise ValueError("give exactly one of --model (a name, id or GGUF) or --endpoint")
        for ref in (self.endpoint, self.judge):
            if ref and "://" in ref:
                check_url(ref)   # before the job row stores it
        at_least("max_tokens", self.max_tokens, 1)
        at_least("n_ctx", self.n_ctx, 16)
        at_least("threads", self.threads, 1, high=1024)
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"--timeout must be a positive number of seconds, not"
                             f" {self.timeout}")


def run_eval(ctx: JobContext, selection: TraceFilter, params: EvalParams) -> dict:
    from workbench.models.chat_backend import open_backend
    from workbench.models.endpoints import get_endpoint
    from workbench.evaluation import evaluation_body, selection_for
    from workbench.models.refs import resolve_model

    ref = resolve_model(ctx.db, params.model) if params.model else None
    sel = selection_for(params.test, selection, move_to_test=params.move_to_test)
    judge = (get_endpoint(params.judge, db=ctx.db).with_timeout(params.timeout)
             if params.judge else None)
    backend = open_backend(ref.path if ref else None, params.endpoint, n_ctx=params.n_ctx,
                           n_threads=params.threads, timeout=params.timeout, db=ctx.db)
    try:
        return evaluation_body(backend, sel, max_tokens=params.max_tokens, judge_endpoint=judge,
                               resume=params.resume or ctx.resume,
                               model_id=ref.id if ref else None)(ctx)
    finally:
        backend.close()


SPECS.append(JobSpec("eval", "Predict every selected test turn with a model and score it",
                 EvalParams, run_eval, resumable=True, selection_defaults={"split": "test"}))
