"""Queries behind the browsing UI: keyset pages of traces, bulk decisions on a filtered set,
the review queue and small settings. Plain SQL over the store; no UI imports."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database
from ulid import ULID

from db.flags import DISMISSED_LIKE_SQL, REVIEW_DROP, UNDECIDED_ERRORS_SQL, evidence_of
from db.queries import EXCLUDED_SQL, TraceFilter
from db.rows import dicts
from db.tx import now, write_tx

PAGE = 200
ERRORS_SQL = ("(SELECT count(*) FROM flags WHERE flags.trace_id = traces.id AND"
              " flags.severity = 'error')")
SORTS = {  # sort key -> SQL expression of the key
    "id": "traces.id",
    "turns": "traces.n_assistant",
    "errors": ERRORS_SQL,
}
SORT_COLUMN = {"id": "id", "turns": "turns", "errors": "errors"}   # the row field holding it

ROW_SQL = (
    f"SELECT traces.id, traces.source, traces.line, traces.split, traces.origin,"
    f" traces.n_assistant, traces.tools_used, {EXCLUDED_SQL} AS excluded,"
    " (SELECT count(*) FROM flags WHERE flags.trace_id = traces.id) AS n_flags,"
    f" {ERRORS_SQL} AS n_errors,"
    " (SELECT substr(m.content, 1, 160) FROM messages m WHERE m.trace_id = traces.id"
    "  AND m.role = 'user' ORDER BY m.idx LIMIT 1) AS first_user,"
    " (SELECT avg(r.staged_tool_call) FROM eval_results r WHERE r.trace_id = traces.id"
    "  AND r.run_id = (SELECT max(r2.run_id) FROM eval_results r2 JOIN eval_runs e"
    "   ON e.id = r2.run_id WHERE r2.trace_id = traces.id AND e.status = 'succeeded'))"
    " AS score,"
    " CASE WHEN EXISTS (SELECT 1 FROM revisions r WHERE r.trace_id = traces.id"
    "                   AND r.status = 'proposed') THEN 'proposed'"
    "      WHEN EXISTS (SELECT 1 FROM revisions r WHERE r.trace_id = traces.id"
    "                   AND r.status = 'accepted') THEN 'revised'"
    "      ELSE 'original' END AS label,"
    " traces.outcomes"
    " FROM traces")
ROW_COLS = ("id", "source", "line", "split", "origin", "turns", "tools_used", "excluded",
            "flags", "errors", "first_user", "score", "label", "outcomes")


def trace_page(db: Database, flt: TraceFilter, *, sort: str = "id", descending: bool = False,
               after: tuple | None = None, limit: int = PAGE) -> list[dict]:
    """One page of trace rows matching `flt`, ordered by (sort key, id), strictly after the
    key `after` (the `page_key` of the last row of the previous page): keyset paging, so a
    page costs the same at row 100 000 as at row 0 and nothing is loaded that is not shown."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}")
    where, params = flt.where()
    key = SORTS[sort]
    op, order = ("<", "DESC") if descending else (">", "ASC")
    conds = [f"({where})"]
    if after is not None:
        if sort == "id":
            conds.append(f"traces.id {op} ?")
            params = [*params, after[-1]]
        else:
            conds.append(f"({key}, traces.id) {op} (?, ?)")
            params = [*params, after[0], after[1]]
    order_by = f"traces.id {order}" if sort == "id" else f"{key} {order}, traces.id {order}"
    sql = f"{ROW_SQL} WHERE {' AND '.join(conds)} ORDER BY {order_by} LIMIT ?"
    return [_row(r) for r in db.execute(sql, [*params, limit]).fetchall()]


def _row(values: tuple) -> dict:
    row = dict(zip(ROW_COLS, values))
    row["outcomes"] = json.loads(row["outcomes"]) if row["outcomes"] else None
    return row


def rows_by_id(db: Database, ids: list[int]) -> list[dict]:
    """Fresh rows for traces already on screen (after an edit, without losing the place)."""
    sql = f"{ROW_SQL} WHERE traces.id IN (SELECT value FROM json_each(?))"
    return [_row(r) for r in db.execute(sql, [json.dumps(ids)]).fetchall()]


def page_key(row: dict, sort: str) -> tuple:
    return (row["id"],) if sort == "id" else (row[SORT_COLUMN[sort]], row["id"])


def count_traces(db: Database, flt: TraceFilter) -> int:
    where, params = flt.where()
    return db.execute(f"SELECT count(*) FROM traces WHERE {where}", params).fetchone()[0]


def filter_choices(db: Database) -> dict[str, list[str]]:
    """Values the filter bar offers: called tools and check names."""
    return {
        "tools": [r[0] for r in db.execute("SELECT DISTINCT name FROM tool_calls ORDER BY name")],
        "checks": [r[0] for r in db.execute("SELECT DISTINCT check_name FROM flags ORDER BY 1")],
    }


def trace_scope(flt: TraceFilter, ids: list[int] | None) -> tuple[str, list]:
    """SQL selecting trace ids: the given ids, else every trace matching the filter."""
    if ids:
        return "SELECT value FROM json_each(?)", [json.dumps(ids)]
    where, params = flt.where()
    return f"SELECT id FROM traces WHERE {where}", params


def selected_ids(db: Database, flt: TraceFilter, ids: list[int] | None) -> list[int]:
    """The stored traces `trace_scope` selects (given ids that name no trace left out)."""
    scope, params = trace_scope(flt, ids)
    return [r[0] for r in db.execute(f"SELECT id FROM traces WHERE id IN ({scope})", params)]


def open_proposal_turns(db: Database, flt: TraceFilter, ids: list[int] | None
                        ) -> list[tuple[int, int, int]]:
    """(trace, turn, open proposals) of each selected turn with any: a bulk decision takes
    only turns with one."""
    scope, params = trace_scope(flt, ids)
    return [tuple(r) for r in db.execute(
        f"SELECT trace_id, message_idx, count(*) FROM revisions WHERE status = 'proposed'"
        f" AND trace_id IN ({scope}) GROUP BY trace_id, message_idx", params).fetchall()]


def set_excluded(db: Database, flt: TraceFilter, excluded: bool | None,
                 ids: list[int] | None = None, *, author_name: str = "analyst",
                 action: str | None = None, reason: str = "") -> int:
    """Exclude the selected traces from training (or include them; None: leave it to the
    checks again), recording each change in `exclusion_decisions` under one `action` id.
    Returns how many traces changed."""
    scope, params = trace_scope(flt, ids)
    value = None if excluded is None else int(excluded)
    action = action or str(ULID())
    with write_tx(db):
        changed = db.execute(f"SELECT id, excluded FROM traces WHERE excluded IS NOT ? AND id IN"
                             f" ({scope})", [value, *params]).fetchall()
        ts = now()
        db.conn.executemany("INSERT INTO exclusion_decisions (trace_id, excluded, previous, action,"
                       " author_name, reason, created_at) VALUES (?,?,?,?,?,?,?)",
                       [(tid, value, prev, action, author_name, reason, ts)
                        for tid, prev in changed])
        db.conn.executemany("UPDATE traces SET excluded = ? WHERE id = ?",
                       [(value, tid) for tid, _ in changed])
    return len(changed)


def last_exclusion_action(db: Database) -> str | None:
    row = db.execute("SELECT action FROM exclusion_decisions ORDER BY id DESC LIMIT 1").fetchone()
    return row[0] if row else None


def undo_exclusion_action(db: Database, action: str, author_name: str) -> tuple[int, int]:
    """Put back what an exclude / include action changed, as a new action; a trace decided on
    again since is left as it is. Returns (restored, skipped)."""
    with write_tx(db):
        rows = db.execute("SELECT trace_id, excluded, previous FROM exclusion_decisions WHERE"
                          " action = ?", [action]).fetchall()
        if not rows:
            raise ValueError(f"no exclusion action {action}")
        now_values = dict(db.execute(
            "SELECT id, excluded FROM traces WHERE id IN (SELECT trace_id FROM"
            " exclusion_decisions WHERE action = ?)", [action]).fetchall())
        later = {r[0] for r in db.execute(
            "SELECT DISTINCT trace_id FROM exclusion_decisions WHERE action != ? AND id >"
            " (SELECT max(id) FROM exclusion_decisions WHERE action = ?) AND trace_id IN"
            " (SELECT trace_id FROM exclusion_decisions WHERE action = ?)",
            [action, action, action])}
        undo = str(ULID())
        ts = now()
        restore = [(tid, prev) for tid, value, prev in rows
                   if tid not in later and now_values.get(tid) == value]
        db.conn.executemany("INSERT INTO exclusion_decisions (trace_id, excluded, previous, action,"
                       " author_name, reason, created_at) VALUES (?,?,?,?,?,?,?)",
                       [(tid, prev, now_values[tid], undo, author_name, f"undo {action}", ts)
                        for tid, prev in restore])
        db.conn.executemany("UPDATE traces SET excluded = ? WHERE id = ?",
                       [(prev, tid) for tid, prev in restore])
    return len(restore), len(rows) - len(restore)


# -- one trace, everything the detail view shows -------------------------------------------

def flags_of(db: Database, trace_id: int) -> list[dict]:
    """The trace's flags; `dismissed_like`: how many flags of the same check and pattern
    analysts marked as not a problem (`demoted_from`: what its check raised, when that
    demoted it)."""
    cur = db.execute("SELECT id, message_idx, check_name, severity, detail, created_at, evidence,"
                     f" pattern, demoted_from, {DISMISSED_LIKE_SQL} AS dismissed_like"
                     " FROM flags WHERE trace_id = ? ORDER BY coalesce(message_idx, -1), id",
                     [trace_id])
    return [{**f, "evidence": evidence_of(f["evidence"])} for f in dicts(cur)]


# -- review queue ---------------------------------------------------------------------------

def review_queue(db: Database, flt: TraceFilter | None = None, limit: int = 10_000) -> list[tuple[int, int]]:
    """Assistant turns waiting for a decision, in trace order: turns with a proposed revision,
    and turns with an error flag that no human decided on since (a human revision written
    after the flag, or a `review.drop` flag)."""
    where, params = (flt or TraceFilter()).where()
    sql = f"""
    SELECT trace_id, message_idx FROM (
        SELECT trace_id, message_idx FROM revisions WHERE status = 'proposed'
        UNION
        SELECT trace_id, message_idx FROM ({UNDECIDED_ERRORS_SQL}) WHERE check_name != ?
    ) q
    WHERE EXISTS (SELECT 1 FROM messages m WHERE m.trace_id = q.trace_id
                  AND m.idx = q.message_idx AND m.role = 'assistant')
      AND NOT EXISTS (SELECT 1 FROM flags d WHERE d.trace_id = q.trace_id
                      AND d.message_idx = q.message_idx AND d.check_name = ?)
      AND q.trace_id IN (SELECT id FROM traces WHERE {where})
    ORDER BY trace_id, message_idx LIMIT ?"""
    return [tuple(r) for r in db.execute(sql, [REVIEW_DROP, REVIEW_DROP, *params, limit])]


def decide_open_proposals(db: Database, trace_id: int, message_idx: int, status: str,
                          at: str) -> int:
    """Inside the caller's write transaction: the turn's open proposals become `status`,
    decided at `at` (one time for every turn of a bulk decision). Returns how many."""
    return db.execute("UPDATE revisions SET status = ?, decided_at = ? WHERE trace_id = ? AND"
                      " message_idx = ? AND status = 'proposed'",
                      [status, at, trace_id, message_idx]).rowcount


def reject_open_proposals(db: Database, trace_id: int, message_idx: int) -> int:
    with write_tx(db):
        return decide_open_proposals(db, trace_id, message_idx, "rejected", now())


def drop_turn(db: Database, trace_id: int, message_idx: int, author_name: str) -> None:
    """Drop a turn from training: a `review.drop` error flag (export and training skip turns
    that carry one) and its open proposals rejected. The original stays as it was."""
    with write_tx(db):
        db.execute("INSERT INTO flags (trace_id, message_idx, check_name, severity, detail,"
                   " created_at) VALUES (?,?,?,?,?,?)",
                   [trace_id, message_idx, REVIEW_DROP, "error",
                    f"dropped from training by {author_name}", now()])
        reject_open_proposals(db, trace_id, message_idx)


# -- settings -------------------------------------------------------------------------------

def get_setting(db: Database, key: str, default: Any = None) -> Any:
    row = db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    if row is None:
        return default
    try:
        return json.loads(row[0])
    except ValueError:
        return default


def raw_setting(db: Database, key: str) -> str | None:
    """A setting's stored text as it is (one written by hand need not be JSON)."""
    row = db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    return None if row is None else row[0]


def set_setting(db: Database, key: str, value: Any) -> None:
    with write_tx(db):
        db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                   [key, json.dumps(value, ensure_ascii=False)])
