"""The committee's safety (issues 30 and 33): the analyst's edit made while a member is asked
stands; agreement becomes a label only when earned or accepted explicitly; keys echoed in a
normal reply are stored nowhere; replies too large or invalid are failed requests, never cached;
a run whose every request failed ends `failed`. Real SQLite, the real CLI in a subprocess where
two processes race, the scripted OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from db import committee as store
from db import open_db, revisions
from db.browse import set_setting
from db.jobs import get_job
from tests.scripted_openai import ScriptedServer, tool_call_reply
from tests.tui_data import ROOT, add_flag, first_assistant, sample_store
from workbench.curation import decisions
from workbench.cli import app
from workbench.models.endpoints import check_url, get_endpoint
from workbench.core.errors import InputError
from workbench.jobs.runner import execute, submit

GOOD = {"name": "FindRestaurants", "arguments": {"city": "Oakland", "cuisine": "Italian"}}
MINE = {"name": "FindRestaurants", "arguments": {"city": "Berkeley", "cuisine": "Thai"}}
SUSPECT = (1, 2, 3)


def reply_with(call: dict, **extra) -> dict:
    return {**tool_call_reply(call["name"], call["arguments"]), **extra}


@pytest.fixture
def db_path(tmp_path):
    return sample_store(tmp_path / "c.db", SUSPECT)


def relabel(db, *members: str, **params) -> dict:
    job_id = submit(db, "relabel", params.pop("selection", {}),
                    {"committee": list(members), **params})
    return execute(db, job_id)


def label_of(db, tid: int) -> dict:
    msg = revisions.current_messages(db, tid)[first_assistant(db, tid)]
    fn = msg["tool_calls"][0]["function"]
    return {"name": fn["name"], "arguments": fn["arguments"]}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


# ------------------------------------------------------- 30.1: the analyst's edit meanwhile

def test_an_edit_made_while_the_members_are_asked_stands(db_path):
    """`relabel --accept` on trace 1 against a slow member; `label edit` on the same turn while
    the request is in flight: the edit stands, the committee writes nothing and says why."""
    idx = first_assistant(open_db(db_path), 1)
    edited = threading.Event()

    def slow_reply(body):       # answered only once the analyst's edit is stored
        edited.wait(60)
        return reply_with(GOOD)

    with ScriptedServer(slow_reply) as slow:
        job = subprocess.Popen(
            [sys.executable, "-m", "workbench", "--db", str(db_path), "relabel", "--committee",
             f"{slow.url}#m", "--trace-id", "1", "--accept", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), text=True)
        deadline = time.monotonic() + 30
        while slow.count == 0:
            assert time.monotonic() < deadline and job.poll() is None, job.stderr.read()
            time.sleep(0.05)
        edit = subprocess.run(
            [sys.executable, "-m", "workbench", "--db", str(db_path), "label", "edit", "1",
             str(idx), "--call", json.dumps(MINE), "--analyst", "ada"],
            capture_output=True, text=True, env=_env(), timeout=60)
        edited.set()
        assert edit.returncode == 0, edit.stderr
        out, err = job.communicate(timeout=60)
    assert job.returncode == 0, err
    result = json.loads(out)
    assert result["changed_meanwhile"] == 1 and result["outcomes"]["revised"] == 0
    db = open_db(db_path)
    assert label_of(db, 1) == MINE                          # the analyst's edit stands
    hist = revisions.history(db, 1, idx)
    assert [r["author_kind"] for r in hist] == ["human"]    # nothing of the committee's
    turn = store.latest_turns(db)[0]
    assert turn["outcome"] == "human" and "the analyst decided meanwhile" in turn["detail"]
    assert len(turn["votes"]) == 1 and turn["votes"][0]["call"] == GOOD   # the vote is kept


def test_a_decision_on_a_proposal_meanwhile_also_stands(db, db_path):
    """Rejecting the turn's open proposal is a decision too: nothing is written over it."""
    idx = first_assistant(db, 2)
    rid = revisions.add_revision(db, 2, idx, tool_calls=[{"id": "p", "type": "function",
                                                          "function": MINE}],
                                 author_kind="committee", author_name="earlier",
                                 status="proposed")
    decided = []

    def reply(body):
        if not decided:     # the analyst decides while the request is answered
            other = open_db(db_path)
            decisions.reject(other, rid, "ada")
            other.conn.close()
            decided.append(1)
        return reply_with(GOOD)

    with ScriptedServer(reply) as a:
        row = relabel(db, f"{a.url}#m", selection={"trace_ids": [2]}, accept=True)
    assert row["result"]["changed_meanwhile"] == 1
    assert all(r["author_kind"] == "committee" and r["author_name"] == "earlier"
               for r in revisions.history(db, 2, idx))


def test_normalisation_leaves_a_turn_the_analyst_changed_meanwhile(db):
    from db.revisions import changed_since
    from db.tx import now

    idx = first_assistant(db, 1)
    mark = now()
    assert changed_since(db, 1, idx, mark) is None
    decisions.drop(db, 1, idx, "ada")
    assert changed_since(db, 1, idx, mark) == "the analyst"
    assert changed_since(db, 2, first_assistant(db, 2), mark) is None


# ------------------------------------------------------- 33.1: agreement must be earned

def test_agreement_is_a_proposal_unless_earned_or_accepted(db_path):
    db = open_db(db_path)
    with ScriptedServer(lambda b: reply_with(GOOD)) as a, \
            ScriptedServer(lambda b: reply_with(GOOD)) as b:
        members = [f"{a.url}#m", f"{b.url}#m"]
        row = relabel(db, *members)
        res = row["result"]
        assert res["outcomes"]["revised"] == 0 and res["outcomes"]["review"] == 3
        assert res["proposed_decisions"] == 3 and res["accepting"]["accept"] is False
        assert "not earned" in res["accepting"]["why"]
        assert res["accepting"]["members"][members[0]]["over"] == 0
        for t in SUSPECT:
            hist = revisions.history(db, t, first_assistant(db, t))
            assert [r["status"] for r in hist] == ["proposed"]
            assert label_of(db, t) != GOOD
        # the analyst accepts the three proposals: each member agreed with the analyst 3 of 3
        for t in SUSPECT:
            decisions.accept(db, revisions.history(db, t, first_assistant(db, t))[0]["id"], "ada")
        for t in (4, 5):
            add_flag(db, t, first_assistant(db, t), "schema", "error", "planted")
        row = relabel(db, *members, selection={"trace_ids": [4]})
        acc = row["result"]["accepting"]
        assert acc["members"][members[0]]["agreed"] == 3 and acc["members"][members[0]]["over"] == 3
        lo = acc["members"][members[0]]["interval"][0]
        assert 0.3 < lo < 0.9 and acc["accept"] is False    # 3 of 3 is below the default 0.9
        set_setting(db, "committee.accept_threshold", round(lo - 0.01, 4))
        row = relabel(db, *members, selection={"trace_ids": [5]})
        assert row["result"]["accepting"]["accept"] is True
        assert row["result"]["outcomes"]["revised"] == 1 and label_of(db, 5) == GOOD
        set_setting(db, "committee.accept_threshold", "high")
        row = relabel(db, *members, selection={"trace_ids": [4]})
        assert row["status"] == "failed" and "committee.accept_threshold" in row["error"]


def test_accept_on_the_cli_makes_decisions_labels_and_the_report_says_why(db_path):
    with ScriptedServer(lambda b: reply_with(GOOD)) as a:
        args = ["--db", str(db_path), "relabel", "--committee", f"{a.url}#m"]
        r = CliRunner().invoke(app, [*args, "--trace-id", "1"])
        assert r.exit_code == 0, r.output
        assert "proposed for review" in r.stdout and "not earned" in r.stdout
        r = CliRunner().invoke(app, [*args, "--trace-id", "2", "--accept"])
        assert r.exit_code == 0, r.output
        assert "1 relabelled" in r.stdout and "--accept" in r.stdout
    db = open_db(db_path)
    assert label_of(db, 2) == GOOD and label_of(db, 1) != GOOD


# ------------------------------------------------------------------- 30.3: keys in replies

def test_a_key_echoed_in_a_normal_reply_is_stored_nowhere(db_path, tmp_path, monkeypatch):
    secret = "sk-echo-SENTINEL-123456789"
    echoed = {"name": "FindRestaurants", "arguments": {"city": f"Oakland {secret}",
                                                      "cuisine": "Italian"}}
    config = tmp_path / "config.toml"
    with ScriptedServer(lambda b: reply_with(echoed)) as a, \
            ScriptedServer(lambda b: {"content": f"my key is {secret}"}) as b:
        config.write_text(f'[endpoints.a]\nbase_url = "{a.url}"\nmodel = "m"\n'
                          f'api_key_env = "WB_ECHO_KEY"\n'
                          f'[endpoints.b]\nbase_url = "{b.url}"\nmodel = "m"\n'
                          f'api_key_env = "WB_ECHO_KEY"\nmode = "json"\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
        monkeypatch.setenv("WB_ECHO_KEY", secret)
        r = CliRunner().invoke(app, ["--db", str(db_path), "relabel", "--committee", "a,b",
                                     "--accept", "--json"])
        assert r.exit_code == 0, r.output
        assert a.auth[0] == f"Bearer {secret}"
    assert secret not in r.output
    db = open_db(db_path)
    votes = store.votes_of(db, 1)
    assert any("[redacted]" in (v["raw"] or "") for v in votes)
    db.conn.close()
    assert secret.encode() not in db_path.read_bytes()
    for f in tmp_path.iterdir():
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_an_eval_prediction_echoing_the_key_is_redacted(tmp_path, monkeypatch):
    from workbench.models.chat_backend import EndpointBackend

    secret = "sk-eval-SENTINEL-55555555"
    config = tmp_path / "config.toml"
    with ScriptedServer(lambda b: {"content": f"the key: {secret}"}) as s:
        config.write_text(f'[endpoints.e]\nbase_url = "{s.url}"\nmodel = "m"\n'
                          f'api_key_env = "WB_EVAL_KEY"\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
        monkeypatch.setenv("WB_EVAL_KEY", secret)
        backend = EndpointBackend(get_endpoint("e"))
        out = backend.complete([{"role": "user", "content": "hi", "tool_calls": None,
                                 "tool_call_id": None, "name": None}])
        backend.close()
    assert out.text == "the key: [redacted]"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/v1;api_key=abcdef#m",
    "http://127.0.0.1:8080/v1#m?api_key=abcdef",
    "http://127.0.0.1:8080/v1#m?token=abcdef",
    "http://u:p@127.0.0.1:8080/v1#m",
    "http://127.0.0.1:8080/v1?api-key=abcdef#m"])
def test_urls_with_credentials_are_refused_without_repeating_them(url):
    with pytest.raises(InputError) as e:
        check_url(url)
    assert "abcdef" not in str(e.value) and "environment variable" in str(e.value)
    with pytest.raises(InputError):
        get_endpoint(url)


def test_urls_without_credentials_pass():
    check_url("http://127.0.0.1:8080/v1#my-model")
    check_url("http://127.0.0.1:8080/v1;version=2#m")


# ------------------------------------------------------- 30.5: replies the store cannot hold

def test_a_reply_over_the_bound_is_a_failed_request_and_nothing_is_stored(db, tmp_path,
                                                                         monkeypatch):
    big = {"name": "FindRestaurants", "arguments": {"city": "O" * 20_000, "cuisine": "x"}}
    config = tmp_path / "config.toml"
    with ScriptedServer(lambda b: reply_with(big)) as a:
        config.write_text(f'[endpoints.a]\nbase_url = "{a.url}"\nmodel = "m"\n'
                          f'max_reply_bytes = 5000\nretries = 0\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
        row = relabel(db, "a", selection={"trace_ids": [1]}, accept=True)
    assert row["status"] == "failed" and "every request failed" in row["error"]
    assert "larger than 5,000 bytes" in row["error"]
    assert db.execute("SELECT count(*) FROM job_units").fetchone()[0] == 0
    assert all(len(v["raw"] or "") < 5000 for v in store.votes_of(db, 1))
    config.write_text('[endpoints.a]\nbase_url = "http://x/v1"\nmodel = "m"\n'
                      'max_reply_bytes = -1\n')
    with pytest.raises(InputError, match="max_reply_bytes"):
        get_endpoint("a")


@pytest.mark.parametrize("bad", [
    {"raw": "<html>garbage</html>"},
    {"raw": json.dumps({"choices": []})},
    {"tool_calls": [{"id": "v", "type": "function",
                     "function": {"name": "FindRestaurants", "arguments": "{broken"}}]},
    {"content": "no JSON here"}])
def test_an_invalid_reply_is_not_cached_and_a_rerun_asks_again(db, bad):
    replies = [bad]

    def script(body):
        return replies[-1]

    with ScriptedServer(script) as a:
        mode = "json" if "content" in bad else "tools"     # no JSON where JSON was asked for
        row = _relabel_mode(db, a.url, mode, trace=1)
        assert row["status"] == "failed" and "every request failed" in row["error"]
        assert db.execute("SELECT count(*) FROM job_units").fetchone()[0] == 0
        assert a.count == 1                       # no retry of an invalid reply
        replies.append(reply_with(GOOD) if mode == "tools" else {"content": json.dumps(GOOD)})
        row = _relabel_mode(db, a.url, mode, trace=1)
        assert a.count == 2 and row["status"] == "succeeded"      # asked again
        assert row["result"]["outcomes"]["revised"] == 1


def _relabel_mode(db, url: str, mode: str, trace: int) -> dict:
    """One member at `url` in `mode` (a configured endpoint, set through the environment)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "config.toml")
        with open(config, "w") as fh:
            fh.write(f'[endpoints.j]\nbase_url = "{url}"\nmodel = "m"\nmode = "{mode}"\n'
                     'retries = 0\n')
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("WORKBENCH_CONFIG", config)
            return relabel(db, "j", selection={"trace_ids": [trace]}, accept=True)


def test_a_run_where_every_request_failed_ends_failed_and_resumes_those_turns(db):
    calls = {"n": 0}

    def unauthorised(body):
        calls["n"] += 1
        return {"status": 401, "body": json.dumps({"error": {"message": "bad key"}})}

    with ScriptedServer(unauthorised) as a:
        row = relabel(db, f"{a.url}#m", accept=True)
        assert row["status"] == "failed" and "every request failed (3)" in row["error"]
        assert "HTTP 401" in row["error"]
        a.reply = lambda body: reply_with(GOOD)
        from workbench.jobs.runner import resume

        resume(db, row["id"])
        row = execute(db, row["id"], resume=True)
    assert row["status"] == "succeeded", row["error"]
    assert row["result"]["outcomes"]["revised"] == 3 and a.count == 6
    assert get_job(db, row["id"])["status"] == "succeeded"


# ------------------------------------------- 28.4: text answers, several calls, the context

TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "look a record up",
    "parameters": {"type": "object", "properties": {"ref": {"type": "string"}},
                   "required": ["ref"]}}}]


def _call(cid: str, ref: str) -> dict:
    return {"id": cid, "type": "function",
            "function": {"name": "lookup", "arguments": json.dumps({"ref": ref})}}


def text_agent_store(tmp_path, filler: int = 0):
    """A store with one conversation of a text-reply agent: a text turn (2), a turn of two calls
    at once (4) and, with `filler`, that many more exchanges before them."""
    msgs = [{"role": "system", "content": "You are the records desk. " * 20}]
    for n in range(filler):
        msgs += [{"role": "user", "content": f"filler question {n} " + "x" * 200},
                 {"role": "assistant", "content": f"filler answer {n} " + "y" * 200}]
    msgs += [{"role": "user", "content": "What are your opening hours?"},
             {"role": "assistant", "content": "We open at nine."},
             {"role": "user", "content": "Look up A1 and B2."},
             {"role": "assistant", "content": None,
              "tool_calls": [_call("c1", "A1"), _call("c2", "B2")]},
             {"role": "tool", "tool_call_id": "c1", "content": "A1: found"},
             {"role": "tool", "tool_call_id": "c2", "content": "B2: found"},
             {"role": "assistant", "content": "Both are found."}]
    src = tmp_path / "agent.jsonl"
    src.write_text(json.dumps({"messages": msgs, "tools": TOOLS}) + "\n")
    path = tmp_path / "t.db"
    r = CliRunner().invoke(app, ["--db", str(path), "import", str(src)])
    assert r.exit_code == 0, r.output
    return path, 2 * filler + 2, 2 * filler + 4


def test_members_answer_with_text_and_with_several_calls(tmp_path):
    path, text_turn, calls_turn = text_agent_store(tmp_path)
    db = open_db(path)

    def script(body):
        from tests.scripted_openai import doubtful_turn

        if doubtful_turn(body) == text_turn:
            return {"content": "We open at 9 am."}
        return {"tool_calls": [_call("x1", "A1"), _call("x2", "B9")]}

    with ScriptedServer(script) as a, ScriptedServer(script) as b:
        row = relabel(db, f"{a.url}#m", f"{b.url}#m", selection={"trace_ids": [1]},
                      turns="all", accept=True)
        body = a.requests[0]
    assert row["status"] == "succeeded", row["error"]
    assert body["tool_choice"] == "auto"               # text is an answer here
    assert "text reply" in body["messages"][0]["content"]
    labels = revisions.current_messages(db, 1)
    assert labels[text_turn]["content"] == "We open at 9 am."
    assert not labels[text_turn]["tool_calls"]
    calls = labels[calls_turn]["tool_calls"]
    assert [c["id"] for c in calls] == ["c1", "c2"]    # the turn's call ids, in order
    assert [json.loads(c["function"]["arguments"]) if isinstance(c["function"]["arguments"], str)
            else c["function"]["arguments"] for c in calls] == [{"ref": "A1"}, {"ref": "B9"}]
    votes = store.votes_of(db, 1, text_turn)
    assert [v["call"] for v in votes] == [{"text": "We open at 9 am."}] * 2


def test_agreement_on_the_decision_but_not_its_text_goes_to_review(tmp_path):
    path, text_turn, _ = text_agent_store(tmp_path)
    db = open_db(path)
    add_flag(db, 1, text_turn, "planted", "error", "doubtful")
    with ScriptedServer(lambda b: {"content": "We open at nine in the morning."}) as a, \
            ScriptedServer(lambda b: {"content": "Nine o'clock."}) as b, \
            ScriptedServer(lambda b: {"tool_calls": [_call("x", "Z")]}) as c:
        row = relabel(db, f"{a.url}#m", f"{b.url}#m", f"{c.url}#m",
                      selection={"trace_ids": [1]}, accept=True)
    assert row["result"]["outcomes"]["review"] == 1
    proposed = [r for r in revisions.history(db, 1, text_turn) if r["status"] == "proposed"]
    assert {r["content"] for r in proposed if not r["tool_calls"]} == {
        "We open at nine in the morning.", "Nine o'clock."}
    assert revisions.current_messages(db, 1)[text_turn]["content"] == "We open at nine."


def test_a_long_conversation_is_cut_from_the_middle_to_fit_the_context(tmp_path, monkeypatch):
    path, text_turn, _ = text_agent_store(tmp_path, filler=30)
    db = open_db(path)
    add_flag(db, 1, text_turn, "planted", "error", "doubtful")
    config = tmp_path / "config.toml"
    with ScriptedServer(lambda b: {"content": "We open at nine."}) as a:
        config.write_text(f'[endpoints.small]\nbase_url = "{a.url}"\nmodel = "m"\n'
                          f'context = 1500\nmax_tokens = 100\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
        row = relabel(db, "small", selection={"trace_ids": [1]}, accept=True)
        prompt = a.requests[0]["messages"][-1]["content"]
        total = sum(len(m["content"]) for m in a.requests[0]["messages"])
    assert row["status"] == "succeeded", row["error"]
    assert total <= (1500 - 100) * 3
    assert "left out to fit the context" in prompt
    assert ">>> DOUBTFUL <<<" in prompt and "[0] system: You are the records desk." in prompt
    assert "filler question 29" in prompt and "filler question 0 " not in prompt
    log = get_job(db, row["id"])["log"]
    assert "cut from the middle to fit its context of 1500 tokens" in log
    assert row["result"]["outcomes"]["confirmed"] == 1


def test_a_refusal_naming_the_context_teaches_it_and_the_cut_prompt_is_asked(tmp_path):
    path, text_turn, _ = text_agent_store(tmp_path, filler=30)
    db = open_db(path)
    add_flag(db, 1, text_turn, "planted", "error", "doubtful")

    def script(body):
        size = sum(len(m["content"]) for m in body["messages"])
        if size > 5000:
            return {"status": 400, "body": json.dumps({"error": {"message": (
                "Requested tokens (8956) exceed context window of 2000")}})}
        return {"content": "We open at nine."}

    with ScriptedServer(script) as a:
        row = relabel(db, f"{a.url}#m", selection={"trace_ids": [1]},
                      accept=True)
        assert a.count == 2
    assert row["status"] == "succeeded", row["error"]
    assert row["result"]["outcomes"]["confirmed"] == 1
    assert "context of 2000 tokens" in get_job(db, row["id"])["log"]


def test_a_refusal_naming_more_tokens_than_estimated_shortens_the_cut(tmp_path, monkeypatch):
    """The configured context was right but a token took fewer characters than estimated: the
    tokens the refusal names measure them, and the prompt is cut shorter."""
    path, text_turn, _ = text_agent_store(tmp_path, filler=30)
    db = open_db(path)
    add_flag(db, 1, text_turn, "planted", "error", "doubtful")
    config = tmp_path / "config.toml"
    sizes = []

    def script(body):
        size = sum(len(m["content"]) for m in body["messages"])
        sizes.append(size)
        if size > 3000:
            return {"status": 400, "body": json.dumps({"error": {"message": (
                f"Requested tokens ({size // 1.5:.0f}) exceed context window of 2000")}})}
        return {"content": "We open at nine."}

    with ScriptedServer(script) as a:
        config.write_text(f'[endpoints.c]\nbase_url = "{a.url}"\nmodel = "m"\ncontext = 2000\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
        row = relabel(db, "c", selection={"trace_ids": [1]}, accept=True)
    assert row["status"] == "succeeded", row["error"]
    assert len(sizes) == 2 and sizes[0] > 3000 >= sizes[1]


def test_the_context_is_read_from_the_servers_model_list(tmp_path):
    path, text_turn, _ = text_agent_store(tmp_path, filler=30)
    db = open_db(path)
    add_flag(db, 1, text_turn, "planted", "error", "doubtful")
    models = [{"id": "m", "object": "model", "owned_by": "x", "max_model_len": 1500}]
    with ScriptedServer(lambda b: {"content": "We open at nine."}, models=models) as a:
        row = relabel(db, f"{a.url}#m", selection={"trace_ids": [1]}, accept=True)
        total = sum(len(m["content"]) for m in a.requests[0]["messages"])
    assert row["status"] == "succeeded", row["error"]
    assert a.count == 1 and total <= (1500 - 512) * 3
    assert "context of 1500 tokens" in get_job(db, row["id"])["log"]


def test_a_text_reply_agents_corpus_its_long_policy_kept_when_the_middle_is_cut(tmp_path,
                                                                               monkeypatch):
    """The public airline corpus (a 6,000-character policy, text replies): a member with a
    small context sees the policy, the tools and the turns nearest the doubtful one; its text
    answer becomes the turn's text."""
    src = tmp_path / "airline.jsonl"
    lines = (ROOT / "tests/data/tau-airline/tune.jsonl").read_text().splitlines()
    src.write_text(lines[1] + "\n")               # 62 messages, about 33,000 characters
    path = tmp_path / "a.db"
    assert CliRunner().invoke(app, ["--db", str(path), "import", str(src)]).exit_code == 0
    db = open_db(path)
    msgs = revisions.current_messages(db, 1)
    turn = max(i for i, m in enumerate(msgs) if m["role"] == "assistant"
               and not m["tool_calls"] and m["content"])
    add_flag(db, 1, turn, "planted", "error", "doubtful")
    config = tmp_path / "config.toml"
    with ScriptedServer(lambda b: {"content": "Your trip is all set. Safe travels!"}) as a:
        config.write_text(f'[endpoints.s]\nbase_url = "{a.url}"\nmodel = "m"\n'
                          f'context = 8192\nmax_tokens = 200\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
        row = relabel(db, "s", selection={"trace_ids": [1]}, accept=True)
        body = a.requests[0]
    assert row["status"] == "succeeded", row["error"]
    prompt = body["messages"][-1]["content"]
    assert sum(len(m["content"]) for m in body["messages"]) <= (8192 - 200) * 3
    assert msgs[0]["content"][:200] in prompt                 # the policy, whole
    assert f"[{turn}] >>> DOUBTFUL <<<" in prompt and "left out to fit the context" in prompt
    assert f"[{turn - 1}]" in prompt and "[1] user" not in prompt
    assert body["tool_choice"] == "auto" and body["tools"]
    assert revisions.current_messages(db, 1)[turn]["content"] == \
        "Your trip is all set. Safe travels!"


def test_the_teachers_request_fits_its_context(tmp_path):
    """Fewer examples first, then the last one cut from the middle keeping its system prompt
    and its latest messages; the cut is reported for the job's log."""
    from workbench.conversations.view import conversations
    from workbench.synthesis.corpus import Topic
    from workbench.synthesis.teacher import request_messages

    src = tmp_path / "airline.jsonl"
    lines = (ROOT / "tests/data/tau-airline/tune.jsonl").read_text().splitlines()
    src.write_text("\n".join(lines[:3]) + "\n")
    path = tmp_path / "a.db"
    assert CliRunner().invoke(app, ["--db", str(path), "import", str(src)]).exit_code == 0
    seeds = conversations(open_db(path), where="id IN (2, 3)")
    topic = Topic("change a booking")
    whole = request_messages(None, seeds[0].tools, seeds, topic, 1)
    cuts: list = []
    fitted = request_messages(None, seeds[0].tools, seeds, topic, 1, 30_000, cuts)
    assert sum(len(m["content"]) for m in fitted) <= 30_000
    assert sum(len(m["content"]) for m in whole) > 30_000
    assert cuts and cuts[0]["examples"] == 1 and cuts[0]["of"] == 2
    user = fitted[1]["content"]
    assert "Example 2" not in user and "# Airline Agent Policy" in user
    assert seeds[0].messages[-1]["content"][:60] in user       # the latest messages stay
    assert request_messages(None, seeds[0].tools, seeds, topic, 1, None) == whole


def test_a_key_echoed_in_a_streamed_reply_is_never_shown_even_split(tmp_path, monkeypatch):
    from workbench.models.chat_backend import EndpointBackend

    secret = "sk-stream-SENTINEL-7777777"
    config = tmp_path / "config.toml"
    with ScriptedServer(lambda b: {"content": f"here: {secret} done"}) as s:
        config.write_text(f'[endpoints.e]\nbase_url = "{s.url}"\nmodel = "m"\n'
                          f'api_key_env = "WB_STREAM_KEY"\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
        monkeypatch.setenv("WB_STREAM_KEY", secret)
        backend = EndpointBackend(get_endpoint("e"))
        shown: list[str] = []
        out = backend.complete([{"role": "user", "content": "hi", "tool_calls": None,
                                 "tool_call_id": None, "name": None}], on_token=shown.append)
        backend.close()
    # the scripted server streams the content in two halves: the key is split between them
    assert "".join(shown) == "here: [redacted] done" == out.text
    assert not any(secret[:8] in piece for piece in shown)
