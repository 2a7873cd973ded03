"""The review queue says what it shows and stores each decision once: a key pressed twice keeps
a turn once (and does not decide the next one); a filter from the traces screen is named, with
how many turns wait in all traces, and `c` reviews them all."""

from __future__ import annotations

import shutil

import pytest

from db.revisions import history
from tests.tui_data import app_config, build_db, first_assistant, read, screen_text, until
from widgets.trace_table import TraceTable
from workbench.app import make_app

SIZE = (100, 30)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_db(tmp_path_factory.mktemp("review") / "t.db")


@pytest.fixture
def db_path(template, tmp_path):
    path = tmp_path / "t.db"
    shutil.copy(template, path)
    return path



async def open_review(pilot, app) -> None:
    await until(pilot, lambda: app.screen.query(TraceTable)
                and app.screen.query_one(TraceTable).row_count > 0)
    await pilot.press("v")
    await until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen"
                and app.screen.item is not None, timeout=30)


async def test_a_double_key_press_stores_the_decision_once(db_path):
    t1 = read(db_path, lambda db: first_assistant(db, 1))
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await open_review(pilot, app)
        assert app.screen.item["trace_id"] == 1
        await pilot.press("k", "k")
        await until(pilot, lambda: app.screen.decided >= 1 and not app.screen.pending,
                    timeout=30)
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
    assert len(read(db_path, lambda db: history(db, 1, t1))) == 1      # one "kept" revision


async def test_the_queue_names_the_traces_filter_and_c_clears_it(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen.query(TraceTable)
                    and app.screen.query_one(TraceTable).row_count > 0)
        from db.queries import TraceFilter

        app.screen._restore(TraceFilter(trace_ids=[2]))
        app.screen.reload(save=False)
        await until(pilot, lambda: app.screen.query_one(TraceTable).row_count == 1)
        await pilot.press("v")
        await until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen"
                    and app.screen.item is not None)
        assert app.screen.queue == [(2, read(db_path, lambda db: first_assistant(db, 2)))]
        shown = screen_text(app)
        assert "filtered by the traces screen: traces 2" in shown
        assert "2 turns wait in all traces: c reviews them all" in shown
        await pilot.press("c")
        await until(pilot, lambda: len(app.screen.queue) == 2, timeout=30)
        assert "all traces" in screen_text(app)
        assert "filtered by" not in screen_text(app)
