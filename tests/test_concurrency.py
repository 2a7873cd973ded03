"""Several processes on one store: undo races, and a big import beside an analyst's edits."""

from __future__ import annotations

import multiprocessing

from db import open_db
from db.revisions import add_revision, undo
from tests.conftest import S1
from workbench.importing import import_files


def _assistant_turns(db, n: int) -> list[tuple[int, int]]:
    return [tuple(r) for r in db.execute(
        "SELECT trace_id, idx FROM messages WHERE role = 'assistant' ORDER BY trace_id, idx"
        " LIMIT ?", [n])]


def _undoer(db_path: str, turns: list[tuple[int, int]], who: str, together) -> None:
    db = open_db(db_path)
    for tid, idx in turns:
        together.wait(60)  # both processes undo the same turn at the same moment
        undo(db, tid, idx, author_kind="human", author_name=who)


def test_two_processes_undoing_the_same_turns_keep_each_history_linear(db_path):
    db = open_db(db_path)
    import_files(db, [S1 / "traces.jsonl"])
    turns = _assistant_turns(db, 300)
    assert len(turns) == 300
    for tid, idx in turns:
        add_revision(db, tid, idx, tool_calls=[{"id": None, "type": "function", "function": {
            "name": "respond_to_user", "arguments": {"message": "edited"}}}],
            author_kind="human", author_name="ana")
    ctx = multiprocessing.get_context("spawn")
    together = ctx.Barrier(2)
    procs = [ctx.Process(target=_undoer, args=(str(db_path), turns, w, together))
             for w in ("app", "cli")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    # every turn: the edit, then two undos, the second superseding the first
    forks = db.execute(
        "SELECT trace_id, message_idx, supersedes, count(*) FROM revisions"
        " WHERE supersedes IS NOT NULL GROUP BY trace_id, message_idx, supersedes"
        " HAVING count(*) > 1").fetchall()
    assert forks == []
    per_turn = db.execute("SELECT count(*) FROM revisions GROUP BY trace_id, message_idx")
    assert {n for (n,) in per_turn} == {3}
