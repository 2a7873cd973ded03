"""What the CLI prints about jobs and models: `jobs list` with each job's parent, a succeeded
job without its last progress text, the loss rounded in `models`, and the libraries' progress
bars (tqdm: transformers, datasets, huggingface_hub) kept off stderr when it is not a
terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from db import jobs as store
from db.models import register_model
from tests.conftest import REPO
from workbench.cli import app
from workbench.jobs.runner import run_job

runner = CliRunner()


def test_jobs_list_shows_the_parent_and_no_stale_progress_text(db, db_path):
    parent = store.create_job(db, "pipeline")
    child = run_job(db, store.create_job(db, "recount", parent_id=parent),
                    lambda ctx: ctx.progress(1, 2, "importing") or {"n": 1})
    assert child["status"] == "succeeded" and child["message"] is None
    failed = run_job(db, store.create_job(db, "recount"),
                     lambda ctx: (ctx.progress(1, 3, "halfway"), 1 / 0))
    assert failed["message"] == "halfway"          # a job that stopped keeps where it was
    r = runner.invoke(app, ["--db", str(db_path), "jobs", "list"])
    assert r.exit_code == 0, r.output
    header = next(line for line in r.stdout.splitlines() if "kind" in line)
    assert "parent" in header
    row = next(line for line in r.stdout.splitlines() if line.split("│")[1:2]
               and line.split("│")[1].strip() == str(child["id"]))
    cells = [c.strip() for c in row.split("│")]
    assert str(parent) in cells and "importing" not in row
    r = runner.invoke(app, ["--db", str(db_path), "jobs", "list", "--json"])
    assert {j["id"]: j["parent_id"] for j in json.loads(r.stdout)}[
        child["id"]] == parent


def test_models_prints_the_loss_rounded(db, db_path):
    register_model(db, name="m", kind="gguf", path="/nowhere/m.gguf", base_model="b",
                   metrics={"last_loss": 0.7678486704826355})
    r = runner.invoke(app, ["--db", str(db_path), "models"])
    assert r.exit_code == 0, r.output
    assert "0.7678" in r.stdout and "0.76784867" not in r.stdout


BARS = """
import sys
if sys.argv[1] == "quiet":
    from workbench.cli import quiet_library_bars
    quiet_library_bars()
from tqdm.auto import tqdm
for _ in tqdm(range(50), desc="TQDMBAR"):
    pass
import datasets
datasets.Dataset.from_list([{"a": i} for i in range(50)]).map(lambda r: r, desc="MAPBAR")
from transformers.utils import logging
for _ in logging.tqdm(range(5), desc="HFBAR"):
    pass
"""


def _bars(mode: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS",
                        "HF_HUB_DISABLE_PROGRESS_BARS")}
    done = subprocess.run([sys.executable, "-c", BARS, mode], capture_output=True, text=True,
                          cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_library_progress_bars_are_off_when_stderr_is_not_a_terminal():
    loud = _bars("loud")
    assert "TQDMBAR" in loud and "MAPBAR" in loud and "HFBAR" in loud   # they would be there
    quiet = _bars("quiet")
    assert "TQDMBAR" not in quiet and "MAPBAR" not in quiet and "HFBAR" not in quiet, quiet


def test_the_command_switches_them_off_for_itself_and_its_workers(tmp_path):
    probe = ("import os, sys; from workbench.cli import main; sys.argv = ['workbench', '--db',"
             f" {str(tmp_path / 'x.db')!r}, 'stats']; os.environ.pop('TQDM_DISABLE', None)\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('TQDM_DISABLE=' + os.environ.get('TQDM_DISABLE', ''), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert "TQDM_DISABLE=1" in done.stderr, done.stderr


def test_jobs_show_says_a_cancel_was_requested(db, db_path):
    job_id = store.create_job(db, "recount")
    store.start_job(db, job_id)
    store.request_cancel(db, job_id)
    r = runner.invoke(app, ["--db", str(db_path), "jobs", "show", str(job_id)])
    assert r.exit_code == 0, r.output
    assert "running (cancel requested" in r.stdout
