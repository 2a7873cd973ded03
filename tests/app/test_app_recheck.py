"""In the app, an edit that fixes a call takes its error flag with it (no `check` re-run)."""

from __future__ import annotations

from db import open_db
from db.flags import flags_for
from db.revisions import add_revision, current_messages
from tests.tui_data import app_config, build_db, first_assistant, until
from workbench.app import make_app
from workbench.checks import run_checks


def _schema_errors(path, tid):
    db = open_db(path)
    try:
        return [(f["message_idx"], f["detail"]) for f in flags_for(db, [tid])
                if f["check"] == "schema"]
    finally:
        db.close()


def _checked_store_with_a_bad_call(tmp_path):
    """A checked store whose trace 1 first call carries an undeclared argument (a schema error);
    returns the path, the open store, the turn and the call as it was."""
    path = build_db(tmp_path / "t.db")
    db = open_db(path)
    turn = first_assistant(db, 1)
    call = current_messages(db, 1)[turn]["tool_calls"][0]
    bad = {**call, "function": {"name": call["function"]["name"],
                                "arguments": {**call["function"]["arguments"], "mood": "x"}}}
    add_revision(db, 1, turn, tool_calls=[bad], author_kind="committee", author_name="c")
    run_checks(db)
    return path, db, turn, call


async def test_saving_a_fixed_call_removes_its_schema_error(tmp_path):
    path, db, turn, call = _checked_store_with_a_bad_call(tmp_path)
    db.close()
    assert [i for i, d in _schema_errors(path, 1) if "'mood'" in d] == [turn]
    app = make_app(path, app_config())
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: type(app.screen).__name__ == "TracesScreen")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen"
                    and app.screen.turn == turn and app.screen.view is not None)
        assert any(f["check_name"] == "schema" for f in app.screen.view["flags"][turn])
        await pilot.press("e")
        await until(pilot, lambda: type(app.screen).__name__ == "EditTurnScreen")
        await pilot.pause(0.2)
        app.screen.query_one("#raw").text = '{"message": "Which city are you in?"}'
        await pilot.pause(0.1)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen")
        await until(pilot, lambda: not _schema_errors(path, 1))
        await until(pilot, lambda: not any(f["check_name"] == "schema"
                                           for f in app.screen.view["flags"].get(turn, [])))


async def test_bulk_accepting_a_fix_removes_its_schema_error(tmp_path):
    path, db, turn, call = _checked_store_with_a_bad_call(tmp_path)
    add_revision(db, 1, turn, tool_calls=[call], author_kind="committee", author_name="c",
                 status="proposed")
    db.close()
    assert _schema_errors(path, 1)
    app = make_app(path, app_config())
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: type(app.screen).__name__ == "TracesScreen")
        await pilot.pause(0.3)
        await pilot.press("A")   # every filtered trace: more than a screenful, asked first
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen")
        await pilot.press("y")
        await until(pilot, lambda: not _schema_errors(path, 1))
