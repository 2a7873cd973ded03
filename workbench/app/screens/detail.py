"""One trace: the conversation, flags on their turns, each turn's label history and diff,
and the relabelling actions (edit, accept, reject, undo, exclude), "not a problem" on a turn's
flags (n) or the trace's own (N) and its undo (U), and the flags' statistical detail (t)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from db import browse, revisions
from db.committee import votes_of
from db.traces import get_trace, original_messages
from widgets.conversation import ConversationView, TurnView
from widgets.render import diff_text, flag_details, history_text, plain, votes_text
from workbench.curation import decisions
from workbench.conversations.view import conversation
from workbench.core.safe_text import visible
from workbench.app.screens.common import edit_turn
from workbench.app.screens.messages import DecisionMade, TraceLoaded


def load_trace_view(db, trace_id: int) -> dict:
    """Everything the detail screen shows about one trace (runs in a worker)."""
    trace = get_trace(db, trace_id)
    conv = conversation(db, trace_id, with_flags=False)
    if trace is None or conv is None:
        raise ValueError(f"no trace {trace_id}")
    originals = original_messages(db, trace_id)
    cur_revs = {i: r["id"] for (_, i), r in revisions.current_revisions(db, [trace_id]).items()}
    flags: dict[int, list[dict]] = {}
    for f in browse.flags_of(db, trace_id):
        flags.setdefault(f["message_idx"] if f["message_idx"] is not None else -1, []).append(f)
    hist = {i: revisions.history(db, trace_id, i)
            for i, m in enumerate(originals) if m["role"] == "assistant"}
    status = {}
    for i, h in hist.items():
        status[i] = ("proposed" if any(r["status"] == "proposed" for r in h)
                     else "revised" if i in cur_revs else "original")
    votes: dict[int, list[dict]] = {}
    for vote in votes_of(db, trace_id):
        votes.setdefault(vote["message_idx"], []).append(vote)
    return {"trace": trace, "originals": originals, "current": conv.messages,
            "current_rev": cur_revs, "flags": flags, "history": hist, "status": status,
            "tools": conv.tools or [], "votes": votes, "extras": conv.extras}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def record_text(trace: dict) -> Text:
    """The trace's outcomes on one line, cut to a screen's width; empty when it has none.
    (Its record's other keys are `--meta` to the selection and come back on export.)"""
    out = Text()
    if trace.get("outcomes"):
        out.append("\noutcomes  ", style="bold")
        out.append(visible("  ".join(f"{k}={_scalar(v)}" for k, v in trace["outcomes"].items())
                           )[:400])
    return out


class DetailScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="detail.back"),
        Binding("e", "edit", "Edit label", id="detail.edit"),
        Binding("a", "decide('accepted')", "Accept proposed", id="detail.accept"),
        Binding("r", "decide('rejected')", "Reject proposed", id="detail.reject"),
        Binding("u", "undo", "Undo", id="detail.undo"),
        Binding("x", "toggle_exclude", "Exclude/include", id="detail.exclude"),
        Binding("p", "replay", "Replay with a model", id="detail.replay"),
        Binding("n", "not_a_problem", "Not a problem", id="detail.dismiss"),
        Binding("N", "not_a_problem_trace", "Trace flags: not a problem",
                id="detail.dismiss_trace", show=False),
        Binding("U", "undo_dismissal", "Undo not a problem", id="detail.undo_dismiss",
                show=False),
        Binding("t", "toggle_stats", "Statistics", id="detail.stats", show=False),
    ]

    def __init__(self, trace_id: int, turn: int | None = None) -> None:
        """`turn`: the message to open at (the evaluation results' worst turns), else the
        first assistant turn."""
        super().__init__()
        self.trace_id = trace_id
        self.view: dict | None = None
        self.turn: int | None = turn
        self.stats = False   # the flags' statistical detail shown (t)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="trace-head")
        with Horizontal():
            yield ConversationView(id="conversation")
            with VerticalScroll(id="turn-panel"):
                yield Static(id="turn-info")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False, group="detail")
    def load(self) -> None:
        with self.app.store() as db:
            view = load_trace_view(db, self.trace_id)
        self.post_message(TraceLoaded(view))

    @work(thread=True, exit_on_error=False, group="detail-write")
    def write(self, decide: Callable[..., decisions.Outcome], *args: Any, **kw: Any) -> None:
        """Take one decision (a function of `workbench.curation.decisions`) on this trace."""
        with self.app.store() as db:
            outcome = decide(db, *args, self.app.config.analyst, **kw)
        self.post_message(DecisionMade(outcome.message, self.trace_id, self.turn))

    async def on_trace_loaded(self, event: TraceLoaded) -> None:
        self.view = v = event.view
        self._show_head()
        await self.query_one(ConversationView).show(v["current"], v["flags"], v["status"],
                                                    self.turn)

    def _show_head(self) -> None:
        v = self.view
        if v is None:
            return
        t = v["trace"]
        head = Text.assemble((f"trace {t['id']} ", "bold"), plain(t["source"]), f":{t['line']}  ",
                             f"{t['split']}/{t['origin']}  {t['n_assistant']} turns",
                             ("  EXCLUDED" if t["excluded"] else "", "bold red"))
        head.append_text(record_text(t))
        if -1 in v["flags"]:
            head.append("\n")
            head.append_text(flag_details(v["flags"][-1], self.stats))
        self.query_one("#trace-head", Static).update(head)

    def on_decision_made(self, event: DecisionMade) -> None:
        self.app.notify(event.message, markup=False)
        self.load()

    def on_turn_view_focused(self, event: TurnView.Focused) -> None:
        self.turn = event.idx
        self._show_turn()

    def _show_turn(self) -> None:
        v, i = self.view, self.turn
        if v is None or i is None:
            return
        role = v["originals"][i]["role"]
        parts = [Text(f"turn {i} ({role})", style="bold")]
        if role != "assistant":
            parts.append(Text("no label: only assistant turns carry one (j / k move between"
                              " them, the arrows through every message)", style="dim"))
        extra = (v.get("extras") or {}).get(i) or {}
        if extra.get("weight") == 0:
            parts.append(Text("weight 0 in its source file: kept as context, never trained on",
                              style="yellow"))
        if extra.get("is_error"):
            parts.append(Text("the tool reported an error (is_error)", style="red"))
        if v["flags"].get(i):
            parts += [Text("flags", style="bold underline"),
                      flag_details(v["flags"][i], self.stats)]
        if role == "assistant":
            parts += [Text("diff original → current", style="bold underline"),
                      diff_text(v["originals"][i], v["current"][i])]
            if v["votes"].get(i):
                parts += [Text("committee votes", style="bold underline"),
                          votes_text(v["votes"][i])]
            parts += [Text("history", style="bold underline"),
                      Text("original", style="bold"),
                      history_text(v["history"][i], v["current_rev"].get(i))]
        self.query_one("#turn-info", Static).update(Group(*parts))

    # -- actions ----------------------------------------------------------------------------
    def _assistant_turn(self) -> int | None:
        if self.view is None or self.turn is None:
            return None
        if self.view["originals"][self.turn]["role"] != "assistant":
            self.app.notify("only assistant turns carry labels", severity="warning")
            return None
        return self.turn

    def action_edit(self) -> None:
        i = self._assistant_turn()
        if i is None:
            return
        edit_turn(self.app, self.view["tools"], self.view["current"][i],
                  f"trace {self.trace_id} turn {i}",
                  lambda content, calls, reason: self.write(
                      decisions.edit, self.trace_id, i, tool_calls=calls, content=content,
                      reason=reason or "edited in the app"))

    def action_decide(self, status: str) -> None:
        i = self._assistant_turn()
        if i is None:
            return
        proposed = [r for r in self.view["history"][i] if r["status"] == "proposed"]
        if not proposed:
            self.app.notify("this turn has no proposed revision", severity="warning")
            return
        if status == "accepted" and len(proposed) > 1:
            self.app.notify(f"this turn has {len(proposed)} competing proposals: pick one in"
                            " the review queue (v)", severity="warning")
            return
        self.write(decisions.accept if status == "accepted" else decisions.reject,
                   proposed[-1]["id"])

    def action_undo(self) -> None:
        i = self._assistant_turn()
        if i is not None:
            self.write(decisions.undo, self.trace_id, i)

    def action_toggle_exclude(self) -> None:
        if self.view is not None:
            excluded = not self.view["trace"]["excluded"]
            self.write(lambda db, analyst: decisions.set_excluded(
                db, excluded, analyst, ids=[self.trace_id]))

    def action_not_a_problem(self) -> None:
        """The flags of the focused turn are not a problem (their checks learn from it)."""
        if self.view is None or self.turn is None:
            return
        if not self.view["flags"].get(self.turn):
            self.app.notify("this turn has no flag", severity="warning")
            return
        self.write(decisions.dismiss, self.trace_id, self.turn)

    def action_not_a_problem_trace(self) -> None:
        """The trace's own flags are not a problem (a trace-level error no longer excludes it)."""
        if self.view is None:
            return
        if not self.view["flags"].get(-1):
            self.app.notify("this trace has no flag of its own", severity="warning")
            return
        self.write(decisions.dismiss, self.trace_id, None)

    def action_undo_dismissal(self) -> None:
        """Take back the newest "not a problem" on this trace."""
        self.write(lambda db, analyst: decisions.undo_dismissal(
            db, analyst, trace_id=self.trace_id))

    def action_toggle_stats(self) -> None:
        self.stats = not self.stats
        self._show_head()
        self._show_turn()
        self.app.notify("statistics shown" if self.stats else "statistics hidden")

    def action_replay(self) -> None:
        from workbench.app.screens.chat import ReplayScreen

        self.app.push_screen(ReplayScreen(self.trace_id))
