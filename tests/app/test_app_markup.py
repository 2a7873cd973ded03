"""Untrusted text is never markup: a trace full of Textual markup shows exactly its characters
in every view (table, conversation, flag and history panel, editor, review queue, job log)."""

from __future__ import annotations

from db import open_db
from tests.tui_data import MARKUP, add_markup_trace, app_config, screen_text, until
from widgets.trace_table import TraceTable
from workbench.app import make_app
from tests.job_support import run_body

SIZE = (200, 50)


async def test_markup_is_shown_verbatim_everywhere(tmp_path):
    path = tmp_path / "m.db"
    db = open_db(path)
    tid = add_markup_trace(db)
    run_body(db, "markup-job", lambda ctx: ctx.log(MARKUP))
    db.close()
    app = make_app(path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen.query(TraceTable) and app.screen.query_one(TraceTable).row_count == 1)
        await pilot.pause(0.1)
        from widgets.trace_table import source_cell

        # the source column shows the file name (after the last "/") and the line, literally
        assert f"{source_cell(MARKUP, 1)} " in screen_text(app)
        await pilot.press("slash", *"click", "enter")  # search for a word inside the markup
        await pilot.pause(0.3)
        assert app.screen.query_one(TraceTable).row_count == 1
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen"
                    and app.screen.turn is not None)
        await pilot.pause(0.2)
        text = screen_text(app)
        assert text.count(MARKUP) >= 4, text  # user text, call arguments, flag detail, history
        await pilot.press("e")
        await until(pilot, lambda: type(app.screen).__name__ == "EditTurnScreen")
        await pilot.pause(0.3)
        assert MARKUP in screen_text(app)
        assert MARKUP in app.screen.query_one("#raw").text  # no schema here: raw JSON only
        await pilot.press("escape", "escape", "v")
        await until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen"
                    and app.screen.item is not None)
        await pilot.pause(0.2)
        text = screen_text(app)
        assert text.count(MARKUP) >= 3, text  # context, current call, flag, candidate
        await pilot.press("escape", "b")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen"
                    and MARKUP in screen_text(app))
        assert app.is_running and tid == 1
