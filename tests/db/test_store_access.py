"""Stores from elsewhere (issue #30, item 7) and usage errors (item 6): a store with a newer
schema is refused and left as it was; a read-only store opens for reading; a usage error is
one `error:` line and exit 1. Real SQLite files, the real CLI (a subprocess where the user
must differ)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.tui_data import ROOT, sample_store
from workbench.cli import app

def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_store_with_a_newer_schema_is_refused_and_left_unchanged(tmp_path):
    path = sample_store(tmp_path / "new.db")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
                 " VALUES ('workbench', 'm999_from_the_future', '2030-01-01')")
    conn.commit()
    conn.close()
    before = _sha(path)
    for args in (["stats"], ["jobs", "list"], ["label", "keep", "1", "1"]):
        r = CliRunner().invoke(app, ["--db", str(path), *args])
        assert r.exit_code == 1, r.output
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert "newer version of workbench" in r.stderr and "m999_from_the_future" in r.stderr
    assert _sha(path) == before
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


@pytest.fixture
def read_only_store(tmp_path):
    """A store this test's CLI processes cannot write: as root (whom file modes do not stop)
    its folder is bind-mounted read-only in a private mount namespace for each command; as
    another user its file and folder are read-only."""
    if os.geteuid() == 0 and not shutil.which("unshare"):
        pytest.skip("needs unshare to make a read-only mount as root")
    folder = tmp_path / "ro"
    folder.mkdir()
    path = sample_store(folder / "ro.db")
    (folder / "config.toml").write_text("")
    os.chmod(path, 0o444)
    os.chmod(folder, 0o555)
    yield path
    os.chmod(folder, 0o755)


def _cli_as_reader(path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(path.parent),
           "WORKBENCH_CONFIG": str(path.parent / "config.toml")}
    cmd = [sys.executable, "-m", "workbench", "--db", str(path), *args]
    if os.geteuid() == 0:   # a real read-only mount, seen by this command only
        cmd = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o'
               ' remount,ro,bind "$0" "$0" && exec "$@"', str(path.parent), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_a_read_only_store_opens_for_reading_and_says_why_it_cannot_change(read_only_store):
    path = read_only_store
    before = _sha(path)
    stats = _cli_as_reader(path, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    jobs = _cli_as_reader(path, "jobs", "list", "--json")
    assert jobs.returncode == 0 and json.loads(jobs.stdout) == [], jobs.stderr
    export = _cli_as_reader(path, "export", "-")
    assert export.returncode == 0, export.stderr
    n_traces = sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute(
        "SELECT count(*) FROM traces").fetchone()[0]
    assert len(export.stdout.splitlines()) == n_traces > 0
    edit = _cli_as_reader(path, "label", "keep", "1", "1")
    assert edit.returncode == 1
    assert edit.stderr.startswith("error: ") and "is read-only" in edit.stderr, edit.stderr
    assert "Traceback" not in edit.stderr
    assert _sha(path) == before and stat.S_IMODE(path.stat().st_mode) == 0o444


@pytest.mark.parametrize("args, message", [
    (["import"], "error: Missing argument 'paths'. (see `workbench import --help`)"),
    (["frobnicate"], "error: No such command 'frobnicate'. (see `workbench --help`)"),
    (["jobs", "resume"], "error: Missing argument 'ID'. (see `workbench jobs resume --help`)"),
    (["stats", "--bogus"], "error: No such option: --bogus"),
])
def test_usage_errors_are_one_error_line_and_exit_1(tmp_path, args, message):
    r = CliRunner().invoke(app, ["--db", str(tmp_path / "u.db"), *args])
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
