"""Input that used to crash or hang: JSON nested beyond the depth limit (at import and in a store
filled before the limit), FIFOs and devices given as import paths, endless lines, and failures
that printed a traceback instead of one `error:` line."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import db.connection
import db.tx
from db import open_db
from db.traces import NewTrace, TraceWriter, stats
from db.tx import now, write_tx
from tests.conftest import REPO
from workbench.checks import CHECKS, run_checks
from workbench.cli import app as cli
from workbench.core.errors import InputError
from workbench.traces.importing import import_files
from workbench.conversations.messages import content_hash

runner = CliRunner()
DEEP = 100_000


def nested(n: int, leaf: object = 1) -> str:
    """JSON text of `n` nested lists (built as text: Python could not dump it)."""
    return "[" * n + json.dumps(leaf) + "]" * n


def call(cid: str, name: str, arguments: str) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}]}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    return path


def ok_trace(text: str = "hi") -> dict:
    return {"messages": [{"role": "user", "content": text},
                         call("c1", "lookup", json.dumps({"q": text})),
                         {"role": "tool", "tool_call_id": "c1", "content": "[1]"},
                         {"role": "assistant", "content": "done"}]}


def refused(db, path: Path) -> str:
    before = stats(db)["traces"]
    with pytest.raises(InputError) as e:
        import_files(db, [path])
    assert stats(db)["traces"] == before      # nothing imported
    return str(e.value)


# ------------------------------------------------------------------------------ the parser

def test_depth_is_measured_without_recursion_and_ignores_brackets_in_strings():
    from workbench.core import safe_json

    assert safe_json.text_depth(nested(DEEP)) == DEEP
    assert safe_json.text_depth('{"a": "[[[[{{{", "b": [1, [2]]}') == 3
    assert safe_json.text_depth(r'["\"[[[", {}]') == 2
    assert safe_json.loads(nested(100)) is not None
    for fast in (False, True):
        with pytest.raises(safe_json.TooDeep, match="too deeply nested"):
            safe_json.loads(nested(101), fast=fast)
        with pytest.raises(safe_json.TooDeep):
            safe_json.loads(nested(DEEP), fast=fast)
    assert safe_json.value_depth({"a": [1, {"b": []}]}) == 4


# ------------------------------------------------------------------------------ import

def test_import_refuses_too_deep_json_naming_file_line_and_field(db, tmp_path):
    deep_args = nested(150)
    cases = {
        "args.jsonl": ([ok_trace(), {"messages": [{"role": "user", "content": "x"},
                                                  call("c1", "lookup", json.dumps({"q": json.loads(nested(150))}))]}],
                       ":2: messages[1].tool_calls[0].function.arguments: too deeply nested"),
        "result.jsonl": ([{"messages": [{"role": "user", "content": "x"}, call("c1", "lookup", "{}"),
                                        {"role": "tool", "tool_call_id": "c1", "content": nested(DEEP)}]}],
                         ":1: messages[2].content: too deeply nested"),
        "argstring.jsonl": ([{"messages": [{"role": "user", "content": "x"},
                                           call("c1", "lookup", deep_args)]}],
                            ":1: messages[1].tool_calls[0].function.arguments: too deeply nested"),
        "tft.jsonl": ([{"context": json.dumps({"messages": [
            {"role": "user", "content": "x"}, call("c1", "lookup", "{}"),
            {"role": "user", "content": nested(DEEP)}]})}],
            ":1: context.messages[2].content: too deeply nested"),
        "tftctx.jsonl": ([{"context": "{\"messages\": " + nested(DEEP) + "}"}],
                         ":1: context: too deeply nested"),
        "qa.jsonl": ([{"question": nested(DEEP), "answer": "{}"}], ":1: question: too deeply nested"),
    }
    for name, (records, expected) in cases.items():
        message = refused(db, write_jsonl(tmp_path / name, records))
        assert message.startswith(str(tmp_path / name)) and expected in message, message
    line = tmp_path / "line.jsonl"      # the line itself: too deep for any parser
    line.write_text('{"messages": ' + nested(DEEP) + "}\n")
    assert ":1: too deeply nested" in refused(db, line)
    task = tmp_path / "job_description.json"
    task.write_text('{"task_description": "t", "tools": ' + nested(DEEP) + "}")
    assert refused(db, task).startswith(f"{task}: too deeply nested")


def test_import_keeps_deep_but_allowed_values_exactly(db, tmp_path):
    value = json.loads(nested(90, "bottom"))
    path = write_jsonl(tmp_path / "ok.jsonl", [{"messages": [
        {"role": "user", "content": "x"}, call("c1", "lookup", json.dumps({"v": value})),
        {"role": "tool", "tool_call_id": "c1", "content": nested(95)}]}])
    [report] = import_files(db, [path])
    assert report.added == 1
    from db.traces import original_messages
    msgs = original_messages(db, 1)
    assert msgs[1]["tool_calls"][0]["function"]["arguments"] == {"v": value}
    assert msgs[2]["content"] == nested(95)


# ------------------------------------------------------------------------------ checks

def _store_trace(db, messages: list[dict], source: str) -> int:
    """A trace written as an import before the depth limit would have stored it."""
    with write_tx(db):
        imp = db.execute("INSERT INTO imports (source, path, format, sha256, lines, added,"
                         " duplicates, created_at) VALUES (?,?,'openai','0',1,1,0,?)",
                         [source, source, now()]).lastrowid
        w = TraceWriter(db, imp)
        tid, _ = w.add(NewTrace(messages, None, content_hash(messages, None), source, source, 1,
                                "openai"))
        w.flush()
    return tid


def _deep_result_trace() -> list[dict]:
    return [{"role": "user", "content": "x", "tool_calls": None, "tool_call_id": None, "name": None},
            {"role": "assistant", "content": None, "tool_call_id": None, "name": None,
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "FindRestaurants", "arguments": {"city": "X"}}}]},
            {"role": "tool", "content": nested(DEEP), "tool_calls": None, "tool_call_id": "c1",
             "name": None},
            {"role": "assistant", "content": "ok", "tool_calls": None, "tool_call_id": None,
             "name": None}]


def test_check_flags_a_trace_with_a_100k_deep_result_and_checks_the_rest(db_path):
    db = open_db(db_path)
    import_files(db, [REPO / "sample_traces"])
    n = stats(db)["traces"]
    deep_id = _store_trace(db, _deep_result_trace(), "deep.jsonl")
    db.close()
    r = runner.invoke(cli, ["--db", str(db_path), "check", "--json"])
    assert r.exit_code == 0, r.output
    flags = json.loads(r.stdout)["flags"]
    assert json.loads(r.stdout)["traces"] == n + 1
    deep = [f for f in flags if f["source"] == "deep.jsonl"]
    assert any(f["check"] == "structure" and f["severity"] == "error"
               and "nested more than 100 levels" in f["detail"] for f in deep), deep
    assert any(f["source"] != "deep.jsonl" for f in flags)   # the other traces were checked
    assert deep_id == n + 1


class _FailsOnOneTrace:
    """A check (plugged into the registry) that breaks on the trace whose source says so."""

    NAME = "fragile"

    @staticmethod
    def run(ctx):
        out = []
        for t in ctx.traces:
            if t.source == "breaks.jsonl":
                raise RecursionError("maximum recursion depth exceeded")
            out.append({"trace_id": t.id, "message_idx": None, "check": "fragile",
                        "severity": "warning", "detail": f"seen with {len(ctx.traces)}"})
        return out


def test_a_check_failing_on_one_trace_flags_it_and_checks_the_others(db, monkeypatch):
    import_files(db, [REPO / "sample_traces"])
    n = stats(db)["traces"]
    bad = _store_trace(db, _deep_result_trace()[:2], "breaks.jsonl")
    monkeypatch.setitem(CHECKS, "fragile", _FailsOnOneTrace)
    report = run_checks(db, names=["fragile"])
    flags = report["flags"]
    assert report["traces"] == n + 1
    mine = [f for f in flags if f["source"] == "breaks.jsonl"]
    assert len(mine) == 1 and mine[0]["severity"] == "error"
    assert "RecursionError" in mine[0]["detail"]
    others = [f for f in flags if f["source"] != "breaks.jsonl"]
    assert len(others) == n and all(f["detail"] == f"seen with {n}" for f in others)
    assert bad == n + 1


# ------------------------------------------------------------------------------ files

def _workbench(db_path: Path, *args: object, timeout: float = 60,
               debug: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *(["--debug"] if debug else []),
                           "--db", str(db_path), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_import_refuses_a_fifo_and_a_device_at_once(db_path, tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jsonl"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        r = _workbench(db_path, "import", path, timeout=30)   # hung forever before
        assert r.returncode == 1, r.stderr
        assert r.stderr.strip() == f"error: {path}: not a regular file (pipes, devices and" \
                                   " sockets are not read)", r.stderr
    store = open_db(db_path)
    assert stats(store)["traces"] == 0
    store.close()


def test_a_line_is_refused_while_it_is_read_once_over_the_limit(db, tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(ok_trace()) + "\n" + json.dumps(ok_trace("y" * 20_000)) + "\n")
    with pytest.raises(InputError) as e:
        import_files(db, [path], max_message_bytes=1000)
    assert str(e.value) == f"{path}:2: line longer than 16000 bytes"
    assert stats(db)["traces"] == 0
    [report] = import_files(db, [path])        # the default limit takes it
    assert report.added == 2


# ------------------------------------------------------------------------------ errors

def test_a_locked_store_is_one_error_line(db_path, monkeypatch, tmp_path):
    open_db(db_path).close()
    monkeypatch.setattr(db.connection, "BUSY_TIMEOUT_MS", 200)   # don't wait 30 s here
    monkeypatch.setattr(db.tx, "WAIT_LIMIT_S", 0.5)              # nor 10 minutes
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        path = write_jsonl(tmp_path / "t.jsonl", [ok_trace()])
        r = runner.invoke(cli, ["--db", str(db_path), "import", str(path)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.exit_code == 1, r.output
    notice, error = r.stderr.strip().splitlines()   # it said it waited, then gave up
    assert notice.startswith("waiting for the store's write lock held by"), r.stderr
    assert error.startswith(f"error: the store {db_path} is busy"), r.stderr
    assert "Traceback" not in r.output


def test_failures_are_one_line_and_debug_shows_the_traceback(tmp_path):
    bad_store = tmp_path / "not-a-store.db"
    bad_store.write_bytes(b"this is not sqlite" * 100)
    r = _workbench(bad_store, "stats")
    assert r.returncode == 1
    assert r.stderr == f"error: the store {bad_store} cannot be used: file is not a database\n"
    r = _workbench(bad_store, "stats", debug=True)
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr
    assert "sqlite3.DatabaseError: file is not a database" in r.stderr
