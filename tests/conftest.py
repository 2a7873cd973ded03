"""Shared fixtures: real SQLite files in tmp dirs and the real TFT data copied into tests/data.

`db` is the one store fixture: it opens whatever `db_path` a module provides (an empty store
here; a module overrides `db_path` to hand it a filled one) and closes it after the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import open_db

DATA = Path(__file__).parent / "data" / "tft"
S1 = DATA / "scenario-1-baseline"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "workbench.db"


@pytest.fixture
def db(db_path: Path):
    database = open_db(db_path)
    yield database
    database.conn.close()
