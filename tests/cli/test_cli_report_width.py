"""Reports written to a pipe or a file are not laid out for a terminal: full names, no cuts."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO, S1


def _run(args, tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([sys.executable, "-m", "workbench", "--db", str(tmp_path / "w.db"),
                           *map(str, args)], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, cwd=REPO, env={**base, **env}, timeout=120)


def test_import_report_to_a_pipe_keeps_full_file_names(tmp_path):
    name = "traces-from-the-production-agent-of-the-restaurant-team-" + "x" * 40 + ".jsonl"
    src = tmp_path / name
    src.write_text("\n".join((S1 / "traces.jsonl").read_text().splitlines()[:3]) + "\n")
    r = _run(["import", src], tmp_path)
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "traces-from" in line)
    assert str(src) in row            # whole, on one line: not wrapped, not cut with an ellipsis
    assert "…" not in r.stdout
    assert "unassigned" in row and " 3 " in row


def test_an_explicit_columns_still_wins(tmp_path):
    src = tmp_path / ("t" * 120 + ".jsonl")
    src.write_text((S1 / "traces.jsonl").read_text().splitlines()[0] + "\n")
    r = _run(["import", src], tmp_path, COLUMNS="60")
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 60
