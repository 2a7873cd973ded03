"""Trained models (merged HF directories, GGUF files, adapters, endpoints) as rows."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from db.rows import dicts, rowid
from db.tx import now, write_tx

KINDS = ("merged", "gguf", "adapter", "endpoint")


def register_model(db: Database, *, name: str, kind: str, path: str | None,
                   base_model: str | None, job_id: int | None = None,
                   data_selection: Any = None, config: Any = None, metrics: Any = None) -> int:
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, not {kind!r}")
    dump = lambda v: None if v is None else json.dumps(v, ensure_ascii=False, default=str)  # noqa: E731
    with write_tx(db):
        return rowid(db.execute(
            "INSERT INTO models (name, kind, path, base_model, job_id, data_selection, config,"
            " metrics, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            [name, kind, path, base_model, job_id, dump(data_selection), dump(config),
             dump(metrics), now()]))


def list_models(db: Database) -> list[dict]:
    cur = db.execute("SELECT * FROM models ORDER BY id")
    return dicts(cur, ("data_selection", "config", "metrics"))
