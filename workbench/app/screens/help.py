"""Keys of the screen underneath and of the app, as currently mapped."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    def __init__(self, under: Screen) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(Text("Keys (remap them by binding id in config.toml [keys])", style="bold"))
            yield DataTable(id="help-keys", cursor_type="row")

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        t.add_columns("key", "action", "binding id")
        seen = set()
        for key, active in self.under.active_bindings.items():
            b = active.binding
            if not b.description or (b.action, key) in seen:
                continue
            seen.add((b.action, key))
            t.add_row(Text(self.app.get_key_display(b)), Text(b.description), Text(b.id or ""))
        t.focus()
