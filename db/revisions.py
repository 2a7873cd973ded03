"""Labels as revisions: the current label of a turn is its newest accepted revision, else the
original. Nothing here updates an original message or deletes a revision."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from db.rows import dicts, rowid
from db.traces import messages_for, original_messages, search_text
from db.tx import now, write_tx

AUTHOR_KINDS = ("human", "committee", "normaliser", "synthesis")
STATUSES = ("proposed", "accepted", "rejected")


def add_revision(db: Database, trace_id: int, message_idx: int, *, tool_calls: list | None,
                 content: str | None = None, author_kind: str, author_name: str,
                 reason: str = "", evidence: Any = None, status: str = "accepted",
                 supersedes: int | None = None) -> int:
    """Record a new label for an assistant turn and return its id."""
    if author_kind not in AUTHOR_KINDS:
        raise ValueError(f"author_kind must be one of {AUTHOR_KINDS}, not {author_kind!r}")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    with write_tx(db):
        row = db.execute("SELECT role FROM messages WHERE trace_id = ? AND idx = ?",
                         [trace_id, message_idx]).fetchone()
        if row is None:
            raise ValueError(f"trace {trace_id} has no message {message_idx}")
        if row[0] != "assistant":
            raise ValueError(f"message {message_idx} of trace {trace_id} is a {row[0]} message;"
                             " only assistant turns are labelled")
        ts = now()
        cur = db.execute(
            "INSERT INTO revisions (trace_id, message_idx, content, tool_calls, author_kind,"
            " author_name, reason, evidence, status, supersedes, created_at, decided_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [trace_id, message_idx, content,
             json.dumps(tool_calls, ensure_ascii=False) if tool_calls else None,
             author_kind, author_name, reason,
             None if evidence is None else json.dumps(evidence, ensure_ascii=False),
             status, supersedes, ts, ts if status != "proposed" else None])
        rev_id = rowid(cur)
        text = search_text([{"content": content, "tool_calls": tool_calls}])
        if text:
            db.execute("INSERT INTO search (text, trace_id, message_idx) VALUES (?,?,?)",
                       [text, trace_id, message_idx])
    return rev_id


def decide(db: Database, revision_id: int, status: str) -> None:
    """Accept or reject a proposed revision (a decided one stays as decided: write a new one)."""
    if status not in ("accepted", "rejected"):
        raise ValueError("a decision is 'accepted' or 'rejected'")
    with write_tx(db):
        cur = db.execute("UPDATE revisions SET status = ?, decided_at = ? WHERE id = ?"
                         " AND status = 'proposed'", [status, now(), revision_id])
        if cur.rowcount != 1:
            raise ValueError(f"revision {revision_id} is not a proposed revision")


def status_of(db: Database, revision_id: int) -> tuple[int, int, str] | None:
    """(trace, turn, status) of a revision, or None when there is no such revision."""
    row = db.execute("SELECT trace_id, message_idx, status FROM revisions WHERE id = ?",
                     [revision_id]).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def history(db: Database, trace_id: int, message_idx: int) -> list[dict]:
    """Every revision of a turn, oldest first."""
    cur = db.execute("SELECT * FROM revisions WHERE trace_id = ? AND message_idx = ? ORDER BY id",
                     [trace_id, message_idx])
    return dicts(cur, ("tool_calls", "evidence"))


def current_revisions(db: Database, trace_ids: list[int]) -> dict[tuple[int, int], dict]:
    """Newest accepted revision per (trace, turn) for these traces."""
    if not trace_ids:
        return {}
    marks = ",".join("?" * len(trace_ids))
    cur = db.execute(
        f"SELECT r.trace_id, r.message_idx, r.id, r.content, r.tool_calls FROM revisions r"
        f" WHERE r.trace_id IN ({marks}) AND r.status = 'accepted' AND r.id = ("
        f"  SELECT max(id) FROM revisions WHERE trace_id = r.trace_id"
        f"  AND message_idx = r.message_idx AND status = 'accepted')", trace_ids)
    return {(t, i): {"id": rid, "content": c, "tool_calls": json.loads(tc) if tc else None}
            for t, i, rid, c, tc in cur.fetchall()}


def written_by(db: Database, revision_ids: list[int], author_kind: str) -> set[int]:
    """Which of these revisions an author of this kind wrote."""
    if not revision_ids:
        return set()
    return {r[0] for r in db.execute(
        f"SELECT id FROM revisions WHERE author_kind = ? AND id IN"
        f" ({','.join('?' * len(revision_ids))})", [author_kind, *revision_ids])}


def accepted_before(db: Database, trace_id: int, message_idx: int, revision_id: int
                    ) -> dict | None:
    """The turn's newest accepted revision older than `revision_id` ({content, tool_calls}),
    or None: the label it replaced was the original."""
    row = db.execute(
        "SELECT content, tool_calls FROM revisions WHERE trace_id = ? AND message_idx = ?"
        " AND status = 'accepted' AND id < ? ORDER BY id DESC LIMIT 1",
        [trace_id, message_idx, revision_id]).fetchone()
    return None if row is None else {"content": row[0],
                                     "tool_calls": json.loads(row[1]) if row[1] else None}


def apply_labels(messages: list[dict], revisions: dict[int, dict]) -> list[dict]:
    """Messages with each revised assistant turn replaced by its current label."""
    out = []
    for i, m in enumerate(messages):
        rev = revisions.get(i)
        if rev is not None:
            m = {**m, "content": rev["content"], "tool_calls": rev["tool_calls"]}
        out.append(m)
    return out


def current_messages(db: Database, trace_id: int) -> list[dict]:
    revs = current_revisions(db, [trace_id])
    return apply_labels(original_messages(db, trace_id), {i: r for (_, i), r in revs.items()})


def current_messages_for(db: Database, trace_ids: list[int]) -> dict[int, list[dict]]:
    return {t: msgs for t, (msgs, _) in labelled_messages_for(db, trace_ids).items()}


def _same_label(a: dict, b: dict) -> bool:
    return (a["content"] or None) == (b["content"] or None) and \
        (a["tool_calls"] or None) == (b["tool_calls"] or None)


def labelled_messages_for(db: Database, trace_ids: list[int]
                          ) -> dict[int, tuple[list[dict], dict[int, dict]]]:
    """Per trace: its current messages, and the original message of every turn whose current
    label differs from it (what an export needs to keep the results after it consistent)."""
    originals = messages_for(db, trace_ids)
    revs = current_revisions(db, trace_ids)
    per_trace: dict[int, dict[int, dict]] = {}
    for (t, i), r in revs.items():
        per_trace.setdefault(t, {})[i] = r
    out = {}
    for t, msgs in originals.items():
        current = apply_labels(msgs, per_trace.get(t, {}))
        changed = {i: msgs[i] for i in per_trace.get(t, {})
                   if i < len(msgs) and not _same_label(msgs[i], current[i])}
        out[t] = (current, changed)
    return out


def _label_stack(accepted: list[dict]) -> list[dict]:
    """The accepted revisions still in effect, oldest first: an undo revision takes back the
    one it supersedes (and is itself no step to return to)."""
    stack: list[dict] = []
    for r in accepted:
        undone = (r.get("evidence") or {}).get("undone") if isinstance(r.get("evidence"), dict) \
            else None
        if undone is not None:
            stack = [s for s in stack if s["id"] != undone]
        else:
            stack.append(r)
    return stack


def undo(db: Database, trace_id: int, message_idx: int, *, author_kind: str,
         author_name: str) -> int | None:
    """Go back one step: supersede the label in effect with the one before it (the original if
    none). Undoing again goes back further, never forward (an undo is no step of its own).

    Returns the new revision's id, or None when the turn has nothing left to undo. The history
    is read inside the write transaction (BEGIN IMMEDIATE): two processes undoing the same turn
    at once then undo one after the other, never both the same revision.
    """
    with write_tx(db):
        accepted = [r for r in history(db, trace_id, message_idx) if r["status"] == "accepted"]
        stack = _label_stack(accepted)
        if not stack:
            return None
        last = stack[-1]
        if len(stack) > 1:
            prev = stack[-2]
            content, calls = prev["content"], prev["tool_calls"]
        else:
            orig = original_messages(db, trace_id)[message_idx]
            content, calls = orig["content"], orig["tool_calls"]
        return add_revision(db, trace_id, message_idx, tool_calls=calls, content=content,
                            author_kind=author_kind, author_name=author_name,
                            reason=f"undo revision {last['id']}", supersedes=last["id"],
                            evidence={"undone": last["id"]})


def changed_since(db: Database, trace_id: int, message_idx: int, since: str) -> str | None:
    """Who changed a turn's label or decided on it at or after `since` (a `now()` time), or
    None. A job that read the turn before `since` calls this inside its write transaction and
    writes nothing when it is not None: the analyst's decision taken meanwhile stands."""
    from db.flags import REVIEW_DROP

    row = db.execute(
        "SELECT author_kind, author_name, created_at >= ? FROM revisions WHERE trace_id = ?"
        " AND message_idx = ? AND (created_at >= ? OR decided_at >= ?) ORDER BY id DESC LIMIT 1",
        [since, trace_id, message_idx, since, since]).fetchone()
    if row is not None:
        kind, name, created = row
        return "the analyst" if kind == "human" or not created else f"{kind} ({name})"
    dropped = db.execute(
        "SELECT 1 FROM flags WHERE trace_id = ? AND message_idx = ? AND check_name = ? AND"
        " created_at >= ?", [trace_id, message_idx, REVIEW_DROP, since]).fetchone()
    return "the analyst" if dropped else None


def accepted_not_by(db: Database, trace_ids: list[int], author_kind: str
                    ) -> list[tuple[int, int, str | None, list | None]]:
    """(trace, turn, content, tool calls) of the accepted revisions by any author kind but
    this one, oldest first (so the newest wins when applied in order)."""
    marks = ",".join("?" * len(trace_ids))
    return [(tid, idx, content, json.loads(tc) if tc else None) for tid, idx, content, tc in
            db.execute(f"SELECT trace_id, message_idx, content, tool_calls FROM revisions"
                       f" WHERE trace_id IN ({marks}) AND status = 'accepted'"
                       f" AND author_kind != ? ORDER BY id", [*trace_ids, author_kind])]


def revisions_by(db: Database, trace_ids: list[int], author_kind: str
                 ) -> list[tuple[int, int, str | None, list | None, str]]:
    """(trace, turn, content, tool calls, status) of every revision by this author kind."""
    marks = ",".join("?" * len(trace_ids))
    return [(tid, idx, content, json.loads(tc) if tc else None, status)
            for tid, idx, content, tc, status in db.execute(
                f"SELECT trace_id, message_idx, content, tool_calls, status FROM revisions"
                f" WHERE trace_id IN ({marks}) AND author_kind = ?", [*trace_ids, author_kind])]


def newest_accepted(db: Database, trace_ids: list[int]
                    ) -> list[tuple[int, int, str, list | None, str, str | None, str | None]]:
    """(trace, turn, author kind, tool calls, created, decided, content) of the newest accepted
    revision of each turn of these traces (any number of them)."""
    return [(tid, idx, kind, json.loads(tc) if tc else None, created, decided, content)
            for tid, idx, kind, tc, created, decided, content in db.execute(
                "SELECT r.trace_id, r.message_idx, r.author_kind, r.tool_calls, r.created_at,"
                " r.decided_at, r.content FROM revisions r"
                " WHERE r.trace_id IN (SELECT value FROM json_each(?))"
                " AND r.status = 'accepted' AND r.id = (SELECT max(id) FROM revisions WHERE"
                " trace_id = r.trace_id AND message_idx = r.message_idx AND status = 'accepted')",
                [json.dumps(trace_ids)]).fetchall()]
