"""A conversation turn by turn: role, text or calls (JSON-highlighted), flag badges."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static

from widgets.render import ROLE_STYLE, calls_text, content_text, flag_badges


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
            head.append(m["name"], style="italic")
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
    BINDINGS = [("j,down", "next", "Next turn"), ("k,up", "previous", "Previous turn")]

    async def show(self, messages: list[dict], flags: dict[int, list[dict]],
             status: dict[int, str], focus_idx: int | None = None) -> None:
        await self.remove_children()
        turns = [TurnView(i, m, flags.get(i, []), status.get(i, "original"))
                 for i, m in enumerate(messages)]
        await self.mount_all(turns)
        target = focus_idx if focus_idx is not None else next(
            (i for i, m in enumerate(messages) if m["role"] == "assistant"), 0)
        if turns:
            self.call_after_refresh(self.focus_turn, target)

    def focus_turn(self, idx: int) -> None:
        turns = list(self.query(TurnView))
        if turns:
            turn = turns[max(0, min(idx, len(turns) - 1))]
            turn.focus()
            turn.scroll_visible()

    def _step(self, delta: int) -> None:
        turns = list(self.query(TurnView))
        focused = self.screen.focused
        idx = turns.index(focused) if focused in turns else -1
        if turns:
            self.focus_turn(max(0, min(idx + delta, len(turns) - 1)))

    def action_next(self) -> None:
        self._step(1)

    def action_previous(self) -> None:
        self._step(-1)
