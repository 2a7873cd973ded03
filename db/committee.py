"""The committee's record: votes per turn and the decision for each turn (see m004)."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from db.rows import dicts, rowid
from db.tx import now, write_tx

OUTCOMES = ("revised", "confirmed", "review", "human", "failed")


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def record_turn(db: Database, job_id: int | None, trace_id: int, message_idx: int,
                votes: list[dict], outcome: str, *, decided_by: str | None = None,
                call: dict | None = None, revision_id: int | None = None,
                detail: str = "") -> int:
    """Store a turn's votes and the committee's decision in one transaction."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
    ts = now()
    with write_tx(db):
        turn_id = rowid(db.execute(
            "INSERT INTO committee_turns (job_id, trace_id, message_idx, outcome, decided_by,"
            " call, revision_id, detail, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            [job_id, trace_id, message_idx, outcome, decided_by, _dump(call), revision_id,
             detail, ts]))
        for v in votes:
            db.execute(
                "INSERT INTO votes (turn_id, job_id, trace_id, message_idx, member, role, model,"
                " raw, call, abstain_reason, latency_s, tokens_in, tokens_out, cost, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [turn_id, job_id, trace_id, message_idx, v["member"], v.get("role", "member"),
                 v.get("model"), v.get("raw"), _dump(v.get("call")), v.get("abstain_reason"),
                 v.get("latency_s"), v.get("tokens_in"), v.get("tokens_out"), v.get("cost"),
                 ts])
    return turn_id


def earlier_turns(db: Database, job_id: int) -> list[tuple[int, int, int | None]]:
    """(trace, turn, revision written) of each turn an earlier run of this job recorded,
    but those that failed (they are asked again)."""
    return [tuple(r) for r in db.execute(
        "SELECT trace_id, message_idx, revision_id FROM committee_turns"
        " WHERE job_id = ? AND outcome != 'failed'", [job_id]).fetchall()]


def votes_of(db: Database, trace_id: int, message_idx: int | None = None) -> list[dict]:
    """A trace's votes (or one turn's), oldest first."""
    sql, args = "SELECT * FROM votes WHERE trace_id = ?", [trace_id]
    if message_idx is not None:
        sql += " AND message_idx = ?"
        args.append(message_idx)
    return dicts(db.execute(sql + " ORDER BY id", args), ("call",))


def latest_turns(db: Database, job_id: int | None = None) -> list[dict]:
    """The newest committee decision per turn (of one job, or of every run), with its votes."""
    where, args = ("WHERE job_id = ?", [job_id]) if job_id is not None else ("", [])
    turns = dicts(db.execute(
        f"SELECT * FROM committee_turns WHERE id IN (SELECT max(id) FROM committee_turns {where}"
        f" GROUP BY trace_id, message_idx) ORDER BY trace_id, message_idx", args), ("call",))
    for t in turns:
        t["votes"] = dicts(db.execute(
            "SELECT * FROM votes WHERE turn_id = ? ORDER BY id", [t["id"]]), ("call",))
    return turns


def voted_turns(db: Database, job_id: int | None = None) -> list[dict]:
    """The newest committee turn with votes per (trace, turn), of one job or of every run, with
    its votes. A later run that left the turn alone (the analyst's label) does not hide the
    votes cast before."""
    where, args = (" AND c.job_id = ?", [job_id]) if job_id is not None else ("", [])
    turns = dicts(db.execute(
        "SELECT * FROM committee_turns WHERE id IN (SELECT max(c.id) FROM committee_turns c"
        " WHERE EXISTS (SELECT 1 FROM votes v WHERE v.turn_id = c.id)" + where +
        " GROUP BY c.trace_id, c.message_idx) ORDER BY trace_id, message_idx", args), ("call",))
    by_turn: dict[int, list[dict]] = {t["id"]: [] for t in turns}
    if by_turn:
        for v in dicts(db.execute(
                "SELECT * FROM votes WHERE turn_id IN (SELECT value FROM json_each(?))"
                " ORDER BY id", [json.dumps(list(by_turn))]), ("call",)):
            by_turn[v["turn_id"]].append(v)
    for t in turns:
        t["votes"] = by_turn[t["id"]]
    return turns
