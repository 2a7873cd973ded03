"""The review queue: turns waiting for a decision, one after another.

Keys: keep (k), pick a candidate (1-9), edit (e), drop (d), skip (s, n: nothing written, the
turn stays in the queue). What each decision writes is defined once, in `workbench.decisions`.
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, ProgressBar, Static

from db import browse
from db.committee import votes_of
from db.queries import TraceFilter
from db.traces import original_messages
from widgets.render import calls_text, content_text, flag_details, plain, votes_text
from workbench import decisions
from workbench.conversation_view import conversation
from workbench.screens.common import edit_turn
from workbench.screens.messages import DecisionMade, QueueLoaded, ReviewItemLoaded


AROUND_BEFORE, AROUND_AFTER = 4, 2   # messages shown around the turn: enough to judge a flag


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

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="review-progress-text")
        yield ProgressBar(id="review-progress", show_eta=False)
        yield Static(id="review-context")
        with Horizontal(id="review-body"):
            with VerticalScroll(id="review-current"):
                yield Static(id="current")
            yield VerticalScroll(id="candidates")
        yield Footer()

    def on_mount(self) -> None:
        self.load_queue()

    @work(thread=True, exit_on_error=False, group="review")
    def load_queue(self) -> None:
        with self.app.store() as db:
            queue = browse.review_queue(db, self.filter)
        self.post_message(QueueLoaded(queue))

    @work(thread=True, exit_on_error=False, group="review")
    def load(self, trace_id: int, idx: int) -> None:
        with self.app.store() as db:
            item = load_item(db, trace_id, idx)
        self.post_message(ReviewItemLoaded(item))

    @work(thread=True, exit_on_error=False, group="review-write")
    def decide(self, item: dict, what: str, **kw) -> None:
        """One decision on the item's turn (`workbench.decisions` says what each writes)."""
        name = self.app.config.analyst
        tid, idx = item["trace_id"], item["idx"]
        with self.app.store() as db:
            if what == "pick":
                outcome = decisions.accept(db, kw["rev"]["id"], name)
            elif what == "edit":
                outcome = decisions.edit(db, tid, idx, name, tool_calls=kw["calls"],
                                         content=kw["content"],
                                         reason=kw["reason"] or "review: edited")
            else:
                outcome = getattr(decisions, what)(db, tid, idx, name)
        self.post_message(DecisionMade(outcome.message, tid, idx))

    def on_queue_loaded(self, event: QueueLoaded) -> None:
        self.queue, self.pos = event.queue, 0
        self._next()

    async def on_review_item_loaded(self, event: ReviewItemLoaded) -> None:
        self.item = event.item
        await self._show_item()

    def on_decision_made(self, event: DecisionMade) -> None:
        self.app.notify(event.message, markup=False)
        turn = (event.trace_id, event.turn)
        if turn in self.queue:
            self.queue.remove(turn)
            self.decided += 1
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
            here = i == it["idx"]
            label = Text(f"{'▶' if here else ' '} {i:>3} {m['role']:<9} ",
                         style="bold reverse" if here else "bold")
            body = (calls_text(m["tool_calls"], m["content"]) if m["role"] == "assistant"
                    else content_text(m["content"]))
            lines.append(Group(label, body) if here else Text.assemble(
                label, plain((m["content"] or "").replace("\n", " ")[:200])
                if m["role"] != "assistant" or not m["tool_calls"]
                else plain(", ".join(c["function"]["name"] for c in m["tool_calls"]))))
        self.query_one("#review-context", Static).update(Group(*lines))
        parts = [Text("current label", style="bold underline"),
                 calls_text(it["current"]["tool_calls"], it["current"]["content"])]
        if it["flags"]:
            parts += [Text("flags", style="bold underline"), flag_details(it["flags"])]
        if it["votes"]:
            parts += [Text("committee votes", style="bold underline"), votes_text(it["votes"])]
        self.query_one("#current", Static).update(Group(*parts))
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
