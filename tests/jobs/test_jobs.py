"""The job runtime: specs run by one runner, from a stored row, in the foreground or a detached
worker; every path ends the row; units are computed once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db import open_db
from db.flags import flags_for
from db.jobs import create_job, get_job, request_cancel, start_job
from tests.conftest import DATA, REPO, S1
from workbench.traces.importing import import_files
from workbench.jobs.registry import available_jobs, get_spec
from tests.job_support import run_body
from workbench.jobs.context import Progress
from workbench.jobs.runner import execute, submit


def test_every_kind_is_a_spec_with_typed_params():
    specs = available_jobs()
    assert {"check", "normalize", "train", "recount", "eval"} <= set(specs)
    for spec in specs.values():
        for f in spec.fields():
            assert f.help, f"{spec.kind}.{f.name} has no help"
    with pytest.raises(ValueError, match="unknown parameter"):
        get_spec("check").make_params({"nope": 1})
    with pytest.raises(ValueError, match="unknown check foo"):
        get_spec("check").make_params({"only": "schema,foo"})
    assert get_spec("check").make_params({"only": ["schema,structure"]}).only == \
        ["schema", "structure"]


def test_check_and_normalize_jobs_from_stored_rows(db):
    import_files(db, [DATA / "scenario-3-schema-drift" / "traces.jsonl"],
                 task=S1 / "job_description.json")
    done = execute(db, submit(db, "check", {}, {}))
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["flags"] == len(flags_for(db)) > 0
    assert done["done"] == done["total"]  # a finished job shows its whole bar
    norm = execute(db, submit(db, "normalize", {}, {}))
    assert norm["status"] == "succeeded", norm["error"]
    assert norm["result"]["revisions"] > 0
    assert db.execute("SELECT count(*) FROM revisions WHERE author_kind = 'normaliser'"
                      ).fetchone()[0] == norm["result"]["revisions"]
    assert "revisions" in get_job(db, norm["id"])["log"]


def test_check_job_reports_each_check_and_a_cancel_changes_nothing(db):
    import_files(db, [S1 / "traces.jsonl"], task=S1 / "job_description.json")
    seen: list[str] = []
    done = execute(db, submit(db, "check"),
                   listeners=[lambda e: seen.append(e.message) if isinstance(e, Progress) else None])
    assert done["status"] == "succeeded"
    assert [m for m in seen if m.startswith("check ")] == [
        "check 1/5: schema", "check 2/5: structure", "check 3/5: grounding",
        "check 4/5: coherence", "check 5/5: duplicates"]
    before = len(flags_for(db))
    job_id = submit(db, "check")

    def cancel_at_coherence(event):
        if isinstance(event, Progress) and (event.message or "").endswith("coherence"):
            request_cancel(db, job_id)
    db.execute("DELETE FROM flags")
    stopped = execute(db, job_id, listeners=[cancel_at_coherence])
    assert stopped["status"] == "cancelled"
    assert len(flags_for(db)) == 0 < before   # no flag of the stopped run was stored


def test_a_unit_is_computed_once_across_jobs(db):
    calls = []

    def body(ctx):
        return [ctx.unit("probe", {"prompt": p}, lambda p=p: calls.append(p) or {"v": p})
                for p in ("a", "b")]

    first = run_body(db, "probe", body)
    again = run_body(db, "probe", body)
    assert first["result"] == again["result"] == [{"v": "a"}, {"v": "b"}]
    assert calls == ["a", "b"]                       # the second job computed nothing
    assert "2 computed, 0 reused" in first["log"] and "0 computed, 2 reused" in again["log"]


def test_a_dead_worker_is_interrupted_when_the_store_opens(db_path):
    db = open_db(db_path)
    job_id = create_job(db, "recount")
    start_job(db, job_id)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    db.execute("UPDATE jobs SET pid = ? WHERE id = ?", [proc.pid, job_id])  # a pid now gone
    live = create_job(db, "recount")
    start_job(db, live)                                # this process: alive
    db.conn.close()
    again = open_db(db_path)
    assert get_job(again, job_id)["status"] == "interrupted"
    assert "resume" in get_job(again, job_id)["error"]
    assert get_job(again, live)["status"] == "running"
    again.conn.close()


def _cli(db_path: Path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "workbench", "--db", str(db_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO, **kw)


def _wait_for(cond, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_ctrl_c_on_a_foreground_check_ends_its_row_cancelled(db_path):
    db = open_db(db_path)
    import_files(db, [S1 / "traces.jsonl"], task=S1 / "job_description.json")
    proc = _cli(db_path, "check")
    _wait_for(lambda: db.execute("SELECT count(*) FROM jobs WHERE status = 'running'"
                                 ).fetchone()[0] == 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    row = get_job(db, db.execute("SELECT max(id) FROM jobs").fetchone()[0])
    assert row["status"] == "cancelled", (row, err)
    assert proc.returncode == 130 and "cancelled" in err
    assert flags_for(db) == []
    db.conn.close()


def test_ctrl_c_the_moment_the_row_says_running_ends_it_cancelled(db, monkeypatch):
    """The signal handlers are in place before the row says running: a Ctrl-C right then (what
    the test above sends as soon as it sees the row running, and once won the race) cancels
    the job instead of leaving a running row behind."""
    import db.jobs as job_store

    def start_then_ctrl_c(conn, job_id):
        start_job(conn, job_id)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(job_store, "start_job", start_then_ctrl_c)
    row = run_body(db, "check", lambda ctx: pytest.fail("the job body must not run"))
    assert row["status"] == "cancelled" and "Ctrl-C" in row["error"]


def test_detached_worker_runs_on_after_its_starter_exits(db_path):
    db = open_db(db_path)
    import_files(db, [S1 / "traces.jsonl"], task=S1 / "job_description.json")
    proc = _cli(db_path, "check", "--only", "schema,structure", "--detach", "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    started = json.loads(out)
    _wait_for(lambda: get_job(db, started["job_id"])["status"] not in ("queued", "running"))
    row = get_job(db, started["job_id"])
    assert row["status"] == "succeeded", row["error"]
    assert row["pid"] != proc.pid and row["params"]["only"] == ["schema", "structure"]
    assert Path(started["log"]).is_file() and "succeeded" in Path(started["log"]).read_text()
    db.conn.close()


def test_jobs_commands_list_show_cancel_rerun(db_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    db = open_db(db_path)
    import_files(db, [S1 / "traces.jsonl"], task=S1 / "job_description.json")
    runner = CliRunner()
    r = runner.invoke(app, ["--db", str(db_path), "check", "--only", "schema", "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["--db", str(db_path), "jobs", "list", "--json"])
    (row,) = json.loads(r.stdout)
    assert row["kind"] == "check" and row["status"] == "succeeded"
    r = runner.invoke(app, ["--db", str(db_path), "jobs", "show", str(row["id"])])
    assert "params" in r.stdout and "schema" in r.stdout
    r = runner.invoke(app, ["--db", str(db_path), "jobs", "rerun", str(row["id"]), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["status"] == "succeeded"
    r = runner.invoke(app, ["--db", str(db_path), "jobs", "cancel", str(row["id"])])
    assert r.exit_code == 1 and "nothing to cancel" in r.output
    r = runner.invoke(app, ["--db", str(db_path), "jobs", "resume", str(row["id"])])
    assert r.exit_code == 1 and "only a failed, cancelled or interrupted" in r.output
    r = runner.invoke(app, ["--db", str(db_path), "check", "--only", "foo"])
    assert r.exit_code == 1 and "unknown check foo" in r.output
    r = runner.invoke(app, ["--db", str(db_path), "export", "x.jsonl", "--split", "foo"])
    assert r.exit_code == 1 and "--split must be one of" in r.output
    db.conn.close()


def test_closing_the_apps_terminal_leaves_its_job_running_to_the_end(db_path):
    """The app on a real pty (its controlling terminal) starts a job from the jobs panel; the
    terminal is closed while the job's worker is still starting: the app is hung up, the job
    still ends `succeeded`, run by a worker that is not the app."""
    import pty
    import threading

    db = open_db(db_path)
    import_files(db, [S1 / "traces.jsonl"], task=S1 / "job_description.json")
    pid, master = pty.fork()
    if pid == 0:   # the child: a session leader whose controlling terminal is the pty
        os.environ.update(PYTHONPATH=str(REPO), TERM="xterm-256color")
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "workbench", "--db", str(db_path)])
    import fcntl
    import struct
    import termios

    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    screen = bytearray()

    def drain() -> None:   # the app blocks if nobody reads its terminal
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    threading.Thread(target=drain, daemon=True).start()
    try:
        _wait_for(lambda: b"traces" in screen, timeout=60)
        time.sleep(1.0)
        os.write(master, b"b")            # the jobs panel
        _wait_for(lambda: b"Start" in screen[-20000:], timeout=30)
        time.sleep(0.5)
        os.write(master, b"n")            # the selected kind's form (the first: recount)
        _wait_for(lambda: b"Start job: recount" in screen[-40000:], timeout=30)
        time.sleep(0.5)
        os.write(master, b"\x13")         # ctrl+s: start it
        _wait_for(lambda: db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1, timeout=30)
        job_id = db.execute("SELECT id FROM jobs").fetchone()[0]
        os.close(master)                  # the terminal window closes
        ended = None
        for _ in range(100):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                ended = status
                break
            time.sleep(0.1)
        assert ended is not None, "the app outlived its terminal"
        _wait_for(lambda: get_job(db, job_id)["status"] not in ("queued", "running"), timeout=120)
        row = get_job(db, job_id)
        assert row["status"] == "succeeded", row
        assert row["pid"] != pid and row["result"]["traces"] > 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        db.conn.close()
