"""Evaluation runs and their per-turn results."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from db.rows import dicts, first, rowid
from db.tx import now, write_tx

RUN_JSON = ("metrics", "test_selection")


def create_run(db: Database, model_ref: str, *, model_id: int | None = None,
               test_selection: Any = None, judge: str | None = None,
               job_id: int | None = None) -> int:
    with write_tx(db):
        return rowid(db.execute(
            "INSERT INTO eval_runs (model_id, model_ref, test_selection, judge, job_id, created_at)"
            " VALUES (?,?,?,?,?,?)",
            [model_id, model_ref, json.dumps(test_selection, ensure_ascii=False), judge, job_id,
             now()]))


def add_results(db: Database, run_id: int, rows: list[dict]) -> None:
    """rows: trace_id, message_idx, reference, prediction, the four metrics, judge?, details?"""
    with write_tx(db):
        db.conn.executemany(
            "INSERT OR REPLACE INTO eval_results (run_id, trace_id, message_idx, reference,"
            " prediction, staged_tool_call, tool_call_equivalence, function_match, rouge_l, judge,"
            " details) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(run_id, r["trace_id"], r["message_idx"], r["reference"], r["prediction"],
              r["staged_tool_call"], r["tool_call_equivalence"], r["function_match"], r["rouge_l"],
              r.get("judge"), json.dumps(r.get("details"), ensure_ascii=False))
             for r in rows])


def finish_run(db: Database, run_id: int, metrics: dict, status: str = "succeeded") -> None:
    """Store a run's metrics; `failed` (most turns got no reply) keeps it out of comparisons."""
    if status not in ("succeeded", "failed"):
        raise ValueError(f"a run ends 'succeeded' or 'failed', not {status!r}")
    with write_tx(db):
        db.execute("UPDATE eval_runs SET metrics = ?, status = ? WHERE id = ?",
                   [json.dumps(metrics, ensure_ascii=False), status, run_id])


_RESUMABLE = "(metrics IS NULL OR status = 'failed')"


def unfinished_run(db: Database, model_ref: str, test_selection: Any,
                   judge: str | None) -> dict | None:
    """The newest run of this model on this test selection (same judge) that never finished
    or failed: the one a resumed evaluation continues."""
    return _run_row(db.execute(
        f"SELECT * FROM eval_runs WHERE {_RESUMABLE} AND model_ref = ? AND test_selection = ?"
        " AND judge IS ? ORDER BY id DESC LIMIT 1",
        [model_ref, json.dumps(test_selection, ensure_ascii=False), judge]))


def run_of_job(db: Database, job_id: int) -> dict | None:
    """The unfinished or failed run a job started (what resuming that job continues)."""
    return _run_row(db.execute(f"SELECT * FROM eval_runs WHERE job_id = ? AND {_RESUMABLE}"
                               " ORDER BY id DESC LIMIT 1", [job_id]))


def done_turns(db: Database, run_id: int) -> set[tuple[int, int]]:
    """Turns already answered in this run (a resumed run skips them; turns that got no reply
    are asked again)."""
    return set(db.execute("SELECT trace_id, message_idx FROM eval_results WHERE run_id = ?"
                          " AND json_extract(details, '$.error') IS NULL", [run_id]).fetchall())


def results(db: Database, run_id: int) -> list[dict]:
    cur = db.execute("SELECT * FROM eval_results WHERE run_id = ? ORDER BY trace_id, message_idx",
                     [run_id])
    return dicts(cur, ("details",))


def runs(db: Database, limit: int = 20) -> list[dict]:
    cur = db.execute("SELECT * FROM eval_runs ORDER BY id DESC LIMIT ?", [limit])
    return dicts(cur, RUN_JSON)


def _run_row(cur) -> dict | None:
    return first(cur, RUN_JSON)


def get_run(db: Database, run_id: int) -> dict | None:
    return _run_row(db.execute("SELECT * FROM eval_runs WHERE id = ?", [run_id]))


def previous_run(db: Database, run_id: int) -> dict | None:
    """The newest succeeded run before `run_id` on the same test selection (any model); a
    failed run is never the baseline of a comparison."""
    return _run_row(db.execute(
        "SELECT * FROM eval_runs WHERE id < ? AND status = 'succeeded' AND test_selection ="
        " (SELECT test_selection FROM eval_runs WHERE id = ?) ORDER BY id DESC LIMIT 1",
        [run_id, run_id]))


def runs_of_models(db: Database) -> dict[int, list[dict]]:
    """Each registered model's evaluation runs (id, time, status, staged score), oldest first.
    A failed run has no score: its turns mostly got no reply, so it says nothing of the model."""
    out: dict[int, list[dict]] = {}
    for run_id, model_id, created, metrics, status in db.execute(
            "SELECT id, model_id, created_at, metrics, status FROM eval_runs"
            " WHERE model_id IS NOT NULL ORDER BY id"):
        m = json.loads(metrics) if metrics else {}
        ok = status == "succeeded"
        out.setdefault(model_id, []).append({
            "id": run_id, "created_at": created, "finished": bool(metrics),
            "status": status or "unfinished",
            "staged_tool_call": m.get("staged_tool_call") if ok else None,
            "errors": m.get("errors"), "turns": m.get("turns", m.get("n"))})
    return out


def stored_outside_test(db: Database, path: str) -> list[tuple[int, int, str]]:
    """(line, trace id, split) of each trace of a test file stored in another split: a leak."""
    return [tuple(r) for r in db.execute(
        "SELECT DISTINCT s.line, t.id, t.split FROM trace_sources s JOIN traces t"
        " ON t.id = s.trace_id WHERE s.path = ? AND t.split != 'test' ORDER BY s.line",
        [path]).fetchall()]


def put_in_test(db: Database, trace_ids: list[int]) -> None:
    """Move traces to the test split (inside the caller's transaction)."""
    db.execute(f"UPDATE traces SET split = 'test' WHERE id IN ({','.join('?' * len(trace_ids))})",
               trace_ids)


def selected_trace_ids(db: Database, where: str, params: list, *, path: str | None = None,
                   limit: int | None = None) -> list[int]:
    """The ids of the traces an evaluation runs on, in order: the selection, only those of the
    file `path` (complete imports) when given, the first `limit`."""
    sql = f"SELECT id FROM traces WHERE {where}"
    if path is not None:
        sql += (" AND id IN (SELECT trace_id FROM trace_sources WHERE path = ? AND import_id"
                " NOT IN (SELECT id FROM imports WHERE status = 'pending'))")
        params = [*params, path]
    sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        params = [*params, limit]
    return [r[0] for r in db.execute(sql, params).fetchall()]
