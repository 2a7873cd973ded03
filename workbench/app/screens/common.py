"""What the screens share: the modal label editor, the confirmation and the picker."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from widgets.turn_editor import TurnEditor
from workbench.core.safe_text import visible


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


class EditTurnScreen(ModalScreen[dict | None]):
    """Edit a turn's label (text and calls); dismisses with {"content", "calls", "reason"} or
    None. Validated by `checks.schema.label_problems`, as `label edit` is."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="edit.cancel"),
                Binding("ctrl+s", "save", "Save", id="edit.save", priority=True)]

    def __init__(self, tools: list[dict], message: dict, title: str) -> None:
        super().__init__()
        self.tools = tools
        self.message = message
        self.title_text = title

    def compose(self) -> ComposeResult:
        from textual.widgets import Footer

        from workbench.checks.schema import call_problems, label_problems

        editor = TurnEditor(self.tools, self.message, id="editor",
                            check_turn=lambda text, calls: label_problems(self.tools, text,
                                                                          calls),
                            check_call=lambda name, args: call_problems(self.tools, name, args))
        editor.border_title = self.title_text
        yield editor
        yield Footer()   # the editor's own keys (ctrl+s, esc), not the screen's behind it

    def on_turn_editor_saved(self, event: TurnEditor.Saved) -> None:
        self.dismiss({"content": event.content, "calls": event.calls, "reason": event.reason})

    def on_turn_editor_cancelled(self, _: TurnEditor.Cancelled) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        self.query_one(TurnEditor).save()


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


def edit_turn(app: App, tools: list[dict], message: dict, title: str,
              on_saved: Callable[[str | None, list[dict], str], None]) -> None:
    """Open the label editor on a turn and hand `on_saved` the new text, calls and reason."""
    def saved(result: dict | None) -> None:
        if result:
            on_saved(result["content"], result["calls"], result["reason"])
    app.push_screen(EditTurnScreen(tools, message, title), saved)
