"""Span exports of observability tools: detection, and records stitched per trace.

| format | a line |
|---|---|
| `langfuse` | a trace with observations and scores, one observation, or one score |
| `langsmith` | a run (`run_type`, `trace_id`, `parent_run_id`) or a feedback (`key`, `run_id`) |
| `otel` | OTLP JSON: `{"resourceSpans": [...]}` (GenAI or OpenInference attributes) |
| `openinference` | a Phoenix span (`context.trace_id`, `attributes`) or an annotation |

Spans are staged on disk by trace id (staging.py) and stitched after the whole file is read
(stitch.py), so memory stays flat however large the export. A `.json` file holding one
document (a trace, or a list) is read whole, up to the line limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from workbench.traces import formats
from workbench.core.errors import InputError
from workbench.traces.spans import langfuse, langsmith, openinference, otel
from workbench.traces.spans.staging import Row, Staging
from workbench.traces.spans.stitch import stitch
from workbench.conversations.messages import MAX_MESSAGE_BYTES, FieldError

READERS: dict[str, Any] = {"langfuse": langfuse, "langsmith": langsmith, "otel": otel,
                           "openinference": openinference}
SPAN_FORMATS = tuple(READERS)


def detect(obj: Any) -> str | None:
    """The span format a first record (or a .json document) is in, if any."""
    if isinstance(obj, list) and obj:
        obj = obj[0]
    return next((name for name, reader in READERS.items() if reader.looks_like(obj)), None)


def _units(path: Path, max_bytes: int) -> Iterator[tuple[int | None, str, Any]]:
    """(line, field prefix, object) for each record of the file."""
    if path.suffix.lower() == ".json":
        data = formats._task_json(path, formats.max_line_bytes(max_bytes))
        items = data if isinstance(data, list) else [data]
        for i, obj in enumerate(items):
            yield None, f"[{i}]" if isinstance(data, list) else "", obj
        return
    for n, text in formats.iter_lines(path, formats.max_line_bytes(max_bytes)):
        yield n, "", formats._loads(text, path, n)


def _ident(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FieldError(what, f"must be a string, not {type(value).__name__}")


def _rows(path: Path, reader: Any, max_bytes: int) -> Iterator[Row]:
    for line, pre, obj in _units(path, max_bytes):
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}",
                             path=str(path), line=line, field=pre or None)
        try:
            for row in reader.rows(obj, line, pre, max_bytes):
                row.trace = _ident(row.trace, "trace id")
                row.span_id = _ident(row.span_id, "span id")
                row.ref = _ident(row.ref, "run or span id")
                if row.kind == "outcome" and not isinstance(row.body.get("name"), str):
                    raise FieldError(pre or "line", "an outcome's name must be a string")
                if row.trace is None and row.ref is None:
                    raise FieldError(pre or "line", "names no trace, run or span")
                row.body = orjson.dumps(row.body)   # staged as JSON; serialized here to be checked
                yield row
        except FieldError as e:
            raise InputError(e.message, path=str(path), line=line, field=e.field) from None
        except (AttributeError, TypeError, KeyError, IndexError, ValueError,
                orjson.JSONEncodeError) as e:
            # a value of an unexpected type somewhere the reader does not check field by field
            raise InputError(f"unexpected structure ({type(e).__name__}: {e})",
                             path=str(path), line=line, field=pre or None) from None


def iter_span_records(path: Path, fmt: str, max_bytes: int = MAX_MESSAGE_BYTES,
                      ) -> Iterator[formats.Record]:
    """One record per trace that has an LLM call, in order of the trace's first span."""
    staging = Staging()
    try:
        staging.add(_rows(path, READERS[fmt], max_bytes))
        lost = staging.finish()
        if lost is not None:
            raise InputError(f"names run or span {lost.ref!r}, which is not in the file",
                             path=str(path), line=lost.line)
        found = 0
        for trace, rows in staging.traces():
            record = stitch(trace, rows, max_bytes)
            if record is not None:
                found += 1
                yield record
        if not found:
            raise InputError("no LLM calls with messages: no conversation to import",
                             path=str(path))
    finally:
        staging.close()
