"""What the screens share: the modal tool-call editor and the call picker."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from widgets.tool_call_editor import ToolCallEditor
from workbench.safe_text import dumps_visible, visible


class ConfirmScreen(ModalScreen[bool]):
    """Ask before an action that changes many traces at once; dismisses with True or False."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Static { width: 70%; height: auto; border: round $warning; padding: 1 2;
                             background: $surface; }
    """
    BINDINGS = [Binding("y", "answer(True)", "Yes", id="confirm.yes"),
                Binding("n,escape", "answer(False)", "No", id="confirm.no")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        from textual.widgets import Static

        yield Static(Text(self.question + "\n\ny: yes   n / esc: no"), id="confirm-question")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


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
        from textual.widgets import Footer

        editor = ToolCallEditor(self.tools, self.call, id="editor")
        editor.border_title = self.title_text
        yield editor
        yield Footer()   # the editor's own keys (ctrl+s, esc), not the screen's behind it

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


class PickScreen(ModalScreen[int | None]):
    """Pick one of several lines; dismisses with its index or None. A line given as `str` is
    shown as plain text (never markup); a `Text` as it is."""

    DEFAULT_CSS = """
    PickScreen { align: center middle; }
    PickScreen OptionList { width: 80%; height: auto; max-height: 80%; border: round $panel; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="pick.cancel")]

    def __init__(self, lines: list[str | Text], title: str) -> None:
        super().__init__()
        self.lines = lines
        self.title_text = title

    def compose(self) -> ComposeResult:
        picker = OptionList(*[Option(line if isinstance(line, Text) else Text(visible(line)))
                              for line in self.lines], id="pick")
        picker.border_title = self.title_text
        yield picker

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option_index)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickCallScreen(PickScreen):
    """Which of a turn's several calls to edit: each call's name and arguments (untrusted text:
    never markup, control characters spelled out)."""

    def __init__(self, calls: list[dict], title: str) -> None:
        lines = []
        for n, c in enumerate(calls):
            fn = c["function"]
            args = fn["arguments"]
            shown = visible(args) if isinstance(args, str) else dumps_visible(args)
            label = Text(f"{n + 1}. {visible(fn['name'])} ")
            label.append(shown[:200], style="dim")
            lines.append(label)
        super().__init__(lines, f"{title}: which call?")


def edit_turn_calls(app: App, tools: list[dict], calls: list | None, title: str,
                    on_saved: Callable[[list, str], None]) -> None:
    """Edit one call of a turn (asking which when it has several) and hand `on_saved` the turn's
    calls with that one replaced, and the reason. A turn without calls gets its first."""
    calls = list(calls or [])

    def edit(index: int | None) -> None:
        if index is None:
            return
        fn = calls[index]["function"] if index < len(calls) else None
        call = {"name": fn["name"], "arguments": fn["arguments"]} if fn else None

        def saved(result: dict | None) -> None:
            if result:
                on_saved(replace_call(calls, index, result["call"]), result["reason"])
        suffix = f" call {index + 1} of {len(calls)}" if len(calls) > 1 else ""
        app.push_screen(EditCallScreen(tools, call, title + suffix), saved)

    if len(calls) > 1:
        app.push_screen(PickCallScreen(calls, title), edit)
    else:
        edit(0)
