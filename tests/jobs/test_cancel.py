"""`jobs cancel` is seen at the next unit of work by every job kind that calls a model: the
committee, relevance, synthesis and evaluation stop between model calls, never send one after
the cancel, and end `cancelled`. Scripted OpenAI-compatible servers on 127.0.0.1 request the
cancel from another connection while a request is in flight (as `jobs cancel` would)."""

from __future__ import annotations

import json
import threading

import pytest
from typer.testing import CliRunner

from db import open_db
from db.jobs import get_job, request_cancel
from tests.scripted_openai import ScriptedServer, tool_call_reply
from tests.tui_data import sample_store
from workbench.cli import app
from workbench.jobs.runner import execute, submit

GOOD = {"name": "FindRestaurants", "arguments": {"city": "Oakland", "cuisine": "Italian"}}
OTHER = {"name": "FindRestaurants", "arguments": {"city": "Fremont", "cuisine": "Thai"}}


@pytest.fixture
def store(tmp_path):
    return sample_store(tmp_path / "c.db", (1, 2, 3, 4))


@pytest.fixture
def db(store):
    database = open_db(store)
    yield database
    database.conn.close()


class CancelOnFirst:
    """A reply script that asks the job to stop when its first request arrives (answering it
    `delay` seconds later, so the job has the cancel before it has the reply)."""

    def __init__(self, store, answer, delay: float = 0.2) -> None:
        self.store, self.answer, self.delay = store, answer, delay
        self.job_id: int | None = None
        self.lock = threading.Lock()
        self.seen = 0

    def __call__(self, body: dict) -> dict:
        with self.lock:
            self.seen += 1
            first = self.seen == 1
        if first:
            other = open_db(self.store)
            request_cancel(other, self.job_id)
            other.conn.close()
        return {**self.answer(body), "delay": self.delay if first else 0}


def config(tmp_path, monkeypatch, **urls: str) -> None:
    """Named endpoints, one request in flight each (so the order of requests is known)."""
    path = tmp_path / "config.toml"
    path.write_text("".join(f'[endpoints.{name}]\nbase_url = "{url}"\nmodel = "m"\n'
                            "max_concurrency = 1\nretries = 0\n" for name, url in urls.items()))
    monkeypatch.setenv("WORKBENCH_CONFIG", str(path))


def test_a_cancelled_committee_asks_no_member_nor_arbiter_again(db, store, tmp_path,
                                                                  monkeypatch):
    """Members disagree, so each turn would go to the arbiter next: the cancel, requested while
    member a answers the first turn, is seen before the arbiter is asked and before a's next
    request (both waited for a model call, not for the end of a turn)."""
    script = CancelOnFirst(store, lambda b: tool_call_reply(GOOD["name"], GOOD["arguments"]))
    with ScriptedServer(script) as a, \
            ScriptedServer(lambda b: tool_call_reply(OTHER["name"], OTHER["arguments"])) as b, \
            ScriptedServer(lambda b: tool_call_reply(GOOD["name"], GOOD["arguments"])) as arb:
        config(tmp_path, monkeypatch, a=a.url, b=b.url, arb=arb.url)
        job_id = submit(db, "relabel", {}, {"committee": ["a", "b"], "arbiter": "arb"})
        script.job_id = job_id
        row = execute(db, job_id)
        assert row["status"] == "cancelled", row
        assert a.count == 1 and arb.count == 0
        assert b.count <= 2          # at most the turns already asked when the cancel came
    assert db.execute("SELECT count(*) FROM revisions WHERE author_kind = 'committee'"
                      ).fetchone()[0] == 0


def test_a_cancelled_relevance_job_judges_no_further_trace(db, store, tmp_path, monkeypatch):
    verdict = {"content": '{"on_task": true, "reason": "fine"}'}
    script = CancelOnFirst(store, lambda b: verdict)
    with ScriptedServer(script) as judge:
        config(tmp_path, monkeypatch, judge=judge.url)
        job_id = submit(db, "relevance", {}, {"judge": "judge"})
        script.job_id = job_id
        row = execute(db, job_id)
        assert row["status"] == "cancelled", row
        assert judge.count == 1


def _conversation_reply(n: int) -> dict:
    user = {"role": "user", "content": f"find food in town {n}"}
    call = {"role": "assistant", "content": None, "tool_calls": [{
        "id": "c1", "type": "function", "function": {
            "name": GOOD["name"], "arguments": json.dumps({"city": f"Town{n}",
                                                           "cuisine": "Thai"})}}]}
    return {"content": json.dumps({"conversations": [{"messages": [user, call]}]})}


def test_a_cancelled_synthesis_sends_no_request_after_the_cancel(db, store, tmp_path,
                                                                  monkeypatch):
    script = CancelOnFirst(store, lambda b: _conversation_reply(1))
    with ScriptedServer(script) as teacher:
        config(tmp_path, monkeypatch, t=teacher.url)
        job_id = submit(db, "synth", {}, {"teacher": "t", "target": 6, "per_request": 1,
                                          "max_requests": 6})
        script.job_id = job_id
        row = execute(db, job_id)
        assert row["status"] == "cancelled", row
        assert teacher.count == 1


def test_a_cancelled_evaluation_stops_between_turns_and_resumes_with_the_rest(db, store):
    """One test conversation of several turns: the cancel during its first turn stops the job
    before the second (it used to score the whole conversation first); that turn's row is kept
    and a resume asks only for the turns left."""
    from db import evals as eval_store

    tid = db.execute("SELECT id FROM traces WHERE split = 'test' ORDER BY id LIMIT 1"
                     ).fetchone()[0]
    turns = db.execute("SELECT count(*) FROM messages WHERE trace_id = ? AND role ="
                       " 'assistant'", [tid]).fetchone()[0]
    assert turns >= 3
    answer = {"content": "no call"}
    script = CancelOnFirst(store, lambda b: answer)
    with ScriptedServer(script) as model:
        job_id = submit(db, "eval", {"trace_ids": [tid]}, {"endpoint": f"{model.url}#m"})
        script.job_id = job_id
        row = execute(db, job_id)
        assert row["status"] == "cancelled", row
        assert model.count == 1
        run_id = db.execute("SELECT max(id) FROM eval_runs").fetchone()[0]
        assert len(eval_store.results(db, run_id)) == 1
        # `jobs resume` prints the result as a table, never a Python dict
        r = CliRunner().invoke(app, ["--db", str(store), "jobs", "resume", str(job_id)])
        assert r.exit_code == 0, r.output
        assert model.count == turns       # the first turn was not asked again
        assert len(eval_store.results(db, run_id)) == turns
    row = get_job(db, job_id)
    assert row["status"] == "succeeded" and row["result"]["metrics"]["n"] == turns
    assert "metrics.n" in r.stdout and "run_id" in r.stdout and "{'" not in r.stdout
    r = CliRunner().invoke(app, ["--db", str(store), "jobs", "show", str(job_id), "--json"])
    assert json.loads(r.stdout)["result"]["run_id"] == run_id
