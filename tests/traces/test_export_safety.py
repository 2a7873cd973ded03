"""Export never replaces what is not a regular file; `-` is standard output; formats checked."""

from __future__ import annotations

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from tests.conftest import S1
from workbench.cli import app
from workbench.core.errors import InputError
from workbench.traces.exporting import export
from workbench.traces.importing import import_files

runner = CliRunner()


def invoke(db_path, *args):
    return runner.invoke(app, ["--db", str(db_path), *map(str, args)])


@pytest.fixture
def store(db, db_path):
    import_files(db, [S1 / "job_description.json", S1 / "traces.jsonl"])
    return db_path


def test_export_refuses_to_replace_a_fifo(db, store, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        export(db, fifo, "openai")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)          # still the FIFO
    assert not (tmp_path / "pipe.part").exists()           # nothing written beside it


def test_export_refuses_a_symlink_and_a_directory(db, store, tmp_path):
    target = tmp_path / "real.jsonl"
    target.write_text("keep\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    with pytest.raises(InputError, match="not a regular file"):
        export(db, link, "openai")
    assert link.is_symlink() and target.read_text() == "keep\n"
    folder = tmp_path / "dir"
    folder.mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        export(db, folder, "openai")
    assert folder.is_dir() and not list(folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []


def test_export_cli_to_a_device_is_refused_without_touching_it(store, tmp_path):
    # a null device of our own (never the real /dev/null: a broken exporter would replace it)
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    before = os.lstat(dev)
    r = invoke(store, "export", dev)
    assert r.exit_code == 1
    assert str(dev) in r.stderr and "not a regular file" in r.stderr
    after = os.lstat(dev)
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino
    assert not (tmp_path / "null.part").exists()


def test_export_still_replaces_a_regular_file(db, store, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    assert export(db, out, "openai")["traces"] == 327
    assert json.loads(out.read_text().splitlines()[0])["meta"]["trace_id"] == 1


def test_export_dash_writes_pure_jsonl_to_stdout(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a file named "-" would land here, not in the repository
    r = invoke(store, "export", "-", "--limit", "3")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(json.loads(l)["messages"] for l in lines)
    assert "wrote 3 lines" in r.stderr and "standard output" in r.stderr
    assert not (tmp_path / "-").exists()
    # --json: the summary goes to stderr too, so stdout stays JSONL
    r = invoke(store, "export", "-", "--limit", "2", "--format", "pairs", "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(l) for l in r.stdout.splitlines()]
    assert rows and all("question" in row for row in rows)
    summary = json.loads(r.stderr)
    assert summary["traces"] == 2 and summary["lines"] == len(rows) and summary["path"] == "-"


def test_export_bad_format_is_a_clear_error(store, tmp_path):
    out = tmp_path / "x.jsonl"
    r = invoke(store, "export", out, "--format", "csv")
    assert r.exit_code == 1
    assert "--format" in r.stderr and "openai, pairs, hf" in r.stderr and "'csv'" in r.stderr
    assert "Traceback" not in r.output and not out.exists()
    assert not (tmp_path / "x.jsonl.part").exists()


def test_export_summary_shows_control_characters_in_the_name(store, tmp_path):
    out = tmp_path / "a\x1b]0;pwned\x07.jsonl"
    r = invoke(store, "export", out, "--limit", "1")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.stdout and "\\x1b]0;pwned\\x07" in r.stdout
    assert out.exists()
