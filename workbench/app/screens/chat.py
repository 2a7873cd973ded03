"""The chat tester and the replay: talk to a model with the task's tools, or step through a
stored trace turn by turn, reference against prediction.

Chat: pick a model (registered, an endpoint, or local), type; the reply streams in; its tool
calls are shown as cards (name and arguments as JSON, a call that does not fit the tool schema
marked); after a service call the next line typed is the tool's result (`ctrl+o` fills in a
stored result of a similar call; Enter on an empty line skips). `ctrl+r` starts over.

Replay: `n` predicts the next assistant turn from the reference history before it, under the
trace's own system prompt, and shows the reference, the prediction, the turn's score (staged on a
call turn, the text's ROUGE-L on a text turn) and the fields that differ; `j` goes on until a
turn scores below 1.

Workers only talk to the model or the store and post typed messages; model text is untrusted
(plain Text, control characters spelled out).
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Select, Static

from widgets.render import calls_text, content_text, plain
from workbench.core.safe_text import dumps_visible
from workbench.app.screens.messages import (ModelsListed, ReplyDone, ResultFound, SessionOpened,
                                         TokenStreamed, TraceOpened, TurnReplayed)


def reply_card(completion, problems: list[str | None]) -> Group:
    """A reply: its calls as JSON cards (a schema problem marked), or its text."""
    parts: list = [Text("assistant", style="bold green")]
    if completion.calls:
        for call, problem in zip(completion.calls, problems):
            parts.append(Text.assemble(("call ", "bold cyan"), plain(call["name"], "bold")))
            parts.append(Text(dumps_visible(call["arguments"], indent=1)))
            if problem:
                parts.append(Text.assemble(("✗ does not fit the schema: ", "bold red"),
                                           plain(problem)))
    elif completion.malformed:
        parts.append(Text.assemble(("malformed tool call: ", "bold red"), plain(completion.text)))
    else:
        parts.append(content_text(completion.text))
    if getattr(completion, "error", None):
        parts.append(Text.assemble(("error: ", "bold red"), plain(completion.error)))
    return Group(*parts)


class _ModelScreen(Screen):
    """What the chat and the replay share: the model picker and the session it opens."""

    def __init__(self) -> None:
        super().__init__()
        self.session = None
        self.opening: str | None = None   # the model being opened (a worker loads it)
        self.session_ref: str | None = None   # the model the session talks to

    def compose_picker(self) -> ComposeResult:
        with Horizontal(id="chat-pick"):
            yield Select([], prompt="model", id="chat-model")
            yield Input(placeholder="or a GGUF path / URL#MODEL", id="chat-model-path")
            yield Button("Open", id="chat-open", variant="primary")

    def on_mount(self) -> None:
        self.list_models()

    @work(thread=True, exit_on_error=False, group="chat-models")
    def list_models(self) -> None:
        from workbench.chat.tester import model_choices

        with self.app.store() as db:
            choices = model_choices(db)
        self.post_message(ModelsListed(choices))

    def on_models_listed(self, event: ModelsListed) -> None:
        self.query_one("#chat-model", Select).set_options(
            [(Text(label), ref) for label, ref in event.choices])

    def picked_ref(self) -> str | None:
        """The model the picker names: a typed path or URL wins over the list."""
        path = self.query_one("#chat-model-path", Input).value.strip()
        picked = self.query_one("#chat-model", Select).value
        return (f"endpoint:{path}" if "://" in path else path) if path else (
            None if picked == Select.NULL else str(picked))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "chat-open":
            ref = self.picked_ref()
            if ref is None:
                self.app.notify("pick a model first", severity="warning")
                return
            self.open_model(ref)

    def on_select_changed(self, event: Select.Changed) -> None:
        """Choosing a model in the list opens it (no need to press Open as well)."""
        if event.select.id == "chat-model" and event.value != Select.NULL:
            self.open_model(str(event.value))

    def open_model(self, ref: str) -> None:
        if ref in (self.opening, self.session_ref):   # opening it, or open already
            return
        self.opening = ref
        self.app.notify(f"opening {ref}…", markup=False)
        self._open(ref)

    @work(thread=True, exit_on_error=False, group="chat-open", exclusive=True)
    def _open(self, ref: str) -> None:
        from workbench.chat.tester import open_session

        try:
            with self.app.store() as db:
                session = open_session(db, ref)
        except Exception:
            self.app.call_from_thread(setattr, self, "opening", None)
            raise
        self.post_message(SessionOpened(session, ref))

    def on_session_opened(self, event: SessionOpened) -> None:
        # (Textual calls this base-class handler itself, before a subclass's `session_ready`)
        if self.session is not None:
            self.session.backend.close()
        self.session = event.session
        self.session_ref, self.opening = event.label, None
        self.app.notify(f"model {event.label} ready", markup=False)
        self.session_ready()

    def session_ready(self) -> None:
        """A subclass's turn once a model is open."""

    def on_unmount(self) -> None:
        if self.session is not None:
            self.session.backend.close()


class ChatScreen(_ModelScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="chat.back"),
                Binding("ctrl+r", "reset", "Reset", id="chat.reset"),
                Binding("ctrl+o", "stored_result", "Stored result", id="chat.result")]

    def __init__(self) -> None:
        super().__init__()
        self.streamed = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield from self.compose_picker()
        yield VerticalScroll(id="chat-log")
        yield Static(id="chat-stream")
        yield Input(placeholder="open a model, then type a message", id="chat-input")
        yield Footer()

    def session_ready(self) -> None:
        self.query_one("#chat-input").focus()

    def _pending(self) -> list[dict]:
        return self.session.awaits_result(self.session.pending_calls()) if self.session else []

    async def _card(self, renderable) -> None:
        log = self.query_one("#chat-log", VerticalScroll)
        await log.mount(Static(renderable, classes="chat-card"))
        log.scroll_end(animate=False)

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "chat-model-path":
            self.on_button_pressed(Button.Pressed(self.query_one("#chat-open", Button)))
            return
        if event.input.id != "chat-input":
            return
        if self.session is None:
            self.app.notify("open a model first", severity="warning")
            return
        text = event.value
        event.input.value = ""
        if self._pending():
            if not text.strip():
                event.input.placeholder = "type a message"
                return
            self.session.add_tool_result(text)
            await self._card(Group(Text("tool result", style="bold yellow"), plain(text)))
        else:
            if not text.strip():
                return
            self.session.add_user(text)
            await self._card(Group(Text("you", style="bold cyan"), plain(text)))
        self.generate()

    @work(thread=True, exit_on_error=False, group="chat-generate", exclusive=True)
    def generate(self) -> None:
        from workbench.chat.tester import call_problems

        done = self.session.generate(lambda piece: self.post_message(TokenStreamed(piece)))
        self.post_message(ReplyDone(done, call_problems(done.calls, self.session.tools)))

    def on_token_streamed(self, event: TokenStreamed) -> None:
        self.streamed += event.piece
        self.query_one("#chat-stream", Static).update(plain(self.streamed[-2000:]))

    async def on_reply_done(self, event: ReplyDone) -> None:
        self.streamed = ""
        self.query_one("#chat-stream", Static).update("")
        await self._card(reply_card(event.completion, event.problems))
        box = self.query_one("#chat-input", Input)
        box.placeholder = ("the tool's result (JSON; ctrl+o: a stored one; Enter skips)"
                           if self._pending() else "type a message")

    async def action_reset(self) -> None:
        if self.session is not None:
            self.session.messages.clear()
        await self.query_one("#chat-log", VerticalScroll).remove_children()
        self.app.notify("conversation cleared; the system prompt and tools stay")

    def action_stored_result(self) -> None:
        pending = self._pending()
        if not pending:
            self.app.notify("no tool call waits for a result", severity="warning")
            return
        fn = pending[-1]["function"]
        self.find_result({"name": fn["name"], "arguments": fn["arguments"]})

    @work(thread=True, exit_on_error=False, group="chat-result")
    def find_result(self, call: dict) -> None:
        from workbench.chat.tester import similar_result

        with self.app.store() as db:
            found = similar_result(db, call)
        self.post_message(ResultFound(found))

    def on_result_found(self, event: ResultFound) -> None:
        if event.text is None:
            self.app.notify("no stored result of that tool", severity="warning")
            return
        self.query_one("#chat-input", Input).value = event.text


class ReplayScreen(_ModelScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="replay.back"),
                Binding("n", "next", "Next turn", id="replay.next"),
                Binding("j", "next_miss", "Next turn below 1", id="replay.miss")]

    def __init__(self, trace_id: int) -> None:
        super().__init__()
        self.trace_id = trace_id
        self.conv = None
        self.turns: list[int] = []
        self.pos = 0
        self.scores: list[float] = []
        self.until_miss = False
        self.step_when_ready = False   # n / j pressed while the model was still opening

    def compose(self) -> ComposeResult:
        yield Header()
        yield from self.compose_picker()
        yield Static(id="replay-head")
        yield VerticalScroll(id="replay-log")
        yield Footer()

    def on_mount(self) -> None:   # the base class lists the models (Textual calls both)
        self.load_trace()

    @work(thread=True, exit_on_error=False, group="replay-load")
    def load_trace(self) -> None:
        from workbench.conversations.view import conversation

        with self.app.store() as db:
            conv = conversation(db, self.trace_id, with_flags=False)
        self.post_message(TraceOpened(conv))

    def on_trace_opened(self, event: TraceOpened) -> None:
        self.conv = event.conversation
        if self.conv is None:
            self.app.notify(f"no trace {self.trace_id}", severity="error")
            return
        self.turns = [i for i, m in enumerate(self.conv.messages) if m["role"] == "assistant"]
        self._head()

    def session_ready(self) -> None:
        if self.conv is not None:   # the trace as the model saw it in training and evaluation
            self.session.tools, self.session.system = self.conv.tools, self.conv.system_prompt
        self.query_one("#replay-log").focus()   # n / j, not typing into the model path
        self._head()
        if self.step_when_ready:
            self.step_when_ready = False
            self._step()

    def _head(self) -> None:
        mean = sum(self.scores) / len(self.scores) if self.scores else None
        self.query_one("#replay-head", Static).update(Text(
            f"trace {self.trace_id}: turn {self.pos} of {len(self.turns)} predicted"
            + (f"  ·  mean score {mean:.3f}" if mean is not None else "")
            + ("" if self.session is not None else "  ·  opening the model…" if self.opening
               else "  ·  pick a model above, then n / j")))

    def action_next(self) -> None:
        self.until_miss = False
        self._step()

    def action_next_miss(self) -> None:
        self.until_miss = True
        self._step()

    def _step(self) -> None:
        if self.session is None:
            ref = self.opening or self.picked_ref()
            if ref is None:
                self.app.notify("pick a model in the list above first (or type a GGUF path /"
                                " URL#MODEL and press Open)", severity="warning")
                return
            self.step_when_ready = True      # the turn follows once the model is open
            self.open_model(ref)
            self._head()
            return
        if self.conv is None:
            self.app.notify("the trace is still loading", severity="warning")
            return
        if self.pos >= len(self.turns):
            self.app.notify("every turn is replayed")
            return
        self.predict(self.turns[self.pos])

    @work(thread=True, exit_on_error=False, group="replay-predict", exclusive=True)
    def predict(self, index: int) -> None:
        from workbench.chat.tester import replay_turn

        self.post_message(TurnReplayed(replay_turn(self.session, self.conv, index)))

    async def on_turn_replayed(self, event: TurnReplayed) -> None:
        t = event.turn
        self.pos += 1
        self.scores.append(t.score)
        self._head()
        before = self.conv.messages[t.index - 1] if t.index else None
        parts: list = [Text(f"turn {t.index}  {t.score_name} {t.score:.2f}",
                            style="bold green" if t.score == 1.0 else "bold red")]
        if before is not None:
            parts += [Text(f"before ({before['role']}):", style="dim"),
                      calls_text(before["tool_calls"], before["content"])
                      if before["role"] == "assistant" else content_text(before["content"])]
        parts += [Text("reference:", style="bold"), plain(t.reference),
                  Text("predicted:", style="bold"), plain(t.predicted)]
        if t.differing:
            parts.append(Text.assemble(("differs in: ", "bold red"),
                                       plain(", ".join(t.differing))))
        log = self.query_one("#replay-log", VerticalScroll)
        await log.mount(Static(Group(*parts), classes="chat-card"))
        log.scroll_end(animate=False)
        if self.until_miss and t.score == 1.0 and self.pos < len(self.turns):
            self._step()
