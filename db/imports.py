"""Imports that commit in batches yet stay all or nothing.

A big import used to hold the write lock for its whole run (37 s for 100k traces), so the
app's edits and a CLI job failed with "database is locked". Now its traces are written in
short batch transactions under `imports` rows marked `pending`: every trace query hides traces
of a pending import (`db.queries.VISIBLE_SQL`), and one last short transaction marks the rows
`complete`, which shows them all at once. An import that fails deletes what it wrote; one that
was killed is found by the next open (its pid is dead) and deleted the same way. Imports run one
at a time: a second one waits for the first (trace ids and duplicate detection assume it).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from sqlite_utils import Database

from db.jobs import _age_s, _alive
from db.tx import now, write_tx
from db.rows import rowid

PENDING_SQL = "SELECT id FROM imports WHERE status = 'pending'"
STALE_S = 600.0   # a pending import that has not committed a batch this long is dead
DISCARD_BATCH = 500


def pending_imports(db: Database) -> list[dict]:
    cur = db.execute("SELECT id, source, pid, host, heartbeat_at FROM imports"
                     " WHERE status = 'pending' ORDER BY id")
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _dead(row: dict) -> bool:
    host = socket.gethostname()
    if row["pid"] == os.getpid() and row["host"] == host:
        return False
    if row["host"] in (host, None) and (not row["pid"] or not _alive(row["pid"])):
        return True
    return _age_s(row["heartbeat_at"]) > STALE_S   # another host, or a reused pid


def start_import(db: Database, rows: list[dict],
                 notify: Callable[[str], None] | None = None) -> list[int]:
    """Insert the `imports` rows of one import as pending and return their ids, once no other
    live import is pending (waiting for it, and saying so once through `notify`); the rows of
    dead imports are discarded first."""
    told = False
    while True:
        discard_dead_imports(db)
        with write_tx(db):
            live = [r for r in pending_imports(db) if not _dead(r)]
            if not live:
                ts = now()
                return [rowid(db.execute(
                    "INSERT INTO imports (source, path, format, split, sha256, lines, added,"
                    " duplicates, created_at, status, pid, host, heartbeat_at)"
                    " VALUES (?,?,?,?,?,0,0,0,?,'pending',?,?,?)",
                    [r["source"], r["path"], r["format"], r["split"], r["sha256"], ts,
                     os.getpid(), socket.gethostname(), ts])) for r in rows]
        if db.conn.in_transaction:   # the caller holds the write lock: the other can't end
            first = live[0]
            raise RuntimeError(f"another import is running ({first['source']}, pid"
                               f" {first['pid']}); try again when it has finished")
        if not told and notify is not None:
            first = live[0]
            notify(f"waiting for another import to finish: {first['source']} (pid"
                   f" {first['pid']})")
            told = True
        time.sleep(0.5)


def heartbeat(db: Database, import_ids: list[int]) -> None:
    """Inside the caller's batch transaction: this import is alive."""
    if import_ids:
        db.execute(f"UPDATE imports SET heartbeat_at = ? WHERE id IN"
                   f" ({','.join('?' * len(import_ids))})", [now(), *import_ids])


def complete_import(db: Database, counts: dict[int, tuple[int, int, int]]) -> None:
    """Inside the caller's last transaction: show the import's traces (lines, added, dups)."""
    for import_id, (lines, added, dups) in counts.items():
        db.execute("UPDATE imports SET status = 'complete', lines = ?, added = ?,"
                   " duplicates = ?, pid = NULL WHERE id = ?", [lines, added, dups, import_id])


def discard_import(db: Database, import_ids: list[int]) -> int:
    """Delete everything these pending imports wrote, a batch per short transaction (nothing
    of it was ever visible). Returns the number of traces deleted."""
    deleted = 0
    for import_id in import_ids:
        while True:
            with write_tx(db):
                ids = [r[0] for r in db.execute(
                    "SELECT id FROM traces WHERE import_id = ? AND import_id IN"
                    f" ({PENDING_SQL}) LIMIT ?", [import_id, DISCARD_BATCH])]
                if not ids:
                    break
                marks = ",".join("?" * len(ids))
                db.execute(f"DELETE FROM search WHERE rowid IN (SELECT id FROM search_content"
                           f" WHERE c1 IN ({marks}))", ids)
                for table in ("flags", "revisions", "tool_calls", "messages", "trace_sources"):
                    db.execute(f"DELETE FROM {table} WHERE trace_id IN ({marks})", ids)
                db.execute(f"DELETE FROM traces WHERE id IN ({marks})", ids)
                deleted += len(ids)
        with write_tx(db):
            db.execute("DELETE FROM trace_sources WHERE import_id = ? AND import_id IN"
                       f" ({PENDING_SQL})", [import_id])
            db.execute("DELETE FROM imports WHERE id = ? AND status = 'pending'", [import_id])
    return deleted


def discard_dead_imports(db: Database) -> int:
    """Whoever opens the store calls this: a killed import's rows are deleted (a cheap read
    when there are none)."""
    dead = [r["id"] for r in pending_imports(db) if _dead(r)]
    return discard_import(db, dead) if dead else 0


def imported_paths(db: Database) -> list[str]:
    """The files of the complete imports, sorted: what the store was filled from."""
    return [r[0] for r in db.execute("SELECT DISTINCT path FROM imports WHERE status ="
                                     " 'complete' ORDER BY path")]


def job_import(db: Database, path: str, *, format: str, split: str) -> int:  # noqa: A002
    """The `imports` row of traces a job makes (no file behind them), found by its path or
    made, empty, on first use."""
    row = db.execute("SELECT id FROM imports WHERE path = ?", [path]).fetchone()
    if row:
        return row[0]
    return rowid(db.execute(
        "INSERT INTO imports (source, path, format, split, sha256, lines, added, duplicates,"
        " created_at) VALUES (?,?,?,?,?,0,0,0,?)", [path, path, format, split, "", now()]))


def lines_of(db: Database, path: str) -> int:
    """How many traces came from this path (its last line number, for a job's own import)."""
    return db.execute("SELECT count(*) FROM trace_sources WHERE path = ?", [path]).fetchone()[0]


def add_to_import(db: Database, import_id: int, lines: int, added: int) -> None:
    """Count traces a job appended to its import: its line count now, and `added` more."""
    db.execute("UPDATE imports SET lines = ?, added = added + ? WHERE id = ?",
               [lines, added, import_id])
