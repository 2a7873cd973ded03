"""The pipeline file: its stages, their parameters and selections, read and validated before
anything runs; every error names the file, the line, the table and the key."""

from __future__ import annotations


import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from db.queries import SPLITS, TraceFilter
from workbench.jobs.fields import Field, check_values, fields_of
from workbench.traces.job import ImportParams

STAGES = ("import", "check", "normalize", "relevance", "relabel", "synth", "train", "eval")
TRAINED = "(the model of the [train] stage)"   # eval's model when the file names none
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
