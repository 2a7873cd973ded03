"""Teaching the checks in the app: "not a problem" on a turn's flags (n) and on the trace's own
(N) ends them and is stored as the analyst's decision, U takes it back; t shows a flag's
statistical detail; S turns the review queue into a random sample of flags whose verdicts
give each check's precision."""

from __future__ import annotations

import json
import shutil

import pytest

from db import open_db
from db.browse import flags_of
from db.tx import now, write_tx
from tests.tui_data import app_config, build_db, first_assistant, read, screen_text, until
from widgets.trace_table import TraceTable
from workbench.curation import precision
from workbench.app import make_app

SIZE = (100, 30)
STAT = "cosine score 0.91 above the bar 0.88"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = build_db(tmp_path_factory.mktemp("teach-app") / "t.db")
    db = open_db(path)
    with write_tx(db):   # a flag whose numbers sit behind the statistics toggle
        db.execute("INSERT INTO flags (trace_id, message_idx, check_name, severity, detail,"
                   " evidence, created_at) VALUES (?,?,?,?,?,?,?)",
                   [2, first_assistant(db, 2), "grounding", "warning",
                    "the reply names a city the user never mentioned",
                    json.dumps([{"source": "statistics", "text": STAT}]), now()])
    db.conn.close()
    return path


@pytest.fixture
def db_path(template, tmp_path):
    path = tmp_path / "t.db"
    shutil.copy(template, path)
    return path



async def _detail(app, pilot, trace_id: int, turn: int | None = None):
    from workbench.app.screens.detail import DetailScreen

    await until(pilot, lambda: type(app.screen).__name__ == "TracesScreen")
    app.push_screen(DetailScreen(trace_id, turn))
    await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen"
                and app.screen.view is not None and app.screen.turn is not None)


def _checks(path, trace_id: int, idx: int | None) -> list[str]:
    return read(path, lambda db: [f["check_name"] for f in flags_of(db, trace_id)
                                  if f["message_idx"] == idx])


async def test_not_a_problem_on_a_turn_and_on_a_trace_and_undo(db_path):
    a1 = read(db_path, lambda db: first_assistant(db, 1))
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await _detail(app, pilot, 1, a1)
        assert _checks(db_path, 1, a1) == ["wrong_tool"]
        await pilot.press("n")
        await until(pilot, lambda: _checks(db_path, 1, a1) == [], timeout=10)
        await pilot.press("U")
        await until(pilot, lambda: _checks(db_path, 1, a1) == ["wrong_tool"], timeout=10)
        await pilot.press("escape")
        await _detail(app, pilot, 3)
        assert _checks(db_path, 3, None) == ["mixed_trace"]
        await pilot.press("N")
        await until(pilot, lambda: _checks(db_path, 3, None) == [], timeout=10)
        await app.workers.wait_for_complete()
    rows = read(db_path, lambda db: db.execute(
        "SELECT trace_id, message_idx, check_name, author_name, undone_at IS NULL FROM"
        " flag_dismissals ORDER BY id").fetchall())
    assert [tuple(r) for r in rows] == [(1, a1, "wrong_tool", "tester", 0),
                                        (3, None, "mixed_trace", "tester", 1)]


async def test_t_shows_the_statistical_detail(db_path):
    a2 = read(db_path, lambda db: first_assistant(db, 2))
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await _detail(app, pilot, 2, a2)
        await until(pilot, lambda: "never mentioned" in screen_text(app))
        assert "cosine score" not in screen_text(app)
        assert "statistical detail(s) hidden" in screen_text(app)
        await pilot.press("t")
        await until(pilot, lambda: "cosine score" in screen_text(app))
        await pilot.press("t")
        await until(pilot, lambda: "cosine score" not in screen_text(app))


async def test_the_review_queue_samples_flags_and_shows_precision(db_path):
    a1 = read(db_path, lambda db: first_assistant(db, 1))
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen.query(TraceTable)
                    and app.screen.query_one(TraceTable).row_count > 0)
        await pilot.press("v")
        await until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen"
                    and app.screen.item is not None, timeout=30)
        await pilot.press("S")
        await until(pilot, lambda: app.screen.sampling and app.screen.item is not None,
                    timeout=30)
        # the sample holds the flags on turns (wrong_tool on trace 1, grounding on trace 2)
        assert sorted(app.screen.queue) == sorted(
            [(1, a1), (2, read(db_path, lambda db: first_assistant(db, 2)))])
        assert "sample for precision" in screen_text(app)
        assert app.screen.item["trace_id"] == 1
        await pilot.press("d")              # dropped: a real problem
        await until(pilot, lambda: "wrong_tool: precision 100%" in screen_text(app),
                    timeout=30)
        await pilot.pause(0.6)              # past the double-press guard
        await pilot.press("k")              # kept: not a problem
        await until(pilot, lambda: "grounding: precision 0%" in screen_text(app), timeout=30)
        await app.workers.wait_for_complete()
    report = {r["check"]: r for r in read(db_path, precision.report)}
    assert (report["wrong_tool"]["real"], report["grounding"]["not_a_problem"]) == (1, 1)
