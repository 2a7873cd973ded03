"""Training in several processes (torchrun or accelerate launch) as one job.

The job's own process (the one :mod:`workbench.jobs.runner` runs, which owns the job row, its
heartbeat and its signals) starts the launcher in a process group of its own, with
``python -m workbench.training.rank SPEC``; every rank trains, and rank 0 alone reports
through the store under the same job id (progress, log, metrics, model rows), exactly as one
process would. The two sides share a folder, ``OUTPUT/launch/``:

* ``spec.json``: what to train (the store, the job id, the data store, config and data options);
* ``events.jsonl``: rank 0's events, which this process hands to its own listeners (the CLI's
  progress line, a pipeline's row) without storing them a second time;
* ``stop``: written here when the job is asked to stop (a cancel, SIGTERM, Ctrl-C); rank 0
  reads it at the next micro-batch and every rank stops there and saves a checkpoint;
* ``result.json``: rank 0's outcome (the result, or how it stopped or failed);
* ``launcher.log``: what the launcher and the ranks printed.

Whatever happens, the whole process group (and any rank that left it) is ended before the job
ends: no rank outlives its job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from db.connection import db_file

from workbench.jobs.context import (Cancelled, Interrupted, JobContext, JobStatus, LogLine,
                                    Metrics, Progress)
from workbench.core.redaction import redact

LAUNCHERS = ("torchrun", "accelerate")
STOP_GRACE_S = 600.0     # after a stop, how long the ranks get to save their checkpoint
END_GRACE_S = 10.0       # SIGTERM to the group, then SIGKILL after this
POLL_S = 0.2


@dataclass(frozen=True)
class Launch:
    nproc: int | None              # None: 1, or the accelerate config's num_processes
    launcher: str                  # torchrun | accelerate
    accelerate_config: str | None = None


def in_a_launched_rank() -> bool:
    """This process is already one rank of several (`torchrun ... -m workbench train`)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launcher_for(nproc: int | None, launcher: str, accelerate_config: str | None) -> str | None:
    """The launcher a training uses, or None when this process trains by itself."""
    if in_a_launched_rank():
        return None
    if launcher in LAUNCHERS:
        return launcher
    if accelerate_config is not None:
        return "accelerate"
    return "torchrun" if (nproc or 1) > 1 else None


def launcher_command(launch: Launch, spec_file: Path) -> list[str]:
    """The command that starts the ranks, each running `python -m workbench.training.rank`."""
    target = ["-m", "workbench.training.rank", str(spec_file)]
    if launch.launcher == "torchrun":
        # --standalone: a rendezvous on this machine, on a free port
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={launch.nproc or 1}", *target]
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.accelerate_config is not None:
        cmd += ["--config_file", str(Path(launch.accelerate_config).resolve())]
    if launch.nproc is not None:
        cmd += ["--num_processes", str(launch.nproc)]
    if launch.accelerate_config is None:
        # without a config: DDP over the GPUs, or over CPU processes with gloo (accelerate's
        # multi-GPU launcher is torchrun's; each rank finds no GPU and takes gloo)
        if (launch.nproc or 1) > 1:
            cmd += ["--multi_gpu"]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*cmd, *target]


def check_launch(launch: Launch) -> None:
    """Refuse what cannot start, before anything starts."""
    if launch.accelerate_config is not None:
        path = Path(launch.accelerate_config)
        if not path.is_file():
            raise FileNotFoundError(f"accelerate config {path}: no such file")


def store_file(db: Database) -> str:
    path = db_file(db)
    if not path:
        raise ValueError("training in several processes needs a store in a file, not in memory")
    return str(Path(path).resolve())


def write_spec(folder: Path, ctx: JobContext, data_db: Database, cfg: Any, opts: Any) -> Path:
    """What every rank trains, as JSON (the config and data options as the job made them)."""
    from dataclasses import asdict

    data = {k: v for k, v in asdict(opts).items() if k != "selection"}
    spec = {"store": store_file(ctx.db), "job_id": ctx.job_id, "data_store": store_file(data_db),
            "config": cfg.describe(), "data": {**data, "selection": opts.selection.to_dict()},
            "parent_pid": os.getpid(), "folder": str(folder.resolve())}
    path = folder / "spec.json"
    path.write_text(json.dumps(spec, indent=2, default=str))
    return path


class _Events:
    """Reads rank 0's events as they are appended and hands them to the job's listeners."""

    def __init__(self, path: Path, ctx: JobContext) -> None:
        self.path, self.ctx, self.pos, self.rest = path, ctx, 0, b""

    def relay(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.pos)
            chunk = fh.read()
        self.pos += len(chunk)
        *lines, self.rest = (self.rest + chunk).split(b"\n")
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("t") == "progress":
                self.ctx.emit(Progress(e["done"], e["total"], e["message"]))
            elif e.get("t") == "log":
                self.ctx.emit(LogLine(e["text"]))
            elif e.get("t") == "metrics":
                self.ctx.emit(Metrics(e["values"]))


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _running(p: Any) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def end_group(proc: subprocess.Popen, seen: dict[int, Any]) -> None:
    """End the launcher's process group and every process seen below it (torchrun starts each
    rank in a session of its own, out of the group's reach): SIGTERM, then SIGKILL."""
    import psutil

    seen.update((p.pid, p) for p in _descendants(proc.pid))
    procs = list(seen.values())
    for sig, wait in ((signal.SIGTERM, END_GRACE_S), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None and not any(_running(p) for p in procs):
            break
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and (proc.poll() is None
                                               or any(_running(p) for p in procs)):
            time.sleep(0.05)
    proc.poll()


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def run_launched(ctx: JobContext, data_db: Database, cfg: Any, opts: Any,
                 launch: Launch) -> dict:
    """Train under the launcher as this job; returns rank 0's result, or raises as the job
    ended (stopped: Interrupted / Cancelled, with the checkpoint saved; failed: an error)."""
    from workbench.training.trainer import TrainingError

    check_launch(launch)
    folder = Path(cfg.output) / "launch"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("events.jsonl", "result.json", "stop"):
        (folder / name).unlink(missing_ok=True)
    spec_file = write_spec(folder, ctx, data_db, cfg, opts)
    cmd = launcher_command(launch, spec_file)
    ctx.log(f"starting {launch.nproc or 'the configured number of'} training processes with"
            f" {launch.launcher} (log: {folder / 'launcher.log'})")
    import workbench

    root = str(Path(workbench.__file__).resolve().parent.parent)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    events = _Events(folder / "events.jsonl", ctx)
    stop_sent = None
    seen: dict[int, Any] = {}      # every process the launcher started, to end them all
    looked = 0.0
    with open(folder / "launcher.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        with ctx.graceful():        # a first signal asks the ranks to stop; a second ends them
            while proc.poll() is None:
                events.relay()
                if time.monotonic() - looked > 1.0:
                    seen.update((p.pid, p) for p in _descendants(proc.pid))
                    looked = time.monotonic()
                why = ctx.stop_requested()
                if why is not None and stop_sent is None:
                    (folder / "stop").write_text(json.dumps({"status": why.status,
                                                             "message": str(why)}))
                    stop_sent = time.monotonic()
                    ctx.log(f"{why}: asking the training processes to save a checkpoint"
                            " and stop")
                if stop_sent is not None and time.monotonic() - stop_sent > STOP_GRACE_S:
                    ctx.log(f"the training processes did not stop within {STOP_GRACE_S:.0f} s:"
                            " ending them")
                    break
                time.sleep(POLL_S)
    finally:
        end_group(proc, seen)
    events.relay()
    result_file = folder / "result.json"
    if result_file.exists():
        outcome = json.loads(result_file.read_text())
        status = outcome["status"]
        if status == JobStatus.SUCCEEDED:
            return outcome["result"]
        if status == JobStatus.CANCELLED:
            raise Cancelled(outcome["error"])
        if status == JobStatus.INTERRUPTED:
            raise Interrupted(outcome["error"])
        if outcome.get("traceback"):
            ctx.log(redact(outcome["traceback"]))
        raise TrainingError(outcome["error"])
    why = ctx.stop_requested()
    if why is not None:
        raise why
    ctx.log(redact(_tail(folder / "launcher.log", 40)))
    raise TrainingError(f"the training processes ({launch.launcher}) ended with exit code"
                        f" {proc.returncode} before rank 0 reported; see"
                        f" {folder / 'launcher.log'}")
