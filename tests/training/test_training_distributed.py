"""Training in several processes (`train --nproc N`): the options everywhere a job is started,
the example configs, and 2 gloo processes on this CPU with the tiny model as one job (the loss of
one process, a SIGTERM that leaves a checkpoint and no rank, a resume that finishes)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from db import open_db
from db.jobs import get_job, job_metrics, list_jobs
from tests.conftest import REPO
from tests.training.test_training import (gguf_tokenizer, make_db,  # noqa: F401 - fixtures
                                 tiny_model_dir)
from workbench.cli import app
from workbench.jobs.registry import get_spec

runner = CliRunner()
CONFIGS = REPO / "configs" / "distributed"
# Loss of 2 processes x 3 sequences against 1 process x 6, per step, same data (each step is
# the whole data set, so the order ranks see it in does not matter), fp32: the same sums in
# another order, so float rounding only (measured: 2e-7 relative at most).
LOSS_RTOL = 1e-5


@pytest.fixture
def train_db(tmp_path: Path) -> Any:
    db = make_db(tmp_path / "train.db")
    yield db
    db.conn.close()


def _path(db: Any) -> str:
    return db.conn.execute("PRAGMA database_list").fetchone()[2]


# ------------------------------------------------------------------ the options, everywhere

def test_the_options_are_the_train_jobs_params_in_cli_pipeline_and_form(tmp_path: Path) -> None:
    from workbench.jobs.forms import param_fields
    from workbench.pipeline.config import PipelineError, load_pipeline

    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for flag in ("--nproc", "--launcher", "--accelerate-config"):
        assert flag in r.output, flag
    form = {f.name: f for f in param_fields(get_spec("train"))}
    assert form["launcher"].widget == "select"
    assert form["launcher"].options == ["auto", "torchrun", "accelerate"]
    assert form["nproc"].optional and form["nproc"].parse("2") == 2
    assert form["accelerate_config"].parse("") is None

    pipe = tmp_path / "pipe.toml"
    pipe.write_text('[train]\nnproc = 2\nlauncher = "accelerate"\n'
                    f'accelerate_config = "{CONFIGS / "ddp.yaml"}"\n')
    params = load_pipeline(pipe).stages["train"].params
    assert (params.nproc, params.launcher) == (2, "accelerate")
    launch = params.launch()
    assert launch is not None and launch.launcher == "accelerate"
    for text, message in [
            ("[train]\nnproc = 0\n", ":2: [train] nproc: nproc must be between 1 and 4096, not 0"),
            ("[train]\nlauncher = \"mpi\"\n", ":2: [train] launcher: must be one of auto,"),
            ("[train]\nnproc = \"2\"\n", ":2: [train] nproc: must be an integer"),
            ("[train]\nlauncher = \"torchrun\"\naccelerate_config = \"a.yaml\"\n",
             "accelerate_config is read by accelerate launch")]:
        pipe.write_text(text)
        with pytest.raises(PipelineError) as e:
            load_pipeline(pipe)
        assert str(e.value).startswith(str(pipe)) and message in str(e.value), str(e.value)


def test_a_bad_option_on_the_command_line_stores_no_job(tmp_path: Path) -> None:
    db_path = tmp_path / "w.db"
    r = runner.invoke(app, ["--db", str(db_path), "train", "--nproc", "0"])
    assert r.exit_code == 1 and "nproc must be between 1 and 4096, not 0" in r.stderr
    r = runner.invoke(app, ["--db", str(db_path), "train", "--launcher", "torchrun",
                            "--accelerate-config", "a.yaml"])
    assert r.exit_code == 1 and "accelerate_config is read by accelerate launch" in r.stderr
    db = open_db(db_path)
    try:
        assert list_jobs(db) == []
    finally:
        db.conn.close()


def test_the_launcher_follows_the_options(tmp_path: Path) -> None:
    from workbench.training.launch import Launch, launcher_command, launcher_for

    assert launcher_for(None, "auto", None) is None          # one process: no launcher
    assert launcher_for(1, "auto", None) is None
    assert launcher_for(2, "auto", None) == "torchrun"
    assert launcher_for(None, "auto", "a.yaml") == "accelerate"
    assert launcher_for(1, "torchrun", None) == "torchrun"
    spec = tmp_path / "spec.json"
    cmd = launcher_command(Launch(2, "torchrun"), spec)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=2" in cmd and cmd[-3:] == ["-m", "workbench.training.rank", str(spec)]
    cmd = launcher_command(Launch(None, "accelerate", str(CONFIGS / "fsdp.yaml")), spec)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--num_processes" not in cmd
    assert cmd[cmd.index("--config_file") + 1] == str(CONFIGS / "fsdp.yaml")


LAUNCHER = """
import subprocess, sys, time
# as torchrun does: each rank in a session of its own
ranks = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                          start_new_session=True) for _ in range(2)]
print(" ".join(str(r.pid) for r in ranks), flush=True)
time.sleep(600)
"""


def test_ending_a_launch_ends_ranks_outside_its_process_group(tmp_path: Path) -> None:
    import psutil

    from workbench.training.launch import end_group

    out = tmp_path / "pids"
    with open(out, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=fh,
                                start_new_session=True)
    deadline = time.monotonic() + 60
    while not out.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    ranks = [psutil.Process(int(pid)) for pid in out.read_text().split()]
    assert len(ranks) == 2 and all(os.getpgid(r.pid) != proc.pid for r in ranks)
    end_group(proc, {})
    assert proc.returncode is not None
    gone, alive = psutil.wait_procs(ranks, timeout=5)
    assert alive == []


# ------------------------------------------------------------------ the example configs

@pytest.mark.parametrize("name, kind", [("ddp.yaml", "MULTI_GPU"), ("fsdp.yaml", "FSDP"),
                                        ("deepspeed-zero3.yaml", "DEEPSPEED")])
def test_the_example_configs_load_as_accelerate_reads_them(name: str, kind: str,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    monkeypatch.chdir(REPO)          # the DeepSpeed file is named relative to the repository
    config = load_config_from_file(str(CONFIGS / name))
    assert str(config.distributed_type).endswith(kind), config.distributed_type
    assert config.num_processes >= 2 and config.num_machines == 1
    assert config.use_cpu is False
    if kind == "FSDP":
        fsdp = config.fsdp_config
        assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD" and fsdp["fsdp_use_orig_params"]
        assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    if kind == "DEEPSPEED":
        ds_file = Path(config.deepspeed_config["deepspeed_config_file"])
        assert ds_file.is_file(), ds_file
        ds = json.loads(ds_file.read_text())
        assert ds["zero_optimization"]["stage"] == 3
        assert ds["train_micro_batch_size_per_gpu"] == "auto"   # the trainer fills them in
        assert ds["gradient_accumulation_steps"] == "auto"


# ------------------------------------------------------------------ 2 processes on this CPU

def _rank_processes(spec_folder: Path) -> list[Any]:
    """Processes still running for a launch folder (launcher and ranks name its spec file)."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(
                    str(spec_folder) in part for part in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            pass
    return found


PARAMS = dict(max_steps=3, save_steps=2, lr=1e-3, lora_r=4, gguf="none", max_length=512,
              precision="fp32")


@pytest.mark.slow
def test_two_processes_train_as_one_job_with_the_loss_of_one(
        train_db: Any, tiny_model_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`train --nproc 2` (torchrun, gloo): one job row, its progress, metrics and model row from
    rank 0, and per step the loss of one process over the same global batch."""
    from workbench.commands import jobs as job_cmds
    from workbench.jobs.runner import run

    monkeypatch.setattr(job_cmds, "LINE_EVERY_S", 0.0)      # every progress report, as lines

    one = run(train_db, "train", {}, {**PARAMS, "base_model": str(tiny_model_dir),
                                      "output": str(tmp_path / "one"), "seqs_per_step": 6})
    assert one["status"] == "succeeded", one["error"]
    out = tmp_path / "two"
    t0 = time.perf_counter()
    r = runner.invoke(app, ["--db", _path(train_db), "train", "--base-model", str(tiny_model_dir),
                            "--output", str(out), "--nproc", "2", "--seqs-per-step", "3",
                            "--max-steps", "3", "--save-steps", "2", "--lr", "1e-3",
                            "--lora-r", "4", "--gguf", "none", "--max-length", "512",
                            "--precision", "fp32", "--name", "two", "--json"])
    took = time.perf_counter() - t0
    assert r.exit_code == 0, (r.output, (out / "launch" / "launcher.log").read_text())
    result = json.loads(r.stdout)
    jobs = list_jobs(train_db)
    assert len(jobs) == 2                               # one row for the 2-process run
    job = get_job(train_db, result["job_id"])
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert "starting 2 training processes with torchrun" in job["log"]
    assert job["log"].count("registered model two") == 1            # rank 0 only
    assert (job["done"], job["total"]) == (3, 3)
    assert "train: step 3/3" in r.stderr                 # rank 0's progress, relayed to the CLI
    losses = {name: [m["loss"] for m in job_metrics(train_db, j)]
              for name, j in (("one", one["id"]), ("two", job["id"]))}
    print(f"\nper-step loss, 1 process x 6 sequences: {losses['one']}\n"
          f"per-step loss, 2 processes x 3 sequences: {losses['two']} ({took:.1f} s)")
    assert len(losses["two"]) == len(losses["one"]) == 3
    for a, b in zip(losses["one"], losses["two"]):
        assert b == pytest.approx(a, rel=LOSS_RTOL), losses
    assert losses["two"][-1] < losses["two"][0]          # and it learns
    assert result["metrics"]["steps"] == 3 and result["metrics"]["data_sequences"] == 6
    models = [m for m in __import__("db.models", fromlist=["list_models"]).list_models(train_db)
              if m["name"] == "two"]
    assert [(m["kind"], m["job_id"]) for m in models] == [("merged", job["id"])]
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert _rank_processes(out / "launch") == []


@pytest.mark.slow
def test_sigterm_interrupts_every_rank_then_jobs_resume_finishes(train_db: Any,
                                                                 tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    """SIGTERM to the job's process: the ranks save a checkpoint and stop, the job ends
    `interrupted` with no rank left running, and `workbench jobs resume` finishes it (under
    accelerate launch; the other test runs torchrun)."""
    import psutil

    from workbench.jobs.runner import start_worker, submit

    out = tmp_path / "run"
    job_id = submit(train_db, "train", {}, {**PARAMS, "base_model": str(tiny_model_dir),
                                            "output": str(out), "seqs_per_step": 3,
                                            "max_steps": 30, "nproc": 2,
                                            "launcher": "accelerate"})
    db_path = _path(train_db)
    proc = start_worker(db_path, job_id)
    first = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not first.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert first.exists(), get_job(train_db, job_id)["log"]
    ranks = psutil.Process(proc.pid).children(recursive=True)
    assert len(ranks) >= 3, ranks                         # the launcher and 2 ranks
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) is not None
    row = get_job(train_db, job_id)
    assert row["status"] == "interrupted", (row["status"], row["error"], row["log"])
    assert "SIGTERM" in row["error"]
    gone, alive = psutil.wait_procs(ranks, timeout=5)
    assert alive == [] and _rank_processes(out / "launch") == []
    step = int(re.search(r"stopped at step (\d+); checkpoint saved", row["log"]).group(1))
    assert 2 <= step < 30                                 # stopped early, where it was
    assert (out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").exists()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "workbench", "--db", db_path, "jobs", "resume",
                        str(job_id), "--json"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, (r.stderr, (out / "launch" / "launcher.log").read_text()[-3000:])
    row = get_job(train_db, job_id)
    assert row["status"] == "succeeded" and row["attempts"] == 2
    assert f"resuming from {out / 'checkpoints' / f'checkpoint-{step}'}" in row["log"]
    assert row["result"]["metrics"]["steps"] == 30
    assert _rank_processes(out / "launch") == []


def test_a_saved_adapter_merges_as_the_trained_model_does(tiny_model_dir: Path,
                                                          tmp_path: Path) -> None:
    """After a sharded run (FSDP, ZeRO-3) rank 0 merges the saved adapter into a fresh base
    model: the same weights as merging the adapter held in memory."""
    import torch

    from workbench.models.hf_loading import load_model, resolve_base_model
    from workbench.training.trainer import (Hardware, TrainConfig, add_lora,
                                            merge_saved_adapter)

    cfg = TrainConfig(base_model=str(tiny_model_dir), output=str(tmp_path), lora_r=4)
    model = add_lora(load_model(tiny_model_dir), cfg)
    with torch.no_grad():  # LoRA B starts at zero: give the adapter an effect
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    model.save_pretrained(str(tmp_path / "adapter"))
    in_memory = model.merge_and_unload().state_dict()
    hw = Hardware("cpu", torch.float32, False, False, "sdpa")
    saved = merge_saved_adapter(resolve_base_model(str(tiny_model_dir)), tmp_path / "adapter",
                                hw).state_dict()
    base = load_model(tiny_model_dir).state_dict()
    assert saved.keys() == in_memory.keys()
    changed = [k for k in saved if not torch.equal(base[k], saved[k])]
    assert changed and all("proj" in k for k in changed)      # the adapter is in the weights
    for k in saved:
        assert torch.allclose(saved[k], in_memory[k], atol=1e-6), k
