"""One training process of several: `python -m workbench.training.rank SPEC` (internal).

Started by torchrun or accelerate launch for a job (:mod:`workbench.training.launch`). Every
rank trains; rank 0 reports through the store under the job's id (progress, log, metrics, the
model rows), tells the job's process its events, and writes the outcome. Rank 0 stops at the
next micro-batch when the job's process asks (the ``stop`` file) or is gone; the trainer's
progress callback makes every rank stop at that same micro-batch.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.jobs import process_alive
from workbench.jobs.context import (Cancelled, Interrupted, JobContext, JobEvent, JobStatus,
                                    JobStopped, LogLine, Metrics, Progress)


@dataclass
class RankContext(JobContext):
    """Rank 0's context: the job's row, and the job's process as a second source of stops."""

    folder: Path = Path(".")
    parent_pid: int = 0

    def stop_requested(self) -> JobStopped | None:
        if self._stop is None:
            stop = self.folder / "stop"
            if stop.exists():
                try:
                    why = json.loads(stop.read_text())
                except ValueError:      # being written: read it at the next micro-batch
                    why = None
                if why is not None:
                    kind = Cancelled if why.get("status") == JobStatus.CANCELLED else Interrupted
                    self._stop = kind(why.get("message") or "stopped")
            elif self.parent_pid and process_alive(self.parent_pid, None) is False:
                self._stop = Interrupted(f"the job's process (pid {self.parent_pid}) ended")
        return super().stop_requested()


class EventFile:
    """Rank 0's events, one JSON line each, for the job's process to hand to its listeners."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "a", encoding="utf-8")

    def __call__(self, event: JobEvent) -> None:
        if isinstance(event, Progress):
            e: dict[str, Any] = {"t": "progress", "done": event.done, "total": event.total,
                                 "message": event.message}
        elif isinstance(event, LogLine):
            e = {"t": "log", "text": event.text}
        elif isinstance(event, Metrics):
            e = {"t": "metrics", "values": event.values}
        else:
            return
        self.fh.write(json.dumps(e, default=str) + "\n")
        self.fh.flush()


def init_process_group() -> None:
    """Join the ranks before any work (the trainer agrees on the sequence length through it):
    NCCL on GPUs, gloo on CPUs. Accelerate and the Trainer use this group."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def _write(path: Path, outcome: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome, default=str))
    os.replace(tmp, path)


def main(spec_file: str) -> int:
    from db import open_db
    from db.queries import TraceFilter
    from workbench.training.data import DataOptions
    from workbench.training.trainer import TrainConfig, train

    spec = json.loads(Path(spec_file).read_text())
    folder = Path(spec["folder"])
    rank = int(os.environ.get("RANK", "0"))
    init_process_group()
    config = dict(spec["config"])
    cfg = TrainConfig(**config)
    data = dict(spec["data"])
    opts = DataOptions(selection=TraceFilter.from_dict(data.pop("selection")), **data)
    data_db = open_db(spec["data_store"], migrate=False)
    try:
        if rank != 0:
            try:
                train(data_db, cfg, opts, ctx=None)
            except JobStopped:
                pass                # rank 0 tells the job how it stopped
            return 0
        same = spec["store"] == spec["data_store"]
        store_db = data_db if same else open_db(spec["store"], migrate=False)
        ctx = RankContext(store_db, spec["job_id"], [EventFile(folder / "events.jsonl")],
                          resume=cfg.resume, folder=folder, parent_pid=spec["parent_pid"])
        try:
            result = train(data_db, cfg, opts, ctx=ctx)
        except JobStopped as e:
            _write(folder / "result.json", {"status": e.status, "error": str(e)})
            return 0
        except BaseException as e:  # noqa: BLE001 - the job's process reports it
            from workbench.training.trainer import TrainingError

            message = str(e) if isinstance(e, (TrainingError, ValueError)) else \
                f"{type(e).__name__}: {e}"
            _write(folder / "result.json", {"status": JobStatus.FAILED, "error": message,
                                            "traceback": traceback.format_exc()})
            return 1
        _write(folder / "result.json", {"status": JobStatus.SUCCEEDED, "result": result})
        if not same:
            store_db.conn.close()
        return 0
    finally:
        data_db.conn.close()
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
