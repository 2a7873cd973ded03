"""Opening a store: WAL so a TUI and a CLI job can write at once, migrations on every open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from db.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


def open_db(path: str | Path, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the store at `path` and bring its schema up to date.

    ":memory:" is accepted for throwaway stores. The connection waits up to 30 s for a
    writer in another process instead of failing with "database is locked".
    """
    path = str(path)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: big imports stay out of the disk
    conn.execute("PRAGMA temp_store = MEMORY")
    db = sqlite_utils.Database(conn)
    if migrate:
        MIGRATIONS.apply(db)
        from db.imports import discard_dead_imports
        from db.jobs import mark_dead_jobs

        mark_dead_jobs(db)  # a job whose worker died is interrupted, never left running
        discard_dead_imports(db)  # a killed import's hidden rows are deleted
    return db
