"""The review queue: turns waiting for a decision, one after another.

Keys: keep (k: the label is right, its flags are not a problem), pick a candidate (1-9), edit
(e), drop (d), skip (s, n: nothing written, the turn stays in the queue), the flags' statistical
detail (t). `S` reviews a random sample of flags instead (`workbench.curation.precision`): the traces
filter's check, else every check, drawn where no sample waits; each decision is a verdict, and
the screen shows each sampled check's precision with its 95% interval. What each decision
writes is defined once, in `workbench.curation.decisions`.
The queue follows the traces screen's filter; the screen says which and `c` clears it (for the
queue). The turn's context, its label and the committee's votes fit a 100x30 terminal.
"""

from __future__ import annotations

import time

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, ProgressBar, Static

from db import browse, teaching
from db.committee import votes_of
from db.queries import TraceFilter
from db.traces import original_messages
from widgets.render import calls_text, flag_details, plain, votes_text
from workbench.curation import precision
from workbench.curation import decisions
from workbench.conversations.view import conversation
from workbench.app.screens.common import edit_turn
from workbench.app.screens.messages import DecisionMade, QueueLoaded, ReviewItemLoaded


REPEAT_S = 0.5   # a second decision key this soon after one is a double press, not a decision
AROUND_BEFORE, AROUND_AFTER = 4, 2   # messages shown around the turn: enough to judge a flag
FILTER_WORDS = {"check": "flag", "flagged": "error flag", "has_revisions": "revised",
                "status": "label", "text": "search", "trace_ids": "traces"}


def describe_filter(flt: TraceFilter) -> str:
    """A filter in a line: `split test · flag schema · search "oak"`."""
    parts = []
    for key, value in flt.to_dict().items():
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        elif key == "text":
            value = f'"{value}"'
        parts.append(f"{FILTER_WORDS.get(key, key)} {value}")
    return " · ".join(parts)


def load_item(db, trace_id: int, idx: int) -> dict:
    conv = conversation(db, trace_id, with_flags=False)
    if conv is None:
        raise ValueError(f"no trace {trace_id}")
    current = conv.messages
    flags = [f for f in browse.flags_of(db, trace_id) if f["message_idx"] in (idx, None)]
    around = [(i, current[i]) for i in range(max(0, idx - AROUND_BEFORE),
                                             min(len(current), idx + AROUND_AFTER + 1))]
    return {"trace_id": trace_id, "idx": idx, "current": current[idx], "around": around,
            "original": original_messages(db, trace_id)[idx],
            "candidates": decisions.proposals(db, trace_id, idx), "flags": flags,
            "tools": conv.tools or [], "votes": votes_of(db, trace_id, idx)}


class ReviewScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="review.back"),
        Binding("k", "keep", "Keep", id="review.keep"),
        Binding("e", "edit", "Edit", id="review.edit"),
        Binding("d", "drop", "Drop turn", id="review.drop"),
        Binding("s,n", "skip", "Skip", id="review.skip"),
        Binding("c", "clear_filter", "Review all", id="review.clear"),
        Binding("S", "sample", "Sample for precision", id="review.sample", show=False),
        Binding("t", "toggle_stats", "Statistics", id="review.stats", show=False),
        *[Binding(str(n), f"pick({n})", f"Pick {n}", id=f"review.pick{n}", show=n == 1)
          for n in range(1, 10)],
    ]

    def __init__(self, flt: TraceFilter | None = None) -> None:
        super().__init__()
        self.filter = flt or TraceFilter()
        self.queue: list[tuple[int, int]] = []
        self.pos = 0
        self.decided = 0
        self.item: dict | None = None
        self.pending: set[tuple[int, int]] = set()   # turns whose decision is being written
        self.decided_at = -REPEAT_S                   # when the last decision key was taken
        self.sampling = False    # the queue is a random sample of flags (S), judged for precision
        self.stats = False       # the flags' statistical detail shown (t)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="review-status"):
            yield Static(id="review-progress-text")
            yield ProgressBar(id="review-progress", show_eta=False)
        yield Static(id="review-filter")
        yield Static(id="review-context")
        with Horizontal(id="review-body"):
            with VerticalScroll(id="review-current"):
                yield Static(id="current")
            with VerticalScroll(id="review-side"):
                yield Static(id="votes")
                yield Vertical(id="candidates")
        yield Footer()

    def on_mount(self) -> None:
        self.load_queue()

    @work(thread=True, exit_on_error=False, group="review")
    def load_queue(self) -> None:
        if self.sampling:
            self._load_sample()
            return
        with self.app.store() as db:
            queue = browse.review_queue(db, self.filter)
            everywhere = (None if self.filter.is_empty()
                          else len(browse.review_queue(db, TraceFilter())))
        self.post_message(QueueLoaded(queue, everywhere))

    def _sampled(self) -> list[str] | None:
        """The checks the sample covers: the traces filter's, else every one (None)."""
        return [self.filter.check] if self.filter.check else None

    def _precision_rows(self, db) -> list[dict]:
        return [r for r in precision.report(db)
                if not self.filter.check or r["check"] == self.filter.check]

    def _load_sample(self) -> None:
        """The sampled turns waiting for a verdict; where none waits, a new sample is drawn
        (`precision.DEFAULT_N` flags on turns of each check, under the traces filter)."""
        drawn = 0
        with self.app.store() as db:
            checks = self._sampled()
            if not teaching.open_sample_turns(db, checks):
                for check in checks or precision.flagged_checks(db):
                    try:
                        drawn += precision.draw(db, check, precision.DEFAULT_N, self.filter,
                                                turns_only=True)["drawn"]
                    except ValueError as e:   # the filter names a check with no flag
                        self.app.call_from_thread(self.app.notify, str(e), severity="warning",
                                                  markup=False)
            queue = teaching.open_sample_turns(db, checks)
            rows = self._precision_rows(db)
        self.app.call_from_thread(self._show_precision, rows, drawn)
        self.post_message(QueueLoaded(queue, None))

    def _show_precision(self, rows: list[dict], drawn: int = 0) -> None:
        box = self.query_one("#review-filter", Static)
        text = Text("sample for precision (S leaves it)", style="bold")
        if drawn:
            text.append(f"  ·  {drawn} flag(s) drawn")
        for r in rows:
            text.append("\n")
            text.append_text(plain(precision.describe(r)))
        if not rows:
            text.append("  ·  no flag to sample")
        box.update(text)
        box.set_class(True, "filtered")
        box.set_class(True, "sampling")

    @work(thread=True, exit_on_error=False, group="review-precision")
    def refresh_precision(self) -> None:
        with self.app.store() as db:
            rows = self._precision_rows(db)
        self.app.call_from_thread(self._show_precision, rows)

    def action_sample(self) -> None:
        self.sampling = not self.sampling
        self.decided, self.item = 0, None
        self.load_queue()

    async def action_toggle_stats(self) -> None:
        self.stats = not self.stats
        if self.item:
            await self._show_item()

    @work(thread=True, exit_on_error=False, group="review")
    def load(self, trace_id: int, idx: int) -> None:
        with self.app.store() as db:
            item = load_item(db, trace_id, idx)
        self.post_message(ReviewItemLoaded(item))

    def decide(self, item: dict, what: str, **kw) -> None:
        """One decision per turn: a key pressed again (or another decision key) before the
        first is written, or after it while the next item loads, writes nothing; nor does one
        within REPEAT_S of the last decision (a double press must not decide the next turn,
        which the analyst has not seen yet)."""
        turn = (item["trace_id"], item["idx"])
        now = time.monotonic()
        if turn in self.pending or turn not in self.queue or now - self.decided_at < REPEAT_S:
            return
        self.pending.add(turn)
        self.decided_at = now
        self._write(item, what, **kw)

    @work(thread=True, exit_on_error=False, group="review-write")
    def _write(self, item: dict, what: str, **kw) -> None:
        """One decision on the item's turn (`workbench.curation.decisions` says what each writes)."""
        name = self.app.config.analyst
        tid, idx = item["trace_id"], item["idx"]
        try:
            with self.app.store() as db:
                if what == "pick":
                    outcome = decisions.accept(db, kw["rev"]["id"], name)
                elif what == "edit":
                    outcome = decisions.edit(db, tid, idx, name, tool_calls=kw["calls"],
                                             content=kw["content"],
                                             reason=kw["reason"] or "review: edited")
                else:
                    outcome = getattr(decisions, what)(db, tid, idx, name)
        except Exception:
            self.app.call_from_thread(self.pending.discard, (tid, idx))   # may be tried again
            raise
        self.post_message(DecisionMade(outcome.message, tid, idx))

    def on_queue_loaded(self, event: QueueLoaded) -> None:
        self.queue, self.pos = event.queue, 0
        if not self.sampling:
            self._show_filter(event.everywhere)
        self._next()

    def _show_filter(self, everywhere: int | None) -> None:
        """Which traces the queue covers: a filter from the traces screen is named, with how
        many turns wait in the whole store and the key that reviews them all."""
        box = self.query_one("#review-filter", Static)
        box.set_class(False, "sampling")
        if self.filter.is_empty():
            box.update(Text("all traces", style="dim"))
            box.set_class(False, "filtered")
            return
        text = Text.assemble(("filtered by the traces screen: ", "bold"),
                             plain(describe_filter(self.filter)))
        if everywhere is not None:
            text.append(f"  ·  {everywhere} turns wait in all traces: c reviews them all")
        box.update(text)
        box.set_class(True, "filtered")

    def action_clear_filter(self) -> None:
        if self.sampling:
            self.app.notify("the sample keeps its filter: S leaves it first")
            return
        if self.filter.is_empty():
            self.app.notify("the queue already covers every trace")
            return
        self.filter = TraceFilter()
        self.decided = 0
        self.load_queue()

    async def on_review_item_loaded(self, event: ReviewItemLoaded) -> None:
        self.item = event.item
        await self._show_item()

    def on_decision_made(self, event: DecisionMade) -> None:
        self.app.notify(event.message, markup=False)
        turn = (event.trace_id, event.turn)
        self.pending.discard(turn)
        if turn in self.queue:
            self.queue.remove(turn)
            self.decided += 1
        if self.sampling:
            self.refresh_precision()
        self._next()

    def _next(self) -> None:
        total = len(self.queue) + self.decided
        self.query_one(ProgressBar).update(total=max(total, 1), progress=self.decided)
        if not self.queue or self.pos >= len(self.queue):
            self.item = None
            self.query_one("#review-progress-text", Static).update(
                Text(f"queue done: {self.decided} decided, {len(self.queue)} left (skipped)"))
            self.query_one("#current", Static).update(Text("nothing left to review", style="dim"))
            self.query_one("#candidates").remove_children()
            self.query_one("#votes", Static).update("")
            self.query_one("#review-context", Static).update("")
            return
        self.load(*self.queue[self.pos])

    async def _show_item(self) -> None:
        it = self.item
        total = len(self.queue) + self.decided
        self.query_one("#review-progress-text", Static).update(Text(
            f"item {self.pos + 1} of {len(self.queue)} left  ·  {self.decided} decided of {total}"
            f"  ·  trace {it['trace_id']} turn {it['idx']}"))
        lines = []
        for i, m in it["around"]:   # the turn with what led to it and what followed
            here = i == it["idx"]   # (one line each: the turn's label is shown in full below)
            label = Text(f"{'▶' if here else ' '} {i:>3} {m['role']:<9} ",
                         style="bold reverse" if here else "bold")
            line = Text.assemble(
                label, plain((m["content"] or "").replace("\n", " ")[:200])
                if m["role"] != "assistant" or not m["tool_calls"]
                else plain(", ".join(c["function"]["name"] for c in m["tool_calls"])))
            line.no_wrap, line.overflow = True, "ellipsis"
            lines.append(line)
        self.query_one("#review-context", Static).update(Group(*lines))
        parts = [Text("current label", style="bold underline"),
                 calls_text(it["current"]["tool_calls"], it["current"]["content"])]
        if it["flags"]:
            parts += [Text("flags", style="bold underline"),
                      flag_details(it["flags"], self.stats)]
        self.query_one("#current", Static).update(Group(*parts))
        self.query_one("#votes", Static).update(
            Group(Text("committee votes", style="bold underline"), votes_text(it["votes"]))
            if it["votes"] else Text("no committee votes", style="dim"))
        box = self.query_one("#candidates")
        await box.remove_children()
        cards = []
        for n, r in enumerate(it["candidates"][:9], 1):
            head = Text.assemble((f"[{n}] ", "bold"), plain(f"{r['author_kind']}:", "dim"),
                                 plain(r["author_name"]))
            body = [head]
            if r.get("reason"):
                body.append(Text.assemble(("reason: ", "dim"), plain(r["reason"])))
            body.append(calls_text(r["tool_calls"], r["content"]))
            cards.append(Static(Group(*body), classes="candidate"))
        if not cards:
            cards.append(Static(Text("no candidates: keep, edit or drop", style="dim")))
        await box.mount_all(cards)

    # -- actions ----------------------------------------------------------------------------
    def action_keep(self) -> None:
        if self.item:
            self.decide(self.item, "keep")

    def action_drop(self) -> None:
        if self.item:
            self.decide(self.item, "drop")

    def action_skip(self) -> None:
        if self.item:
            self.pos += 1
            self._next()

    def action_pick(self, n: int) -> None:
        if self.item and 0 < n <= len(self.item["candidates"]):
            self.decide(self.item, "pick", rev=self.item["candidates"][n - 1])

    def action_edit(self) -> None:
        it = self.item
        if not it:
            return
        edit_turn(self.app, it["tools"], it["current"], f"trace {it['trace_id']} turn {it['idx']}",
                  lambda content, calls, reason: self.decide(it, "edit", calls=calls,
                                                             content=content, reason=reason))
