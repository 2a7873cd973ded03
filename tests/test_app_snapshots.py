"""Snapshots of the main screens at a fixed terminal size (pytest-textual-snapshot).
Regenerate after a deliberate visual change: pytest tests/test_app_snapshots.py --snapshot-update"""

from __future__ import annotations

import pytest

from tests.tui_data import app_config, build_db
from workbench.app import make_app

SIZE = (120, 36)


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    return build_db(tmp_path_factory.mktemp("snap") / "snap.db")


async def settle(pilot) -> None:
    for _ in range(4):
        await pilot.pause(0.1)
        await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)


def test_traces_screen(snap_compare, db_path):
    assert snap_compare(make_app(db_path, app_config()), terminal_size=SIZE, run_before=settle)


def test_detail_screen(snap_compare, db_path):
    async def run(pilot):
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
    assert snap_compare(make_app(db_path, app_config()), terminal_size=SIZE, run_before=run)


def test_review_screen(snap_compare, db_path):
    async def run(pilot):
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
    assert snap_compare(make_app(db_path, app_config()), terminal_size=SIZE, run_before=run)


@pytest.fixture(scope="module")
def results_db(tmp_path_factory):
    from db import open_db
    from tests.tui_data import add_eval_runs

    path = build_db(tmp_path_factory.mktemp("snap-results") / "snap.db")
    db = open_db(path)
    add_eval_runs(db)
    db.close()
    return path


def test_results_screen(snap_compare, results_db):
    async def run(pilot):
        await settle(pilot)
        await pilot.press("R")
        await settle(pilot)
        await pilot.press("down")               # run 2: compared with run 1
        await settle(pilot)
        pilot.app.screen.query_one("#run-tabs").active = "tab-compare"
        await settle(pilot)
    assert snap_compare(make_app(results_db, app_config()), terminal_size=SIZE, run_before=run)
