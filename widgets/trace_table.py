"""The trace table: renders pages of trace rows it is given, asks for more near the end."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from workbench.core.safe_text import visible

LABEL_STYLE = {"original": "dim", "revised": "green", "proposed": "bold yellow"}
COLUMNS = (("id", "id"), ("source", "file:line"), ("split", "split"),
           ("turns", "turns"), ("flags", "flags"), ("label", "label"),
           ("score", "score"), ("message", "first user message"))
# The tools a trace calls are a filter (and in the detail view), not a column: at 100 columns
# the first user message says more about a trace than its tool names. A mark is a `*` before
# the id, an excluded trace says `excluded` in its label cell, the unassigned split is `-` and
# a synthetic trace `synth`: at 100 columns the message keeps about 30 characters.
WIDTHS = {"source": 18, "split": 5, "flags": 5, "label": 8, "score": 5, "message": 20}
SPLIT_SHORT = {"unassigned": "-"}
NEAR_END = 40  # rows before the end at which the next page is asked for
OUTCOME_WIDTH = 12   # the outcomes column, added once a shown trace has outcomes


def outcome_cell(outcomes: dict | None) -> Text:
    """The first outcome `name=value`, and how many more: `reward=0.5 +2`."""
    if not outcomes:
        return Text("")
    name, value = next(iter(outcomes.items()))
    shown = ("true" if value else "false") if isinstance(value, bool) else (
        f"{value:g}" if isinstance(value, (int, float)) else str(value))
    more = f" +{len(outcomes) - 1}" if len(outcomes) > 1 else ""
    text = visible(f"{name}={shown}")
    room = OUTCOME_WIDTH - len(more)
    return Text((text if len(text) <= room else text[:room - 1] + "…") + more)


def _tail(text: str, width: int) -> str:
    """The end of a long path (the file name matters more than the folders)."""
    text = visible(text)
    return text if len(text) <= width else "…" + text[-(width - 1):]


def source_cell(source: str, line: int) -> str:
    """`file.jsonl:LINE`: the file name and the line, which is what finds the trace again."""
    name = source.replace("\\", "/").rsplit("/", 1)[-1]
    return _tail(f"{name}:{line}", WIDTHS["source"])


def flags_cell(r: dict) -> Text:
    """Error and warning counts, errors first and red: `2E 1W`."""
    errors, warnings = r["errors"], r["flags"] - r["errors"]
    out = Text(justify="right")
    if errors:
        out.append(f"{errors}E", style="bold red")
    if warnings:
        out.append((" " if errors else "") + f"{warnings}W", style="yellow")
    return out


class TraceTable(DataTable):
    """Rows are dicts from `db.browse.trace_page`; row keys are trace ids."""

    DEFAULT_CSS = "TraceTable { height: 1fr; }"
    BINDINGS = [Binding("space", "toggle_mark", "Mark", id="traces.mark")]

    class NeedMore(Message):
        """The cursor is near the last loaded row."""

    class Open(Message):
        def __init__(self, trace_id: int) -> None:
            super().__init__()
            self.trace_id = trace_id

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.marked: set[int] = set()
        self.exhausted = False
        self.highlight: list[str] = []   # search words highlighted in the message column
        self.with_outcomes = False       # the outcomes column is shown (a trace had some)

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key, width=WIDTHS.get(key))
        self._fit_tools()

    def on_resize(self) -> None:
        self._fit_tools()

    def _fit_tools(self) -> None:
        """The message column takes what the others leave (the table fits 100 columns)."""
        if not self.columns or not self.size.width:
            return
        others = sum(c.get_render_width(self) for k, c in self.columns.items()
                     if k.value != "message")
        width = max(12, self.size.width - others - 2 * self.cell_padding - 2)
        column = self.columns[next(k for k in self.columns if k.value == "message")]
        if column.width != width:
            column.width = width
            column.auto_width = False
            self.refresh()

    def _id_cell(self, tid: int) -> Text:
        return Text.assemble(("*" if tid in self.marked else "", "bold"), str(tid),
                             justify="right")

    def _cells(self, r: dict) -> tuple:
        return (self._id_cell(r["id"]), Text(source_cell(r["source"], r["line"])),
                Text("synth" if r["origin"] == "synthetic"
                     else SPLIT_SHORT.get(r["split"], r["split"])),
                Text(str(r["turns"]), justify="right"), flags_cell(r),
                Text("excluded", style="bold red") if r["excluded"]
                else Text(r["label"], style=LABEL_STYLE.get(r["label"], "")),
                Text("" if r["score"] is None else f"{r['score']:.2f}", justify="right",
                     style="green" if (r["score"] or 0) >= 0.99 else "yellow"),
                self._message_cell(r["first_user"]),
                *((outcome_cell(r.get("outcomes")),) if self.with_outcomes else ()))

    def _keys(self) -> list[str]:
        return [k for k, _ in COLUMNS] + (["outcome"] if self.with_outcomes else [])

    def _add_outcomes_column(self) -> None:
        """Stores without outcomes keep the table they had; the first trace shown with one
        adds the column (filled in for the rows already there)."""
        self.with_outcomes = True
        self.add_column("outcome", key="outcome", width=OUTCOME_WIDTH)
        for key in list(self.rows):
            self.update_cell(key.value, "outcome", Text(""))
        self._fit_tools()

    def _message_cell(self, text: str | None) -> Text:
        """The first user message on one line, the search's words highlighted."""
        cell = Text(visible((text or "").replace("\n", " ")))
        for word in self.highlight:
            cell.highlight_words([word], style="bold reverse", case_sensitive=False)
        return cell

    def show_rows(self, rows: list[dict], *, append: bool, exhausted: bool) -> None:
        if not append:
            self.clear()
        self.exhausted = exhausted
        if not self.with_outcomes and any(r.get("outcomes") for r in rows):
            self._add_outcomes_column()
        for r in rows:
            if str(r["id"]) in self.rows:
                continue
            self.add_row(*self._cells(r), key=str(r["id"]))

    def update_row(self, r: dict) -> None:
        key = str(r["id"])
        if not self.with_outcomes and r.get("outcomes"):
            self._add_outcomes_column()
        if key in self.rows:
            for col, cell in zip(self._keys(), self._cells(r)):
                self.update_cell(key, col, cell)

    @property
    def current_id(self) -> int | None:
        if not self.row_count:
            return None
        key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return int(key.value)

    def action_toggle_mark(self) -> None:
        tid = self.current_id
        if tid is None:
            return
        self.marked.symmetric_difference_update({tid})
        self.update_cell(str(tid), "id", self._id_cell(tid), update_width=True)
        self.action_cursor_down()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if not self.exhausted and self.row_count and event.cursor_row >= self.row_count - NEAR_END:
            self.post_message(self.NeedMore())

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.Open(int(event.row_key.value)))
