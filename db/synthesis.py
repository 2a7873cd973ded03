"""The synthesis record (see m006): each candidate of a synthesis job, accepted or rejected."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from db.rows import dicts, rowid
from db.tx import now

STATUSES = ("accepted", "rejected")
METHODS = ("offline", "teacher")


def record(db: Database, *, job_id: int | None, status: str, method: str, seeds: list[int],
           candidate_key: str, topic: str | None = None, teacher: str | None = None,
           trace_id: int | None = None, reasons: list[dict] | None = None,
           messages: list[dict] | None = None) -> int:
    """One candidate's outcome (inside the caller's transaction)."""
    if status not in STATUSES or method not in METHODS:
        raise ValueError(f"bad synthesis record: status {status!r}, method {method!r}")
    return rowid(db.execute(
        "INSERT INTO synthesis (job_id, trace_id, status, method, teacher, topic, seeds,"
        " reasons, messages, candidate_key, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [job_id, trace_id, status, method, teacher, topic, json.dumps(seeds),
         None if reasons is None else json.dumps(reasons, ensure_ascii=False),
         None if messages is None else json.dumps(messages, ensure_ascii=False),
         candidate_key, now()]))


def rows(db: Database, job_id: int, status: str | None = None) -> list[dict]:
    sql = "SELECT * FROM synthesis WHERE job_id = ?"
    args: list[Any] = [job_id]
    if status:
        sql += " AND status = ?"
        args.append(status)
    out = dicts(db.execute(sql + " ORDER BY id", args), ("seeds", "reasons", "messages"))
    return out


def origin_of(db: Database, trace_id: int) -> dict | None:
    """What a synthetic trace was made from (seeds, topic, method, teacher, job)."""
    found = dicts(db.execute("SELECT * FROM synthesis WHERE trace_id = ? ORDER BY id LIMIT 1",
                             [trace_id]), ("seeds",))
    return found[0] if found else None


def recent(db: Database, limit: int = 2000) -> list[dict]:
    """The newest candidates of every synthesis job (the app's synthesis view)."""
    return dicts(db.execute("SELECT * FROM synthesis ORDER BY id DESC LIMIT ?", [limit]),
                 ("seeds", "reasons", "messages"))
