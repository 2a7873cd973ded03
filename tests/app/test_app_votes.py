"""The committee's votes in the app: the review queue and the detail view's turn panel show a
turn's votes side by side, literally (markup stays text, control characters are spelled out)."""

from __future__ import annotations

from db import open_db
from db.committee import record_turn
from tests.tui_data import app_config, build_db, first_assistant, screen_text, until
from widgets.trace_table import TraceTable
from workbench.app import make_app

SIZE = (200, 80)
CALL = {"name": "FindRestaurants", "arguments": {"city": "Oak [bold]x[/]", "cuisine": "Thai"}}
VOTES = [
    {"member": "alpha [bold]x[/]", "role": "member", "model": "m", "raw": "{}", "call": CALL,
     "abstain_reason": None, "latency_s": 1.234, "tokens_in": 100, "tokens_out": 20,
     "cost": 0.0012},
    {"member": "beta", "role": "member", "model": "m", "call": None,
     "raw": "garbage [bold]x[/] \x1b]0;pwned\x07",
     "abstain_reason": "schema: bad [bold]x[/] \x1b[31m", "latency_s": 0.5,
     "tokens_in": 90, "tokens_out": 7, "cost": None},
    {"member": "judge", "role": "arbiter", "model": "j", "raw": "{}",
     "call": {"name": "respond_to_user", "arguments": {"message": "Which city?"}},
     "abstain_reason": None, "latency_s": 2.0, "tokens_in": 150, "tokens_out": 12,
     "cost": None},
]


def check_votes_shown(text: str) -> None:
    """The votes are on screen (the panel is narrow: cells wrap, so look at short pieces)."""
    assert "committee votes" in text
    # the member's name, its call's argument, the abstention reason and the raw reply
    assert text.count("[bold]x[/]") == 4, text
    for piece in ("alpha", 'FindRestaurants({"city": "Oak', '"cuisine":', "1.23s", "100/20",
                  "$0.0012", "abstained: schema: bad", "\\x1b[31m", "reply: garbage",
                  "\\x1b]0;pwned\\x07", "arbiter", 'respond_to_user({"message":', "150/12"):
        assert piece in text, piece
    assert "\x1b" not in text and "\x07" not in text


async def test_votes_show_in_the_review_queue_and_the_turn_panel(tmp_path):
    path = build_db(tmp_path / "v.db")
    db = open_db(path)
    turn = first_assistant(db, 1)
    record_turn(db, None, 1, turn, VOTES, "review")
    db.close()
    app = make_app(path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen.query(TraceTable)
                    and app.screen.query_one(TraceTable).row_count == 45)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen"
                    and app.screen.turn == turn)
        await pilot.pause(0.2)
        assert [v["member"] for v in app.screen.view["votes"][turn]] == \
            ["alpha [bold]x[/]", "beta", "judge"]
        check_votes_shown(screen_text(app))
        await pilot.press("escape", "v")
        await until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen"
                    and app.screen.item is not None)
        assert app.screen.item["trace_id"] == 1 and len(app.screen.item["votes"]) == 3
        await pilot.pause(0.2)
        check_votes_shown(screen_text(app))
