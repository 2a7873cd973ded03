"""`--model NAME|ID|PATH`: the one way commands name a model to run.

A registered model (``db.models``, written by training) is found by name (its newest GGUF) or
by id; anything else must be a GGUF file. Evaluation records the model id, so a model's page
lists its runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from db.models import list_models


@dataclass(frozen=True)
class ModelRef:
    path: str
    id: int | None = None
    name: str | None = None


def resolve_model(db: Database, ref: str) -> ModelRef:
    models = list_models(db)
    ggufs = [m for m in models if m["kind"] == "gguf"]
    if ref.isdigit():
        by_id = [m for m in models if m["id"] == int(ref)]
        if by_id:
            m = by_id[0]
            if m["kind"] != "gguf":
                runnable = [g for g in ggufs if g["name"] == m["name"]]
                if not runnable:
                    raise ValueError(f"model {ref} ({m['kind']}) has no GGUF file to run")
                m = runnable[-1]
            return ModelRef(m["path"], m["id"], m["name"])
    named = [m for m in ggufs if m["name"] == ref]
    if named:
        m = named[-1]
        return ModelRef(m["path"], m["id"], m["name"])
    path = Path(ref)
    if path.is_file():
        resolved = str(path.resolve())
        same = [m for m in ggufs if m["path"] == resolved]
        return ModelRef(resolved, same[-1]["id"] if same else None,
                        same[-1]["name"] if same else None)
    known = ", ".join(sorted({m["name"] for m in ggufs})) or "none registered"
    raise ValueError(f"no model {ref!r}: not a registered model (name or id; {known})"
                     " nor a GGUF file")
