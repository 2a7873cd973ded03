"""Importing files into the store: all or nothing, streaming, idempotent.

All or nothing without holding the store: traces are written in short batch transactions under
`pending` imports rows that no query shows, and one last short transaction registers the task
and tool schemas and marks the import complete (db.imports). The app's edits and other jobs
write in between; a failed import deletes what it wrote, a killed one is deleted by the next
process that opens the store.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlite_utils import Database

from db import imports as pending
from db.tasks import current_task, register_tools, update_task
from db.traces import NewTrace, TraceWriter
from db.tx import write_tx
from workbench.core.errors import InputError
from workbench.traces.formats import (ORIGINS, SPAN_FORMATS, SPLITS, TASK_FORMATS, detect_format,
                               iter_records, max_line_bytes, meta_choice, open_regular,
                               read_task, without_secrets)
from workbench.conversations.messages import MAX_MESSAGE_BYTES, FieldError, canonical_json, content_hash
from workbench.traces.outcomes import check_fields as check_outcome_fields

TRACE_SUFFIXES = (".jsonl", ".ndjson")
TASK_NAMES = ("job_description.json", "task.txt")


@dataclass
class FileReport:
    source: str
    format: str
    split: str | None = None
    lines: int = 0
    added: int = 0
    duplicates: int = 0
    tools_added: list[str] = field(default_factory=list)
    task_updated: bool = False
    splits: dict[str, int] = field(default_factory=dict)   # traces read per split
    outcomes: dict[str, int] = field(default_factory=dict)   # traces read with each outcome


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files to import: a folder contributes its trace files (*.jsonl) and task files, task
    files first so traces can be checked against their tools."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [f for f in sorted(p.rglob("*")) if f.is_file() and (
                f.suffix.lower() in TRACE_SUFFIXES or f.name in TASK_NAMES)]
            if not found:
                raise InputError("folder holds no trace files (*.jsonl) or task files",
                                 path=str(p))
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif p.exists():   # a FIFO would block the import (holding the write lock) forever
            raise InputError("not a regular file (pipes, devices and sockets are not read)",
                             path=str(p))
        else:
            raise InputError("no such file or folder", path=str(p))
    return sorted(out, key=lambda f: (f.name not in TASK_NAMES, str(f)))


def default_split(path: Path, requested: str | None) -> str:
    """`--split` wins; otherwise files named test* hold the test split, the rest is unassigned."""
    if requested:
        return requested
    return "test" if path.name.lower().startswith("test") else "unassigned"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_files(db: Database, paths: Iterable[str | Path], *, split: str | None = None,
                 task: str | Path | None = None, origin: str | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES,
                 progress: Callable[[str, int], None] | None = None,
                 notify: Callable[[str], None] | None = None,
                 before_complete: Callable[[Database, list[FileReport]], None] | None = None,
                 outcomes: Iterable[str] = (),
                 ) -> list[FileReport]:
    """Import trace and task files all or nothing: the first error leaves the store as it was
    and raises InputError naming the file, line and field. Traces are written in short batch
    transactions that no query shows until the import completes (see the module doc);
    `notify` hears a line when the import must wait for another one; `before_complete` runs
    inside the completing transaction (raising there discards the import).

    A line's `meta.split` / `meta.origin` (what our own export writes) is kept, so an exported
    test trace comes back as test; an explicit `split` / `origin` wins over it. Lines without
    meta get `split` (default: test for files named test*, else unassigned) and `origin`
    (default imported).

    Every key of a record beyond its conversation is kept as the trace's metadata; its
    outcomes are what its format carries, its `outcomes` object, `reward`/`score`, and the
    fields named in `outcomes` (workbench.traces.outcomes)."""
    outcome_names = check_outcome_fields(list(outcomes))
    if split is not None and split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if origin is not None and origin not in ORIGINS:
        raise InputError(f"origin must be one of {', '.join(ORIGINS)}, not {origin!r}")
    if max_message_bytes < 1:
        raise InputError(f"--max-message-bytes must be at least 1, not {max_message_bytes}")
    files = expand_paths(paths)
    if task is not None:
        files.insert(0, Path(task))
    plan: list[tuple[Path, str]] = []
    for path in files:
        fmt = detect_format(path, max_line_bytes(max_message_bytes))
        if task is not None and path == Path(task) and fmt not in TASK_FORMATS:
            raise InputError("--task must be a job_description.json or task.txt file",
                             path=str(path))
        plan.append((path, fmt))
    trace_files = [(p, f) for p, f in plan if f not in TASK_FORMATS]
    import_ids = pending.start_import(db, [
        {"source": str(p), "path": os.path.abspath(p), "format": f,
         "split": default_split(p, split), "sha256": _sha256(p)} for p, f in trace_files],
        notify=notify)
    ids = dict(zip((str(p) for p, _ in trace_files), import_ids))
    try:
        reports: list[FileReport] = []
        deferred: list[Callable[[], None]] = []   # task and tool rows: at completion
        for path, fmt in plan:
            if fmt in TASK_FORMATS:
                reports.append(_read_task(db, path, fmt, deferred,
                                          max_line_bytes(max_message_bytes)))
            else:
                reports.append(_import_traces(db, path, fmt, split, origin, max_message_bytes,
                                              progress, ids[str(path)], import_ids, deferred,
                                              outcome_names))
        with write_tx(db):
            for apply in deferred:
                apply()
            if before_complete is not None:
                before_complete(db, reports)
            pending.complete_import(db, {ids[r.source]: (r.lines, r.added, r.duplicates)
                                         for r in reports if r.source in ids
                                         and r.format not in TASK_FORMATS})
    except BaseException:
        if not db.conn.in_transaction:   # inside a caller's transaction its rollback undoes it
            pending.discard_import(db, import_ids)
        raise
    return reports


def _read_task(db: Database, path: Path, fmt: str, deferred: list[Callable[[], None]],
               max_bytes: int) -> FileReport:
    """Read (and validate) a task file now; store it with the import's completion."""
    spec = read_task(path, fmt, max_bytes)
    report = FileReport(source=str(path), format=fmt)

    def apply() -> None:
        description = spec.description
        if fmt == "task-text" and (current_task(db) or {}).get("description"):
            description = None  # the prose copy never overrides a job description's exact text
        report.task_updated = update_task(db, source=str(path), description=description,
                                          rubric=spec.rubric,
                                          mutation_topics=spec.mutation_topics)
        if spec.tools:
            report.tools_added = [f"{n} v{v}" for n, v, new in
                                  register_tools(db, spec.tools, str(path)) if new]

    deferred.append(apply)
    return report


def _import_traces(db: Database, path: Path, fmt: str, split_opt: str | None,
                   origin_opt: str | None, max_bytes: int,
                   progress: Callable[[str, int], None] | None, import_id: int,
                   all_ids: list[int], deferred: list[Callable[[], None]],
                   outcome_names: list[str]) -> FileReport:
    source, abspath = str(path), os.path.abspath(path)
    split = default_split(path, split_opt)
    writer = TraceWriter(db, import_id, beat=lambda d: pending.heartbeat(d, all_ids))
    report = FileReport(source=source, format=fmt, split=split)
    seen_tools: set[str] = set()
    splits: Counter = Counter()
    from_meta = False
    found: Counter = Counter()
    for rec in iter_records(path, fmt, max_bytes, outcome_names):
        report.lines += 1
        try:
            meta_split = None if split_opt else meta_choice(rec.meta, "split", SPLITS)
            meta_origin = None if origin_opt else meta_choice(rec.meta, "origin", ORIGINS)
        except FieldError as e:
            raise InputError(e.message, path=source, line=rec.line, field=e.field) from None
        from_meta |= meta_split is not None
        rec_split = meta_split or split
        rec_origin = origin_opt or meta_origin or "imported"
        splits[rec_split] += 1
        if rec.tools:
            key = canonical_json(rec.tools)
            if key not in seen_tools:
                seen_tools.add(key)
                deferred.append(lambda tools=rec.tools: report.tools_added.extend(
                    f"{n} v{v}" for n, v, new in register_tools(db, tools, source) if new))
        found.update(list(rec.outcomes or ()))
        writer.add(NewTrace(messages=rec.messages, tools=rec.tools,
                            content_hash=content_hash(rec.messages, rec.tools, rec.extras),
                            source=source, path=abspath, line=rec.line, format=fmt,
                            split=rec_split, origin=rec_origin,
                            metadata=(without_secrets(rec.meta) or None) if fmt in SPAN_FORMATS
                            else rec.metadata,
                            outcomes=rec.outcomes, extras=rec.extras))
        if progress and report.lines % 1000 == 0:
            progress(source, report.lines)
    writer.flush()
    report.added, report.duplicates = writer.added, writer.duplicates
    report.splits = dict(sorted(splits.items()))
    report.outcomes = dict(sorted(found.items()))
    if from_meta:
        report.split = "from meta: " + ", ".join(f"{k} {n}" for k, n in report.splits.items())
    return report


def report_dict(r: FileReport) -> dict:
    return asdict(r)
