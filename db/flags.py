"""Flags: what a check found on a trace (message_idx NULL) or on one turn of it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from sqlite_utils import Database

from db.tx import now, write_tx

SEVERITIES = ("error", "warning")


def replace_flags(db: Database, trace_ids: Iterable[int], check_names: Iterable[str],
                  flags: Iterable[dict], job_id: int | None = None) -> int:
    """Replace the flags of `check_names` on `trace_ids` with `flags`, in one transaction.

    Flags of other checks, and of traces not covered, are left as they are. Each flag is a
    dict with trace_id, message_idx (or None), check, severity, detail, and optionally
    evidence (a list of {source, text}: why it was raised). Returns how many
    were written. A trace-level error excludes its trace from training unless the analyst
    decided otherwise (see `db.queries.EXCLUDED_SQL`). `flags` may be a generator: the flags
    are staged in a temporary table, never all in a Python list (a check run on 100,000 traces
    finds over half a million).
    """
    names = list(check_names)

    def rows():
        for f in flags:
            if f["severity"] not in SEVERITIES:
                raise ValueError(f"severity must be one of {SEVERITIES}, not {f['severity']!r}")
            if f["check"] not in names:
                raise ValueError(f"flag of check {f['check']!r} outside the checks run {names}")
            evidence = f.get("evidence")
            yield (f["trace_id"], f["message_idx"], f["check"], f["severity"], f["detail"],
                   json.dumps(evidence, ensure_ascii=False) if evidence else None)

    ts = now()
    with write_tx(db):
        db.execute("CREATE TEMP TABLE IF NOT EXISTS _covered (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TEMP TABLE IF NOT EXISTS _found (seq INTEGER PRIMARY KEY,"
                   " trace_id, message_idx, check_name, severity, detail, evidence, created_at)")
        db.execute("DELETE FROM _covered")
        db.execute("DELETE FROM _found")
        db.conn.executemany("INSERT OR IGNORE INTO _covered (id) VALUES (?)",
                            ((t,) for t in trace_ids))
        db.conn.executemany("INSERT INTO _found (trace_id, message_idx, check_name, severity,"
                            " detail, evidence) VALUES (?,?,?,?,?,?)", rows())
        marks = ",".join("?" * len(names))
        # A flag found again keeps its first time, so a decision the analyst took after it
        # (a human revision) still counts as later than the flag.
        db.execute(
            f"UPDATE _found SET created_at = (SELECT min(f.created_at) FROM flags f"
            f" WHERE f.trace_id = _found.trace_id AND f.message_idx IS _found.message_idx"
            f" AND f.check_name = _found.check_name AND f.severity = _found.severity"
            f" AND f.detail = _found.detail AND f.trace_id IN (SELECT id FROM _covered)"
            f" AND f.check_name IN ({marks}))", names)
        db.execute(f"DELETE FROM flags WHERE trace_id IN (SELECT id FROM _covered)"
                   f" AND check_name IN ({marks})", names)
        written = db.execute(
            "INSERT INTO flags (trace_id, message_idx, check_name, severity, detail, job_id,"
            " evidence, created_at) SELECT trace_id, message_idx, check_name, severity, detail,"
            " ?, evidence, coalesce(created_at, ?) FROM _found ORDER BY seq",
            [job_id, ts]).rowcount
        db.execute("DELETE FROM _covered")
        db.execute("DELETE FROM _found")
    return written


def flags_for(db: Database, trace_ids: list[int] | None = None) -> list[dict]:
    """Flags with the trace's source and line, ordered by trace, turn, check."""
    sql = ("SELECT f.trace_id, t.source, t.line, f.message_idx, f.check_name, f.severity,"
           " f.detail, f.evidence FROM flags f JOIN traces t ON t.id = f.trace_id")
    params: list = []
    if trace_ids is not None:
        if not trace_ids:
            return []
        sql += f" WHERE f.trace_id IN ({','.join('?' * len(trace_ids))})"
        params = list(trace_ids)
    sql += " ORDER BY f.trace_id, coalesce(f.message_idx, -1), f.check_name, f.id"
    keys = ("trace_id", "source", "line", "message_idx", "check", "severity", "detail",
            "evidence")
    return [{**dict(zip(keys, r)), "evidence": evidence_of(r[7])}
            for r in db.execute(sql, params).fetchall()]


def iter_flags(db: Database, traces_where: str, params: list,
               checks: Iterable[str] | None = None) -> Iterator[dict]:
    """The flags of the traces matching a condition over `traces` (a `TraceFilter.where()`),
    in `flags_for`'s order, one row at a time: a report on a large store streams."""
    sql = ("SELECT f.trace_id, t.source, t.line, f.message_idx, f.check_name, f.severity,"
           " f.detail, f.evidence FROM flags f JOIN traces t ON t.id = f.trace_id"
           f" WHERE f.trace_id IN (SELECT traces.id FROM traces WHERE {traces_where})")
    params = list(params)
    if checks is not None:
        checks = list(checks)
        sql += f" AND f.check_name IN ({','.join('?' * len(checks)) or 'NULL'})"
        params += checks
    sql += " ORDER BY f.trace_id, coalesce(f.message_idx, -1), f.check_name, f.id"
    keys = ("trace_id", "source", "line", "message_idx", "check", "severity", "detail",
            "evidence")
    for r in db.execute(sql, params):
        yield {**dict(zip(keys, r)), "evidence": evidence_of(r[7])}


def evidence_of(value: str | None) -> list[dict]:
    """A flag's stored evidence as a list of {source, text} (empty when none was stored)."""
    if not value:
        return []
    try:
        items = json.loads(value)
    except ValueError:
        return []
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


REVIEW_DROP = "review.drop"  # flag check name: the analyst dropped this turn from training

# Error flags on turns that nobody has decided on since: no accepted revision by the analyst or
# the committee (relabelled, or confirmed where the settings say so) was written after the flag.
# Shared by training (suspect turns) and the review queue.
UNDECIDED_ERRORS_SQL = """
SELECT f.trace_id, f.message_idx, f.check_name FROM flags f
WHERE f.severity = 'error' AND f.message_idx IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM revisions r WHERE r.trace_id = f.trace_id
                  AND r.message_idx = f.message_idx AND r.author_kind IN ('human', 'committee')
                  AND r.status = 'accepted' AND r.created_at >= f.created_at)
"""


def suspect_turns(db: Database, trace_ids: list[int]) -> dict[int, set[int]]:
    """Suspect assistant turns per trace: those with an error flag nobody has decided on since
    (an accepted human or committee revision written after the flag). An analyst's
    `review.drop` always counts: it is the decision."""
    out: dict[int, set[int]] = {}
    if not trace_ids:
        return out
    marks = ",".join("?" * len(trace_ids))
    sql = (f"SELECT trace_id, message_idx FROM flags WHERE check_name = '{REVIEW_DROP}'"
           f" AND message_idx IS NOT NULL AND trace_id IN ({marks})"
           f" UNION SELECT trace_id, message_idx FROM ({UNDECIDED_ERRORS_SQL})"
           f" WHERE trace_id IN ({marks})")
    for tid, idx in db.execute(sql, [*trace_ids, *trace_ids]):
        out.setdefault(tid, set()).add(idx)
    return out
