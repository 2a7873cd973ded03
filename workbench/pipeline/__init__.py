"""`workbench pipeline`: the whole loop from one TOML file, as child jobs of one pipeline job.

A pipeline file has a table per stage, run in the order of :data:`STAGES`. A stage's table holds
its job's parameters under their own names (the fields of the spec's ``Params``, which are the
CLI options: ``--max-steps`` is ``max_steps``), validated by the spec, plus an optional
``selection`` sub-table (the selection options of the commands). ``[import]`` takes the import
command's ``paths``, ``split``, ``task`` and ``max_message_bytes``. A stage whose job kind is not
registered in this build (``synth`` before synthesis exists) is reported as not available.

Skipping and resuming. Each stage has a fingerprint: a content hash of its parameters and
selection, of the stage before it (a change upstream re-runs everything downstream) and of the
data the stages read. That last part is a key, not the data itself: when the store is exactly as
the previous pipeline run left it (traces, labels, flags, exclusions, task, settings:
``db.pipeline.data_state``), the previous run's key is kept, so what the stages wrote themselves
does not count as a change; anything else that changed the store (an import, an analyst's
decision, a check run by hand) gives a new key and the stages run again. ``[import]`` is keyed by
its files' SHA-256. A stage whose fingerprint matches a succeeded job is skipped; one whose job
stopped (failed, cancelled, interrupted) is resumed when its kind resumes (train, eval, relabel,
relevance, synth), else run again; ``--from STAGE`` runs that stage and the ones after it anyway.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from db import jobs as jobstore
from db import pipeline as pstore
from db.queries import SPLITS, TraceFilter
from workbench.jobs.fields import Field, check_values, fields_of
from workbench.traces.job import ImportParams
from workbench.jobs.context import (Cancelled, Interrupted, JobContext, JobEvent, Listener,
                                    LogLine, Progress, content_key)

STAGES = ("import", "check", "normalize", "relevance", "relabel", "synth", "train", "eval")
TRAINED = "(the model of the [train] stage)"   # eval's model when the file names none
RAW_DROP = ("check", "flagged", "excluded", "status", "has_revisions")   # no flags, no labels
RAW_DEFINITION = (
    "raw = every imported trace outside the test split with its original labels (no"
    " normalisation, no committee or analyst revision), none left out (not the checks', the"
    " relevance judge's nor the analyst's exclusions), suspect turns trained on (suspect ="
    " train), no synthetic traces; identical traces are stored once at import. Same training"
    " parameters and selection otherwise, evaluated with the same parameters on the same test"
    " selection.")


class PipelineError(ValueError):
    """A pipeline file that can't run: names the file, line, table and key."""


# ------------------------------------------------------------------------------ the file

@dataclass
class StageConfig:
    name: str
    params: Any                    # the spec's Params; a dict for import; None: not available
    selection: TraceFilter = field(default_factory=TraceFilter)
    available: bool = True
    model_from_train: bool = False

    @property
    def kind(self) -> str:
        return self.name


@dataclass
class PipelineConfig:
    path: Path
    stages: dict[str, StageConfig]
    from_stage: str | None = None
    baseline: str | None = None


def _line_of(text: str, table: str, key: str | None) -> int | None:
    """Best effort: the line of `key` in `[table]` (or of the table's header)."""
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        head = re.match(r"\s*\[\s*([^\]]+?)\s*\]", line)
        if head:
            current = head.group(1).replace(" ", "").replace('"', "")
            if key is None and current == table:
                return n
            continue
        if key is not None and current == table and re.match(
                rf"\s*\"?{re.escape(key)}\"?\s*=", line):
            return n
    return None


class _Where:
    """Builds errors that point into the file."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text

    def error(self, table: str, key: str | None, message: str) -> PipelineError:
        line = _line_of(self.text, table, key)
        loc = f"{self.path}:{line}" if line else str(self.path)
        return PipelineError(f"{loc}: [{table}]{' ' + key if key else ''}: {message}")


def _key_named(message: str, table: dict) -> str | None:
    """The table's key a parameter's error is about (`--max-steps`, `max_steps`), so that
    the error points at its line."""
    for key in table:
        if re.search(rf"(?<![\w-])(--)?({re.escape(key)}|{re.escape(key.replace('_', '-'))})"
                     r"(?![\w-])", message):
            return key
    return None


def _check_types(where: _Where, table: str, values: dict, fields: list[Field]) -> dict:
    """The table's values, typed by the stage's fields (`workbench.jobs.fields`), by field
    name; an unknown key or a value of the wrong type is an error naming file, table and key."""
    try:
        return check_values(fields, values)
    except KeyError as e:
        known = ", ".join(k for f in fields for k in f.keys[:1])
        raise where.error(table, e.args[0], f"unknown parameter (known: {known})") from None
    except ValueError as e:
        key, message = e.args
        raise where.error(table, key, message) from None


def _selection(where: _Where, stage: str, data: Any) -> TraceFilter:
    table = f"{stage}.selection"
    if data is None:
        return TraceFilter()
    if not isinstance(data, dict):
        raise where.error(stage, "selection", "must be a table ([STAGE.selection])")
    fields = fields_of(TraceFilter)
    try:
        values = check_values(fields, data)
    except KeyError as e:
        known = ", ".join(f.keys[0] for f in fields)
        raise where.error(table, e.args[0], f"unknown selection option (known: {known})"
                          ) from None
    except ValueError as e:
        key, message = e.args
        raise where.error(table, key, message) from None
    try:
        return TraceFilter.from_dict(values)
    except (TypeError, ValueError) as e:
        raise where.error(table, None, str(e)) from None


def _import_stage(where: _Where, table: dict) -> StageConfig:
    table = _check_types(where, "import", table, fields_of(ImportParams))
    paths = table.get("paths")
    if not paths:
        raise where.error("import", "paths", "give the files or folders to import")
    if isinstance(paths, str):
        paths = [paths]
    if table.get("split") is not None and table["split"] not in SPLITS:
        raise where.error("import", "split", f"must be one of {', '.join(SPLITS)}")
    base = where.path.parent
    resolved = [str((base / p).resolve()) for p in paths]
    for given, p in zip(paths, resolved, strict=True):
        if not os.path.exists(p):
            raise where.error("import", "paths", f"{given}: no such file or folder")
    task = table.get("task")
    if task is not None:
        task = str((base / task).resolve())
        if not os.path.isfile(task):
            raise where.error("import", "task", f"{table['task']}: no such file")
    params = {"paths": resolved, "split": table.get("split"), "task": task,
              "max_message_bytes": table.get("max_message_bytes")}
    if table.get("outcome"):   # only when given: older pipelines keep their import's key
        params["outcome"] = table["outcome"]
    return StageConfig("import", params)


def load_pipeline(file: str | Path, *, from_stage: str | None = None,
                  baseline: str | None = None) -> PipelineConfig:
    """Read and validate a pipeline file; every error names the file, the line where it can,
    the table and the key."""
    from workbench.jobs.registry import REGISTRY

    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: cannot read the pipeline file: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PipelineError(f"{path}: not valid TOML: {e}") from None
    where = _Where(path, text)
    stages: dict[str, StageConfig] = {}
    for name, table in data.items():
        if name not in STAGES:
            raise where.error(name, None, f"unknown stage (stages, in the order they run:"
                              f" {', '.join(STAGES)})")
        if not isinstance(table, dict):
            raise PipelineError(f"{path}:{_line_of(text, '', name) or '?'}: {name}: a stage is"
                                f" a table ([{name}]), not a value")
    for name in STAGES:
        if name not in data:
            continue
        table = dict(data[name])
        if name == "import":
            if "selection" in table:
                raise where.error("import", "selection", "import takes no selection")
            stages[name] = _import_stage(where, table)
            continue
        selection = _selection(where, name, table.pop("selection", None))
        spec = REGISTRY.get(name)
        if spec is None:
            stages[name] = StageConfig(name, None, selection, available=False)
            continue
        table = _check_types(where, name, table, fields_of(spec.Params))
        from_train = (name == "eval" and table.get("model") is None
                      and table.get("endpoint") is None)
        if from_train:
            if "train" not in data:
                raise where.error("eval", None, "give model (a registered name or id, or a GGUF"
                                  " file) or endpoint, or add a [train] stage whose model it"
                                  " evaluates")
            if data["train"].get("gguf") == "none":
                raise where.error("train", "gguf", "is \"none\": the model [eval] would"
                                  " evaluate has no GGUF (give [eval] a model)")
            table["model"] = TRAINED
        try:
            params = spec.make_params(table)
            spec.make_selection(selection)
        except (TypeError, ValueError) as e:
            raise where.error(name, _key_named(str(e), table), str(e)) from None
        stages[name] = StageConfig(name, params, spec.make_selection(selection),
                                   model_from_train=from_train)
    if not stages:
        raise PipelineError(f"{path}: no stages (tables named {', '.join(STAGES)})")
    if from_stage is not None and from_stage not in stages:
        raise PipelineError(f"--from {from_stage}: {path} has no [{from_stage}] stage (it has"
                            f" {', '.join(stages)})")
    if baseline is not None:
        if baseline != "direct":
            raise PipelineError(f"--baseline must be direct, not {baseline!r}")
        missing = [s for s in ("train", "eval") if s not in stages]
        if missing:
            raise PipelineError(f"--baseline direct trains and evaluates like the pipeline:"
                                f" {path} needs [{'] and ['.join(missing)}]")
    return PipelineConfig(path.resolve(), stages, from_stage, baseline)


# -------------------------------------------------------------------------- pipeline init

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return "..."
    return json.dumps(str(value), ensure_ascii=False)


# a run of the whole loop in minutes on a laptop's CPU (see the README's quick start)
QUICK = {"train": {"max_steps": 2, "seqs_per_step": 4}, "eval": {"threads": 1}}
ON = ("import", "check", "normalize", "train", "eval")


def _import_paths(db: Database, folder: Path) -> list[str]:
    """The files the store was filled from, relative to `folder`: their folder when they share
    one."""
    files = [r[0] for r in db.execute("SELECT DISTINCT path FROM imports WHERE status ="
                                      " 'complete' ORDER BY path")]
    task = db.execute("SELECT source FROM tasks ORDER BY id DESC LIMIT 1").fetchone()
    if task and task[0] and os.path.isfile(task[0]):
        files.append(os.path.abspath(task[0]))
    files = [f for f in files if os.path.exists(f)]
    if not files:
        return []
    parents = {os.path.dirname(f) for f in files}
    chosen = sorted(parents) if len(parents) == 1 else files
    return [os.path.relpath(p, folder) for p in chosen]


def _max_length_now(db: Database) -> str:
    """What the train stage would size --max-length to on the store as it is (it sizes again
    when it runs, on the data it finds then)."""
    from workbench.hf_loading import BaseModelError
    from workbench.training.sizing import describe, size_for_store

    try:
        sized = size_for_store(db)
    except (BaseModelError, ImportError, OSError, ValueError) as e:
        return f"sized from the data when the stage runs ({' '.join(str(e).split())[:80]})"
    if sized is None:
        return "sized from the data when the stage runs (no training data in the store yet)"
    return f"now: {describe(sized)}; sized again when the stage runs"


def init_text(db: Database, target: Path) -> str:
    """A commented example pipeline for the store's task: every stage and every parameter with
    its help, the stages that need no endpoint switched on."""
    from db.models import list_models
    from db.tasks import current_task, current_tools
    from workbench.jobs.registry import REGISTRY

    task = current_task(db) or {}
    tools = [t["function"]["name"] for t in current_tools(db) or [] if "function" in t]
    models = sorted({m["name"] for m in list_models(db) if m["kind"] == "gguf"})
    desc = (task.get("description") or "").strip().splitlines()
    out = [
        "# A workbench pipeline: `workbench pipeline run pipeline.toml` runs the stages below in",
        "# this order, each as a job under one pipeline job, and writes a report",
        "# (runs/pipeline-ID/report.md). A stage runs when its table is here:",
        f"# {', '.join(STAGES)}.",
        "# Each table takes its command's options under their own names (`workbench train",
        "# --max-steps 2` is max_steps = 2; see `workbench COMMAND --help`) and an optional",
        "# [STAGE.selection] table of the selection options: split, origin, status, tool, check,",
        "# flagged, excluded, search, limit, trace_id.",
        "# Running it again skips every stage whose parameters and data did not change and",
        "# resumes a stopped one; `--from STAGE` runs a stage and the ones after it anyway.",
    ]
    if desc:
        out.append(f"# Task: {desc[0][:100]}")
    if tools:
        out.append(f"# Tools: {', '.join(tools)}")
    out.append("")
    paths = _import_paths(db, target.resolve().parent)
    out.append("[import]" if paths else "# [import]")
    import_help = {f.name: f.help for f in fields_of(ImportParams)}
    out.append("# " + import_help["paths"] + " (relative to this file)")
    out.append(f"paths = {_toml_value(paths)}" if paths else '# paths = ["traces.jsonl"]')
    for key in ("split", "task"):
        out.append(f"# {key} = ...    # {import_help[key]}")
    for name in STAGES[1:]:
        spec = REGISTRY.get(name)
        out.append("")
        if spec is None:
            out.append(f"# [{name}] is not available in this version of workbench")
            continue
        on = name in ON
        out.append(("" if on else "# ") + f"[{name}]    # {spec.description}")
        if name == "eval":
            out.append("# without model or endpoint: the model the [train] stage produced"
                       + (f"; registered models: {', '.join(models[-5:])}" if models else ""))
        quick = QUICK.get(name, {})
        for f in spec.fields():
            if f.name in ("output", "resume", "name") and name == "train":
                continue   # the pipeline's jobs choose their folders and resume themselves
            if f.name == "resume":
                continue
            choices = " | ".join(map(str, f.choices or ()))
            out.append(f"# {f.help}" + (f" ({choices})" if choices else ""))
            if name == "train" and f.name == "max_length":
                out.append(f"#   {_max_length_now(db)}")
            if on and f.name in quick:
                out.append(f"{f.name} = {_toml_value(quick[f.name])}")
            else:
                out.append(f"# {f.name} = {_toml_value(f.default)}")
        if name == "eval":
            out.append("# [eval.selection]    # default: the test split")
            out.append("# limit = 2           # the first 2 test conversations: a quicker"
                       " evaluation")
    return "\n".join(out) + "\n"


def write_init(db: Database, target: Path) -> str:
    """Write the example to `target`, never over an existing file."""
    text = init_text(db, target)
    try:
        with open(target, "x", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError:
        raise PipelineError(f"{target} already exists: not overwritten (remove it or name"
                            " another file)") from None
    return text


# ----------------------------------------------------------------------------- running it

def _file_hashes(paths: list[str], task: str | None) -> list[list[str]]:
    from workbench.importing import expand_paths

    files = expand_paths(paths) + ([Path(task)] if task else [])
    out = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out.append([str(f), h.hexdigest()])
    return out


class _Run:
    def __init__(self, ctx: JobContext, cfg: PipelineConfig) -> None:
        self.ctx, self.db, self.cfg = ctx, ctx.db, cfg
        self.rows: dict[str, dict] = {}
        self.data_key: str | None = None
        self.folder = Path(f"runs/pipeline-{ctx.job_id}")

    # the data key: kept from the previous run when the store is as that run left it
    def _ensure_data_key(self) -> None:
        if self.data_key is not None:
            return
        state = pstore.data_state(self.db)
        prev = pstore.last_run_with_state(self.db)
        same = prev is not None and content_key(prev["state"]) == content_key(state)
        self.data_key = prev["data_key"] if same else content_key(state)
        self.ctx.log("data: as the last pipeline run left it" if same else
                     "data: changed since the last pipeline run (or none ran): its stages run")
        pstore.set_run(self.db, self.ctx.job_id, data_key=self.data_key, state=state)

    def _save_state(self) -> None:
        if self.data_key is not None:
            pstore.set_run(self.db, self.ctx.job_id, state=pstore.data_state(self.db))

    def _forward(self, stage: str, child: int) -> list[Listener]:
        """A child's progress and log, shown as the pipeline's; a cancel of the pipeline
        cancels the child."""
        def listener(event: JobEvent) -> None:
            if isinstance(event, Progress):
                text = f"{stage}: {event.message}" if event.message else stage
                self.ctx.emit(Progress(event.done, event.total, text))
                if jobstore.cancel_requested(self.db, self.ctx.job_id):
                    jobstore.request_cancel(self.db, child)
            elif isinstance(event, LogLine):
                self.ctx.emit(LogLine(f"{stage}: {event.text}"))
            else:
                self.ctx.emit(event)
        return [listener]

    def stage(self, stage: str, kind: str, params: Any, selection: TraceFilter | None,
              fingerprint: str, forced: bool) -> dict:
        """Skip, resume or run one stage; returns its (succeeded) job row."""
        from workbench.jobs.registry import REGISTRY
        from workbench.jobs.runner import execute, resume, submit

        spec = REGISTRY.get(kind)
        prior_id = None if forced else pstore.last_stage_job(self.db, stage, fingerprint)
        prior = jobstore.get_job(self.db, prior_id) if prior_id else None
        run_id = self.ctx.job_id
        if prior is not None and prior["status"] == "succeeded":
            pstore.add_stage(self.db, run_id, stage, fingerprint, prior_id, "skipped")
            self.ctx.log(f"{stage}: unchanged since job {prior_id}: skipped")
            self.rows[stage] = prior
            return prior
        if prior is not None and prior["status"] == "running":
            raise RuntimeError(f"stage {stage} is running as job {prior_id} (another pipeline"
                               " run?): wait for it or cancel it (workbench jobs cancel"
                               f" {prior_id})")
        if (prior is not None and prior["status"] in ("failed", "cancelled", "interrupted")
                and spec is not None and spec.resumable):
            resume(self.db, prior_id)
            job_id, action = prior_id, "resumed"
        elif prior is not None and prior["status"] == "queued":
            job_id, action = prior_id, "ran"
        else:
            job_id = submit(self.db, kind, selection, params, parent_id=run_id)
            action = "forced" if forced else "ran"
        pstore.add_stage(self.db, run_id, stage, fingerprint, job_id, action)
        self.ctx.log(f"{stage}: job {job_id} ({action})")
        try:
            row = execute(self.db, job_id, listeners=self._forward(stage, job_id),
                          resume=action == "resumed")
        finally:
            self._save_state()
        self.rows[stage] = row
        if row["status"] == "succeeded":
            return row
        message = f"stage {stage} (job {job_id}) {row['status']}: {row['error'] or ''}"
        if row["status"] == "cancelled":
            raise Cancelled(message)
        if row["status"] == "interrupted":
            raise Interrupted(message)
        raise RuntimeError(message)

    def trained_model(self) -> str:
        result = self.rows["train"]["result"] or {}
        gguf = (result.get("model_ids") or {}).get("gguf")
        if gguf is None:
            raise RuntimeError(f"the train stage (job {self.rows['train']['id']}) wrote no GGUF"
                               " to evaluate")
        return str(gguf)

    def run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        pstore.start_run(self.db, ctx.job_id, str(cfg.path))
        names = list(cfg.stages)
        total = len(names) + (2 if cfg.baseline else 0)
        order = {s: i for i, s in enumerate(STAGES)}
        start = order[cfg.from_stage] if cfg.from_stage else len(STAGES)
        upstream = ""
        fps: dict[str, str] = {}
        for i, name in enumerate(names):
            st = cfg.stages[name]
            ctx.progress(i, total, f"{name}: starting")
            if name != "import":
                self._ensure_data_key()
            if not st.available:
                pstore.add_stage(self.db, ctx.job_id, name, "", None, "unavailable")
                ctx.log(f"{name}: not available in this version of workbench: skipped")
                continue
            if name == "import":
                params = st.params
                key: Any = {"stage": name, "params": params,
                            "files": _file_hashes(params["paths"], params["task"])}
                sel = None
            else:
                params = st.params
                if st.model_from_train:
                    params = dataclasses.replace(params, model=self.trained_model())
                params = dataclasses.asdict(params)
                sel = st.selection
                key = {"stage": name, "params": params, "selection": sel.to_dict(),
                       "upstream": upstream, "data": self.data_key}
            fps[name] = upstream = content_key(key)
            self.stage(name, name, params, sel, upstream, forced=order[name] >= start)
        self._ensure_data_key()
        self._save_state()
        if cfg.baseline == "direct":
            self.direct(fps, total, forced_train=start <= order["train"],
                        forced_eval=start <= order["eval"])
        ctx.progress(total, total, "writing the report")
        report = build_report(self.db, ctx.job_id, cfg, self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "report.md").write_text(report_markdown(report), encoding="utf-8")
        (self.folder / "report.json").write_text(json.dumps(report, indent=2, default=str),
                                                 encoding="utf-8")
        ctx.log(f"report: {self.folder / 'report.md'}")
        return report

    def direct(self, fps: dict[str, str], total: int, *, forced_train: bool,
               forced_eval: bool) -> None:
        """--baseline direct: the train stage's parameters on the raw traces, evaluated like
        the eval stage (see RAW_DEFINITION)."""
        train, ev = self.cfg.stages["train"], self.cfg.stages["eval"]
        self.ctx.progress(total - 2, total, "direct-train: starting")
        params = {**dataclasses.asdict(train.params), "suspect": "train", "output": None,
                  "name": None, "resume": False}
        sel = raw_selection(train.selection)
        key = {"stage": "direct-train", "params": params, "selection": sel.to_dict(),
               "raw": pstore.raw_state(self.db), "import": fps.get("import")}
        fp = content_key(key)
        row = self.stage("direct-train", "train-direct", params, sel, fp, forced=forced_train)
        gguf = (row["result"].get("model_ids") or {}).get("gguf")
        if gguf is None:
            raise RuntimeError(f"the direct training (job {row['id']}) wrote no GGUF")
        self.ctx.progress(total - 1, total, "direct-eval: starting")
        eparams = dataclasses.asdict(dataclasses.replace(ev.params, model=str(gguf)))
        key = {"stage": "direct-eval", "params": eparams, "selection": ev.selection.to_dict(),
               "upstream": [fp, fps.get("eval")]}
        self.stage("direct-eval", "eval", eparams, ev.selection, content_key(key),
                   forced=forced_eval)


def raw_selection(selection: TraceFilter) -> TraceFilter:
    """The train stage's selection for the raw traces: imported ones, nothing about flags or
    labels (the raw copy has none)."""
    data = {k: v for k, v in selection.to_dict().items() if k not in RAW_DROP}
    return TraceFilter.from_dict({**data, "origin": "imported"})


def run_pipeline(ctx: JobContext, params: Any) -> dict:
    cfg = load_pipeline(params.file, from_stage=params.from_stage, baseline=params.baseline)
    return _Run(ctx, cfg).run()


# ------------------------------------------------------------------ the direct baseline

def make_raw_store(db: Database, path: Path) -> None:
    """A copy of the store with the raw traces: originals only (no revisions), no flags, no
    exclusion decisions. A throwaway file beside the model it trains."""
    from db import open_db
    from db.tx import write_tx

    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    db.execute("VACUUM INTO ?", [str(path)])
    raw = open_db(path, migrate=False)
    try:
        raw.execute("PRAGMA foreign_keys = OFF")   # a copy: its committee rows go with them
        with write_tx(raw):
            for table in ("votes", "committee_turns", "revisions", "flags",
                          "exclusion_decisions"):
                raw.execute(f"DELETE FROM {table}")
            raw.execute("UPDATE traces SET excluded = NULL")
    finally:
        raw.conn.close()


def run_direct_train(ctx: JobContext, selection: TraceFilter, params: Any) -> dict:
    from db import open_db
    from db.models import list_models, register_model
    from workbench.training.trainer import train

    cfg = params.config(ctx.job_id, resume=ctx.resume)
    raw_path = Path(params.raw_store or Path(cfg.output) / "raw.db")
    if not (cfg.resume and raw_path.exists()):
        ctx.progress(0, None, "copying the raw traces")
        make_raw_store(ctx.db, raw_path)
        ctx.log(f"raw traces: {raw_path} (originals, no flags, nothing excluded)")
    raw = open_db(raw_path)
    try:
        result = train(raw, cfg, params.data(selection), ctx=ctx)
        raw_models = {m["id"]: m for m in list_models(raw)}
    finally:
        raw.conn.close()
    ids = {}
    for kind, raw_id in result["model_ids"].items():   # registered here too: eval runs it
        m = raw_models[raw_id]
        ids[kind] = register_model(ctx.db, name=m["name"], kind=m["kind"], path=m["path"],
                                   base_model=m["base_model"], job_id=ctx.job_id,
                                   data_selection={**(m["data_selection"] or {}),
                                                   "raw_store": str(raw_path.resolve()),
                                                   "raw": RAW_DEFINITION},
                                   config=m["config"], metrics=m["metrics"])
    ctx.log(f"registered the direct model {result['name']}: {ids}")
    return {**result, "model_ids": ids, "raw_store": str(raw_path.resolve())}


# ---------------------------------------------------------------------------- the report

METRIC_KEYS = ("decision", "staged_tool_call", "tool_call_equivalence", "function_match",
               "rouge_l", "text_rouge_l", "llm_as_a_judge")   # as `workbench eval` reports


def _eval_summary(db: Database, row: dict | None) -> dict | None:
    from workbench.evaluation import report

    if row is None or not (row.get("result") or {}).get("run_id"):
        return None
    rep = report(db, row["result"]["run_id"], worst=0)
    m = rep["metrics"]
    floor = rep.get("floor")
    return {"job_id": row["id"], "run_id": rep["run_id"], "model": rep["model_ref"],
            "turns": m.get("n"), "errors": m.get("errors", 0),
            "call_turns": m.get("call_turns"), "text_turns": m.get("text_turns"),
            "confusion": rep["confusion"],
            "metrics": {k: m[k] for k in METRIC_KEYS if k in m},
            "floor": floor and {k: floor.get(k) for k in ("function", "arguments",
                                                          "decision_label", "text")}
            | {k: floor[k] for k in METRIC_KEYS if k in floor}}


def _delta(a: dict, b: dict) -> dict:
    return {k: round(a[k] - b[k], 6) for k in a if k in b}


def _train_summary(row: dict | None) -> dict | None:
    if row is None or not row.get("result"):
        return None
    r, m = row["result"], row["result"].get("metrics") or {}
    return {"job_id": row["id"], "model": r.get("name"), "model_ids": r.get("model_ids"),
            "gguf": r.get("gguf"), "steps": m.get("steps"), "first_loss": m.get("first_loss"),
            "last_loss": m.get("last_loss"), "tokens_per_s": m.get("tokens_per_s"),
            "runtime_s": m.get("runtime_s"), "sequences": m.get("data_sequences"),
            "tokens_seen": m.get("tokens_seen"), "max_length": _max_length_of(r.get("plan"))}


def _max_length_of(plan: dict | None) -> str | None:
    """The sequence length a training run used, and why (sized from the data, or given)."""
    if not plan or not plan.get("max_length"):
        return None
    if plan.get("sizing"):
        from workbench.training.sizing import describe

        return describe(plan["sizing"])
    return f"--max-length {plan['max_length']:,} (given)"


def build_report(db: Database, run_id: int, cfg: PipelineConfig, folder: Path) -> dict:
    stages = []
    rows: dict[str, dict] = {}
    for s in pstore.stages_of(db, run_id):
        job = jobstore.get_job(db, s["job_id"]) if s["job_id"] else None
        if job is not None:
            rows[s["stage"]] = job
        stages.append({"stage": s["stage"], "action": s["action"], "job_id": s["job_id"],
                       "status": job["status"] if job else None})
    evaluation = _eval_summary(db, rows.get("eval"))
    if evaluation is not None:
        for prev in pstore.previous_stage_result(db, run_id, "eval"):
            prev_run = (prev["result"] or {}).get("run_id")
            if prev_run and prev_run != evaluation["run_id"]:
                before = _eval_summary(db, {"id": prev["job_id"], "result": prev["result"]})
                if before is not None:
                    evaluation["previous"] = {"pipeline_job": prev["run_id"], **before,
                                              "delta": _delta(evaluation["metrics"],
                                                              before["metrics"])}
                break
    baseline = None
    if cfg.baseline == "direct":
        direct_eval = _eval_summary(db, rows.get("direct-eval"))
        baseline = {"kind": "direct", "definition": RAW_DEFINITION,
                    "training": _train_summary(rows.get("direct-train")),
                    "evaluation": direct_eval,
                    "delta": (_delta(evaluation["metrics"], direct_eval["metrics"])
                              if evaluation and direct_eval else None)}
    return {"pipeline_job": run_id, "file": str(cfg.path), "folder": str(folder),
            "stages": stages, "data": pstore.data_counts(db),
            "training": _train_summary(rows.get("train")), "evaluation": evaluation,
            "baseline": baseline}


DATA_ROWS = (("traces", "traces (not test)"), ("turns", "assistant turns"),
             ("suspect_turns", "suspect turns (masked in training)"),
             ("excluded", "excluded traces"), ("relabelled", "relabelled turns"),
             ("synthetic", "synthetic traces"))


def _md(text: Any) -> str:
    """Untrusted text in a Markdown table cell: control characters spelled out, no pipes."""
    from workbench.safe_text import visible

    return visible(text).replace("|", "\\|").replace("\n", " ")


def _num(v: Any, fmt: str = "{:.4f}") -> str:
    if v is None:
        return "-"
    return fmt.format(v) if isinstance(v, float) else str(v)


def report_markdown(rep: dict) -> str:
    out = [f"# Pipeline run {rep['pipeline_job']}", "", f"File: `{_md(rep['file'])}`", "",
           "## Stages", "", "| stage | action | job | status |", "|---|---|---|---|"]
    for s in rep["stages"]:
        out.append(f"| {s['stage']} | {s['action']} | {_num(s['job_id'])} |"
                   f" {s['status'] or '-'} |")
    d = rep["data"]
    out += ["", "## Data", "", "Before curation: the traces as imported; after: what training"
            " reads (not the test split, not excluded).", "",
            "| | before | after |", "|---|---|---|"]
    for key, label in DATA_ROWS:
        out.append(f"| {label} | {_num(d['raw'][key])} | {_num(d['curated'][key])} |")
    for name, o in (d.get("outcomes") or {}).items():
        out.append(f"| outcome {_md(name)}: mean (traces) | {_num(o['raw']['mean'])}"
                   f" ({o['raw']['traces']}) | {_num(o['curated']['mean'])}"
                   f" ({o['curated']['traces']}) |")
    if d["relabelled_by"]:
        out.append("")
        out.append("Relabelled by: " + ", ".join(f"{k} {v}" for k, v in
                                                  d["relabelled_by"].items()))
    out.append("")
    out.append(f"Test split: {d['test']['traces']} traces, {d['test']['turns']} assistant turns.")
    t = rep["training"]
    if t:
        out += ["", "## Training", "", f"Model `{_md(t['model'])}` (job {t['job_id']}):"
                f" {_num(t['steps'])} steps, {_num(t['tokens_seen'])} tokens trained (data:"
                f" {_num(t['sequences'])} sequences), loss"
                f" {_num(t['first_loss'])} -> {_num(t['last_loss'])},"
                f" {_num(t['tokens_per_s'], '{:.1f}')} tokens/s,"
                f" {_num(t['runtime_s'], '{:.1f}')} s."]
        if t.get("max_length"):
            out.append(f"Sequence length: {_md(t['max_length'])}.")
    e = rep["evaluation"]
    if e:
        b = rep.get("baseline") or {}
        be = b.get("evaluation")
        prev = e.get("previous")
        out += ["", "## Evaluation", "", f"Run {e['run_id']} of `{_md(e['model'])}`:"
                f" {_num(e['turns'])} turns scored" + (f", {e['errors']} without a reply"
                                                       if e["errors"] else "")
                + (f" ({_num(e.get('call_turns'))} call turns, {_num(e.get('text_turns'))}"
                   " with text)" if e.get("call_turns") is not None else "") + "."
                + " `decision` is every turn's choice (text, or which tools); the call"
                " metrics are over call turns, `text_rouge_l` over turns with text."]
        if prev:
            out.append(f"Change against the previous pipeline run ({prev['pipeline_job']},"
                       f" evaluation run {prev['run_id']}).")
        head = ["metric", "curated"]
        if prev:
            head.append("change vs previous run")
        if be:
            head += ["direct", "curated - direct"]
        out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k, v in e["metrics"].items():
            cells = [k, _num(v)]
            if prev:
                cells.append(_num(prev["delta"].get(k), "{:+.4f}"))
            if be:
                cells += [_num(be["metrics"].get(k)), _num((b["delta"] or {}).get(k),
                                                           "{:+.4f}")]
            out.append("| " + " | ".join(cells) + " |")
        f = e.get("floor") or {}
        if f.get("decision_label") is not None:
            out += ["", f"The commonest decision on every turn (`{_md(f['decision_label'])}`)"
                    f" would score decision {_num(f.get('decision'))}."]
        if f.get("function") is not None:
            out += ["", f"The same call on every call turn (`{_md(f['function'])}` with the"
                    " commonest arguments) would score staged"
                    f" {_num(f['staged_tool_call'])}, function match"
                    f" {_num(f['function_match'])}: a model below that has not learned when"
                    " to call which tool."]
        if f.get("text_rouge_l") is not None:
            out += ["", "The commonest reference text on every text turn would score"
                    f" text_rouge_l {_num(f['text_rouge_l'])}."]
        if e.get("confusion"):
            out += ["", "Decisions (rows: the reference turn's, columns: the model's):", ""]
            cols = sorted({p for row in e["confusion"].values() for p in row})
            out += ["| reference | " + " | ".join(_md(c) for c in cols) + " |",
                    "|---|" + "---|" * len(cols)]
            for ref, row in e["confusion"].items():
                out.append(f"| {_md(ref)} | " + " | ".join(str(row.get(c, "")) for c in cols)
                           + " |")
    b = rep.get("baseline")
    if b:
        bt = b["training"]
        out += ["", "## Direct baseline", "", b["definition"]]
        if bt:
            out += ["", f"Model `{_md(bt['model'])}` (job {bt['job_id']}): {_num(bt['steps'])}"
                    f" steps, {_num(bt['tokens_seen'])} tokens trained (data: {_num(bt['sequences'])}"
                    f" sequences), loss {_num(bt['first_loss'])}"
                    f" -> {_num(bt['last_loss'])}, {_num(bt['tokens_per_s'], '{:.1f}')}"
                    " tokens/s."]
    return "\n".join(out) + "\n"
