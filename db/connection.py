"""Opening a store: WAL so a TUI and a CLI job can write at once, migrations on every open.

A store from elsewhere is opened with care: one whose schema is newer than this program (a
migration it does not know) is refused before anything is written; one on a read-only mount,
or a read-only file, opens for reading only (queries work, a write fails with "readonly")."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

import sqlite_utils

from db.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


class StoreUnusable(ValueError):
    """The store cannot be opened as asked (newer schema, read-only and out of date)."""


def _writable(path: Path) -> bool:
    """Whether this process can write the store (and create its -wal/-shm beside it); a
    store that does not exist yet is created where asked."""
    if not path.exists():
        return True
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _connect(target: str, *, uri: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False, uri=uri)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Read-only; on a read-only mount where a WAL store has no -shm file (none can be
    made), as immutable (nothing else can write there either)."""
    base = "file:" + quote(str(path.resolve()))
    try:
        conn = _connect(base + "?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn = _connect(base + "?mode=ro&immutable=1", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn


def _check_schema(db: sqlite_utils.Database, path: str, read_only: bool) -> None:
    """Refuse a store written by a newer program, and a read-only one that needs upgrading."""
    known = {m.name for m in MIGRATIONS._migrations}
    applied = [m.name for m in MIGRATIONS.applied(db)]
    newer = [name for name in applied if name not in known]
    if newer:
        raise StoreUnusable(
            f"the store {path} was written by a newer version of workbench (its schema has"
            f" {', '.join(newer)}, which this version does not know): upgrade workbench to"
            " use it; nothing was changed")
    if read_only and MIGRATIONS.pending(db):
        raise StoreUnusable(
            f"the store {path} is read-only (a read-only file or mount) and"
            + (" was written by an older version of workbench: it needs upgrading, which"
               if applied else " is not a workbench store yet: making one")
            + " writes to it; copy it somewhere writable first")


def open_db(path: str | Path, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the store at `path` and bring its schema up to date.

    ":memory:" is accepted for throwaway stores. The connection waits up to 30 s for a
    writer in another process instead of failing with "database is locked". A store this
    process cannot write opens read-only (`db.read_only`), without migrations or clean-up.
    """
    path = str(path)
    read_only = path != ":memory:" and not _writable(Path(path))
    conn = _connect_read_only(Path(path)) if read_only else _connect(path)
    if path != ":memory:" and not read_only:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: big imports stay out of the disk
    conn.execute("PRAGMA temp_store = MEMORY")
    db = sqlite_utils.Database(conn)
    db.read_only = read_only  # type: ignore[attr-defined]
    if migrate:
        try:
            _check_schema(db, path, read_only)
        except BaseException:
            conn.close()
            raise
        if read_only:
            return db
        MIGRATIONS.apply(db)
        from db.imports import discard_dead_imports
        from db.jobs import mark_dead_jobs

        mark_dead_jobs(db)  # a job whose worker died is interrupted, never left running
        discard_dead_imports(db)  # a killed import's hidden rows are deleted
    return db


def db_file(db: sqlite_utils.Database) -> str | None:
    """The store's file, or None for an in-memory one."""
    path = db.execute("PRAGMA database_list").fetchone()[2]
    return path or None
