"""Spans of an export staged on disk, then read back one trace at a time.

A span export lists the spans of many traces in any order (a collector writes them as they
end), so a trace is complete only at the end of the file. Holding them all would make memory
grow with the export; instead every span is written to a temporary SQLite file (under
TMPDIR, deleted afterwards) and read back grouped by trace id, so a 1 GB export imports in
flat memory. The store itself is not touched until traces are stitched.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

BATCH = 2000


@dataclass
class Row:
    """One staged item: kind is llm | tool | event | outcome | meta. A row whose trace is
    not known (feedback naming only its run or span) gives `trace=None` and `ref`, the span
    it belongs to; it is resolved through the spans' own ids."""
    trace: str | None
    kind: str
    line: int | None
    body: dict        # (bytes of its JSON once checked for staging)
    start: float | None = None
    span_id: str | None = None
    ref: str | None = None


class Staging:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="workbench-spans-")
        self.db = sqlite3.connect(os.path.join(self.dir, "spans.db"), isolation_level=None)
        self.db.executescript(
            """
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -8000;
            CREATE TABLE rows (id INTEGER PRIMARY KEY, trace TEXT, kind TEXT NOT NULL,
                               line INTEGER, start REAL, span_id TEXT, ref TEXT, body BLOB);
            """)

    def add(self, rows: Iterable[Row]) -> None:
        batch: list[tuple] = []
        self.db.execute("BEGIN")
        for r in rows:
            body = r.body if isinstance(r.body, bytes) else orjson.dumps(r.body)
            batch.append((r.trace, r.kind, r.line, r.start, r.span_id, r.ref, body))
            if len(batch) >= BATCH:
                self._flush(batch)
        self._flush(batch)
        self.db.execute("COMMIT")

    def _flush(self, batch: list[tuple]) -> None:
        self.db.executemany("INSERT INTO rows (trace, kind, line, start, span_id, ref, body)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        batch.clear()

    def finish(self) -> Row | None:
        """Index the staged rows and give rows naming only a span their trace; returns the
        first row whose span is not in the file (None when all are found)."""
        db = self.db
        db.execute("CREATE INDEX rows_span ON rows(span_id) WHERE span_id IS NOT NULL")
        db.execute("UPDATE rows SET trace = (SELECT s.trace FROM rows s WHERE s.span_id ="
                   " rows.ref AND s.trace IS NOT NULL LIMIT 1) WHERE trace IS NULL")
        db.execute("CREATE INDEX rows_trace ON rows(trace, id)")
        got = db.execute("SELECT line, ref FROM rows WHERE trace IS NULL ORDER BY id"
                         " LIMIT 1").fetchone()
        return Row(None, "?", got[0], {}, ref=got[1]) if got else None

    def traces(self) -> Iterator[tuple[str, list[Row]]]:
        """(trace id, its rows in file order) for every trace, in order of first appearance."""
        db = self.db
        order = db.execute("SELECT trace, MIN(id) AS first FROM rows WHERE trace IS NOT NULL"
                           " GROUP BY trace ORDER BY first")
        for (trace, _first) in order:
            yield trace, [Row(trace, kind, line, orjson.loads(body), start, span_id, ref)
                          for kind, line, start, span_id, ref, body in db.execute(
                              "SELECT kind, line, start, span_id, ref, body FROM rows"
                              " WHERE trace = ? ORDER BY id", (trace,))]

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

