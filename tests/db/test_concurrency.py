"""Several processes on one store: undo races, and a big import beside an analyst's edits."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from db import open_db
from db.browse import count_traces
from db.queries import TraceFilter
from db.revisions import add_revision, undo
from db.traces import stats
from tests.conftest import REPO, S1
from workbench.core.errors import InputError
from workbench.traces.importing import import_files


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
    for tid, idx in turns:   # two edits: two undos in a row step back through both
        for text in ("edited", "edited again"):
            add_revision(db, tid, idx, tool_calls=[{"id": None, "type": "function", "function": {
                "name": "respond_to_user", "arguments": {"message": text}}}],
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
    # every turn: two edits, then two undos one after the other: the first takes back the
    # second edit, the second the first edit (never both the same one), back at the original
    forks = db.execute(
        "SELECT trace_id, message_idx, supersedes, count(*) FROM revisions"
        " WHERE supersedes IS NOT NULL GROUP BY trace_id, message_idx, supersedes"
        " HAVING count(*) > 1").fetchall()
    assert forks == []
    per_turn = db.execute("SELECT count(*) FROM revisions GROUP BY trace_id, message_idx")
    assert {n for (n,) in per_turn} == {4}
    from db.revisions import current_messages
    from db.traces import original_messages

    for tid, idx in turns[:20]:
        assert current_messages(db, tid)[idx] == original_messages(db, tid)[idx]


# ----------------------------------------------------- a big import beside an analyst's edits

BIG = 20_000   # 100k traces take minutes on the 2-core test machine; see BENCHMARKS.md


def _big_file(path, n: int = BIG, word: str = "zanzibarish") -> None:
    """n distinct small conversations (OpenAI format) holding a word found nowhere else."""
    with open(path, "w") as fh:
        for i in range(n):
            call = {"id": "c1", "type": "function", "function": {
                "name": "FindRestaurants", "arguments": json.dumps({"city": f"Town{i}",
                                                                    "cuisine": "Thai"})}}
            answer = {"id": "c2", "type": "function", "function": {
                "name": "respond_to_user", "arguments": json.dumps({"message": f"ok {i}"})}}
            fh.write(json.dumps({"messages": [
                {"role": "user", "content": f"{word} Thai food in Town{i} please"},
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": f"[\"Nido {i}\"]"},
                {"role": "assistant", "tool_calls": [answer]}]}) + "\n")


def _import_proc(db_path, path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench", "--db", str(db_path), "import",
                             str(path)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _pending_rows(db) -> int:
    """Traces written so far by a running import (hidden from every query but this one)."""
    return db.execute("SELECT count(*) FROM traces WHERE import_id IN"
                      " (SELECT id FROM imports WHERE status = 'pending')").fetchone()[0]


def test_a_big_import_commits_in_batches_hidden_until_complete_beside_edits(db_path, tmp_path):
    """20,000 real TFT conversations with varied text (the import benchmark's corpus, about 7 s
    to import here) in one process, an analyst's edits in this one."""
    from bench.import_bench import make_corpus

    db = open_db(db_path)
    import_files(db, [S1 / "traces.jsonl"])
    turns = _assistant_turns(db, 300)
    big = tmp_path / "corpus.jsonl"
    make_corpus(S1.parent, big, BIG)
    proc = _import_proc(db_path, big)
    # edits while the import runs: each commits at once, none waits for the whole import
    during, slowest, seen_hidden = 0, 0.0, 0
    for n, (tid, idx) in enumerate(turns):
        t0 = time.monotonic()
        add_revision(db, tid, idx, tool_calls=[{"id": None, "type": "function", "function": {
            "name": "respond_to_user", "arguments": {"message": f"edit {n}"}}}],
            author_kind="human", author_name="ana")
        slowest = max(slowest, time.monotonic() - t0)
        db.conn.execute("BEGIN")   # one snapshot for the reads below
        hidden = _pending_rows(db)
        if hidden:
            during += 1
            seen_hidden = max(seen_hidden, hidden)
            # a reader sees none of the import's traces while it runs
            assert stats(db)["traces"] == 327
            assert count_traces(db, TraceFilter(source="corpus")) == 0
            assert count_traces(db, TraceFilter(text="19999")) == 0
        db.conn.execute("COMMIT")
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert during >= 5 and seen_hidden >= 1000   # the edits really ran beside the import
    assert slowest < 3.0, slowest   # the import used to hold the lock for all of its run
    assert stats(db)["traces"] == 327 + BIG
    assert count_traces(db, TraceFilter(source="corpus")) == BIG
    assert count_traces(db, TraceFilter(text="19999")) >= 1
    assert db.execute("SELECT count(*) FROM revisions").fetchone()[0] == n + 1
    assert db.execute("SELECT status FROM imports ORDER BY id").fetchall() == [
        ("complete",), ("complete",)]


def test_kill_9_mid_import_leaves_the_store_as_it_was(db_path, tmp_path):
    db = open_db(db_path)
    import_files(db, [S1 / "traces.jsonl"])
    before = stats(db)
    big = tmp_path / "big.jsonl"
    _big_file(big)
    proc = _import_proc(db_path, big)
    deadline = time.monotonic() + 300
    while _pending_rows(db) < 2000:   # some batches committed
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    assert stats(db) == before   # hidden even before anyone cleans up
    db.conn.close()
    db = open_db(db_path)   # the next open deletes the dead import's rows
    assert stats(db) == before
    assert _pending_rows(db) == 0 and db.execute(
        "SELECT count(*) FROM imports WHERE status = 'pending'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == before["messages"]
    assert db.execute("SELECT count(*) FROM search").fetchone()[0] == 327
    (report,) = import_files(db, [big])   # a re-import is exact
    assert (report.added, report.duplicates) == (BIG, 0)
    assert stats(db)["traces"] == 327 + BIG


def test_a_failed_import_deletes_what_it_committed(db_path, tmp_path):
    db = open_db(db_path)
    big = tmp_path / "big.jsonl"
    _big_file(big, 3000)
    with open(big, "a") as fh:
        fh.write("{broken\n")
    with pytest.raises(InputError, match=r"big.jsonl:3001: not valid JSON"):
        import_files(db, [big])
    assert db.execute("SELECT count(*) FROM traces").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM imports").fetchone()[0] == 0


def _hold_write_lock(db_path: str, seconds: float, held) -> None:
    db = open_db(db_path)
    db.conn.execute("BEGIN IMMEDIATE")
    held.set()
    time.sleep(seconds)
    db.conn.execute("COMMIT")


def test_a_writer_that_must_wait_says_so_and_waits(db_path):
    import_files(open_db(db_path), [S1 / "traces.jsonl"])
    ctx = multiprocessing.get_context("spawn")
    held = ctx.Event()
    holder = ctx.Process(target=_hold_write_lock, args=(str(db_path), 3.0, held))
    holder.start()
    assert held.wait(60)
    code = ("from db import open_db; from db.revisions import add_revision;"
            f"add_revision(open_db({str(db_path)!r}), 1, 1, tool_calls=None, content='x',"
            " author_kind='human', author_name='ana')")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    holder.join(60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("waiting for the store's write lock held by") == 1, r.stderr
    assert open_db(db_path).execute("SELECT count(*) FROM revisions").fetchone()[0] == 1
