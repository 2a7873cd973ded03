"""`workbench pipeline init`: a commented example file for the store's task, every stage and
parameter with its help, the stages that need no endpoint switched on."""

from __future__ import annotations


import json
import os
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from db.imports import imported_paths
from db.tasks import current_task
from workbench.jobs.fields import fields_of
from workbench.traces.job import ImportParams
from workbench.pipeline.config import STAGES, PipelineError

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
    files = imported_paths(db)
    task_file = (current_task(db) or {}).get("source")
    if task_file and os.path.isfile(task_file):
        files.append(os.path.abspath(task_file))
    files = [f for f in files if os.path.exists(f)]
    if not files:
        return []
    parents = {os.path.dirname(f) for f in files}
    chosen = sorted(parents) if len(parents) == 1 else files
    return [os.path.relpath(p, folder) for p in chosen]


def _max_length_now(db: Database) -> str:
    """What the train stage would size --max-length to on the store as it is (it sizes again
    when it runs, on the data it finds then)."""
    from workbench.models.hf_loading import BaseModelError
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
