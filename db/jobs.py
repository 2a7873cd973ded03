"""Jobs as rows: any process (CLI or app) creates, advances and reads them the same way."""

from __future__ import annotations

import json
import os
from typing import Any

from sqlite_utils import Database

from db.rows import dicts, first
from db.tx import now, write_tx

ACTIVE = ("queued", "running")
MAX_LOG_CHARS = 200_000  # the log keeps its tail; a runaway job can't bloat the store


def create_job(db: Database, kind: str, params: Any = None, total: int | None = None) -> int:
    with write_tx(db):
        return db.execute(
            "INSERT INTO jobs (kind, status, params, total, created_at) VALUES (?,?,?,?,?)",
            [kind, "queued", json.dumps(params, ensure_ascii=False, default=str), total, now()]
        ).lastrowid


def start_job(db: Database, job_id: int) -> None:
    with write_tx(db):
        ts = now()
        db.execute("UPDATE jobs SET status = 'running', started_at = ?, heartbeat_at = ?, pid = ?"
                   " WHERE id = ?", [ts, ts, os.getpid(), job_id])


def progress(db: Database, job_id: int, done: int, total: int | None = None,
             message: str | None = None) -> bool:
    """Record progress; returns True when someone asked the job to stop."""
    with write_tx(db):
        db.execute("UPDATE jobs SET done = ?, total = coalesce(?, total),"
                   " message = coalesce(?, message), heartbeat_at = ? WHERE id = ?",
                   [done, total, message, now(), job_id])
        row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
    return bool(row and row[0])


def log(db: Database, job_id: int, line: str) -> None:
    with write_tx(db):
        db.execute("UPDATE jobs SET log = substr(log || ? || char(10), -?) WHERE id = ?",
                   [line, MAX_LOG_CHARS, job_id])


def finish_job(db: Database, job_id: int, status: str, result: Any = None,
               error: str | None = None) -> None:
    if status not in ("succeeded", "failed", "cancelled"):
        raise ValueError(f"not a final status: {status}")
    with write_tx(db):
        db.execute("UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ? WHERE id = ?",
                   [status, None if result is None else json.dumps(result, ensure_ascii=False,
                                                                   default=str),
                    error, now(), job_id])


def request_cancel(db: Database, job_id: int) -> None:
    with write_tx(db):
        db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status IN ('queued',"
                   " 'running')", [job_id])


def get_job(db: Database, job_id: int) -> dict | None:
    return first(db.execute("SELECT * FROM jobs WHERE id = ?", [job_id]), ("params", "result"))


def list_jobs(db: Database, limit: int = 50) -> list[dict]:
    cur = db.execute("SELECT id, kind, status, done, total, message, error, created_at,"
                     " started_at, finished_at FROM jobs ORDER BY id DESC LIMIT ?", [limit])
    return dicts(cur)


def unit_result(db: Database, kind: str, key: str) -> Any | None:
    """The stored result of an idempotent unit of work, or None when not done yet."""
    row = db.execute("SELECT result FROM job_units WHERE kind = ? AND key = ?", [kind, key]).fetchone()
    return None if row is None else json.loads(row[0])


def save_unit(db: Database, kind: str, key: str, result: Any, job_id: int | None = None) -> None:
    with write_tx(db):
        db.execute("INSERT OR REPLACE INTO job_units (kind, key, result, job_id, created_at)"
                   " VALUES (?,?,?,?,?)", [kind, key, json.dumps(result, ensure_ascii=False),
                                           job_id, now()])
