"""The store: migrations, immutability of originals, revisions as labels."""

from __future__ import annotations

import sqlite3

import pytest

from db import open_db
from db.migrations import MIGRATIONS
from db.revisions import add_revision, current_messages, decide, history, undo
from db.traces import original_messages
from tests.conftest import S1
from workbench.traces.importing import import_files


def test_migrations_apply_once_and_are_recorded(db_path):
    db = open_db(db_path)
    applied = [m.name for m in MIGRATIONS.applied(db)]
    assert applied == [m.name for m in MIGRATIONS._migrations]
    db.conn.close()
    db = open_db(db_path)  # reopening applies nothing twice
    assert [m.name for m in MIGRATIONS.applied(db)] == applied
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"traces", "messages", "revisions", "flags", "jobs", "models", "eval_runs",
            "eval_results", "tool_schemas", "tasks", "search"} <= set(db.table_names())


def test_failed_migration_leaves_no_trace(db_path):
    from sqlite_utils.migrations import Migrations

    extra = Migrations("workbench-test")

    @extra()
    def m001_bad(db):
        db.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    db = open_db(db_path)
    with pytest.raises(RuntimeError):
        extra.apply(db)
    assert "half" not in db.table_names()
    assert extra.pending(db)


def _one_trace(db):
    import_files(db, [S1 / "traces.jsonl"])
    return db.execute("SELECT id FROM traces ORDER BY id LIMIT 1").fetchone()[0]


def test_original_messages_cannot_be_updated(db):
    tid = _one_trace(db)
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        db.execute("UPDATE messages SET content = 'x' WHERE trace_id = ?", [tid])
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        db.execute("UPDATE tool_calls SET name = 'x' WHERE trace_id = ?", [tid])


def test_current_label_is_newest_accepted_revision_and_undo_restores(db):
    tid = _one_trace(db)
    original = original_messages(db, tid)
    turn = next(i for i, m in enumerate(original) if m["role"] == "assistant")
    new_call = [{"id": "c1", "type": "function",
                 "function": {"name": "FindRestaurants", "arguments": {"city": "Oakland", "cuisine": "Thai"}}}]
    r1 = add_revision(db, tid, turn, tool_calls=new_call, author_kind="human", author_name="ana",
                      reason="wrong tool")
    assert current_messages(db, tid)[turn]["tool_calls"] == new_call
    # a proposed revision does not change the label until accepted; a rejected one never does
    other = [{"id": "c2", "type": "function", "function": {"name": "respond_to_user", "arguments": {"message": "hi"}}}]
    r2 = add_revision(db, tid, turn, tool_calls=other, author_kind="committee",
                      author_name="vote", status="proposed", evidence={"votes": [1, 0]})
    assert current_messages(db, tid)[turn]["tool_calls"] == new_call
    decide(db, r2, "rejected")
    assert current_messages(db, tid)[turn]["tool_calls"] == new_call
    with pytest.raises(ValueError):
        decide(db, r2, "accepted")  # decided revisions stay decided
    undo(db, tid, turn, author_kind="human", author_name="ana")
    assert current_messages(db, tid)[turn] == original[turn]
    assert original_messages(db, tid) == original  # the original never moved
    hist = history(db, tid, turn)
    assert [h["id"] for h in hist][:2] == [r1, r2]
    assert hist[1]["evidence"] == {"votes": [1, 0]}
    assert hist[-1]["supersedes"] == r1


def test_revision_only_on_assistant_turns(db):
    tid = _one_trace(db)
    with pytest.raises(ValueError, match="user message"):
        add_revision(db, tid, 0, tool_calls=None, content="x", author_kind="human", author_name="a")
