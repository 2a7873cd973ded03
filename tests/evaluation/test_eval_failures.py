"""Evaluation against endpoints that fail: keys never leak, failures never look like scores.

Real HTTP servers on 127.0.0.1 (the scripted OpenAI server of test_evaluation), real SQLite
files, the CLI in real subprocesses where stdout, stderr and the worker's log file matter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db import evals as eval_store
from db import open_db
from db.models import register_model
from tests.conftest import REPO
from tests.evaluation.test_evaluation import DATA, ScriptedBackend, StubOpenAI, _oracle, tiny_file  # noqa: F401
from workbench.models.chat_backend import EndpointBackend, InvalidReply
from workbench.cli import app
from workbench.models.endpoints import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, Endpoint, endpoints, get_endpoint
from workbench.core.errors import InputError
from tests.job_support import evaluate
from workbench.evaluation import report, selection_for
from workbench.traces.importing import import_files
from workbench.core.redaction import redact

KEY = "wbkey-SENTINEL-7f3a9c1e5b"   # not shaped like any known key: only the config names it


def _cli(db_path: Path, *args: str, env: dict | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", "--db", str(db_path), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def _oracle_reply(body: dict) -> dict:
    return {"content": _oracle([m for m in body["messages"] if m["role"] != "system"])}


@pytest.fixture
def echo_401():
    """A server that answers 401 with the Authorization header it got in the body."""
    stub = StubOpenAI(lambda body: None)
    stub.reply = lambda body: (401, json.dumps({"error": {
        "message": f"invalid credentials: {stub.auth[-1]}", "type": "auth"}}).encode())
    yield stub
    stub.close()


@pytest.fixture
def model_stub():
    stub = StubOpenAI(_oracle_reply)
    yield stub
    stub.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ 8: secrets

def test_redact_known_keys_and_credential_shapes(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text('[endpoints.big]\nbase_url = "http://h/v1"\nmodel = "m"\n'
                      'api_key_env = "WB_BIG_KEY"\n')
    monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
    monkeypatch.setenv("WB_BIG_KEY", KEY)
    text = (f"401 {{'error': 'bad key {KEY}'}} Authorization: Bearer abc.def-123456"
            " sk-proj-abcdefghij1234 https://ada:hunter22@example.com/v1?api-key=zzz999")
    out = redact(text)
    for secret in (KEY, "abc.def-123456", "sk-proj-abcdefghij1234", "hunter22", "zzz999"):
        assert secret not in out
    assert out.startswith("401 {'error': 'bad key [redacted]'}")
    assert redact("prompt_tokens 10, token limit exceeded") == "prompt_tokens 10, token limit exceeded"


def test_a_key_echoed_by_the_server_reaches_no_file_and_no_output(db_path, tiny_file, tmp_path,
                                                                  echo_401, model_stub):
    """The model endpoint, then the judge, answer 401 echoing `Authorization: Bearer KEY`."""
    config = tmp_path / "config.toml"
    config.write_text(f'[endpoints.model]\nbase_url = "{echo_401.url}"\nmodel = "m"\n'
                      'api_key_env = "WB_ECHO_KEY"\n'
                      f'[endpoints.good]\nbase_url = "{model_stub.url}"\nmodel = "m"\n'
                      f'[endpoints.judge]\nbase_url = "{echo_401.url}"\nmodel = "j"\n'
                      'api_key_env = "WB_ECHO_KEY"\n')
    env = {"WORKBENCH_CONFIG": str(config), "WB_ECHO_KEY": KEY}
    import_files(open_db(db_path), [DATA / "scenario-1-baseline" / "job_description.json"])
    # the model's every turn fails with the echo: the run fails, its errors are shown
    fg = _cli(db_path, "eval", "--endpoint", "model", "--test", str(tiny_file), env=env)
    assert fg.returncode == 1, fg.stderr
    assert "401" in fg.stderr and "[redacted]" in fg.stderr
    # the judge fails with the echo, in a detached worker: its log file, the job row
    bg = _cli(db_path, "eval", "--endpoint", "good", "--judge", "judge", "--test",
              str(tiny_file), "--detach", "--json", env=env)
    assert bg.returncode == 0, bg.stderr
    job_id = json.loads(bg.stdout)["job_id"]
    db = open_db(db_path)
    deadline = time.monotonic() + 120
    while db.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()[0] in (
            "queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    show = _cli(db_path, "jobs", "show", str(job_id), env=env)
    assert echo_401.auth and all(a == f"Bearer {KEY}" for a in echo_401.auth)  # it was sent
    errors = [json.loads(d)["error"] for (d,) in db.execute("SELECT details FROM eval_results")]
    judge_errors = [json.loads(d).get("judge_error") for (d,) in db.execute(
        "SELECT details FROM eval_results WHERE run_id = (SELECT max(id) FROM eval_runs)")]
    assert all("[redacted]" in e for e in errors if e) and any(errors)
    assert all(e and "[redacted]" in e for e in judge_errors)
    db.conn.close()
    log = Path(f"{db_path}.jobs") / f"{job_id}.log"
    assert log.is_file()
    for name, data in [("stdout", fg.stdout + bg.stdout + show.stdout),
                       ("stderr", fg.stderr + bg.stderr + show.stderr),
                       ("log", log.read_text())]:
        assert KEY not in data, name
    for f in tmp_path.iterdir():   # the database, its WAL and shared memory as they are
        if f.name.startswith(db_path.name) and f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


def test_chat_shows_an_echoed_key_redacted_in_one_line(db_path, tiny_file, tmp_path, echo_401):
    config = tmp_path / "config.toml"
    config.write_text(f'[endpoints.model]\nbase_url = "{echo_401.url}"\nmodel = "m"\n'
                      'api_key_env = "WB_ECHO_KEY"\n')
    import_files(open_db(db_path), [tiny_file])
    r = _cli(db_path, "chat", "--endpoint", "model", "--replay", "1",
             env={"WORKBENCH_CONFIG": str(config), "WB_ECHO_KEY": KEY})
    assert r.returncode == 1
    assert "error: the model call failed: AuthenticationError" in r.stderr
    assert "[redacted]" in r.stderr and "Traceback" not in r.stderr
    assert KEY not in r.stdout + r.stderr


# ------------------------------------------------------------------- 9: credentials in URLs

@pytest.mark.parametrize("url", [
    "http://ada:s3cret-pw@127.0.0.1:9/v1#m",
    "http://127.0.0.1:9/v1?api-key=s3cret-pw#m",
    "http://127.0.0.1:9/v1?api-version=1&access_token=s3cret-pw#m"])
def test_credentials_in_an_endpoint_url_are_refused_and_stored_nowhere(db_path, tiny_file, url):
    r = CliRunner().invoke(app, ["--db", str(db_path), "eval", "--endpoint", url, "--test",
                                 str(tiny_file)])
    assert r.exit_code == 1
    assert "api_key_env" in r.stderr and "s3cret-pw" not in r.output
    db = open_db(db_path)
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM eval_runs").fetchone()[0] == 0
    with pytest.raises(InputError, match="holds"):
        get_endpoint(url)


def test_credentials_in_a_configured_base_url_are_refused(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text('[endpoints.x]\nbase_url = "https://u:p@h/v1"\nmodel = "m"\n')
    monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
    with pytest.raises(InputError, match=r"endpoints.x.base_url: holds a user name"):
        endpoints()


# ---------------------------------------------------------- 10: failures that look like scores

class FailingBackend(ScriptedBackend):
    """Replies like `_oracle`, but the turns whose prompt matches `fail_on` raise."""

    def __init__(self, fail_on) -> None:
        super().__init__(_oracle)
        self.fail_on = fail_on

    def complete(self, messages, *a, **k):
        if self.fail_on(messages):
            raise ConnectionError("Connection refused")
        return super().complete(messages, *a, **k)


def test_a_run_whose_turns_mostly_failed_is_failed_and_never_a_score(db, tiny_file):
    model_id = register_model(db, name="m1", kind="gguf", path="/x.gguf", base_model=None)
    sel = selection_for(str(tiny_file))
    good = evaluate(db, ScriptedBackend(_oracle), sel, model_id=model_id)
    assert good["status"] == "succeeded"
    # 3 of 4 turns fail: the job fails, the run is marked failed, its errors are named
    job = evaluate(db, FailingBackend(lambda m: not (len(m) == 1 and "Oakland" in m[0]["content"])),
                   sel, model_id=model_id)
    assert job["status"] == "failed"
    assert "3 of 4 turns got no reply" in job["error"] and "Connection refused" in job["error"]
    bad_run = db.execute("SELECT max(id) FROM eval_runs").fetchone()[0]
    run = eval_store.get_run(db, bad_run)
    assert run["status"] == "failed" and run["metrics"]["errors"] == 3
    assert run["metrics"]["n"] == 1   # the one answered turn; failed turns are not scored as 0
    # never a model's score, never the baseline of a comparison
    runs = eval_store.runs_of_models(db)[model_id]
    assert [(r["status"], r["staged_tool_call"]) for r in runs] == [
        ("succeeded", 0.875), ("failed", None)]
    path = db.execute("PRAGMA database_list").fetchone()[2]
    listed = CliRunner().invoke(app, ["--db", path, "models"])
    assert f"#{bad_run} failed" in listed.stdout and "0.875" in listed.stdout
    as_json = json.loads(CliRunner().invoke(app, ["--db", path, "models", "--json"]).stdout)
    assert [(r["status"], r["staged_tool_call"], r["errors"]) for r in as_json[0]["eval_runs"]
            ] == [("succeeded", 0.875, 0), ("failed", None, 3)]
    later = evaluate(db, ScriptedBackend(_oracle), sel, model_id=model_id)
    assert report(db, later["result"]["run_id"])["previous"]["run_id"] == good["result"]["run_id"]
    # one of four failing: the run stands, the error is counted apart and shown first
    few = evaluate(db, FailingBackend(lambda m: len(m) == 3 and "Fremont" in m[0]["content"]),
                   sel)
    assert few["status"] == "succeeded"
    m = few["result"]["metrics"]
    assert (m["n"], m["turns"], m["errors"], m["staged_tool_call"]) == (3, 4, 1, pytest.approx(
        (1 + 0.75 + 1) / 3))
    from rich.console import Console

    from workbench.commands.evaluate import print_report

    out = Console(record=True, width=200, color_system=None)
    print_report(report(db, few["result"]["run_id"]), out)
    first = out.export_text().splitlines()[0]
    assert first.startswith("1 of 4 turns got no reply") and "Connection refused" in first


def test_eval_against_a_closed_port_exits_non_zero(db_path, tiny_file):
    url = f"http://127.0.0.1:{_free_port()}/v1#m"
    r = _cli(db_path, "eval", "--endpoint", url, "--test", str(tiny_file), "--timeout", "5")
    assert r.returncode == 1
    assert "4 of 4 turns got no reply" in r.stderr and "marked failed" in r.stderr
    assert "Traceback" not in r.stderr
    db = open_db(db_path)
    assert db.execute("SELECT status FROM eval_runs").fetchall() == [("failed",)]
    assert db.execute("SELECT status FROM jobs").fetchall() == [("failed",)]


# ------------------------------------------------------------------------ 11: garbage replies

@pytest.mark.parametrize("body,shown", [
    (b"<html>\x1b[31mBad Gateway</html>\n", "<html>\\x1b[31mBad Gateway</html>\\n"),
    (b'{"choices": "nope"}', '{"choices": "nope"}'),
    (b'{"choices": [{"message": {"content": 7}}]}', '{"choices": [{"message": {"content": 7}}]}')])
def test_a_garbage_reply_is_an_invalid_reply_with_its_first_bytes(db, tiny_file, body, shown):
    stub = StubOpenAI(lambda b: (200, body + b"x" * 300))
    try:
        backend = EndpointBackend(stub.endpoint())
        with pytest.raises(InvalidReply) as e:
            backend.complete([{"role": "user", "content": "hi", "tool_calls": None,
                               "tool_call_id": None, "name": None}])
        assert str(e.value).startswith("the endpoint returned an invalid reply: " + shown)
        assert str(e.value).endswith("x…") and "\x1b" not in str(e.value)
        job = evaluate(db, backend, selection_for(str(tiny_file)))
        assert job["status"] == "failed" and "invalid reply" in job["error"]
        assert "AttributeError" not in job["error"]
    finally:
        stub.close()


# ------------------------------------------------------------------------------ 12: timeouts

def test_timeout_bounds_a_hanging_endpoint(db_path, tiny_file):
    release = threading.Event()

    def hang(body):
        release.wait(60)
        return _oracle_reply(body)

    stub = StubOpenAI(hang)
    try:
        t0 = time.monotonic()
        r = _cli(db_path, "eval", "--endpoint", f"{stub.url}#m", "--test", str(tiny_file),
                 "--limit", "1", "--timeout", "1")
        took = time.monotonic() - t0
    finally:
        release.set()
        stub.close()
    assert r.returncode == 1 and "timed out" in r.stderr.lower(), r.stderr
    assert len(stub.requests) == 2 * (1 + DEFAULT_RETRIES)   # two turns, each retried once
    assert took < 30
    assert (DEFAULT_TIMEOUT_S, DEFAULT_RETRIES) == (60.0, 1)
    assert Endpoint("e", "http://h/v1", "m").client().timeout == 60.0
    bad = CliRunner().invoke(app, ["--db", str(db_path), "eval", "--endpoint", "http://h/v1#m",
                                   "--timeout", "0"])
    assert bad.exit_code == 1 and "--timeout must be a positive" in bad.stderr
    assert "--timeout" in CliRunner().invoke(app, ["chat", "--help"]).stdout


# --------------------------------------------------------------------------- 13: the judge

def test_a_failing_judge_leaves_turns_unjudged_not_the_run_failed(db, tiny_file):
    import_files(db, [DATA / "scenario-1-baseline" / "job_description.json"])

    def judge(body):
        prompt = body["messages"][-1]["content"]
        if "Fremont" in prompt:
            return (500, b'{"error": {"message": "judge overloaded"}}')
        return {"content": '{"verdict": "good"}'}

    stub = StubOpenAI(judge)
    try:
        job = evaluate(db, ScriptedBackend(_oracle), selection_for(str(tiny_file)),
                       judge_endpoint=stub.endpoint())
    finally:
        stub.close()
    assert job["status"] == "succeeded", job["error"]
    m = job["result"]["metrics"]
    assert (m["n"], m["unjudged"], m["llm_as_a_judge"]) == (4, 2, 1.0)
    rows = eval_store.results(db, job["result"]["run_id"])
    assert [r["judge"] for r in rows] == [1.0, 1.0, None, None]
    assert "judge overloaded" in rows[2]["details"]["judge_error"]
    from rich.console import Console

    from workbench.commands.evaluate import print_report

    out = Console(record=True, width=200, color_system=None)
    print_report(report(db, job["result"]["run_id"]), out)
    assert out.export_text().startswith("2 turns unjudged")


# --------------------------------------------------------------------- 14: leaks into test

def test_a_test_file_stored_in_another_split_is_refused_unless_moved(db_path, tiny_file,
                                                                     model_stub):
    runner = CliRunner()
    r = runner.invoke(app, ["--db", str(db_path), "import", str(tiny_file), "--split", "train"])
    assert r.exit_code == 0, r.output
    db = open_db(db_path)
    before = db.execute("SELECT count(*) FROM imports").fetchone()[0]
    args = ["--db", str(db_path), "eval", "--endpoint", f"{model_stub.url}#m", "--test",
            str(tiny_file), "--json"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1
    assert "2 test traces are already stored in another split" in refused.stderr
    assert "line 1: trace 1 (train), line 2: trace 2 (train)" in refused.stderr
    assert "leak" in refused.stderr and "--move-to-test" in refused.stderr
    assert db.execute("SELECT split, count(*) FROM traces GROUP BY split").fetchall() == [
        ("train", 2)]
    assert db.execute("SELECT count(*) FROM imports").fetchone()[0] == before  # nothing changed
    assert model_stub.requests == []
    moved = runner.invoke(app, [*args, "--move-to-test"])
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.stdout)["metrics"]["n"] == 4
    assert db.execute("SELECT split, count(*) FROM traces GROUP BY split").fetchall() == [
        ("test", 2)]
