"""Every job kind, by name: the one list the runner, the CLI, the app and the pipeline read.

Adding a kind is one new feature ``job.py`` (its ``Params``, its ``run`` and ``SPECS``) plus one
line here. Feature modules import their heavy dependencies inside ``run``, so listing the specs
stays cheap.
"""

from __future__ import annotations

from workbench.checks import job as checks_job
from workbench.committee import job as committee_job
from workbench.curation import job as curation_job
from workbench.evaluation import job as evaluation_job
from workbench.jobs.spec import JobSpec
from workbench.pipeline import job as pipeline_job
from workbench.synthesis import job as synthesis_job
from workbench.traces import job as traces_job
from workbench.training import job as training_job

FEATURES = (traces_job, checks_job, curation_job, training_job, evaluation_job, committee_job,
            synthesis_job, pipeline_job)
REGISTRY: dict[str, JobSpec] = {spec.kind: spec for feature in FEATURES for spec in feature.SPECS}


def get_spec(kind: str) -> JobSpec:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown job kind {kind!r} (known: {', '.join(REGISTRY)})") from None


def available_jobs() -> dict[str, JobSpec]:
    """The kinds the app offers to start on a selection (not the pipeline's own)."""
    return {k: s for k, s in REGISTRY.items() if s.in_app}
