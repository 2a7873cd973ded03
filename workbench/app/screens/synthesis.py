"""Synthesis candidates: every conversation a synthesis job made, accepted or rejected, with
its seeds, topic, method and the reasons it was turned down. `enter` on an accepted one opens
the synthetic trace; a rejected one shows its messages below (plain text, never markup)."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from widgets.render import calls_text, content_text, plain
from workbench.app.screens.messages import CandidatesLoaded

COLUMNS = (("id", "id"), ("job", "job"), ("status", "status"), ("method", "method"),
           ("seeds", "seeds"), ("topic", "topic"), ("why", "why rejected / trace"))
FIXED = {"id": 5, "job": 4, "status": 8, "method": 16, "seeds": 12}


class SynthesisScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="synthesis.back")]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="synthesis-summary")
        yield DataTable(id="candidates-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="candidate-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key, width=FIXED.get(key, 10))
        self._fit()
        self.load()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """Fixed widths for the short columns; the topic and the reasons share the rest (a
        long teacher name or topic no longer pushes the seeds and reasons off the screen)."""
        table = self.query_one(DataTable)
        width = table.size.width or self.size.width
        if not width or not table.columns:
            return
        free = width - sum(FIXED.values()) - 2 * table.cell_padding * len(COLUMNS) - 2
        free = max(20, free)
        shares = {"topic": free * 2 // 5, "why": free - free * 2 // 5}
        for key, column in table.columns.items():
            if key.value in shares and column.width != shares[key.value]:
                column.width, column.auto_width = shares[key.value], False
        table.refresh()

    @work(thread=True, exit_on_error=False, group="synthesis")
    def load(self) -> None:
        from db.synthesis import recent

        with self.app.store() as db:
            rows = recent(db)
        self.post_message(CandidatesLoaded(rows))

    def on_candidates_loaded(self, event: CandidatesLoaded) -> None:
        self.rows = event.rows
        table = self.query_one(DataTable)
        table.clear()
        accepted = sum(r["status"] == "accepted" for r in self.rows)
        self.query_one("#synthesis-summary", Static).update(Text(
            f"{len(self.rows)} candidates: {accepted} accepted, {len(self.rows) - accepted}"
            " rejected (enter on an accepted one opens its trace)"))
        for r in self.rows:
            why = (f"trace {r['trace_id']}" if r["status"] == "accepted" and r["trace_id"]
                   else "pending: kept when its job succeeds" if r["status"] == "accepted" else
                   "; ".join(f"{x.get('reason', '')}: {x.get('detail', '')}".rstrip(": ")
                             for x in r["reasons"] or []))
            table.add_row(str(r["id"]), str(r["job_id"] or ""),
                          Text(r["status"], style="green" if r["status"] == "accepted"
                               else "red"),
                          plain(r["method"] + (f" ({r['teacher']})" if r["teacher"] else "")),
                          plain(", ".join(map(str, r["seeds"] or []))),
                          plain(r["topic"] or ""), plain(why), key=str(r["id"]))
        if self.rows:
            self._show(self.rows[0])

    def _row(self, key: str) -> dict | None:
        return next((r for r in self.rows if str(r["id"]) == key), None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = self._row(event.row_key.value) if event.row_key else None
        if row is not None:
            self._show(row)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        row = self._row(event.row_key.value)
        if row is not None and row["trace_id"] is not None:
            from workbench.app.screens.detail import DetailScreen

            self.app.push_screen(DetailScreen(row["trace_id"]))

    def _show(self, r: dict) -> None:
        parts: list = []
        for reason in r["reasons"] or []:
            parts.append(Text.assemble(("✗ ", "bold red"), plain(reason.get("reason", ""),
                                                                "bold"),
                                       " ", plain(reason.get("detail", ""))))
        held = r["messages"] or []
        if isinstance(held, dict):   # pending: {messages, tools}; unparsable: {raw}
            held = held.get("messages") or []
        for m in held[:40]:
            role = Text(f"{m.get('role', '?')}: ", style="bold")
            body = (calls_text(m.get("tool_calls"), m.get("content"))
                    if m.get("role") == "assistant" else content_text(m.get("content") or ""))
            parts.append(Group(role, body))
        if r["status"] == "accepted" and r["trace_id"] is None:
            parts.append(Text("pending: stored as a trace when its job succeeds", style="dim"))
        elif r["status"] == "accepted":
            parts.append(Text(f"stored as trace {r['trace_id']}; enter opens it", style="dim"))
        self.query_one("#candidate-detail", Static).update(Group(*parts))
