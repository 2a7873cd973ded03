"""The traces screen: filter bar, keyset-paged table, sorting, marks and bulk actions."""

from __future__ import annotations

import dataclasses

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Select, Static

from db import browse
from db.queries import TraceFilter
from widgets.search_input import SearchInput
from widgets.trace_table import TraceTable
from workbench.curation import decisions
from workbench.core.safe_text import visible
from workbench.app.screens.common import ConfirmScreen
from workbench.app.screens.messages import (CountLoaded, DecisionMade, FilterRestored, PageLoaded,
                                         RowsRefreshed)

SORT_CYCLE = [("id", False), ("id", True), ("errors", True), ("turns", True), ("turns", False)]
SELECTS = {  # select id -> (prompt, fixed options)
    "split": ("split", ["train", "test", "unassigned"]),
    "origin": ("origin", ["imported", "synthetic"]),
    "status": ("label", ["original", "revised", "proposed"]),
    "has_revisions": ("revised", ["yes", "no"]),    # short prompts: no wrapping at 100 columns
    "excluded": ("excl.", ["yes", "no"]),
    "tool": ("tool", []),
    "check": ("flag", []),
}
def search_words(text: str | None) -> list[str]:
    """The words of a search to highlight (quotes and prefix stars dropped)."""
    import re

    return [w.rstrip("*") for w in re.findall(r"[^\s\"]+", text or "") if w.rstrip("*")]


ANY_ERROR, NO_ERROR = "\x00any error flag", "\x00no error flag"


def split_search(text: str) -> tuple[str | None, list[str] | None, list[str] | None]:
    """The search box's words, less its `outcome:reward<1` and `meta:user_tier=gold` terms
    (the selection's --outcome and --meta): (words, outcome conditions, meta conditions)."""
    words, outcome, meta = [], [], []
    for token in text.split():
        low = token.lower()
        if low.startswith("outcome:") and len(token) > 8:
            outcome.append(token[8:])
        elif low.startswith("meta:") and len(token) > 5:
            meta.append(token[5:])
        else:
            words.append(token)
    return " ".join(words) or None, outcome or None, meta or None


def search_box_text(flt: TraceFilter) -> str:
    """What the search box shows for a filter (the inverse of `split_search`)."""
    return " ".join([flt.text or "", *(f"outcome:{c}" for c in flt.outcome or ()),
                     *(f"meta:{c}" for c in flt.meta or ())]).strip()


class TracesScreen(Screen):
    BINDINGS = [
        Binding("slash", "focus_search", "Search", id="traces.search"),
        Binding("s", "sort", "Sort", id="traces.sort"),
        Binding("A", "bulk('accept')", "Accept proposed", id="traces.accept"),
        Binding("X", "bulk('reject')", "Reject proposed", id="traces.reject"),
        Binding("E", "bulk('exclude')", "Exclude", id="traces.exclude"),
        Binding("I", "bulk('include')", "Include", id="traces.include", show=False),
        Binding("U", "undo_exclusion", "Undo exclude/include", id="traces.undo_exclusion",
                show=False),
        Binding("T", "move_split", "Move to split", id="traces.split", show=False),
        Binding("C", "bulk_job('relabel')", "Send to committee", id="traces.committee",
                show=False),
        Binding("J", "bulk_job", "Job on these", id="traces.job", show=False),
        Binding("c", "clear_filter", "Clear filter", id="traces.clear"),
        Binding("escape", "clear_marks", "Clear marks", id="traces.unmark", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="traces-screen")
        self.filter = TraceFilter()
        self.sort_index = 0
        self.generation = 0
        self.last_key: tuple | None = None
        self.loading = False
        self.total: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="search-bar"):
            yield SearchInput(placeholder="full-text search (words, \"phrases\", prefix*)",
                              id="search")
            yield Static(id="summary")
        with Horizontal(id="filter-bar"):
            for sid, (prompt, options) in SELECTS.items():
                yield Select([(Text(o), o) for o in options], prompt=prompt, id=f"f-{sid}",
                             classes="filter")
        yield TraceTable(id="traces")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(TraceTable).focus()
        self.load_initial()

    @property
    def sort(self) -> tuple[str, bool]:
        return SORT_CYCLE[self.sort_index]

    # -- workers: they only read/write the store and post messages --------------------------
    @work(thread=True, exit_on_error=False, group="traces-init")
    def load_initial(self) -> None:
        with self.app.store() as db:
            saved = browse.get_setting(db, "last_filter") or {}
            choices = browse.filter_choices(db)
        names = {f.name for f in dataclasses.fields(TraceFilter)}
        flt = TraceFilter(**{k: v for k, v in saved.items() if k in names})
        self.post_message(FilterRestored(flt, choices))

    @work(thread=True, exit_on_error=False, group="traces-page")
    def load_page(self, flt: TraceFilter, sort: tuple[str, bool], after: tuple | None,
                  generation: int, save: bool) -> None:
        with self.app.store() as db:
            rows = browse.trace_page(db, flt, sort=sort[0], descending=sort[1], after=after)
        self.post_message(PageLoaded(rows, after is not None, generation))
        if after is None:
            with self.app.store() as db:
                total = browse.count_traces(db, flt)
                if save:
                    browse.set_setting(db, "last_filter", {
                        k: v for k, v in dataclasses.asdict(flt).items() if v is not None})
            self.post_message(CountLoaded(total, generation))

    @work(thread=True, exit_on_error=False, group="traces-bulk")
    def run_bulk(self, what: str, flt: TraceFilter, ids: list[int] | None) -> None:
        analyst = self.app.config.analyst
        with self.app.store() as db:
            if what in ("accept", "reject"):
                outcome = decisions.bulk_decide(db, "accepted" if what == "accept" else "rejected",
                                                analyst, selection=flt, ids=ids)
            else:
                outcome = decisions.set_excluded(db, what == "exclude", analyst, selection=flt,
                                                 ids=ids)
                if outcome.action:
                    outcome.message += " (U undoes it)"
        self.post_message(DecisionMade(outcome.message, None, None))

    # -- messages ---------------------------------------------------------------------------
    def on_filter_restored(self, event: FilterRestored) -> None:
        self._set_choices(event.choices)
        self._restore(event.filter)
        self.reload(save=False)

    def on_page_loaded(self, event: PageLoaded) -> None:
        if event.generation != self.generation:
            return
        self.loading = False
        self.query_one(TraceTable).highlight = search_words(self.filter.text)
        if event.rows:
            self.last_key = browse.page_key(event.rows[-1], self.sort[0])
        self.query_one(TraceTable).show_rows(event.rows, append=event.append,
                                             exhausted=len(event.rows) < browse.PAGE)
        self._summary()

    def on_count_loaded(self, event: CountLoaded) -> None:
        if event.generation == self.generation:
            self.total = event.total
            self._summary()

    def on_rows_refreshed(self, event: RowsRefreshed) -> None:
        table = self.query_one(TraceTable)
        for r in event.rows:
            table.update_row(r)

    def on_decision_made(self, event: DecisionMade) -> None:
        self.app.notify(event.message, markup=False)
        self.query_one(TraceTable).marked.clear()
        self.reload(save=False)

    def _set_choices(self, choices: dict) -> None:
        self.query_one("#f-tool", Select).set_options([(Text(visible(t)), t)
                                                       for t in choices["tools"]])
        self.query_one("#f-check", Select).set_options(
            [(Text("any error"), ANY_ERROR), (Text("no error"), NO_ERROR)]
            + [(Text(visible(c)), c) for c in choices["checks"]])

    def _restore(self, flt: TraceFilter) -> None:
        self.filter = flt  # set first: the change events the widgets send then match it
        self.query_one("#search", Input).value = search_box_text(flt)
        values = {"split": flt.split, "origin": flt.origin, "status": flt.status, "tool": flt.tool,
                  "has_revisions": None if flt.has_revisions is None else ("yes" if flt.has_revisions else "no"),
                  "excluded": None if flt.excluded is None else ("yes" if flt.excluded else "no"),
                  "check": flt.check or (None if flt.flagged is None else ANY_ERROR if flt.flagged else NO_ERROR)}
        for sid, value in values.items():
            sel = self.query_one(f"#f-{sid}", Select)
            if value is not None and value in sel._legal_values:
                sel.value = value

    def _summary(self) -> None:
        table = self.query_one(TraceTable)
        sort, desc = self.sort
        total = "…" if self.total is None else f"{self.total:,}"
        text = Text(f"{total} traces  ·  {table.row_count:,} loaded  ·  sort {sort} "
                    f"{'desc' if desc else 'asc'}")
        if table.marked:
            text.append(f"  ·  {len(table.marked)} marked", style="bold")
        self.query_one("#summary", Static).update(text)

    def reload(self, save: bool = True) -> None:
        self.generation += 1
        self.last_key = None
        self.total = None
        self.loading = True
        self.app.current_filter = self.filter
        self.load_page(self.filter, self.sort, None, self.generation, save)

    def on_trace_table_need_more(self, _: TraceTable.NeedMore) -> None:
        if not self.loading and self.last_key is not None:
            self.loading = True
            self.load_page(self.filter, self.sort, self.last_key, self.generation, False)

    def on_trace_table_open(self, event: TraceTable.Open) -> None:
        from workbench.app.screens.detail import DetailScreen
        self.app.push_screen(DetailScreen(event.trace_id))

    def on_screen_resume(self) -> None:
        if self.generation:  # back from another screen: labels may have changed, keep the place
            table = self.query_one(TraceTable)
            self.refresh_rows([int(k.value) for k in table.rows])

    @work(thread=True, exit_on_error=False, group="traces-refresh")
    def refresh_rows(self, ids: list[int]) -> None:
        with self.app.store() as db:
            rows = browse.rows_by_id(db, ids)
        self.post_message(RowsRefreshed(rows))

    # -- filter bar -------------------------------------------------------------------------
    def _read_filter(self) -> TraceFilter:
        def val(sid: str):
            v = self.query_one(f"#f-{sid}", Select).value
            return None if v == Select.NULL else v
        yes_no = lambda v: None if v is None else v == "yes"  # noqa: E731
        check = val("check")
        text, outcome, meta = split_search(self.query_one("#search", Input).value)
        return TraceFilter(split=val("split"), origin=val("origin"), status=val("status"),
                           tool=val("tool"), has_revisions=yes_no(val("has_revisions")),
                           excluded=yes_no(val("excluded")),
                           check=None if check in (None, ANY_ERROR, NO_ERROR) else check,
                           flagged=True if check == ANY_ERROR else False if check == NO_ERROR else None,
                           text=text, outcome=outcome, meta=meta)

    def _filter_changed(self) -> None:
        try:
            flt = self._read_filter()
        except ValueError as e:   # a bad outcome:/meta: term: say so, keep the filter
            self.app.notify(str(e), severity="warning", markup=False)
            return
        if flt != self.filter:
            self.filter = flt
            self.reload()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.has_class("filter"):
            self._filter_changed()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "search":
            if getattr(self, "_debounce", None) is not None:
                self._debounce.stop()
            self._debounce = self.set_timer(0.15, self._filter_changed)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "search":
            self._filter_changed()
            self.query_one(TraceTable).focus()

    # -- actions ----------------------------------------------------------------------------
    def action_focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORT_CYCLE)
        self.reload(save=False)

    def action_clear_filter(self) -> None:
        self.filter = TraceFilter()
        self.query_one("#search", Input).value = ""
        for sel in self.query(Select):
            sel.clear()
        self.reload()

    def action_clear_marks(self) -> None:
        table = self.query_one(TraceTable)
        table.marked.clear()
        self.reload(save=False)

    def action_bulk(self, what: str) -> None:
        """A bulk action on the marked traces, else on the whole filtered set; more traces
        than a screenful shows are asked about first."""
        table = self.query_one(TraceTable)
        ids = sorted(table.marked) or None
        if ids:
            count = len(ids)
        else:   # the count may still be on its way: the rows loaded are a lower bound
            count = self.total if self.total is not None else table.row_count
        scope = f"{count:,} marked traces" if ids else f"all {count:,} filtered traces"
        if count == 0:
            self.app.notify("no traces to act on", severity="warning")
            return

        def go(yes: bool | None = True) -> None:
            if yes:
                self.app.notify(f"{what}: {scope}…", markup=False)
                self.run_bulk(what, self.filter, ids)

        if count > max(1, table.scrollable_content_region.height):
            self.app.push_screen(ConfirmScreen(f"{what.capitalize()} {scope}?"), go)
        else:
            go()

    def action_move_split(self) -> None:
        """Move the marked traces (else the filtered set) to a split the analyst picks: a
        decision like any other (`workbench split --undo` takes it back)."""
        from db.queries import SPLITS
        from workbench.app.screens.common import PickScreen

        table = self.query_one(TraceTable)
        ids = sorted(table.marked) or None
        count = len(ids) if ids else (self.total if self.total is not None else table.row_count)
        if count == 0:
            self.app.notify("no traces to move", severity="warning")
            return
        scope = f"{count:,} marked traces" if ids else f"all {count:,} filtered traces"
        self.app.push_screen(PickScreen(list(SPLITS), f"move {scope} to which split?"),
                             lambda n: None if n is None else self.run_move_split(
                                 SPLITS[n], self.filter, ids))

    @work(thread=True, exit_on_error=False, group="traces-bulk")
    def run_move_split(self, split: str, flt: TraceFilter, ids: list[int] | None) -> None:
        with self.app.store() as db:
            outcome = decisions.move_to_split(db, split, self.app.config.analyst,
                                              selection=flt, ids=ids)
        self.post_message(DecisionMade(outcome.message, None, None))

    def action_undo_exclusion(self) -> None:
        self.run_undo_exclusion()

    @work(thread=True, exit_on_error=False, group="traces-bulk")
    def run_undo_exclusion(self) -> None:
        with self.app.store() as db:
            outcome = decisions.undo_exclusion(db, self.app.config.analyst)
        self.post_message(DecisionMade(outcome.message, None, None))

    def _bulk_selection(self) -> TraceFilter:
        """The marked traces, else the filtered set."""
        marked = sorted(self.query_one(TraceTable).marked)
        return TraceFilter(trace_ids=marked) if marked else self.filter

    def action_bulk_job(self, kind: str | None = None) -> None:
        """A job's form on the marked traces (else the filtered set): `C` sends them to the
        committee (relabel), `J` asks which job first."""
        selection = self._bulk_selection()
        if kind is not None:
            self.app.start_job_form(kind, selection=selection)
            return
        from workbench.jobs.registry import available_jobs
        from workbench.app.screens.common import PickScreen

        kinds = list(available_jobs())
        self.app.push_screen(PickScreen([f"{k}: {s.description}" for k, s in
                                         available_jobs().items()], "which job?"),
                             lambda n: None if n is None else self.app.start_job_form(
                                 kinds[n], selection=selection))
