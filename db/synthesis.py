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
           messages: Any = None) -> int:
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


def pending(db: Database, job_id: int) -> list[dict]:
    """A job's accepted candidates not stored as traces yet (the job has not succeeded):
    each with its `messages` and `tools`."""
    out = []
    for r in dicts(db.execute("SELECT * FROM synthesis WHERE job_id = ? AND status = 'accepted'"
                              " AND trace_id IS NULL ORDER BY id", [job_id]), ("seeds",)):
        held = json.loads(r["messages"])
        out.append({**r, "messages": held["messages"], "tools": held.get("tools")})
    return out


def mark_stored(db: Database, row_id: int, trace_id: int) -> None:
    """A pending candidate became trace `trace_id` (inside the caller's transaction)."""
    db.execute("UPDATE synthesis SET trace_id = ?, messages = NULL WHERE id = ?",
               [trace_id, row_id])


def mark_rejected(db: Database, row_id: int, reason: str, detail: str) -> None:
    db.execute("UPDATE synthesis SET status = 'rejected', reasons = ? WHERE id = ?",
               [json.dumps([{"reason": reason, "detail": detail}]), row_id])


def kept_by_same_jobs(db: Database, job_id: int) -> list[dict]:
    """What earlier `synth` jobs with this job's parameters and selection (a re-run, a
    pipeline's stage run again) kept as traces: {job_id, topic} per trace still stored."""
    return dicts(db.execute(
        "SELECT s.job_id, s.topic FROM synthesis s JOIN jobs j ON j.id = s.job_id"
        " JOIN jobs me ON me.id = ? WHERE j.id != me.id AND j.kind = me.kind"
        " AND j.params IS me.params AND j.selection IS me.selection"
        " AND s.status = 'accepted' AND s.trace_id IN (SELECT id FROM traces)"
        " ORDER BY s.id", [job_id]))
