"""The chat REPL's commands, driven by typed lines against a scripted backend: unknown commands
are errors and never sent, /reset says what it did, /tool needs a pending call, /history shows
the exact prompt; untrusted text is shown with control characters spelled out."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from workbench.models.chat_backend import ChatSession, Completion, LlamaCppBackend
from workbench.chat.repl import repl
from workbench.models.chat_template import render
from workbench.core.safe_text import visible
from workbench.conversations.toolcalls import parse_tool_calls

TOOLS = [{"type": "function", "function": {
    "name": "FindRestaurants", "description": "search",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
SYSTEM = "You book restaurants."
CALL = '<tool_call>\n{"name": "FindRestaurants", "arguments": {"city": "Paris"}}\n</tool_call>'


class ScriptedBackend:
    """The backend interface the REPL uses (complete, prompt_text, close), with set replies."""

    name = "scripted"
    template_note = None
    prompt_text = LlamaCppBackend.prompt_text   # the real rendering (it needs no model)

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []   # the conversations the model was given

    def complete(self, messages, tools=None, system=None, *, max_tokens=256, on_token=None):
        self.calls.append([dict(m) for m in messages])
        text = self.replies.pop(0) if self.replies else "ok"
        if on_token:
            on_token(text)
        return Completion(text=text, calls=parse_tool_calls(text))

    def close(self):
        pass


class EndpointLike(ScriptedBackend):
    prompt_text = None   # like EndpointBackend: the model gets JSON messages and tools


def run(monkeypatch, lines, replies=(), backend_cls=ScriptedBackend):
    feed = iter(lines)

    def fake_input(prompt=""):
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    backend = backend_cls(replies)
    session = ChatSession(backend, tools=TOOLS, system=SYSTEM)
    buf = io.StringIO()
    repl(session, Console(file=buf, width=200, color_system=None))
    return session, backend, buf.getvalue()


def test_unknown_slash_command_is_an_error_and_not_sent(monkeypatch):
    session, backend, out = run(monkeypatch, ["/foo bar", "/quit"])
    assert backend.calls == [] and session.messages == []
    assert "unknown command /foo" in out
    for known in ("/tool TEXT", "/reset", "/history", "/quit", "/help"):
        assert known in out


def test_double_slash_sends_a_line_starting_with_slash(monkeypatch):
    session, backend, out = run(monkeypatch, ["//usr/bin is a path?"])
    assert backend.calls[0][-1]["content"] == "/usr/bin is a path?"


def test_reset_says_it_cleared_the_conversation(monkeypatch):
    session, backend, out = run(monkeypatch, ["hello", "/reset", "again"], ["hi", "hi again"])
    assert "conversation cleared (2 messages)" in out
    # the conversation after /reset starts over
    assert [m["content"] for m in backend.calls[1]] == ["again"]


def test_tool_without_a_pending_call_sends_nothing(monkeypatch):
    session, backend, out = run(monkeypatch, ["/tool {\"a\": 1}", "hello", "/tool [1]"],
                                ["just text"])
    assert "no tool call is pending" in out
    assert len(backend.calls) == 1                       # only "hello" reached the model
    assert [m["role"] for m in session.messages] == ["user", "assistant"]


def test_tool_answers_a_pending_call(monkeypatch):
    # the result prompt after the call is skipped (Enter), then /tool answers it
    session, backend, out = run(monkeypatch, ["find food in Paris", "", '/tool [{"name": "Chez"}]'],
                                [CALL, "Chez is open"])
    assert len(backend.calls) == 2
    tool = backend.calls[1][-1]
    assert tool["role"] == "tool" and tool["content"] == '[{"name": "Chez"}]'
    assert tool["tool_call_id"] == session.messages[1]["tool_calls"][-1]["id"]
    assert "call FindRestaurants" in out


def test_history_prints_the_rendered_prompt_exactly(monkeypatch):
    session, backend, out = run(monkeypatch, ["hi \x1b[2J there", "/history"], ["hello"])
    expected = render(session.messages, TOOLS, SYSTEM, add_generation_prompt=True)
    assert SYSTEM in expected and "FindRestaurants" in expected
    assert visible(expected) in out
    assert "\x1b" not in out and "hi \\x1b[2J there" in out


def test_history_for_an_endpoint_shows_the_request_messages_and_tools(monkeypatch):
    session, backend, out = run(monkeypatch, ["hi", "/history"], ["hello"], EndpointLike)
    start = out.index('{\n  "messages"')
    payload = json.loads(out[start:out.index("\n}\n", start) + 2])
    assert payload["messages"][0] == {"role": "system", "content": SYSTEM}
    assert payload["messages"][1]["content"] == "hi" and payload["tools"] == TOOLS


def test_model_output_and_calls_show_control_characters(monkeypatch):
    evil = ('\x1b]0;pwned\x07<tool_call>\n{"name": "FindRestaurants", "arguments":'
            ' {"city": "P\\u001b[31maris"}}\n</tool_call>')
    session, backend, out = run(monkeypatch, ["go"], [evil])
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07" in out and "P\\u001b[31maris" in out  # JSON escapes it


def test_help_lists_the_commands(monkeypatch):
    session, backend, out = run(monkeypatch, ["/help"])
    for known in ("/tool TEXT", "/reset", "/history", "/quit", "/help"):
        assert known in out
    assert backend.calls == []


@pytest.mark.parametrize("line", ["/quit", "/exit"])
def test_quit(monkeypatch, line):
    session, backend, out = run(monkeypatch, [line, "never read"])
    assert backend.calls == []
