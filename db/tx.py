"""Write transactions that take the write lock up front.

A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when another
process wrote in between (WAL snapshots can't be upgraded); `BEGIN IMMEDIATE` waits for the lock
under the busy timeout instead, which is what lets the TUI and a CLI job write at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timezone

from sqlite_utils import Database


@contextlib.contextmanager
def write_tx(db: Database) -> Iterator[Database]:
    if db.conn.in_transaction:  # nested: a savepoint inside the caller's transaction
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
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
