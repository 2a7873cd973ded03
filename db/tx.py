"""Write transactions that take the write lock up front.

A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when another
process wrote in between (WAL snapshots can't be upgraded); `BEGIN IMMEDIATE` waits for the lock
under the busy timeout instead, which is what lets the TUI and a CLI job write at once.

A writer that does not get the lock within a second says so once (`on_wait`, by default one
line on stderr naming who holds it, as far as the store knows) and keeps waiting, up to
`WAIT_LIMIT_S`, instead of failing with "database is locked".
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

from sqlite_utils import Database

NOTICE_AFTER_MS = 1_000
WAIT_LIMIT_S = 600.0


class StoreBusy(sqlite3.OperationalError):
    """The write lock stayed held for longer than `WAIT_LIMIT_S`."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


on_wait: Callable[[str], None] = _stderr   # the app may send the notice elsewhere


def lock_holders(db: Database) -> str:
    """Who may hold the write lock: running imports and jobs of other processes (WAL readers
    see them without the lock)."""
    import os

    found = []
    try:
        for source, pid in db.execute("SELECT source, pid FROM imports WHERE status = 'pending'"
                                      " AND pid IS NOT ?", [os.getpid()]):
            found.append(f"an import of {source} (pid {pid})")
        for job_id, kind, pid in db.execute("SELECT id, kind, pid FROM jobs WHERE status ="
                                            " 'running' AND pid IS NOT ?", [os.getpid()]):
            found.append(f"job {job_id} ({kind}, pid {pid})")
    except sqlite3.Error:
        pass
    return ", ".join(found) or "another process"


def _is_busy(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


def begin_immediate(db: Database) -> None:
    """BEGIN IMMEDIATE, waiting for the write lock as long as it takes (up to WAIT_LIMIT_S) and
    saying so once if that is more than a second."""
    conn = db.conn
    timeout_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute(f"PRAGMA busy_timeout = {min(timeout_ms, NOTICE_AFTER_MS)}")
    try:
        conn.execute("BEGIN IMMEDIATE")
        return
    except sqlite3.OperationalError as e:
        if not _is_busy(e):
            raise
    finally:
        conn.execute(f"PRAGMA busy_timeout = {timeout_ms}")
    holders = lock_holders(db)
    on_wait(f"waiting for the store's write lock held by {holders}")
    deadline = time.monotonic() + WAIT_LIMIT_S
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if not _is_busy(e):
                raise
            if time.monotonic() > deadline:
                raise StoreBusy(f"the store's write lock was held for more than"
                                f" {WAIT_LIMIT_S:.0f} s by {holders}; try again later") from None


@contextlib.contextmanager
def write_tx(db: Database) -> Iterator[Database]:
    if db.conn.in_transaction:  # nested: a savepoint inside the caller's transaction
        with db.atomic():
            yield db
        return
    begin_immediate(db)
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    else:
        db.conn.execute("COMMIT")


def now() -> str:
    """UTC timestamp with microseconds, sortable as text."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
