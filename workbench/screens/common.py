"""What the screens share: the modal tool-call editor and result messages."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import ModalScreen

from widgets.tool_call_editor import ToolCallEditor


class Loaded(Message):
    """A worker's result: `kind` names it, `data` carries it, `generation` discards stale ones."""

    def __init__(self, kind: str, data: Any, generation: int = 0) -> None:
        super().__init__()
        self.kind = kind
        self.data = data
        self.generation = generation


class EditCallScreen(ModalScreen[dict | None]):
    """Edit one call; dismisses with {"call", "reason"} or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="edit.cancel"),
                Binding("ctrl+s", "save", "Save", id="edit.save", priority=True)]

    def __init__(self, tools: list[dict], call: dict | None, title: str) -> None:
        super().__init__()
        self.tools = tools
        self.call = call
        self.title_text = title

    def compose(self) -> ComposeResult:
        editor = ToolCallEditor(self.tools, self.call, id="editor")
        editor.border_title = self.title_text
        yield editor

    def on_tool_call_editor_saved(self, event: ToolCallEditor.Saved) -> None:
        self.dismiss({"call": event.call, "reason": event.reason})

    def on_tool_call_editor_cancelled(self, _: ToolCallEditor.Cancelled) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        self.query_one(ToolCallEditor).save()


def replace_call(calls: list | None, index: int, new: dict) -> list:
    """The turn's calls with call `index` replaced by `new` ({"name", "arguments"})."""
    calls = [dict(c) for c in (calls or [])]
    old_id = calls[index]["id"] if index < len(calls) else None
    call = {"id": old_id, "type": "function",
            "function": {"name": new["name"], "arguments": new["arguments"]}}
    if index < len(calls):
        calls[index] = call
    else:
        calls.append(call)
    return calls
