"""Edit an assistant turn's label: its text and its calls (one form per call, add and remove
calls), validated as you type by the functions the screen hands in (the same ones `label edit`
runs), so the app accepts exactly what the command line accepts.

Text holding control, bidi or zero-width characters is shown with them spelled out; left as it
is, the original text is saved unchanged, and edited, what was typed is saved."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Static, TextArea

from widgets.tool_call_editor import CallCheck, ToolCallEditor
from workbench.core.safe_text import visible

TurnCheck = Callable[[str | None, list[dict]], list[str]]   # (text, calls) -> problems


class TurnEditor(Vertical):
    """`message`: the turn's current label ({"content", "tool_calls"}). Posts Saved with the new
    text (None when empty), the calls ({"id", "name", "arguments"}; a new call has no id yet)
    and the reason, or Cancelled."""

    DEFAULT_CSS = """
    TurnEditor { height: 1fr; }
    TurnEditor #turn-body { height: 1fr; }
    TurnEditor #text { height: 6; }
    TurnEditor #calls { height: auto; }
    TurnEditor #add-call { margin-bottom: 1; }
    TurnEditor #problems { height: auto; padding: 0 1; }
    TurnEditor #problems.invalid { color: $error; }
    TurnEditor #problems.valid { color: $success; }
    TurnEditor #buttons { height: 3; }
    """

    class Saved(Message):
        def __init__(self, content: str | None, calls: list[dict], reason: str) -> None:
            super().__init__()
            self.content = content
            self.calls = calls
            self.reason = reason

    class Cancelled(Message):
        pass

    def __init__(self, tools: list[dict], message: dict, *, check_turn: TurnCheck,
                 check_call: CallCheck, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tools = tools
        self.original_text: str | None = message.get("content")
        self.shown_text = visible(self.original_text or "")
        self.calls = [{"id": c.get("id"), "name": c["function"]["name"],
                       "arguments": c["function"]["arguments"]}
                      for c in message.get("tool_calls") or ()]
        self.check_turn = check_turn
        self.check_call = check_call
        self.problems: list[str] = []

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="turn-body"):
            yield Label("text (empty: the turn is calls only)")
            yield TextArea(self.shown_text, id="text", soft_wrap=True)
            yield Label("calls (empty: the turn is a text reply)")
            with Vertical(id="calls"):
                for call in self.calls:
                    yield self._call_editor(call)
            yield Button("Add call", id="add-call")
        yield Input(placeholder="reason for the change", id="reason")
        yield Static(id="problems")
        with Horizontal(id="buttons"):
            yield Button("Save", variant="primary", id="save")
            yield Button("Cancel", id="cancel")

    def _call_editor(self, call: dict | None) -> ToolCallEditor:
        return ToolCallEditor(self.tools, call, self.check_call, classes="call")

    def on_mount(self) -> None:
        self._validate()

    # -- the label --------------------------------------------------------------------------
    def text(self) -> str | None:
        typed = self.query_one("#text", TextArea).text
        text = self.original_text if typed == self.shown_text else typed
        return text if text and text.strip() else None

    def call_editors(self) -> list[ToolCallEditor]:
        return list(self.query_one("#calls").query_children(ToolCallEditor))

    def current_calls(self) -> list[dict]:
        return [e.current_call() for e in self.call_editors()]

    def _validate(self) -> None:
        calls = self.current_calls()
        broken = [f"call {n}: not JSON: {c['arguments']}" for n, c in enumerate(calls, 1)
                  if isinstance(c["arguments"], ValueError)]
        self.problems = broken or self.check_turn(self.text(), calls)
        box = self.query_one("#problems", Static)
        box.set_class(bool(self.problems), "invalid")
        box.set_class(not self.problems, "valid")
        box.update(Text(visible("\n".join(self.problems))) if self.problems
                   else Text("valid: " + self._summary()))
        self.query_one("#save", Button).disabled = bool(self.problems)

    def _summary(self) -> str:
        n = len(self.call_editors())
        text = "text" if self.text() else ""
        calls = f"{n} call{'s' if n != 1 else ''}" if n else ""
        return " and ".join(p for p in (text, calls) if p)

    # -- events -----------------------------------------------------------------------------
    def on_tool_call_editor_changed(self, event: ToolCallEditor.Changed) -> None:
        event.stop()
        if self.is_mounted and self.query("#problems"):
            self._validate()

    async def on_tool_call_editor_remove_requested(
            self, event: ToolCallEditor.RemoveRequested) -> None:
        event.stop()
        await event.editor.remove()
        self._validate()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if event.text_area.id == "text":
            event.stop()
            self._validate()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "reason":
            event.stop()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "add-call":
            await self.add_call()
        elif event.button.id == "save":
            self.save()
        elif event.button.id == "cancel":
            self.post_message(self.Cancelled())

    async def add_call(self, call: dict | None = None) -> ToolCallEditor:
        editor = self._call_editor(call)
        await self.query_one("#calls").mount(editor)
        editor.scroll_visible()
        self._validate()
        return editor

    def save(self) -> None:
        self._validate()
        if not self.problems:
            calls: list[dict[str, Any]] = self.current_calls()
            self.post_message(self.Saved(self.text(), calls,
                                         self.query_one("#reason", Input).value))
