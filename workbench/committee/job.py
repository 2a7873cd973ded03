"""The committee's jobs: relabel (members vote on doubtful turns) and relevance (a judge
says which traces are on the task)."""

from __future__ import annotations

from dataclasses import dataclass

from db.queries import TraceFilter
from workbench.jobs.context import JobContext
from workbench.jobs.spec import JobSpec, names, opt

SPECS: list[JobSpec] = []


def known_endpoint(name: str | None, param: str) -> None:
    """Refuse an endpoint name that is neither configured nor a URL#MODEL or local one,
    before a job row stores it (the job would fail only when it starts)."""
    from workbench.models.endpoints import LOCAL, check_url, endpoints
    from workbench.core.errors import InputError

    if not name or name == LOCAL or name.startswith(LOCAL + ":"):
        return
    if "://" in name:
        check_url(name)
        return
    try:
        found = endpoints()
    except InputError as e:
        raise ValueError(str(e)) from None
    if name not in found:
        raise ValueError(f"--{param}: unknown endpoint {name!r} (configured:"
                         f" {', '.join(found) or 'none'}; or give URL#MODEL, local or"
                         " local:MODEL)")


@dataclass
class RelabelParams:
    committee: list[str] = opt([], "the members: endpoint names from the config, URL#MODEL,"
                               " local (SmolLM2 in-process) or local:MODEL; comma list")
    arbiter: str | None = opt(None, "endpoint that settles a disagreement (called only then);"
                              " without one, disagreements go to the review queue")
    turns: str = opt("suspect", "which turns: suspect (an undecided error flag), all, or a"
                     " full-text query selecting turns")
    agree: str = opt("majority", "what decides: a strict majority of the members, or all of"
                     " them", choices=["majority", "unanimous"])
    accept: bool = opt(False, "accept the committee's decisions as labels; without it they are"
                       " proposed for review unless its agreement with the analyst is earned")

    def __post_init__(self) -> None:
        self.committee = names(self.committee)

    def validate(self) -> None:
        from workbench.committee.voting import RULES

        if not self.committee:
            raise ValueError("--committee names at least one endpoint (e.g. --committee A,B)")
        if len(set(self.committee)) != len(self.committee):
            raise ValueError("--committee names a member twice")
        if self.agree not in RULES:
            raise ValueError(f"--agree must be one of {', '.join(RULES)}")
        if not self.turns.strip():
            raise ValueError("--turns must be suspect, all or a query")
        for name in self.committee:
            known_endpoint(name, "committee")
        known_endpoint(self.arbiter, "arbiter")


def run_relabel(ctx: JobContext, selection: TraceFilter, params: RelabelParams) -> dict:
    from workbench.committee.relabel import run_committee
    from workbench.models.endpoints import get_endpoint

    members = [get_endpoint(n, db=ctx.db) for n in params.committee]
    arbiter = get_endpoint(params.arbiter, db=ctx.db) if params.arbiter else None
    ctx.log(f"committee: {', '.join(params.committee)}"
            + (f"; arbiter {params.arbiter}" if params.arbiter else ""))
    return run_committee(ctx, selection, members, arbiter, params.turns, params.agree,
                         accept=params.accept)


SPECS.append(JobSpec("relabel", "Relabel doubtful turns by a committee of LLMs (votes kept;"
                 " disagreements go to review)", RelabelParams, run_relabel, resumable=True))


# --------------------------------------------------------------------------------- relevance

@dataclass
class RelevanceParams:
    judge: str | None = opt(None, "the judge: an endpoint name from the config, URL#MODEL, local"
                            " or local:MODEL")

    def validate(self) -> None:
        if not (self.judge or "").strip():
            raise ValueError("--judge names the endpoint that judges (e.g. --judge A)")
        known_endpoint(self.judge, "judge")


def run_relevance(ctx: JobContext, selection: TraceFilter, params: RelevanceParams) -> dict:
    from workbench.committee.relevance import run_relevance as body
    from workbench.models.endpoints import get_endpoint

    judge = get_endpoint(params.judge, db=ctx.db)
    ctx.log(f"judge: {params.judge}")
    return body(ctx, selection, judge)


SPECS.append(JobSpec("relevance", "Judge whether each selected trace is on the task (off-task"
                 " traces get a trace-level error flag and leave training)", RelevanceParams,
                 run_relevance, resumable=True))
