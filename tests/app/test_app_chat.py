"""The chat tester and the replay in the app: a scripted endpoint (exact replies) and the real
SmolLM2 GGUF; tool calls as cards, schema problems marked, stored results, untrusted text."""

from __future__ import annotations

import io
import json

import pytest

from tests.scripted_openai import ScriptedServer, tool_call_reply
from tests.tui_data import app_config, build_db, until
from workbench.app import make_app
from workbench.app.screens.chat import ChatScreen, ReplayScreen

SIZE = (120, 40)
HOSTILE = "[bold]x[/] \x1b[31mred\x1b]0;title\x07"


def _text(app) -> str:
    """What the chat log shows, as plain text (each card's renderable)."""
    from rich.console import Console

    console = Console(width=200, color_system=None, record=True, file=io.StringIO())
    for card in app.screen.query(".chat-card"):
        console.print(card.content)
    return console.export_text()


def _script(body: dict) -> dict:
    """1st turn: a service call with an undeclared argument; after its result: a message call
    holding markup and escape sequences."""
    last = body["messages"][-1]
    if last["role"] == "user":
        return tool_call_reply("FindRestaurants", {"city": "Fremont", "cuisine": "Thai",
                                                   "mood": "happy"})
    return tool_call_reply("respond_to_user", {"message": HOSTILE})


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = build_db(tmp_path / "chat.db")
    server = ScriptedServer(_script)
    config = tmp_path / "config.toml"
    config.write_text(f'[endpoints.scripted]\nbase_url = "{server.url}"\nmodel = "m"\n')
    monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
    yield path, server
    server.close()


async def _open(pilot, app, ref: str) -> None:
    await until(pilot, lambda: any(v == ref for _, v in
                                   app.screen.query_one("#chat-model")._options))
    app.screen.query_one("#chat-model").value = ref
    await pilot.click("#chat-open")
    await until(pilot, lambda: app.screen.session is not None, timeout=60)


async def test_chat_with_a_scripted_endpoint(store):
    path, server = store
    app = make_app(path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen))
        await _open(pilot, app, "endpoint:scripted")
        app.screen.query_one("#chat-input").focus()
        await pilot.press(*"thai in fremont", "enter")
        await until(pilot, lambda: "FindRestaurants" in _text(app))
        assert server.requests[0]["stream"] is True                      # streamed
        assert {t["function"]["name"] for t in server.requests[0]["tools"]} >= {
            "FindRestaurants", "respond_to_user"}                        # the task's tools
        text = _text(app)
        assert '"city": "Fremont"' in text and "does not fit the schema" in text
        box = app.screen.query_one("#chat-input")
        assert box.placeholder.startswith("the tool's result")
        await pilot.press("ctrl+o")                                      # a stored result
        await until(pilot, lambda: box.value.startswith("["))
        assert json.loads(box.value)                 # one that found restaurants
        await pilot.press("enter")
        await until(pilot, lambda: "respond_to_user" in _text(app))
        assert server.requests[1]["messages"][-1]["role"] == "tool"
        text = _text(app)
        assert "[bold]x[/]" in text and "\\u001b[31mred" in text and "\x1b" not in text
        assert box.placeholder == "type a message"                       # a message tool
        await pilot.press("ctrl+r")
        await until(pilot, lambda: not app.screen.query(".chat-card"))
        assert app.screen.session.messages == []


async def test_replay_steps_through_a_trace_with_scores(store):
    path, server = store
    server.reply = lambda body: tool_call_reply("respond_to_user", {"message": "hello"})
    app = make_app(path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(ReplayScreen(2))
        await until(pilot, lambda: isinstance(app.screen, ReplayScreen)
                    and app.screen.conv is not None)
        await _open(pilot, app, "endpoint:scripted")
        await pilot.press("n")
        await until(pilot, lambda: app.screen.pos == 1)
        first = _text(app)
        assert "reference:" in first and "predicted:" in first and "staged" in first
        scores = list(app.screen.scores)
        await pilot.press("j")                     # on until a turn below 1
        await until(pilot, lambda: app.screen.pos > 1 and (
            app.screen.scores[-1] < 1.0 or app.screen.pos == len(app.screen.turns)))
        assert all(s == 1.0 for s in app.screen.scores[len(scores):-1])
        assert "mean score" in str(app.screen.query_one("#replay-head").content)
        # the model was asked with the reference history before each turn
        turn = app.screen.turns[0]
        assert len(server.requests[0]["messages"]) >= turn


@pytest.mark.slow
async def test_chat_with_the_smollm2_gguf(tmp_path):
    path = build_db(tmp_path / "gguf.db")
    app = make_app(path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen))
        await _open(pilot, app, "endpoint:local")
        app.screen.session.max_tokens = 24
        app.screen.query_one("#chat-input").focus()
        await pilot.press(*"hi", "enter")
        await until(pilot, lambda: len(app.screen.query(".chat-card")) == 2, timeout=240)
        assert app.screen.session.messages[-1]["role"] == "assistant"
