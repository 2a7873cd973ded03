"""Pilot tests of the app's label editor on a store of text turns and parallel calls: a text area
for the text, one form per call, add and remove a call, validated exactly as `label edit` is."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from db import open_db
from db.revisions import current_messages, history
from tests.tui_data import app_config, read, until
from workbench.app import make_app
from workbench.cli import app as cli
from workbench.traces.importing import import_files

DATA = Path(__file__).parent.parent / "data" / "labels" / "mixed_turns.jsonl"
SIZE = (120, 48)


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "t.db"
    db = open_db(path)
    import_files(db, [DATA])
    db.conn.close()
    return path



async def _open_editor(app, pilot, trace_id: int, turn: int):
    from workbench.app.screens.detail import DetailScreen

    await until(pilot, lambda: type(app.screen).__name__ == "TracesScreen")
    app.push_screen(DetailScreen(trace_id, turn))
    await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen"
                and app.screen.turn == turn and app.screen.view is not None)
    await pilot.press("e")
    await until(pilot, lambda: type(app.screen).__name__ == "EditTurnScreen")
    await pilot.pause(0.2)
    return app.screen.query_one("TurnEditor")


def _forms(editor):
    return editor.call_editors()


async def test_text_turn_becomes_a_call(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        editor = await _open_editor(app, pilot, 2, 2)
        text = editor.query_one("#text")
        assert text.text == "Refunds are possible within 30 days of delivery."
        assert _forms(editor) == []
        save = editor.query_one("#save")
        assert not save.disabled
        await pilot.click("#add-call")
        await until(pilot, lambda: len(_forms(editor)) == 1)
        form = _forms(editor)[0]
        form.query_one("#tool").value = "get_order"
        await pilot.pause(0.2)
        form.query_one("#raw").text = "{}"
        await pilot.pause(0.1)
        problems = str(editor.query_one("#problems").content)
        assert save.disabled and "call 1 (get_order): 'order_id' is missing (required)" in problems
        form.query_one("#raw").text = '{"order_id": "C3", "extra": 1}'
        await pilot.pause(0.1)
        assert save.disabled and "unknown argument 'extra'" in str(
            editor.query_one("#problems").content)
        form.query_one("#raw").text = '{"order_id": "C3"}'
        text.text = ""
        await pilot.pause(0.1)
        assert not save.disabled, str(editor.query_one("#problems").content)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: read(db_path, lambda db: len(history(db, 2, 2))) == 1)
        turn = read(db_path, lambda db: current_messages(db, 2))[2]
        assert turn["content"] is None
        [call] = turn["tool_calls"]
        assert call["function"] == {"name": "get_order", "arguments": {"order_id": "C3"}}
        assert call["id"].startswith("call_")


async def test_parallel_calls_remove_one_and_keep_the_text(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        editor = await _open_editor(app, pilot, 1, 2)
        assert editor.query_one("#text").text == "Let me check both orders."
        forms = _forms(editor)
        assert [f.call_id for f in forms] == ["call_a1", "call_b2"]
        forms[1].query_one("#remove").press()
        await until(pilot, lambda: len(_forms(editor)) == 1)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: read(db_path, lambda db: len(history(db, 1, 2))) == 1)
        turn = read(db_path, lambda db: current_messages(db, 1))[2]
        assert turn["content"] == "Let me check both orders."
        assert [(c["id"], c["function"]["arguments"]) for c in turn["tool_calls"]] == [
            ("call_a1", {"order_id": "A1"})]


async def test_call_becomes_text_and_an_empty_turn_is_refused(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        editor = await _open_editor(app, pilot, 1, 7)
        [form] = _forms(editor)
        assert form.query_one("#status").content.plain == "valid"   # nested list of objects
        form.query_one("#remove").press()
        await until(pilot, lambda: not _forms(editor))
        save = editor.query_one("#save")
        await pilot.pause(0.1)
        assert save.disabled and "the turn is empty" in str(editor.query_one("#problems").content)
        editor.query_one("#text").text = "B2 has shipped already; I cannot cancel it."
        await pilot.pause(0.1)
        assert not save.disabled
        await pilot.press("ctrl+s")
        await until(pilot, lambda: read(db_path, lambda db: len(history(db, 1, 7))) == 1)
        turn = read(db_path, lambda db: current_messages(db, 1))[7]
        assert (turn["content"], turn["tool_calls"]) == (
            "B2 has shipped already; I cannot cancel it.", None)


async def test_the_app_says_what_the_cli_says(db_path):
    """The same label is refused with the same words by the editor and by `label edit`."""
    r = CliRunner().invoke(cli, ["--db", str(db_path), "label", "edit", "1", "7", "--call",
                                 '{"name": "get_order", "arguments": {"order_id": 7}}'])
    assert r.exit_code == 1
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        editor = await _open_editor(app, pilot, 1, 7)
        [form] = _forms(editor)
        form.query_one("#tool").value = "get_order"
        await pilot.pause(0.2)
        form.query_one("#raw").text = '{"order_id": 7}'
        await pilot.pause(0.1)
        shown = str(editor.query_one("#problems").content)
        assert shown and shown in r.output.replace("\n", "")
        assert editor.query_one("#save").disabled
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen")
    assert read(db_path, lambda db: history(db, 1, 7)) == []


def _hostile_text_trace(path) -> int:
    from db.traces import NewTrace, TraceWriter
    from db.tx import now, write_tx
    from workbench.conversations.messages import content_hash

    msgs = [{"role": "user", "content": "hi", "tool_calls": None, "tool_call_id": None,
             "name": None},
            {"role": "assistant", "content": "red \x1b[31mtext\u202e [bold]x[/]",
             "tool_calls": None, "tool_call_id": None, "name": None}]
    db = open_db(path)
    with write_tx(db):
        imp = db.execute("INSERT INTO imports (source, path, format, sha256, lines, added,"
                         " duplicates, created_at) VALUES ('h','h','openai','2',1,1,0,?)",
                         [now()]).lastrowid
        w = TraceWriter(db, imp)
        tid, _ = w.add(NewTrace(msgs, None, content_hash(msgs, None), "h", "h", 1, "openai"))
        w.flush()
    db.conn.close()
    return tid


async def test_hidden_characters_are_shown_escaped_and_kept_unless_edited(db_path):
    tid = _hostile_text_trace(db_path)
    original = "red \x1b[31mtext\u202e [bold]x[/]"
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        editor = await _open_editor(app, pilot, tid, 1)
        shown = editor.query_one("#text").text
        assert "\x1b" not in shown and "\u202e" not in shown and "[bold]x[/]" in shown
        await pilot.press("ctrl+s")                       # saved unchanged: the exact text
        await until(pilot, lambda: read(db_path, lambda db: len(history(db, tid, 1))) == 1)
        assert read(db_path, lambda db: history(db, tid, 1))[0]["content"] == original


async def test_the_review_queue_edits_text_turns_too(db_path):
    from tests.tui_data import add_flag

    db = open_db(db_path)
    add_flag(db, 1, 5, "coherence", "error", "the reply does not follow the results")
    db.conn.close()
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: type(app.screen).__name__ == "TracesScreen")
        await pilot.press("v")
        await until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen"
                    and app.screen.item is not None)
        await pilot.press("e")
        await until(pilot, lambda: type(app.screen).__name__ == "EditTurnScreen")
        await pilot.pause(0.2)
        editor = app.screen.query_one("TurnEditor")
        assert editor.query_one("#text").text == "A1 has shipped; B2 is still pending."
        editor.query_one("#text").text = "A1 has shipped and B2 is pending."
        await pilot.pause(0.1)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: read(db_path, lambda db: len(history(db, 1, 5))) == 1)
        turn = read(db_path, lambda db: current_messages(db, 1))[5]
        assert (turn["content"], turn["tool_calls"]) == ("A1 has shipped and B2 is pending.",
                                                        None)
