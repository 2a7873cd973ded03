"""Jobs as rows: any process (CLI, app, detached worker) creates, advances and reads them the
same way. A row holds what to run (kind, selection, params, folder) and how it went."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from typing import Any

from sqlite_utils import Database

from db.rows import dicts, first, rowid
from db.tx import now, write_tx

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "cancelled", "interrupted")
STATUSES = (*ACTIVE, *FINAL)
MAX_LOG_CHARS = 200_000  # the log keeps its tail; a runaway job can't bloat the store
HEARTBEAT_S = 5.0        # a running worker touches its row this often
STALE_S = 60.0           # ... and is taken for dead when it has not for this long
JSON_COLUMNS = ("selection", "params", "result")


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def create_job(db: Database, kind: str, params: Any = None, selection: Any = None, *,
               parent_id: int | None = None, cwd: str | None = None) -> int:
    """A queued row, owned by this process (its pid) until a worker takes it over: a queued
    job whose owner died is found by the next open (`mark_dead_jobs`)."""
    with write_tx(db):
        return rowid(db.execute(
            "INSERT INTO jobs (kind, status, selection, params, cwd, parent_id, created_at,"
            " pid, host) VALUES (?,?,?,?,?,?,?,?,?)",
            [kind, "queued", _dump(selection), _dump(params), cwd or os.getcwd(), parent_id,
             now(), os.getpid(), socket.gethostname()]))


def hand_over(db: Database, job_id: int, pid: int) -> None:
    """A queued job is now owned by the worker process `pid` (started to run it)."""
    with write_tx(db):
        db.execute("UPDATE jobs SET pid = ?, host = ? WHERE id = ? AND status = 'queued'",
                   [pid, socket.gethostname(), job_id])


def start_job(db: Database, job_id: int, log_path: str | None = None) -> bool:
    """Claim a queued row for this process (a resumed job is queued again first). False when
    it is no longer queued (cancelled meanwhile, or taken by another process): then it must
    not run. A cancel requested while it was queued stays requested."""
    with write_tx(db):
        ts = now()
        cur = db.execute("UPDATE jobs SET status = 'running', started_at = coalesce(started_at, ?),"
                         " heartbeat_at = ?, pid = ?, host = ?, log_path = coalesce(?, log_path),"
                         " attempts = attempts + 1, finished_at = NULL, error = NULL"
                         " WHERE id = ? AND status = 'queued'",
                         [ts, ts, os.getpid(), socket.gethostname(), log_path, job_id])
        return cur.rowcount > 0


def requeue(db: Database, job_id: int) -> None:
    """Make a stopped job runnable again (resume): its progress and log are kept; this
    process owns it until it runs it or hands it to a worker."""
    with write_tx(db):
        db.execute("UPDATE jobs SET status = 'queued', pid = ?, host = ?, cancel_requested = 0"
                   " WHERE id = ? AND status IN ('failed', 'cancelled', 'interrupted')",
                   [os.getpid(), socket.gethostname(), job_id])


def set_log_path(db: Database, job_id: int, log_path: str) -> None:
    with write_tx(db):
        db.execute("UPDATE jobs SET log_path = ? WHERE id = ?", [log_path, job_id])


def progress(db: Database, job_id: int, done: int, total: int | None = None,
             message: str | None = None) -> None:
    with write_tx(db):
        db.execute("UPDATE jobs SET done = ?, total = coalesce(?, total),"
                   " message = coalesce(?, message), heartbeat_at = ? WHERE id = ?",
                   [done, total, message, now(), job_id])


def heartbeat(db: Database, job_id: int) -> None:
    with write_tx(db):
        db.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running'",
                   [now(), job_id])


def cancel_requested(db: Database, job_id: int) -> bool:
    """One indexed column: cheap enough to ask at every progress report."""
    row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
    return bool(row and row[0])


def log(db: Database, job_id: int, line: str) -> None:
    with write_tx(db):
        db.execute("UPDATE jobs SET log = substr(log || ? || char(10), -?) WHERE id = ?",
                   [line, MAX_LOG_CHARS, job_id])


def add_metrics(db: Database, job_id: int, values: dict) -> None:
    """One step's metrics (a step logged again after a resume replaces the older point)."""
    step = values.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise ValueError(f"metrics need a numeric step, not {step!r}")
    with write_tx(db):
        db.execute("INSERT OR REPLACE INTO job_metrics (job_id, step, data) VALUES (?,?,?)",
                   [job_id, int(step), json.dumps(values, ensure_ascii=False, default=str)])


def job_metrics(db: Database, job_id: int) -> list[dict]:
    """A job's metrics in step order."""
    return [json.loads(data) for (data,) in db.execute(
        "SELECT data FROM job_metrics WHERE job_id = ? ORDER BY step", [job_id])]


def finish_job(db: Database, job_id: int, status: str, result: Any = None,
               error: str | None = None) -> None:
    if status not in FINAL:
        raise ValueError(f"not a final status: {status}")
    with write_tx(db):
        if status == "succeeded":  # a finished job shows its whole bar, not its last report
            db.execute("UPDATE jobs SET done = coalesce(total, done), message = NULL"
                       " WHERE id = ?", [job_id])
        db.execute("UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ? WHERE id = ?",
                   [status, _dump(result), error, now(), job_id])
        release_claims(db, job_id)


def request_cancel(db: Database, job_id: int) -> bool:
    """Ask a job to stop. A queued job is cancelled at once (a worker about to run it finds
    it no longer queued and does not start it). False when it had already ended."""
    with write_tx(db):
        queued = db.execute("UPDATE jobs SET status = 'cancelled', cancel_requested = 1,"
                            " finished_at = ?, error = coalesce(error, 'cancelled before it"
                            " started') WHERE id = ? AND status = 'queued'", [now(), job_id])
        running = db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status ="
                             " 'running'", [job_id])
        return queued.rowcount + running.rowcount > 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not yet reaped by its parent) counts as dead
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _age_s(ts: str | None) -> float:
    if not ts:
        return float("inf")
    return (datetime.now(timezone.utc) - datetime.fromisoformat(ts)).total_seconds()


def process_alive(pid: int | None, host: str | None) -> bool | None:
    """Whether the process `pid` on `host` lives: None when this host cannot tell (another
    host, or no pid)."""
    if not pid or host not in (socket.gethostname(), None):
        return None
    return _alive(pid)


def dead_jobs(db: Database, stale_s: float = STALE_S) -> list[int]:
    """Jobs whose process is gone: a running job whose pid is dead on this host, or (another
    host's) that stopped beating its heart; a queued job whose owner (the process that queued
    it, or the worker started for it) died before it started. A live pid on this host is
    never overridden by a stale heartbeat: a stopped process (SIGSTOP, Ctrl-Z) still owns its
    job and goes on when continued."""
    dead = []
    for job_id, status, pid, job_host, beat in db.execute(
            "SELECT id, status, pid, host, heartbeat_at FROM jobs"
            " WHERE status IN ('running', 'queued')"):
        alive = process_alive(pid, job_host)
        if status == "queued":
            if alive is False:
                dead.append(job_id)
        elif alive is False or (alive is None and _age_s(beat) > stale_s):
            dead.append(job_id)
    return dead


def mark_dead_jobs(db: Database, stale_s: float = STALE_S) -> list[int]:
    """Whoever opens the store calls this: a job never stays `running` (or `queued`) after
    its process died; its claims are released."""
    ids = dead_jobs(db, stale_s)
    if ids:
        with write_tx(db):
            for job_id in ids:
                db.execute("UPDATE jobs SET status = 'interrupted', finished_at = ?, error ="
                           " coalesce(error, CASE status WHEN 'queued' THEN 'its process ended"
                           " before it started' ELSE 'the worker process died (killed, or its"
                           " machine stopped)' END || '; resume it with `workbench jobs resume '"
                           " || id || '`') WHERE id = ? AND status IN ('running', 'queued')",
                           [now(), job_id])
                release_claims(db, job_id)
    return ids


# ------------------------------------------------------------------------------------ claims

def claim(db: Database, job_id: int, scope: str, keys: list[str]) -> dict[str, int]:
    """Claim units of work (a turn, a trace) for `job_id`, so that a second job over the same
    ones does not pay for them again. Returns the keys another running job holds, with its
    id (those are not claimed); a claim of a job that is no longer running is taken over."""
    held: dict[str, int] = {}
    with write_tx(db):
        for key in keys:
            db.execute(
                "INSERT INTO job_claims (scope, key, job_id, created_at) VALUES (?,?,?,?)"
                " ON CONFLICT (scope, key) DO UPDATE SET job_id = excluded.job_id,"
                " created_at = excluded.created_at WHERE job_claims.job_id NOT IN"
                " (SELECT id FROM jobs WHERE status = 'running')", [scope, key, job_id, now()])
            owner = db.execute("SELECT job_id FROM job_claims WHERE scope = ? AND key = ?",
                               [scope, key]).fetchone()[0]
            if owner != job_id:
                held[key] = owner
    return held


def release_claims(db: Database, job_id: int) -> None:
    """A finished or dead job's claims (inside the caller's transaction)."""
    db.execute("DELETE FROM job_claims WHERE job_id = ?", [job_id])


def get_job(db: Database, job_id: int) -> dict | None:
    return first(db.execute("SELECT * FROM jobs WHERE id = ?", [job_id]), JSON_COLUMNS)


def list_jobs(db: Database, limit: int = 50, status: str | None = None,
              kind: str | None = None) -> list[dict]:
    conds, args = [], []
    if status:
        conds.append("status = ?")
        args.append(status)
    if kind:
        conds.append("kind = ?")
        args.append(kind)
    where = " AND ".join(conds) or "1"
    cur = db.execute("SELECT id, kind, status, done, total, message, error, parent_id, pid,"
                     " created_at, started_at, finished_at, heartbeat_at FROM jobs"
                     f" WHERE {where} ORDER BY id DESC LIMIT ?", [*args, limit])
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


def newest_job(db: Database, kind: str) -> int | None:
    """The id of the newest job of this kind, or None."""
    return db.execute("SELECT max(id) FROM jobs WHERE kind = ?", [kind]).fetchone()[0]
