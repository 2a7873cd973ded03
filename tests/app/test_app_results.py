"""The evaluation results screen: runs per model, a run's report, two runs compared turn by
turn, a worst turn opening the trace at that turn, and untrusted text shown literally."""

from __future__ import annotations

import pytest

from db import open_db
from tests.tui_data import MARKUP, add_eval_runs, app_config, build_db, screen_text, until
from workbench.app import make_app
from workbench.evaluation.results import compare, per_tool, run_view, runs_per_model
from db.evals import results

SIZE = (160, 45)
ESC = "\x1b]0;owned\x07"
NAME = f"{MARKUP}{ESC}"


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    path = build_db(tmp_path_factory.mktemp("results") / "r.db")
    db = open_db(path)
    add_eval_runs(db, model_name=NAME, prediction_text=f"{MARKUP}\x1b[2J")
    db.close()
    return path


def test_runs_report_and_comparison_without_the_app(db_path):
    db = open_db(db_path)
    try:
        runs = runs_per_model(db)
        assert [(r["id"], r["model"]) for r in runs] == [(2, NAME), (1, "base.gguf")]  # by name
        rep, cmp_ = run_view(db, 2)
        assert cmp_["baseline_id"] == 1 and cmp_["same"] == 1
        assert [t["trace_id"] for t in cmp_["better"]] == [2]
        assert [(t["trace_id"], t["before"], t["after"]) for t in cmp_["worse"]] == [(1, 1.0, 0.5)]
        assert rep["per_tool"] == per_tool(results(db, 2))
        assert rep["per_tool"][0]["tool"] == "FindRestaurants" and rep["per_tool"][0]["n"] == 3
        assert compare(db, 1, 2)["better"][0]["trace_id"] == 1   # the other way round
        assert run_view(db, 1)[1] is None                        # no run before the first
    finally:
        db.close()


async def test_results_screen_compares_runs_and_opens_a_worst_turn(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("R")
        await until(pilot, lambda: type(app.screen).__name__ == "ResultsScreen"
                    and app.screen.comparison is not None)
        scr = app.screen
        assert scr.run_id == 2                                   # the first row: by model name
        text = screen_text(app)
        assert MARKUP in text and "\\x1b]0;owned\\x07" in text   # the name, literally
        assert "\x1b]0;owned" not in text
        assert "#1" in text and "#2" in text and "metrics per run" in text
        floor = scr.report["floor"]                              # the constant call beside it
        assert (f"(the same {floor['function']} call on every turn: staged"
                f" {floor['staged_tool_call']:.3f})") in " ".join(text.split())
        scr.query_one("#run-tabs").active = "tab-compare"
        await pilot.pause(0.3)
        compare_table = scr.query_one("#compare")
        changes = [str(compare_table.get_row_at(i)[0]) for i in range(compare_table.row_count)]
        assert changes == ["worse", "better"]
        text = screen_text(app)
        assert "1 better, 1 worse, 1 the same" in text
        compare_table.focus()
        compare_table.move_cursor(row=0)
        await pilot.pause(0.2)
        text = screen_text(app)                                  # the worse prediction in full
        assert f'"town": "{MARKUP}\\x1b[2J"' in text and "\x1b[2J" not in text
        scr.query_one("#run-tabs").active = "tab-confusion"
        await pilot.pause(0.2)
        assert scr.query_one("#confusion").row_count == 1
        scr.query_one("#run-tabs").active = "tab-worst"
        await pilot.pause(0.2)
        worst = scr.query_one("#worst")
        assert str(worst.get_row_at(0)[0]) == "1"                # trace 1: staged 0.5
        worst.focus()
        worst.move_cursor(row=0)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen"
                    and app.screen.view is not None)
        assert app.screen.trace_id == 1
        assert app.screen.turn == scr.turn_keys["worst-0"][1]
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is scr)
        runs = scr.query_one("#runs")                            # mark run 1, compare 2 with it
        runs.focus()
        runs.move_cursor(row=runs.get_row_index("1"))
        await until(pilot, lambda: scr.run_id == 1 and scr.report and scr.report["run_id"] == 1)
        await pilot.press("c")
        runs.move_cursor(row=runs.get_row_index("2"))
        await until(pilot, lambda: scr.comparison is not None and scr.report["run_id"] == 2)
        assert scr.baseline_id == 1 and "(marked)" in str(scr.query_one("#compare-head").content)
