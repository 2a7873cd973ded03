"""A huge trace opens at once: first turns mounted, the rest in batches; giant text is capped."""

from __future__ import annotations

import json

from db import open_db
from tests.tui_data import until
from widgets.conversation import ConversationView, TurnView
from widgets.render import MAX_SHOWN_CHARS, content_text
from workbench.app import make_app
from workbench.core.config import Config
from workbench.traces.importing import import_files


async def test_thousand_turn_trace_and_megabyte_message(tmp_path):
    msgs = []
    for i in range(600):
        msgs.append({"role": "user", "content": f"question {i}"})
        msgs.append({"role": "assistant", "content": f"answer {i}"})
    msgs[0]["content"] = "x" * (900 * 1024)  # just under the import limit
    f = tmp_path / "big.jsonl"
    f.write_text(json.dumps({"messages": msgs}) + "\n")
    db_path = tmp_path / "big.db"
    import_files(open_db(db_path), [f])
    app = make_app(db_path=db_path, config=Config(analyst="t"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        from workbench.app.screens.detail import DetailScreen

        app.push_screen(DetailScreen(1))
        await until(pilot, lambda: bool(app.screen.query(TurnView)), timeout=2.5)
        first = len(app.screen.query(TurnView))
        assert 0 < first < 1200  # the view is up before every turn is mounted
        view = app.screen.query_one(ConversationView)
        await until(pilot, lambda: len(view.query(TurnView)) == 1200, timeout=20)


def test_giant_text_is_capped_with_a_note():
    text = content_text("y" * 900_000)
    assert text.plain.startswith("y" * MAX_SHOWN_CHARS)
    assert text.plain.endswith(f"{900_000 - MAX_SHOWN_CHARS:,} more characters not shown")
    assert content_text("[bold]short[/]").plain == "[bold]short[/]"
