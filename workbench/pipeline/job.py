"""The pipeline job (a pipeline file's stages as child jobs) and its direct-training baseline."""

from __future__ import annotations

from dataclasses import dataclass

from db.queries import TraceFilter
from workbench.training.job import TrainParams
from workbench.jobs.context import JobContext
from workbench.jobs.spec import JobSpec, opt

SPECS: list[JobSpec] = []


@dataclass
class PipelineParams:
    file: str | None = opt(None, "the pipeline file (TOML): a table per stage")
    from_stage: str | None = opt(None, "run this stage and the ones after it even if their"
                                 " inputs did not change")
    baseline: str | None = opt(None, "direct: also train the same way on the raw traces and"
                               " evaluate that model on the same test selection",
                               choices=["direct"])

    def validate(self) -> None:
        from workbench.pipeline import load_pipeline

        if not self.file:
            raise ValueError("give the pipeline file (workbench pipeline init writes one)")
        load_pipeline(self.file, from_stage=self.from_stage, baseline=self.baseline)


def run_pipeline(ctx: JobContext, selection: TraceFilter, params: PipelineParams) -> dict:
    from workbench.pipeline import run_pipeline as body

    return body(ctx, params)


SPECS.append(JobSpec("pipeline", "Run the stages of a pipeline file as child jobs (unchanged"
                 " stages are skipped, stopped ones resumed) and write its report",
                 PipelineParams, run_pipeline, resumable=True, in_app=False))


@dataclass
class DirectTrainParams(TrainParams):
    raw_store: str | None = opt(None, "the copy of the store holding the raw traces (made on"
                                " the first run: default OUTPUT/raw.db)")


def run_direct_train(ctx: JobContext, selection: TraceFilter, params: DirectTrainParams) -> dict:
    from workbench.pipeline import run_direct_train as body

    return body(ctx, selection, params)


SPECS.append(JobSpec("train-direct", "Train like `train` on the raw traces (originals, nothing"
                 " excluded, suspect turns trained on): a pipeline's --baseline direct",
                 DirectTrainParams, run_direct_train, resumable=True, in_app=False))
