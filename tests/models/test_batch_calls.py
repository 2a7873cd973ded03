"""Batch model calls (`batch = true` endpoints): committee, relevance and teacher requests as
OpenAI Batch jobs against the scripted Batch server on 127.0.0.1 (files, batches, polls,
per-request failures, expired batches), a job killed while its batch runs and resumed, and
bad configuration. Real SQLite stores, real `workbench` processes for the kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from db import open_db
from db.jobs import get_job
from tests.scripted_openai import ScriptedServer, doubtful_turn, tool_call_reply
from tests.tui_data import ROOT, sample_store
from workbench.cli import app
from workbench.models.endpoints import endpoints
from workbench.core.errors import InputError
from workbench.jobs.runner import execute, submit

SUSPECT = (1, 2, 3, 4, 5, 6)
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def by_member(body: dict) -> dict:
    """Member `a` names a city per turn; `b` agrees on even turns only; arbiter `c` picks
    b's candidate."""
    turn = doubtful_turn(body)
    trace = len(body["messages"][-1]["content"])   # differs between traces
    city = f"City{trace}x{turn}"
    if body["model"] == "c" or (body["model"] == "b" and trace % 2):
        city = "Elsewhere"
    return tool_call_reply("FindRestaurants", {"city": city, "cuisine": "Italian"})


def _config(path, url: str, *names: str, batch: bool = True, poll: float = 0.02) -> None:
    path.write_text("".join(
        f'[endpoints.{n}]\nbase_url = "{url}"\nmodel = "{n}"\n'
        + (f"batch = true\nbatch_poll_s = {poll}\n" if batch else "") for n in names))


def _revisions(db) -> list[tuple]:
    return sorted(db.execute("SELECT trace_id, message_idx, status, tool_calls, content FROM"
                             " revisions WHERE author_kind = 'committee'").fetchall())


def _relabel(db, *members: str, **params) -> dict:
    job_id = submit(db, "relabel", {}, {"committee": list(members), **params})
    return execute(db, job_id)


def _lines(server: ScriptedServer, batch_id: str) -> list[dict]:
    content = server.files[server.batches[batch_id]["input_file_id"]]["content"]
    return [json.loads(x) for x in content.splitlines()]


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    monkeypatch.setenv("WORKBENCH_CONFIG", str(path))
    return path


def test_relabel_through_batch_endpoints_proposes_what_the_online_path_does(tmp_path, config):
    """The same scripted replies, online and as batches: the same revisions (agreed ones and
    the candidates of a disagreement), the same request bodies; one batch per member, each
    polled until done, and every request paid once."""
    online_db = open_db(sample_store(tmp_path / "online.db", SUSPECT))
    batch_db = open_db(sample_store(tmp_path / "batch.db", SUSPECT))
    with ScriptedServer(by_member) as online, \
            ScriptedServer(by_member, batch_polls=3) as batched:
        _config(config, online.url, "a", "b", batch=False)
        first = _relabel(online_db, "a", "b")
        _config(config, batched.url, "a", "b")
        second = _relabel(batch_db, "a", "b")
        online_bodies = sorted(json.dumps(b, sort_keys=True) for b in online.requests)
        batch_bodies = sorted(json.dumps(b, sort_keys=True) for b in batched.requests)
        batches = dict(batched.batches)
        lines = [line for b in batches for line in _lines(batched, b)]
    assert first["status"] == second["status"] == "succeeded", (first, second)
    assert len(online_bodies) == 12 and batch_bodies == online_bodies
    assert len(batches) == 2 and {b["polls"] for b in batches.values()} == {4}
    assert {b["endpoint"] for b in batches.values()} == {"/v1/chat/completions"}
    assert len({line["custom_id"] for line in lines}) == 12
    assert _revisions(batch_db) == _revisions(online_db) != []
    statuses = {r[2] for r in _revisions(batch_db)}
    assert statuses == {"proposed"}      # one member's agreement is not earned: proposals
    assert second["result"]["outcomes"] == first["result"]["outcomes"]
    assert second["result"]["calls"] == 12
    assert batch_db.execute("SELECT count(*) FROM model_batches WHERE status = 'completed'"
                            " AND job_id = ?", [second["id"]]).fetchone()[0] == 2
    log = get_job(batch_db, second["id"])["log"]
    assert "batch batch_1 submitted (6 requests)" in log and "completed" in log
    # run again: every reply is a stored unit, no batch is made
    again = _relabel(batch_db, "a", "b")
    assert again["status"] == "succeeded"
    assert len(batched.batches) == 2


def test_a_batch_arbiter_gets_the_undecided_turns_as_a_second_batch(tmp_path, config):
    """Members and arbiter as batches decide as they do online: the arbiter's batch holds
    exactly the turns the members left undecided."""
    online_db = open_db(sample_store(tmp_path / "online.db", SUSPECT))
    batch_db = open_db(sample_store(tmp_path / "batch.db", SUSPECT))
    with ScriptedServer(by_member) as online, ScriptedServer(by_member) as batched:
        _config(config, online.url, "a", "b", "c", batch=False)
        first = _relabel(online_db, "a", "b", arbiter="c", accept=True)
        _config(config, batched.url, "a", "b", "c")
        second = _relabel(batch_db, "a", "b", arbiter="c", accept=True)
        asked = sorted(json.dumps(b, sort_keys=True) for b in batched.requests)
        sizes = [len(_lines(batched, b)) for b in batched.batches]
        assert asked == sorted(json.dumps(b, sort_keys=True) for b in online.requests)
    outcomes = second["result"]["outcomes"]
    assert second["status"] == "succeeded" and outcomes == first["result"]["outcomes"]
    by_arbiter = batch_db.execute("SELECT count(*) FROM committee_turns WHERE decided_by ="
                                  " 'arbiter'").fetchone()[0]
    assert 0 < by_arbiter < 6 and sizes == [6, 6, by_arbiter]
    assert _revisions(batch_db) == _revisions(online_db)
    assert second["result"]["members"]["c"]["calls"] == by_arbiter


def test_failed_requests_are_sent_once_more_then_reported(tmp_path, config):
    """Two requests fail in the first batch: a second batch of those two answers one; the
    other fails again and is that turn's failure (a failed vote, logged, no revision)."""
    db = open_db(sample_store(tmp_path / "c.db", SUSPECT))
    seen: list[str] = []
    lock = threading.Lock()

    def fail(custom_id: str) -> bool:
        with lock:
            seen.append(custom_id)
            first_two = list(dict.fromkeys(seen))[:2]
            return custom_id == first_two[0] or (custom_id == first_two[1]
                                                 and seen.count(custom_id) == 1)

    s = ScriptedServer(by_member, batch_fail=fail)
    _config(config, s.url, "a")
    row = _relabel(db, "a", accept=True)
    sizes = [len(_lines(s, b)) for b in s.batches]
    paid = len(s.requests)
    assert row["status"] == "succeeded", row
    assert sizes == [6, 2] and paid == 5
    result = row["result"]
    assert result["outcomes"]["failed"] == 1 and result["outcomes"]["revised"] == 5
    assert result["members"]["a"]["failures"] == 1
    assert result["batch"] == {"batches": 2, "answered": 5, "failed": 1, "pending": 0}
    job = get_job(db, row["id"])
    assert "2 of 6 requests failed" in job["log"] and "1 of 2 requests failed" in job["log"]
    assert "batch: HTTP 500: scripted failure" in job["log"]
    failed = db.execute("SELECT v.abstain_reason FROM votes v JOIN committee_turns t ON"
                        " t.id = v.turn_id WHERE t.outcome = 'failed' AND t.job_id = ?",
                        [row["id"]]).fetchall()
    assert [r for (r,) in failed] == ["endpoint failed: a: batch: HTTP 500: scripted failure"]
    assert db.execute("SELECT count(*) FROM model_batch_requests WHERE status = 'failed'"
                      ).fetchone()[0] == 3
    # a later run asks the failed request again (once more after a failure), nothing else
    with s:
        r = CliRunner().invoke(app, ["--db", db.conn.execute("PRAGMA database_list"
                                                             ).fetchone()[2], "relabel",
                                     "--committee", "a", "--accept"])
        sizes = [len(_lines(s, b)) for b in s.batches]
    assert sizes == [6, 2, 1, 1], r.output
    assert "collecting batch batch_1 of job" in r.output
    assert r.exit_code == 1 and "every request failed (1): a: batch: HTTP 500" in r.output


def test_an_expired_batch_is_sent_again_as_a_new_one(tmp_path, config):
    """The first batch expires (its status unreadable for a while first: 503s are waited
    out): its requests go once more as a second batch, which answers them."""
    db = open_db(sample_store(tmp_path / "c.db", SUSPECT))
    with ScriptedServer(by_member, batch_end=lambda n: "expired" if n == 1 else "completed"
                        ) as s:
        s.batch_errors = 3
        _config(config, s.url, "a")
        config.write_text(config.read_text() + "retries = 0\n")
        row = _relabel(db, "a", accept=True)
        paid, made = len(s.requests), len(s.batches)
    assert row["status"] == "succeeded", row
    assert made == 2 and paid == 6 and row["result"]["outcomes"]["revised"] == 6
    log = get_job(db, row["id"])["log"]
    assert "batch_1: the batch expired" in log
    assert log.count("status not read (InternalServerError: ") == 3


def _count(db_path, sql: str) -> int:
    db = open_db(db_path)
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.conn.close()


def _killed_while_its_batch_runs(path, config, s: ScriptedServer) -> int:
    """A relabel process SIGKILLed once its batch is submitted and polled twice: its job id."""
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "--db", str(path),
                             "relabel", "--committee", "a", "--accept", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**ENV, "WORKBENCH_CONFIG": str(config)}, cwd=ROOT)
    deadline = time.monotonic() + 60
    while not (s.batches and s.batches["batch_1"]["polls"] >= 2):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert _count(path, "SELECT count(*) FROM model_batches WHERE batch_id = 'batch_1'") == 1
    assert _count(path, "SELECT count(*) FROM job_units") == 0
    return _count(path, "SELECT max(id) FROM jobs")


def test_a_job_killed_while_its_batch_runs_resumes_the_same_batch(tmp_path, config):
    """SIGKILL the worker once its batch is submitted and polled; `jobs resume` polls the same
    batch id: one batch made, each request paid once, every turn decided."""
    path = sample_store(tmp_path / "c.db", SUSPECT)
    with ScriptedServer(by_member, batch_polls=10**6) as s:
        _config(config, s.url, "a", poll=0.05)
        job_id = _killed_while_its_batch_runs(path, config, s)
        s.batch_polls = 3
        r = CliRunner().invoke(app, ["--db", str(path), "jobs", "resume", str(job_id)])
        assert r.exit_code == 0, r.output
        made, paid = list(s.batches), [json.dumps(b, sort_keys=True) for b in s.requests]
    assert made == ["batch_1"]
    assert len(paid) == len(set(paid)) == 6
    db = open_db(path)
    job = get_job(db, job_id)
    assert job["status"] == "succeeded" and job["result"]["outcomes"]["revised"] == 6
    assert "collecting batch batch_1 of an earlier run (6 requests)" in job["log"]


def test_a_new_job_over_the_same_turns_collects_the_killed_jobs_batch(tmp_path, config):
    """Not resumed but started again: the new job asks the same requests of the same
    endpoint, finds them in the killed job's batch and collects it (no second batch)."""
    path = sample_store(tmp_path / "c.db", SUSPECT)
    with ScriptedServer(by_member, batch_polls=10**6) as s:
        _config(config, s.url, "a", poll=0.05)
        killed = _killed_while_its_batch_runs(path, config, s)
        s.batch_polls = 0
        db = open_db(path)
        row = _relabel(db, "a", accept=True)
        made, paid = list(s.batches), len(s.requests)
    assert row["status"] == "succeeded", row
    assert made == ["batch_1"] and paid == 6 and row["result"]["outcomes"]["revised"] == 6
    assert f"collecting batch batch_1 of job {killed} (6 requests)" in row["log"]


def test_a_batch_made_but_not_stored_is_found_by_its_input_file(tmp_path):
    """A job that died after the provider made its batch and before it stored the batch id:
    the next run finds that batch by its input file (no second batch, nothing paid twice)."""
    from db import batches
    from workbench.models.batch_calls import BatchCaller
    from workbench.models.endpoints import Endpoint
    from workbench.jobs.context import JobContext

    db = open_db(tmp_path / "c.db")
    job_id = submit(db, "recount")
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
    requests = {"k1": body, "k2": {**body, "max_tokens": 5}}
    with ScriptedServer(lambda b: {"content": "yes"}) as s:
        ep = Endpoint(name="a", base_url=s.url, model="a", batch=True, batch_poll_s=0.02)
        caller = BatchCaller(JobContext(db, job_id), ep)
        data = b"".join(caller._line(c, b) for c, b in requests.items())
        uploaded = caller.client.files.create(file=("requests.jsonl", data), purpose="batch")
        caller.client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                     completion_window="24h")
        batches.add_batch(db, job_id, "a", s.url, uploaded.id, list(requests))
        out = caller.run(requests)
        made, paid = list(s.batches), len(s.requests)
    assert made == ["batch_1"] and paid == 2
    assert {c: r["choices"][0]["message"]["content"] for c, r in out.replies.items()} == {
        "k1": "yes", "k2": "yes"} and not out.errors
    assert db.execute("SELECT batch_id, status FROM model_batches").fetchall() == [
        ("batch_1", "completed")]


def test_a_stopped_job_leaves_its_batch_running_and_a_resume_collects_it(tmp_path, config):
    """A cancel while the batch runs: the job ends cancelled, the batch is not cancelled at
    the provider, and a resume collects it (no second batch)."""
    path = sample_store(tmp_path / "c.db", SUSPECT)
    db = open_db(path)
    with ScriptedServer(by_member, batch_polls=10**6) as s:
        _config(config, s.url, "a")
        job_id = submit(db, "relabel", {}, {"committee": ["a"], "accept": True})

        def cancel_when_polled() -> None:
            deadline = time.monotonic() + 30
            while not (s.batches and s.batches["batch_1"]["polls"] >= 2):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)
            other = open_db(path)
            from db.jobs import request_cancel
            request_cancel(other, job_id)
            other.conn.close()

        t = threading.Thread(target=cancel_when_polled)
        t.start()
        row = execute(db, job_id)
        t.join()
        assert row["status"] == "cancelled", row
        assert s.batches["batch_1"]["status"] == "in_progress"
        assert "keeps running at the provider" in row["log"]
        s.batch_polls = 0
        r = CliRunner().invoke(app, ["--db", str(path), "jobs", "resume", str(job_id)])
        assert r.exit_code == 0, r.output
        assert list(s.batches) == ["batch_1"] and len(s.requests) == 6
    assert get_job(db, job_id)["status"] == "succeeded"


def test_relevance_through_a_batch_judge(tmp_path, config):
    db = open_db(sample_store(tmp_path / "c.db"))
    verdict = {"content": json.dumps({"on_task": False, "reason": "scripted"})}
    with ScriptedServer(lambda body: verdict, batch_polls=1) as s:
        _config(config, s.url, "judge")
        r = CliRunner().invoke(app, ["--db", db.conn.execute("PRAGMA database_list"
                                                             ).fetchone()[2], "relevance",
                                     "--judge", "judge"])
        made, paid = len(s.batches), len(s.requests)
    assert r.exit_code == 0, r.output
    row = get_job(db, db.execute("SELECT max(id) FROM jobs").fetchone()[0])
    assert f"1 batches: {paid} requests answered, 0 failed, 0 pending" in r.output
    assert row["status"] == "succeeded", row
    judged = row["result"]["judged"]
    assert made == 1 and paid == judged == row["result"]["calls"] > 0
    assert row["result"]["off_task"] == judged and row["result"]["units"]["reused"] == 0
    assert db.execute("SELECT count(*) FROM flags WHERE check_name = 'relevance'"
                      ).fetchone()[0] == judged


def _run_batch_like_vllm(db_path, job_id: int, done: threading.Event) -> None:
    """What the analyst does: run the command the job logged (vLLM's run_batch), here
    answering each line with the scripted reply in run_batch's output format; half the output
    is written first (a file still being written)."""
    import re

    from tests.scripted_openai import completion

    db = open_db(db_path)
    try:
        while not done.is_set():
            log = (get_job(db, job_id) or {}).get("log") or ""
            found = re.search(r"run_batch -i (\S+) -o (\S+) --model (\S+)", log)
            if found is None:
                time.sleep(0.02)
                continue
            lines = [json.loads(x) for x in open(found.group(1), "rb").read().splitlines()]
            assert {line["body"]["model"] for line in lines} == {found.group(3)}
            out = [json.dumps({"id": f"vllm-{n}", "custom_id": line["custom_id"], "response": {
                "status_code": 200, "request_id": f"vllm-batch-{n}",
                "body": completion(line["body"], by_member(line["body"]))}, "error": None})
                for n, line in enumerate(lines)]
            with open(found.group(2), "w") as f:
                f.write("\n".join(out[:len(out) // 2]) + "\n")
                f.flush()
                time.sleep(0.5)
                f.write("\n".join(out[len(out) // 2:]) + "\n")
            return
    finally:
        db.conn.close()


def test_a_folder_endpoint_is_run_by_vllms_batch_runner(tmp_path, config):
    """`base_url = "file://FOLDER"`: the job writes the batch's input file, logs the run_batch
    command, and takes its output once every request has a line: the same revisions as
    online."""
    online_db = open_db(sample_store(tmp_path / "online.db", SUSPECT))
    path = sample_store(tmp_path / "batch.db", SUSPECT)
    folder = tmp_path / "batches"
    folder.mkdir()
    with ScriptedServer(by_member) as online:
        _config(config, online.url, "a", batch=False)
        first = _relabel(online_db, "a", accept=True)
    config.write_text(f'[endpoints.a]\nbase_url = "file://{folder}"\nmodel = "a"\n'
                      "batch = true\nbatch_poll_s = 0.05\n")
    db = open_db(path)
    job_id = submit(db, "relabel", {}, {"committee": ["a"], "accept": True})
    done = threading.Event()
    runner = threading.Thread(target=_run_batch_like_vllm, args=(path, job_id, done))
    runner.start()
    try:
        row = execute(db, job_id)
    finally:
        done.set()
        runner.join()
    assert row["status"] == "succeeded", row
    assert row["result"]["outcomes"] == first["result"]["outcomes"]
    assert _revisions(db) == _revisions(online_db)
    assert len(list(folder.glob("wb-*.batch"))) == 1
    assert len(list(folder.glob("wb-*.out.jsonl"))) == 1


def test_a_file_url_needs_batch(config, tmp_path):
    config.write_text('[endpoints.v]\nbase_url = "file:///tmp"\nmodel = "m"\n')
    with pytest.raises(InputError, match="endpoints.v.batch: a file:// base_url"):
        endpoints()
    r = CliRunner().invoke(app, ["--db", str(tmp_path / "x.db"), "relabel", "--committee",
                                 f"file://{tmp_path}#m"])
    assert r.exit_code != 0 and "a file:// endpoint is a folder of batch files" in r.output


@pytest.mark.parametrize("line, field, said", [
    ('batch = "yes"', "batch", "must be true or false"),
    ("batch_poll_s = 0", "batch_poll_s", "positive number of seconds"),
    ('batch_window = "soon"', "batch_window", "number of hours"),
])
def test_bad_batch_settings_name_the_file_and_the_field(config, line, field, said):
    config.write_text(f'[endpoints.big]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
                      f"{line}\n")
    with pytest.raises(InputError) as e:
        endpoints()
    assert str(config) in str(e.value) and f"endpoints.big.{field}" in str(e.value)
    assert said in str(e.value)
    r = CliRunner().invoke(app, ["--db", str(config.parent / "x.db"), "relabel",
                                 "--committee", "big"])
    assert r.exit_code != 0 and f"endpoints.big.{field}" in r.output


def test_good_batch_settings_are_read(config):
    config.write_text('[endpoints.big]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
                      'batch = true\nbatch_poll_s = 5\nbatch_window = "24h"\n')
    ep = endpoints()["big"]
    assert ep.batch is True and ep.batch_poll_s == 5.0 and ep.batch_window == "24h"
