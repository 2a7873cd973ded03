"""The CLI through typer's CliRunner, and two writers at once."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

from typer.testing import CliRunner

from db import open_db
from db.revisions import add_revision
from db.traces import stats
from tests.conftest import DATA, REPO, S1
from workbench.cli import app
from workbench.traces.importing import import_files

runner = CliRunner()


def invoke(db_path, *args):
    return runner.invoke(app, ["--db", str(db_path), *map(str, args)])


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("import", "export", "stats", "score"):
        assert cmd in result.output


def test_import_stats_export(db_path, tmp_path):
    r = invoke(db_path, "import", S1 / "traces.jsonl", "--split", "train", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["files"][0]["added"] == 327 and report["traces"] == 327
    r = invoke(db_path, "import", DATA / "test.jsonl")
    assert r.exit_code == 0 and "test" in r.output
    r = invoke(db_path, "stats", "--json")
    s = json.loads(r.stdout)
    assert {k: s[k] for k in ("traces", "messages", "assistant_turns", "tool_calls")} == {
        "traces": 361, "messages": 6554 + 718, "assistant_turns": 3277 + 359,
        "tool_calls": 3277 + 359}
    assert s["by_split"] == {"test": 34, "train": 327} and s["by_origin"] == {"imported": 361}
    out = tmp_path / "train.jsonl"
    r = invoke(db_path, "export", out, "--format", "openai", "--split", "train", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["traces"] == 327
    assert len(out.read_text().splitlines()) == 327


def test_env_var_selects_database(tmp_path, monkeypatch):
    path = tmp_path / "env.db"
    monkeypatch.setenv("WORKBENCH_DB", str(path))
    r = runner.invoke(app, ["import", str(DATA / "test.jsonl")])
    assert r.exit_code == 0, r.output
    assert stats(open_db(path))["traces"] == 34


def test_bad_file_exits_1_with_location_and_changes_nothing(db_path, tmp_path):
    invoke(db_path, "import", S1 / "traces.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [\n')
    r = invoke(db_path, "import", bad)
    assert r.exit_code == 1
    assert f"{bad}:2: not valid JSON" in r.stderr
    assert "Traceback" not in r.output
    assert stats(open_db(db_path))["traces"] == 327


def test_score_command(tmp_path):
    f = tmp_path / "p.jsonl"
    answer = '{"name": "FindRestaurants", "parameters": {"city": "Oakland", "cuisine": "Thai"}}'
    f.write_text("\n".join(json.dumps(x) for x in [
        {"answer": answer, "prediction": answer},
        {"answer": answer, "prediction": '<tool_call>{"name": "FindRestaurants", "arguments": {"city": "Oakland", "cuisine": "Indian"}}</tool_call>'},
        {"answer": answer, "prediction": ""}]) + "\n")
    r = runner.invoke(app, ["score", str(f), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n"] == 3
    assert [row["staged_tool_call"] for row in out["rows"]] == [1.0, 0.75, 0.0]
    assert out["tool_call_equivalence"] == 1 / 3
    assert out["floor"]["function"] == "FindRestaurants" and out["floor"]["staged_tool_call"] == 1.0
    r = runner.invoke(app, ["score", str(f)])
    assert r.exit_code == 0, r.output
    assert "would score staged 1.0000" in " ".join(r.stdout.split())
    assert "the model is -0.4167 staged from it" in " ".join(r.stdout.split())


def _writer(db_path: str, n: int, who: str) -> None:
    db = open_db(db_path)
    for i in range(n):
        add_revision(db, 1 + i % 5, 1, tool_calls=[{"id": None, "type": "function", "function": {
            "name": "respond_to_user", "arguments": {"message": f"{who} {i}"}}}],
            author_kind="human", author_name=who)


def test_two_writers_at_once(db_path):
    import_files(open_db(db_path), [S1 / "traces.jsonl"])
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(db_path), 60, w)) for w in ("cli", "app")]
    for p in procs:
        p.start()
    _writer(str(db_path), 30, "main")  # a third writer in this process
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    db = open_db(db_path)
    counts = dict(db.execute("SELECT author_name, count(*) FROM revisions GROUP BY author_name"))
    assert counts == {"cli": 60, "app": 60, "main": 30}


def test_workbench_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "workbench", "--help"], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0 and "import" in r.stdout
