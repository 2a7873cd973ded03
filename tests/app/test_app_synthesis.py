"""The synthesis view: accepted and rejected candidates with their seeds and reasons, shown
literally; an accepted one opens its trace."""

from __future__ import annotations

from db import open_db
from db.synthesis import record
from tests.tui_data import app_config, build_db, screen_text, until
from workbench.app import make_app
from workbench.app.screens.synthesis import SynthesisScreen

HOSTILE = "[bold]x[/] \x1b[2J"


async def test_candidates_with_reasons_and_the_accepted_trace(tmp_path):
    path = build_db(tmp_path / "s.db")
    db = open_db(path)
    record(db, job_id=None, status="accepted", method="offline", seeds=[6, 7], topic="short",
           trace_id=8, teacher=None, reasons=None, messages=None, candidate_key="a")
    record(db, job_id=None, status="rejected", method="teacher", seeds=[9], topic=HOSTILE,
           trace_id=None, teacher="big", candidate_key="b",
           reasons=[{"reason": "grounding", "detail": f"city {HOSTILE} never said"}],
           messages=[{"role": "user", "content": f"hello {HOSTILE}"}])
    db.close()
    app = make_app(path, app_config())
    async with app.run_test(size=(120, 36)) as pilot:
        app.action_synthesis()
        await until(pilot, lambda: isinstance(app.screen, SynthesisScreen) and app.screen.rows)
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "2 candidates: 1 accepted, 1 rejected" in text
        assert "grounding" in text and "[bold]x[/]" in text and "\\x1b[2J" in text
        assert "\x1b[2J" not in text and "hello" in text       # the newest (rejected) shown
        await pilot.press("down", "enter")                     # the accepted one: its trace
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen")
        assert app.screen.trace_id == 8
