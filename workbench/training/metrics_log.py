"""The training curve of a job, read back from the store.

A training job stores one metrics row per optimizer step (step, loss, lr, tokens_per_s, eta_s;
see `workbench.training.trainer` and `db.jobs.job_metrics`). Reading the curve from the store,
not from the process, means the app draws it for a training started headless, by the CLI, or on
another machine that writes the same store. Runs stored before metrics were rows logged them as
`metrics {json}` lines: `parse_metrics` reads those, skipping lines that do not parse.
"""

from __future__ import annotations

import math
from typing import Any

from workbench.core import safe_json

PREFIX = "metrics "
FIELDS = ("step", "loss", "lr", "tokens_per_s", "eta_s")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def points(records: list[Any]) -> list[dict]:
    """Each step's metrics in step order, one point per step (a resumed run that records a step
    again keeps the newest): {"step": int, "loss", "lr", "tokens_per_s", "eta_s": float|None}.
    Records that are not objects with a numeric step are skipped."""
    by_step: dict[int, dict] = {}
    for data in records:
        if not isinstance(data, dict):
            continue
        step = _number(data.get("step"))
        if step is None:
            continue
        point = {"step": int(step), **{k: _number(data.get(k)) for k in FIELDS[1:]}}
        by_step.pop(point["step"], None)
        by_step[point["step"]] = point
    return sorted(by_step.values(), key=lambda p: p["step"])


def parse_metrics(log: str | None) -> list[dict]:
    """The points of an older run's `metrics {json}` log lines."""
    records = []
    for line in (log or "").splitlines():
        if not line.startswith(PREFIX):
            continue
        try:
            records.append(safe_json.loads(line[len(PREFIX):]))
        except ValueError:
            continue
    return points(records)


def job_points(stored: list[dict], log: str | None) -> list[dict]:
    """A job's curve: its metrics rows, else (a run from before they were rows) its log."""
    return points(stored) if stored else parse_metrics(log)


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def summary(points: list[dict]) -> dict:
    """The latest values (each the newest point that has it) and the lowest loss so far."""
    out: dict[str, Any] = {"steps": len(points)}
    for key in FIELDS:
        out[key] = next((p[key] for p in reversed(points) if p.get(key) is not None), None)
    losses = [p["loss"] for p in points if p["loss"] is not None]
    out["best_loss"] = min(losses) if losses else None
    return out
