"""The relevance judge (workbench relevance) against a scripted OpenAI-compatible server:
on-task, off-task, garbage and 500 replies, caching, and the analyst's include winning."""

from __future__ import annotations

import json
import threading
import time

import pytest
from typer.testing import CliRunner

from db import revisions
from db.flags import flags_for
from db.jobs import get_job
from db.traces import get_trace
from tests.scripted_openai import ScriptedServer
from tests.tui_data import sample_store
from workbench.curation import decisions
from workbench.cli import app
from workbench.jobs.runner import execute, submit

REASON = "about the [bold]weather[/] \x1b[2J"


def verdict(on_task: bool, reason: str) -> dict:
    return {"content": json.dumps({"on_task": on_task, "reason": reason})}


@pytest.fixture
def db_path(tmp_path):
    return sample_store(tmp_path / "r.db", ())


def scripted(db, answers: dict):
    """A reply function answering answers[trace] (the trace found by its first user line)."""
    firsts = {t: "[0] user: " + revisions.current_messages(db, t)[0]["content"] + "\n"
              for t in answers}
    lock = threading.Lock()

    def reply(body):
        text = body["messages"][-1]["content"]
        with lock:
            (t,) = [t for t, first in firsts.items() if first in text]
            answer = answers[t]
        return answer(body) if callable(answer) else answer
    return reply


def judge(db, name: str, trace_ids: list[int]) -> dict:
    job_id = submit(db, "relevance", {"trace_ids": trace_ids}, {"judge": name})
    return execute(db, job_id)


def relevance_flags(db, tid: int) -> list[dict]:
    return [f for f in flags_for(db, [tid]) if f["check"] == "relevance"]


def test_verdicts_become_flags_failures_are_counted_and_replies_are_cached(db, tmp_path,
                                                                         monkeypatch):
    down = {"on": True}

    def flaky(body):
        return {"status": 500, "body": "oops"} if down["on"] else verdict(True, "bookings")

    answers = {1: verdict(True, "restaurant search"), 2: verdict(False, REASON),
               3: {"content": "I think so"}, 4: flaky}
    with ScriptedServer(scripted(db, answers)) as s:
        config = tmp_path / "config.toml"
        config.write_text(f'[endpoints.j]\nbase_url = "{s.url}"\nmodel = "m"\nretries = 1\n'
                          f'price_in = 1.0\nprice_out = 2.0\nmax_concurrency = 2\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
        row = judge(db, "j", [1, 2, 3, 4])
        assert row["status"] == "succeeded", row["error"]
        res = row["result"]
        assert {k: res[k] for k in ("judged", "on_task", "off_task", "failed", "calls")} == \
            {"judged": 2, "on_task": 1, "off_task": 1, "failed": 2, "calls": 2}
        # a reply that is no JSON (trace 3) is a failed request: not counted as an answer
        assert res["tokens"] == {"in": 200, "out": 40}
        assert res["cost"] == pytest.approx(2 * (100 * 1.0 + 20 * 2.0) / 1e6)
        assert s.count == 3 + 2                 # trace 4: one try and one retry
        body = s.requests[0]
        assert body["response_format"]["type"] == "json_schema" and "tools" not in body
        log = get_job(db, row["id"])["log"]
        assert "trace 4: j: HTTP 500" in log and "trace 3: j: the reply is not JSON" in log

        (flag,) = relevance_flags(db, 2)
        assert flag["message_idx"] is None and flag["severity"] == "error"
        assert flag["detail"] == "off-task (j): about the [bold]weather[/] \\x1b[2J"
        assert relevance_flags(db, 1) == [] and relevance_flags(db, 3) == []
        assert get_trace(db, 2)["excluded"] and not get_trace(db, 1)["excluded"]

        # a re-run asks only where a request failed (4: down, 3: no JSON, never cached)
        down["on"] = False
        row = judge(db, "j", [1, 2, 3, 4])
        assert row["result"]["calls"] == 1 and s.count == 7
        assert row["result"]["on_task"] == 2 and row["result"]["failed"] == 1   # 3: garbage
        row = judge(db, "j", [1, 2, 3, 4])
        assert row["result"]["calls"] == 0 and s.count == 8
        assert row["result"]["units"]["reused"] == 3

        # the analyst's include wins over the judge's flag, also after another run
        decisions.set_excluded(db, False, "ada", ids=[2])
        judge(db, "j", [2])
        assert relevance_flags(db, 2) and not get_trace(db, 2)["excluded"]

    # another judge finds trace 2 on task: its verdict replaces the flag
    with ScriptedServer(lambda b: verdict(True, "fine")) as other:
        row = judge(db, f"{other.url}#m2", [2, 5])
        assert row["result"]["on_task"] == 2 and other.count == 2
    assert relevance_flags(db, 2) == []


def test_cli_relevance(db_path, db):
    with ScriptedServer(scripted(db, {1: verdict(False, "a weather chat")})) as s:
        args = ["--db", str(db_path), "relevance", "--judge", f"{s.url}#m", "--trace-id", "1"]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        assert "1 traces judged: 0 on task, 1 off task" in " ".join(r.stdout.split())
        r = CliRunner().invoke(app, [*args, "--json"])
        assert r.exit_code == 0, r.output
        res = json.loads(r.stdout)
        assert res["off_task"] == 1 and res["calls"] == 0 and s.count == 1
    r = CliRunner().invoke(app, ["--db", str(db_path), "relevance"])
    assert r.exit_code == 1 and "--judge" in r.output


def test_requests_run_concurrently_up_to_the_endpoints_limit(db, tmp_path, monkeypatch):
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def slow(body):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        return verdict(True, "fine")

    with ScriptedServer(slow) as s:
        config = tmp_path / "config.toml"
        config.write_text(f'[endpoints.j]\nbase_url = "{s.url}"\nmodel = "m"\n'
                          f'max_concurrency = 3\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
        t0 = time.monotonic()
        row = judge(db, "j", list(range(1, 10)))
        elapsed = time.monotonic() - t0
    assert row["result"]["on_task"] == 9 and s.count == 9
    assert state["most"] == 3
    assert elapsed < 9 * 0.3 * 0.6          # three at a time: about a third of one by one
