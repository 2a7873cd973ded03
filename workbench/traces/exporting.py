"""Exporting current labels: OpenAI chat JSONL, per-turn pairs, and a `datasets`-ready file.

| format | a line |
|---|---|
| `openai` | `{"messages": [...], "tools": [...], ...metadata, "meta": {"source", "line", "trace_id"}, "outcomes"}` (arguments as JSON strings, as the OpenAI API has them; the record's other keys, a turn's `weight` and the `developer` / `function` roles it came with written back) |
| `pairs`  | `{"question": "<JSON messages before the turn>", "answer": "<the turn: one call as JSON {name, parameters}, else its text then each call in <tool_call> tags>", "context": null, "meta": {..., "message_index"}}`: the benchmark's question/answer format, one line per assistant turn |
| `hf`     | like `openai` but `tools` is a JSON string, so every line has the same Arrow schema and `datasets.load_dataset("json", data_files=...)` reads it |

and the trainers' formats of workbench.traces.trainer_exports (`llamafactory`, `axolotl`, `trl`).

An assistant turn is written as it is labelled: text (`content`), calls (`tool_calls`, each with
its id, parallel calls in order) or both, and each tool result answers its call by id. Where a
label no longer matches the results logged after the turn (a call turned into text, text into a
call), the conversation ends with that turn (`turns.exportable`), so every line is valid chat
data and re-imports as it was written.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from sqlite_utils import Database

from db.queries import TraceFilter
from workbench.traces import trainer_exports
from workbench.traces.chat_formats import to_openai_extra
from workbench.conversations.view import Conversation, iter_conversations, task_context
from workbench.core.errors import InputError
from workbench.conversations.messages import per_turn_pairs, to_benchmark_question, to_openai, turn_answer
from workbench.core.safe_text import visible_json

FORMATS = ("openai", "pairs", "hf", *trainer_exports.FORMATS)
STDOUT = "-"

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def _refuse_unless_regular(path: Path, what: str) -> None:
    """The export renames OUT.part over OUT: that would turn a device, pipe, link or folder into
    a plain file, so only a regular file (or nothing) may be there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise InputError(f"{what} exists and is not a regular file ({kind}); not replacing it"
                     " (write to a new file, or '-' for standard output)", path=str(path))


def export(db: Database, out: str | Path, fmt: str, flt: TraceFilter | None = None,
           *, progress: Callable[[int], None] | None = None,
           stdout: TextIO | None = None) -> dict:
    """Write the selected traces with their current labels; returns counts.

    `out` is a file, replaced only once complete and only if it is a regular file (or does not
    exist), or `-`: the lines go straight to standard output (`stdout`, default sys.stdout)."""
    check_format(fmt)
    flt = flt or TraceFilter()
    notes: dict[str, int] = {}
    if str(out) == STDOUT:
        fh = stdout if stdout is not None else sys.stdout
        # on a terminal, bidi, zero-width and C1 characters are JSON-escaped as the tables
        # escape them (the lines parse to the same values); a pipe or file gets exact bytes
        escape = visible_json if _is_terminal(fh) else None
        traces, lines = _write(db, fh, fmt, flt, progress, notes, escape)
        fh.flush()
        return {"traces": traces, "lines": lines, "format": fmt, "path": STDOUT,
                **_notes(notes)}
    out = Path(out)
    tmp = Path(str(out) + ".part")
    _refuse_unless_regular(out, "the output")
    _refuse_unless_regular(tmp, "the temporary file")
    info = out.parent / "dataset_info.json"
    if fmt == "llamafactory":
        _refuse_unless_regular(info, "dataset_info.json")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            traces, lines = _write(db, fh, fmt, flt, progress, notes)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _refuse_unless_regular(out, "the output")  # nothing took its place meanwhile
    tmp.replace(out)  # a failed export never leaves a half-written file under the real name
    result = {"traces": traces, "lines": lines, "format": fmt, "path": str(out), **_notes(notes)}
    if fmt == "llamafactory":
        result["dataset_info"] = str(_write_dataset_info(info, out, notes.get("kto", 0) > 0))
    return result


def _notes(notes: dict[str, int]) -> dict:
    """What the format could not carry, counted (only what happened)."""
    return {k: v for k, v in notes.items() if v and k != "kto"}


def _write_dataset_info(info: Path, out: Path, kto: bool) -> Path:
    """Add (or replace) the export's entry in the `dataset_info.json` beside it, named after
    the file, keeping the entries already there."""
    entries: dict = {}
    if info.exists():
        try:
            entries = json.loads(info.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"not valid JSON ({e}); not replacing it", path=str(info)) from None
        if not isinstance(entries, dict):
            raise InputError("not a JSON object of datasets; not replacing it", path=str(info))
    entries[out.stem] = trainer_exports.dataset_info_entry(out.name, kto)
    tmp = Path(str(info) + ".part")
    _refuse_unless_regular(tmp, "the temporary file")
    tmp.write_text(json.dumps(entries, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(info)
    return info


def _is_terminal(fh: TextIO) -> bool:
    try:
        return fh.isatty()
    except (AttributeError, ValueError):
        return False


def _write(db: Database, fh: TextIO, fmt: str, flt: TraceFilter,
           progress: Callable[[int], None] | None, notes: dict[str, int],
           escape: Callable[[str], str] | None = None) -> tuple[int, int]:
    traces = lines = 0
    task = task_context(db)
    for batch in iter_conversations(db, flt, batch=500, task=task):
        for conv in batch:
            # cut after a turn whose label no longer fits the results logged after it
            conv = replace(conv, messages=conv.consistent_messages(task.message_tools))
            if fmt in trainer_exports.LINES:
                obj, counted = trainer_exports.LINES[fmt](conv)
                for k, v in counted.items():
                    notes[k] = notes.get(k, 0) + v
                if obj is not None:
                    notes["kto"] = notes.get("kto", 0) + ("kto_tag" in obj)
                    fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
                    lines += 1
                traces += 1
                continue
            meta = {"source": conv.source, "line": conv.line, "trace_id": conv.trace_id,
                    "split": conv.split, "origin": conv.origin}
            if conv.tools and not conv.own_tools:
                meta["tools"] = "task"  # re-import keeps these as the task's, not the trace's
            for obj in _lines(fmt, conv, meta):
                text = json.dumps(obj, ensure_ascii=False)
                fh.write((escape(text) if escape else text) + "\n")
                lines += 1
            traces += 1
        if progress:
            progress(traces)
    return traces, lines


def _lines(fmt: str, conv: Conversation, meta: dict):
    messages, tools = conv.messages, conv.tools
    if fmt == "pairs":
        for idx, before, turn in per_turn_pairs(messages):
            yield {"question": json.dumps(to_benchmark_question(before), ensure_ascii=False),
                   "answer": turn_answer(turn), "context": None,
                   "meta": {**meta, "message_index": idx}}
        return
    if fmt == "hf":
        obj = {"messages": [to_openai(m) for m in messages]}
        if tools:
            obj["tools"] = json.dumps(tools, ensure_ascii=False)
        obj["meta"] = meta
        yield obj
        return
    # openai: the record as it came, less what the store rewrote (messages, tools, meta)
    obj = {"messages": [to_openai_extra(to_openai(m), conv.extras.get(i))
                        for i, m in enumerate(messages)]}
    if tools:
        obj["tools"] = tools
    kept = conv.metadata or {}
    for key, value in kept.items():
        if key not in ("messages", "tools", "meta", "outcomes"):
            obj[key] = value
    own_meta = kept.get("meta")
    obj["meta"] = {**own_meta, **meta} if isinstance(own_meta, dict) else meta
    if conv.outcomes:
        obj["outcomes"] = conv.outcomes
    yield obj
