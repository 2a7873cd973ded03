"""The Textual app. `make_app()` is the one factory the CLI and the tests use."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from db import open_db
from db.traces import iter_trace_rows, stats
from textual.content import Content

PAGE = 200


class WorkbenchApp(App):
    """Trace browser (the minimal foundation screen; richer screens plug in later)."""

    TITLE = "workbench"
    BINDINGS = [Binding("q", "quit", "Quit", id="quit")]

    def __init__(self, db_path: Path) -> None:
        super().__init__()
        self.db_path = Path(db_path)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="summary")
        yield DataTable(id="traces", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.db = open_db(self.db_path)
        s = stats(self.db)
        self.query_one("#summary", Static).update(Content(
            f"{self.db_path}: {s['traces']} traces, {s['messages']} messages,"
            f" {s['assistant_turns']} assistant turns"))
        table = self.query_one("#traces", DataTable)
        table.add_columns("id", "source", "line", "split", "origin", "turns", "tools used")
        rows = next(iter_trace_rows(self.db, batch=PAGE), [])
        for r in rows:
            table.add_row(str(r["id"]), Content(r["source"]), str(r["line"]), r["split"],
                          r["origin"], str(r["n_assistant"]), Content(r["tools_used"]),
                          key=str(r["id"]))


def make_app(db_path: str | Path = "workbench.db") -> WorkbenchApp:
    return WorkbenchApp(Path(db_path))
