"""The training curve of a job, read back from its stored log.

A training job logs one `metrics {json}` line per optimizer step (step, loss, lr, tokens_per_s,
eta_s; see `workbench.training.trainer`). Reading the curve from the job row, not from the
process, means the app draws it for a training started headless, by the CLI, or on another
machine that writes the same store. Other lines, and metrics lines that do not parse, are
skipped: a log is text, not a contract.
"""

from __future__ import annotations

import math
from typing import Any

from workbench import safe_json

PREFIX = "metrics "
FIELDS = ("step", "loss", "lr", "tokens_per_s", "eta_s")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def parse_metrics(log: str | None) -> list[dict]:
    """Each step's metrics, in log order, one point per step (a resumed run that logs a step
    again keeps the newest): {"step": int, "loss", "lr", "tokens_per_s", "eta_s": float|None}."""
    points: dict[int, dict] = {}
    for line in (log or "").splitlines():
        if not line.startswith(PREFIX):
            continue
        try:
            data = safe_json.loads(line[len(PREFIX):])
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        step = _number(data.get("step"))
        if step is None:
            continue
        point = {"step": int(step), **{k: _number(data.get(k)) for k in FIELDS[1:]}}
        points.pop(point["step"], None)
        points[point["step"]] = point
    return sorted(points.values(), key=lambda p: p["step"])


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
