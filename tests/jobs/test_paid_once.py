"""A paid call is made once, and every job ends (issue #30, items 2 and 4): real `workbench`
processes against the scripted OpenAI-compatible server, stopped with SIGSTOP, SIGTERM and
SIGKILL; real SQLite stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from db import open_db
from db.jobs import get_job
from tests.scripted_openai import ScriptedServer, tool_call_reply
from tests.tui_data import ROOT, add_flag, first_assistant, sample_store
from workbench.cli import app
from workbench.jobs.runner import start_worker, submit

GOOD = tool_call_reply("FindRestaurants", {"city": "Oakland", "cuisine": "Italian"})
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def db_path(tmp_path):
    path = sample_store(tmp_path / "p.db", (1, 2, 3))
    db = open_db(path)
    for t in range(4, 9):
        add_flag(db, t, first_assistant(db, t), "schema", "error", "planted")
    db.conn.close()
    return path


def _relabel(db_path, url: str, *extra: str) -> subprocess.Popen:
    """A relabel whose agreed decisions are labels (`--accept`: one scripted member has no
    measured agreement with the analyst to earn that)."""
    return subprocess.Popen([sys.executable, "-m", "workbench", "--db", str(db_path), "relabel",
                             "--committee", f"{url}#m", "--accept", "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT)


def _until(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _count(db, sql: str, *args) -> int:
    return db.execute(sql, args).fetchone()[0]


def _stop_outside_a_write(proc: subprocess.Popen, db_path) -> None:
    """SIGSTOP `proc` at a moment it holds no write lock (else every writer would wait)."""
    import sqlite3

    for _ in range(100):
        os.kill(proc.pid, signal.SIGSTOP)
        probe = sqlite3.connect(db_path, timeout=0.05, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.02)
        finally:
            probe.close()
    raise AssertionError("the worker always held the write lock")


def _prompts(server: ScriptedServer) -> list[str]:
    with server.lock:
        return [json.dumps(b["messages"], sort_keys=True) for b in server.requests]


def test_a_stopped_process_keeps_its_job_and_resume_refuses_while_it_lives(db_path):
    """SIGSTOP the worker, age its heartbeat far past the limit: the next open leaves it
    running; `jobs resume` refuses (also when another host took it for dead); SIGCONT: it ends
    with every prompt asked once."""
    with ScriptedServer(lambda b: {**GOOD, "delay": 0.2}) as s:
        proc = _relabel(db_path, s.url)
        db = open_db(db_path)
        _until(lambda: _count(db, "SELECT count(*) FROM job_units") >= 1)
        job_id = _count(db, "SELECT max(id) FROM jobs")
        _stop_outside_a_write(proc, db_path)
        try:
            old = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()
            db.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", [old, job_id])
            db.conn.close()
            db = open_db(db_path)                        # marks dead jobs: not this one
            assert get_job(db, job_id)["status"] == "running"
            r = CliRunner().invoke(app, ["--db", str(db_path), "jobs", "resume", str(job_id)])
            assert r.exit_code == 1 and "only a failed, cancelled or interrupted" in r.output
            # as if another host had marked it: the live pid still wins
            db.execute("UPDATE jobs SET status = 'interrupted' WHERE id = ?", [job_id])
            r = CliRunner().invoke(app, ["--db", str(db_path), "jobs", "resume", str(job_id)])
            assert r.exit_code == 1, r.output
            assert f"pid {proc.pid}" in r.output and "still lives" in r.output
            assert r.output.startswith("error: ")
            db.execute("UPDATE jobs SET status = 'running' WHERE id = ?", [job_id])
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        prompts = _prompts(s)
    row = get_job(db, job_id)
    assert row["status"] == "succeeded"
    assert len(prompts) == len(set(prompts)) == row["result"]["voted"] == 8
    db.conn.close()


def test_two_jobs_over_the_same_turns_pay_for_each_once(db_path):
    """A second relabel started while the first runs skips the turns the first claimed: each
    prompt is asked once and each turn gets one revision; the claims end with the jobs."""
    gate = threading.Event()    # the first job's replies wait until the second has ended

    def script(body):
        gate.wait(30)
        return GOOD

    with ScriptedServer(script) as s:
        first = _relabel(db_path, s.url)
        db = open_db(db_path)
        _until(lambda: s.count >= 1)
        second = _relabel(db_path, s.url)
        out2, err2 = second.communicate(timeout=60)
        gate.set()
        out1, err1 = first.communicate(timeout=60)
        assert first.returncode == 0 and second.returncode == 0, (err1, err2)
        prompts = _prompts(s)
    results = [json.loads(o) for o in (out1, out2)]
    assert len(prompts) == len(set(prompts)) == 8
    assert results[0]["voted"] == 8 and results[1]["voted"] == 0
    assert results[1]["claimed_elsewhere"] == 8
    per_turn = db.execute("SELECT trace_id, message_idx, count(*) FROM revisions WHERE"
                          " author_kind = 'committee' AND status = 'accepted'"
                          " GROUP BY trace_id, message_idx").fetchall()
    assert len(per_turn) == 8 and {n for _, _, n in per_turn} == {1}
    assert _count(db, "SELECT count(*) FROM job_claims") == 0
    db.conn.close()


def test_replies_in_flight_at_sigterm_are_stored_and_not_asked_again(db_path):
    """SIGTERM while requests are in flight: the worker waits for them, stores them, ends
    `interrupted`; the resumed job asks only the prompts never answered."""
    started = threading.Event()

    def script(body):
        started.set()
        return {**GOOD, "delay": 1.0}

    with ScriptedServer(script) as s:
        proc = _relabel(db_path, s.url)
        db = open_db(db_path)
        assert started.wait(30)
        time.sleep(0.2)
        in_flight = s.count
        assert _count(db, "SELECT count(*) FROM job_units") < in_flight
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        job_id = _count(db, "SELECT max(id) FROM jobs")
        assert get_job(db, job_id)["status"] == "interrupted"
        asked = _prompts(s)
        assert _count(db, "SELECT count(*) FROM job_units WHERE kind = 'committee.vote'") \
            == len(asked) >= in_flight
        r = CliRunner().invoke(app, ["--db", str(db_path), "jobs", "resume", str(job_id)])
        assert r.exit_code == 0, r.output
        prompts = _prompts(s)
    assert len(prompts) == len(set(prompts)) == 8
    assert get_job(db, job_id)["status"] == "succeeded"
    db.conn.close()


def test_a_queued_job_whose_process_died_is_marked_and_a_cancel_says_so(db_path):
    """`--detach` whose worker is killed at once, and a process that queued a job and died:
    the next open marks both; cancelling a queued job cancels it (exit 0) and a worker
    started for it afterwards does not run it."""
    db = open_db(db_path)
    detached = submit(db, "recount")
    proc = start_worker(str(db_path), detached)
    proc.kill()
    proc.wait()
    script = ("import sys; from db import open_db; from workbench.jobs.runner import submit;"
              " print(submit(open_db(sys.argv[1]), 'recount'))")
    orphan = int(subprocess.run([sys.executable, "-c", script, str(db_path)], env=ENV,
                                cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout)
    db.conn.close()
    db = open_db(db_path)
    for job_id in (detached, orphan):
        row = get_job(db, job_id)
        assert row["status"] == "interrupted", row
        assert "ended before it started" in row["error"]

    queued = submit(db, "recount")
    r = CliRunner().invoke(app, ["--db", str(db_path), "jobs", "cancel", str(queued)])
    assert r.exit_code == 0, r.output
    assert get_job(db, queued)["status"] == "cancelled"
    again = CliRunner().invoke(app, ["--db", str(db_path), "jobs", "cancel", str(queued)])
    assert again.exit_code == 1 and "nothing to cancel" in again.output
    from workbench.jobs.runner import execute

    row = execute(db, queued)                      # a worker that comes too late
    assert row["status"] == "cancelled" and row["started_at"] is None
    db.conn.close()


def test_a_relevance_job_skips_the_traces_a_running_job_claimed(db_path):
    """Job A (running, in another process's stead) holds traces 1-3; job B over 1-5 asks the
    judge about 4 and 5 only; once A has ended its claims are gone and C judges 1-3."""
    from db import jobs as store

    db = open_db(db_path)
    holder = submit(db, "recount")
    store.start_job(db, holder)
    assert store.claim(db, holder, "relevance.trace", ["1", "2", "3"]) == {}
    verdict = {"content": json.dumps({"on_task": True, "reason": "on the task"})}
    with ScriptedServer(lambda b: verdict) as s:
        from workbench.jobs.runner import execute

        row = execute(db, submit(db, "relevance", {"trace_ids": [1, 2, 3, 4, 5]},
                                 {"judge": f"{s.url}#m"}))
        assert row["status"] == "succeeded", row["error"]
        assert row["result"]["claimed_elsewhere"] == 3 and s.count == 2
        store.finish_job(db, holder, "succeeded")
        assert _count(db, "SELECT count(*) FROM job_claims") == 0
        row = execute(db, submit(db, "relevance", {"trace_ids": [1, 2, 3]},
                                 {"judge": f"{s.url}#m"}))
        assert row["result"]["claimed_elsewhere"] == 0 and s.count == 5
    db.conn.close()
