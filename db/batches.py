"""Model batches (OpenAI Batch jobs) as rows: which job sent which requests in which batch,
and how each request came back. See `workbench.models.batch_calls`."""

from __future__ import annotations

from sqlite_utils import Database

from db.rows import dicts, rowid
from db.tx import now, write_tx

FINISHED = ("completed", "failed", "expired", "cancelled")


def add_batch(db: Database, job_id: int | None, endpoint: str, base_url: str,
              input_file_id: str, custom_ids: list[str]) -> int:
    """Record an uploaded input file and its requests (before the batch is made from it)."""
    with write_tx(db):
        rid = rowid(db.execute(
            "INSERT INTO model_batches (job_id, endpoint, base_url, input_file_id, status,"
            " requests, created_at, updated_at) VALUES (?,?,?,?,'uploaded',?,?,?)",
            [job_id, endpoint, base_url, input_file_id, len(custom_ids), now(), now()]))
        db.conn.executemany("INSERT INTO model_batch_requests (batch, custom_id, status)"
                            " VALUES (?,?,'pending')", [(rid, c) for c in custom_ids])
    return rid


def update_batch(db: Database, rid: int, **fields: str | None) -> None:
    """Set a batch's batch_id, status, output_file_id, error_file_id or detail."""
    allowed = {"batch_id", "status", "output_file_id", "error_file_id", "detail"}
    if set(fields) - allowed:
        raise ValueError(f"unknown batch fields: {sorted(set(fields) - allowed)}")
    sets = ", ".join(f"{k} = ?" for k in fields)
    with write_tx(db):
        db.execute(f"UPDATE model_batches SET {sets}, updated_at = ? WHERE id = ?",
                   [*fields.values(), now(), rid])


def batches_holding(db: Database, endpoint: str, base_url: str,
                    custom_ids: list[str]) -> list[dict]:
    """The stored batches (of any job) to this endpoint that hold any of these requests,
    oldest first, each with all its requests' custom ids."""
    found: set[int] = set()
    for i in range(0, len(custom_ids), 500):
        part = custom_ids[i:i + 500]
        found |= {r for (r,) in db.execute(
            "SELECT DISTINCT r.batch FROM model_batch_requests r JOIN model_batches b ON"
            " b.id = r.batch WHERE b.endpoint = ? AND b.base_url = ? AND r.custom_id IN"
            f" ({','.join('?' * len(part))})", [endpoint, base_url, *part])}
    if not found:
        return []
    rows = dicts(db.execute(f"SELECT * FROM model_batches WHERE id IN"
                            f" ({','.join('?' * len(found))}) ORDER BY id", sorted(found)))
    for row in rows:
        row["custom_ids"] = [c for (c,) in db.execute(
            "SELECT custom_id FROM model_batch_requests WHERE batch = ?", [row["id"]])]
    return rows


def mark_requests(db: Database, rid: int, ok: list[str], failed: dict[str, str]) -> None:
    """Each request's outcome in one batch: a reply, or why none came."""
    with write_tx(db):
        db.conn.executemany("UPDATE model_batch_requests SET status = 'ok', error = NULL"
                            " WHERE batch = ? AND custom_id = ?", [(rid, c) for c in ok])
        db.conn.executemany("UPDATE model_batch_requests SET status = 'failed', error = ?"
                            " WHERE batch = ? AND custom_id = ?",
                            [(why, rid, c) for c, why in failed.items()])


def job_summary(db: Database, job_id: int) -> dict[str, int] | None:
    """How a job's batch requests went, each request once: answered (in any of its batches),
    failed (in every batch it went in) or pending; None when the job made no batch."""
    batches = db.execute("SELECT count(*) FROM model_batches WHERE job_id = ?",
                         [job_id]).fetchone()[0]
    if not batches:
        return None
    out = {"batches": batches, "answered": 0, "failed": 0, "pending": 0}
    for ok, failed, n in db.execute(
            "SELECT ok, failed, count(*) FROM (SELECT r.custom_id, max(r.status = 'ok') AS ok,"
            " max(r.status = 'failed') AS failed FROM model_batch_requests r JOIN model_batches"
            " b ON b.id = r.batch WHERE b.job_id = ? GROUP BY r.custom_id) GROUP BY ok, failed",
            [job_id]):
        out["answered" if ok else "failed" if failed else "pending"] += n
    return out
