"""A conversation turn by turn: role, an assistant turn's text and its calls (in order, with
their ids; JSON-highlighted), the call a tool result answers, flag badges."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static

from widgets.render import ROLE_STYLE, calls_text, content_text, flag_badges, plain


class TurnView(Static, can_focus=True):
    """One message. `status` is the label status of an assistant turn (original/revised/...)."""

    DEFAULT_CSS = """
    TurnView { border: round $panel; padding: 0 1; margin: 0 0 0 0; height: auto; }
    TurnView.assistant { border: round $success 40%; }
    TurnView.flagged { border: round $error; }
    TurnView:focus { border: double $accent; }
    """

    class Focused(Message):
        def __init__(self, idx: int) -> None:
            super().__init__()
            self.idx = idx

    def __init__(self, idx: int, message: dict, flags: list[dict], status: str) -> None:
        classes = message["role"] + (" flagged" if flags else "")
        super().__init__(self._build(idx, message, flags, status), classes=classes,
                         id=f"turn-{idx}")
        self.idx = idx
        self.message = message

    @staticmethod
    def _build(idx: int, m: dict, flags: list[dict], status: str) -> Group:
        head = Text.assemble((f"{idx:>3} ", "dim"), (m["role"], ROLE_STYLE.get(m["role"], "")))
        if m.get("name"):
            head.append(" ")
            head.append_text(plain(m["name"], "italic"))
        if m["role"] == "tool" and m.get("tool_call_id"):
            head.append_text(plain(f"  answers {m['tool_call_id']}", "dim"))
        if m["role"] == "assistant" and status != "original":
            head.append(f"  [{status}]", style="bold yellow" if status == "proposed" else "green")
        if flags:
            head.append("  ")
            head.append_text(flag_badges(flags))
        if m["role"] == "assistant":
            body = calls_text(m["tool_calls"], m["content"])
        else:
            body = content_text(m["content"])
        return Group(head, body)

    def on_focus(self) -> None:
        self.post_message(self.Focused(self.idx))


class ConversationView(VerticalScroll):
    """Shows `messages` (current labels); `flags` per message index; `status` per turn."""

    DEFAULT_CSS = "ConversationView { height: 1fr; }"
    # j / k go from assistant turn to assistant turn (the ones with labels); the arrows
    # visit every message
    BINDINGS = [("j", "next", "Next turn"), ("k", "previous", "Previous turn"),
                Binding("down", "next_message", "Next message", show=False),
                Binding("up", "previous_message", "Previous message", show=False)]

    FIRST = 40   # turns mounted before the view shows; the rest follow in batches
    BATCH = 100

    async def show(self, messages: list[dict], flags: dict[int, list[dict]],
             status: dict[int, str], focus_idx: int | None = None) -> None:
        """Mount the first turns at once and the rest in batches, so a trace of thousands of
        messages opens as fast as a short one and the app keeps answering keys meanwhile."""
        await self.remove_children()
        self._pending = [(i, m) for i, m in enumerate(messages)]
        self._flags, self._status = flags, status
        target = focus_idx if focus_idx is not None else next(
            (i for i, m in enumerate(messages) if m["role"] == "assistant"), 0)
        first = max(self.FIRST, target + 1)
        await self._mount_next(first)
        if messages:
            self.call_after_refresh(self.focus_turn, target)
        if self._pending:
            self.set_timer(0.01, self._mount_rest)

    async def _mount_next(self, n: int) -> None:
        batch, self._pending = self._pending[:n], self._pending[n:]
        await self.mount_all([TurnView(i, m, self._flags.get(i, []),
                                       self._status.get(i, "original")) for i, m in batch])

    async def _mount_rest(self) -> None:
        if self._pending:
            await self._mount_next(self.BATCH)
            self.set_timer(0.01, self._mount_rest)

    def focus_turn(self, idx: int) -> None:
        turns = list(self.query(TurnView))
        if turns:
            turn = turns[max(0, min(idx, len(turns) - 1))]
            turn.focus()
            turn.scroll_visible()

    def _step(self, delta: int, assistant_only: bool = False) -> None:
        turns = list(self.query(TurnView))
        focused = self.screen.focused
        idx = turns.index(focused) if focused in turns else -1
        if not turns:
            return
        target = idx + delta
        if assistant_only:
            while 0 <= target < len(turns) and turns[target].message["role"] != "assistant":
                target += delta
            if not 0 <= target < len(turns):
                return          # no assistant turn that way: stay
        self.focus_turn(max(0, min(target, len(turns) - 1)))

    def action_next(self) -> None:
        self._step(1, assistant_only=True)

    def action_previous(self) -> None:
        self._step(-1, assistant_only=True)

    def action_next_message(self) -> None:
        self._step(1)

    def action_previous_message(self) -> None:
        self._step(-1)
