"""Evaluation results: the runs per model with their metrics and a bar chart of them; the
highlighted run's worst turns, per-tool scores and decision confusion matrix (text, or which
tools); and the run
compared turn by turn with a baseline (the previous run on the same selection, or the run marked
with `c`). Enter on a turn opens the trace at that turn."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from widgets.job_list import STATUS_STYLE
from widgets.metrics_chart import MetricsChart
from workbench.evaluation.results import SHORT, run_view, runs_per_model
from workbench.core.safe_text import visible
from workbench.app.screens.messages import RunReportLoaded, RunsLoaded

CELL = 44   # characters of a reference or prediction shown in a table cell


def _cut(text: object, n: int = CELL) -> Text:
    s = visible(text).replace("\n", " ")
    return Text(s if len(s) <= n else s[: n - 1] + "…")


def _score(value: float | None) -> Text:
    return Text("-" if value is None else f"{value:.3f}", justify="right")


class ResultsScreen(Screen):
    DEFAULT_CSS = """
    ResultsScreen #results-top { height: 17; }
    ResultsScreen #runs { width: 3fr; }
    ResultsScreen #chart-box { width: 2fr; }
    ResultsScreen #chart-legend { height: auto; max-height: 3; padding: 0 1; }
    ResultsScreen #run-head { height: auto; padding: 0 1; background: $boost; }
    ResultsScreen #run-tabs { height: 1fr; }
    ResultsScreen #compare-head { height: auto; padding: 0 1; }
    ResultsScreen #turn-full { height: auto; max-height: 8; padding: 0 1; border-top: solid $panel; }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="results.back"),
        Binding("c", "mark_baseline", "Compare with this run", id="results.baseline"),
    ]
    RUN_COLUMNS = ("run", "model", "status", "staged", "equiv", "function", "rouge_l", "judge",
                   "turns", "errors")

    def __init__(self) -> None:
        super().__init__(id="results-screen")
        self.runs: list[dict] = []
        self.run_id: int | None = None
        self.baseline_id: int | None = None     # marked with `c`; None: the previous run
        self.report: dict | None = None
        self.comparison: dict | None = None
        self.turn_keys: dict[str, tuple[int, int]] = {}
        self.turn_items: dict[str, dict] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="results-top"):
            yield DataTable(id="runs", cursor_type="row")
            with Vertical(id="chart-box"):
                yield MetricsChart(id="metrics-chart")
                yield Static(id="chart-legend")
        yield Static(Text("no evaluation runs yet (workbench eval, or start an eval job)"),
                     id="run-head")
        with TabbedContent(id="run-tabs"):
            with TabPane("Worst turns", id="tab-worst"):
                yield DataTable(id="worst", cursor_type="row")
            with TabPane("Per tool", id="tab-tools"):
                yield DataTable(id="per-tool", cursor_type="row")
            with TabPane("Confusion", id="tab-confusion"):
                yield DataTable(id="confusion", cursor_type="cell")
            with TabPane("Compare", id="tab-compare"):
                yield Static(id="compare-head")
                yield DataTable(id="compare", cursor_type="row")
        yield Static(id="turn-full")
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one("#runs", DataTable)
        for c in self.RUN_COLUMNS:
            t.add_column(c, key=c)
        self.query_one("#worst", DataTable).add_columns(
            "trace", "turn", "staged", "rouge_l", "judge", "reference", "prediction")
        self.query_one("#per-tool", DataTable).add_columns(
            "decision", "turns", "decided", "staged", "equiv", "function", "rouge_l", "text")
        self.query_one("#compare", DataTable).add_columns(
            "change", "trace", "turn", "before", "after", "reference", "prediction")
        t.focus()
        self.load_runs()

    # -- workers ----------------------------------------------------------------------------
    @work(thread=True, exit_on_error=False, group="results-runs")
    def load_runs(self) -> None:
        with self.app.store() as db:
            runs = runs_per_model(db)
        self.post_message(RunsLoaded(runs))

    @work(thread=True, exit_on_error=False, group="results-run", exclusive=True)
    def load_run(self, run_id: int, baseline_id: int | None) -> None:
        with self.app.store() as db:
            rep, comparison = run_view(db, run_id, baseline_id)
        self.post_message(RunReportLoaded(rep, comparison))

    # -- messages ---------------------------------------------------------------------------
    def on_runs_loaded(self, event: RunsLoaded) -> None:
        self.runs = event.runs
        t = self.query_one("#runs", DataTable)
        t.clear()
        for r in self.runs:
            m = r["metrics"]
            ok = r["status"] == "succeeded"
            t.add_row(Text(f"#{r['id']}"), _cut(r["model"], 30),
                      Text(r["status"], style=STATUS_STYLE.get(r["status"], "")),
                      *[_score(m.get(k) if ok else None) for k in
                        ("staged_tool_call", "tool_call_equivalence", "function_match", "rouge_l",
                         "llm_as_a_judge")],
                      Text(str(m.get("turns", m.get("n", "")))), Text(str(m.get("errors", ""))),
                      key=str(r["id"]))
        chart = self.query_one(MetricsChart)
        chart.show(self.runs)
        self.query_one("#chart-legend", Static).update(chart.legend())
        if self.runs:
            self._select(self.runs[0]["id"])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if event.data_table.id in ("worst", "compare") and key in self.turn_items:
            self._show_turn(self.turn_items[key])
        if event.data_table.id == "runs" and event.row_key.value is not None:
            run_id = int(event.row_key.value)
            if run_id != self.run_id:
                self._select(run_id)

    def _select(self, run_id: int) -> None:
        self.run_id = run_id
        self.load_run(run_id, self.baseline_id)

    def on_run_report_loaded(self, event: RunReportLoaded) -> None:
        rep, cmp_ = event.report, event.comparison
        if rep["run_id"] != self.run_id:
            return
        self.report, self.comparison = rep, cmp_
        run = next((r for r in self.runs if r["id"] == rep["run_id"]), None)
        head = Text.assemble((f"run #{rep['run_id']} ", "bold"),
                             _cut(run["model"] if run else rep["model_ref"], 60), "  ",
                             (rep["status"] or "unfinished",
                              STATUS_STYLE.get(rep["status"] or "", "")))
        for key, short in SHORT.items():
            if key in rep["metrics"]:
                head.append(f"  {short} {rep['metrics'][key]:.3f}")
        floor = rep.get("floor") or {}
        if floor.get("function") is not None:
            head.append(f"  (the same {visible(floor['function'])} call on every turn:"
                        f" staged {floor['staged_tool_call']:.3f})", style="dim")
        elif floor.get("decision_label") is not None:
            head.append(f"  (the commonest decision, {visible(floor['decision_label'])}, on"
                        f" every turn: decision {floor['decision']:.3f})", style="dim")
        if rep.get("error_summary"):
            head.append("\nturns without a reply: ", style="red")
            head.append(visible(rep["error_summary"]))
        self.query_one("#run-head", Static).update(head)
        self._fill_worst(rep["worst"])
        self._fill_tools(rep["per_tool"])
        self._fill_confusion(rep["confusion"])
        self._fill_compare(cmp_)

    # -- tables -----------------------------------------------------------------------------
    def _turn_row(self, table: str, n: int, item: dict) -> str:
        key = f"{table}-{n}"
        self.turn_keys[key] = (item["trace_id"], item["message_idx"])
        self.turn_items[key] = item
        return key

    def _show_turn(self, item: dict) -> None:
        """The highlighted turn's reference and prediction in full (the cells are cut)."""
        text = Text.assemble((f"trace {item['trace_id']} turn {item['message_idx']}", "bold"),
                             "  (enter opens the trace at this turn)\n",
                             ("reference  ", "bold"), visible(item["reference"]), "\n",
                             ("prediction ", "bold"), visible(item["prediction"]))
        if "baseline_prediction" in item:
            text.append("\nbaseline   ", style="bold")
            text.append(visible(item["baseline_prediction"]))
        self.query_one("#turn-full", Static).update(text)

    def _fill_worst(self, worst: list[dict]) -> None:
        t = self.query_one("#worst", DataTable)
        t.clear()
        for n, w in enumerate(worst):
            t.add_row(Text(str(w["trace_id"])), Text(str(w["message_idx"])),
                      _score(w["staged_tool_call"]), _score(w["rouge_l"]), _score(w["judge"]),
                      _cut(w["reference"]), _cut(w["prediction"]),
                      key=self._turn_row("worst", n, w))

    def _fill_tools(self, tools: list[dict]) -> None:
        t = self.query_one("#per-tool", DataTable)
        t.clear()
        for row in tools:
            t.add_row(_cut(row["tool"], 40), Text(str(row["n"])), _score(row["decision"]),
                      _score(row["staged_tool_call"]), _score(row["tool_call_equivalence"]),
                      _score(row["function_match"]), _score(row["rouge_l"]),
                      _score(row["text_rouge_l"]))

    def _fill_confusion(self, matrix: dict[str, dict[str, int]]) -> None:
        t = self.query_one("#confusion", DataTable)
        t.clear(columns=True)
        predicted = sorted({p for row in matrix.values() for p in row})
        t.add_column(Text("reference \\ predicted"), key="ref")
        for i, p in enumerate(predicted):
            t.add_column(_cut(p, 24), key=f"p{i}")
        for ref, row in matrix.items():
            t.add_row(_cut(ref, 30), *[Text(str(row.get(p, "")), justify="right",
                                            style="bold green" if p == ref else "")
                                       for p in predicted])

    def _fill_compare(self, c: dict | None) -> None:
        head = self.query_one("#compare-head", Static)
        t = self.query_one("#compare", DataTable)
        t.clear()
        if c is None:
            head.update(Text("no run to compare with: mark one with c (or evaluate the same"
                             " selection again)"))
            return
        marked = " (marked)" if self.baseline_id == c["baseline_id"] else " (previous run)"
        head.update(Text(f"run #{c['run_id']} against #{c['baseline_id']}{marked}:"
                         f" {len(c['better'])} better, {len(c['worse'])} worse, {c['same']} the"
                         f" same; {c['only_run']} turns only in #{c['run_id']},"
                         f" {c['only_baseline']} only in #{c['baseline_id']}"))
        n = 0
        for label, style, turns in (("worse", "bold red", c["worse"]),
                                    ("better", "bold green", c["better"])):
            for x in turns:
                t.add_row(Text(label, style=style), Text(str(x["trace_id"])),
                          Text(str(x["message_idx"])), _score(x["before"]), _score(x["after"]),
                          _cut(x["reference"]), _cut(x["prediction"]),
                          key=self._turn_row("compare", n, x))
                n += 1

    # -- actions ----------------------------------------------------------------------------
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a worst or compared turn: the trace, opened at that turn."""
        key = event.row_key.value
        if event.data_table.id in ("worst", "compare") and key in self.turn_keys:
            from workbench.app.screens.detail import DetailScreen

            trace_id, idx = self.turn_keys[key]
            self.app.push_screen(DetailScreen(trace_id, idx))

    def action_mark_baseline(self) -> None:
        """The highlighted run becomes the baseline the others are compared with (again: the
        previous run on the same selection)."""
        if self.run_id is None:
            return
        self.baseline_id = None if self.baseline_id == self.run_id else self.run_id
        self.app.notify(f"comparing with run #{self.baseline_id}" if self.baseline_id
                        else "comparing with the previous run on the same selection")
        self.load_run(self.run_id, self.baseline_id)
