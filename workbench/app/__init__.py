"""The Textual app. `make_app()` is the one factory the CLI and the tests use.

Database access happens only in thread workers (`@work(thread=True, exit_on_error=False)`),
through `App.store()`: one connection, one lock, so worker threads never interleave
transactions. Jobs run on their own connection. Worker failures land in one handler.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from rich.text import Text
from sqlite_utils import Database
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.worker import Worker, WorkerState

from db.connection import open_db
from db.queries import TraceFilter
from workbench.core.config import Config, load_config
from workbench.core.safe_text import visible


class WorkbenchCommands(Provider):
    """Command palette: every app action by name."""

    def commands(self) -> list[tuple[str, object, str]]:
        app: WorkbenchApp = self.app  # type: ignore[assignment]
        out = [("Traces: clear filter", partial(app.screen_action, "traces", "clear_filter"),
                "Show every trace"),
               ("Traces: accept proposed revisions (marked or filtered)",
                partial(app.screen_action, "traces", "bulk('accept')"), "Bulk accept"),
               ("Traces: reject proposed revisions (marked or filtered)",
                partial(app.screen_action, "traces", "bulk('reject')"), "Bulk reject"),
               ("Traces: exclude from training (marked or filtered)",
                partial(app.screen_action, "traces", "bulk('exclude')"), "Bulk exclude"),
               ("Traces: include in training (marked or filtered)",
                partial(app.screen_action, "traces", "bulk('include')"), "Bulk include"),
               ("Traces: change sort", partial(app.screen_action, "traces", "sort"), "id/turns"),
               ("Review queue", app.action_review, "Turns waiting for a decision"),
               ("Jobs", app.action_jobs, "Jobs panel: progress, logs, cancel, start"),
               ("Chat with a model", app.action_chat, "Chat tester: the task's tools, calls as cards"),
               ("Synthesis candidates", app.action_synthesis,
                "Accepted and rejected synthetic conversations, their seeds and reasons"),
               ("Training view", app.action_training,
                "Loss curve, learning rate, tokens/s and ETA of the newest train job"),
               ("Evaluation results", app.action_results,
                "Runs per model, confusion matrix, per-tool scores, worst turns, comparison"),
               ("Help: keys", app.action_help, "Keys of this screen")]
        from workbench.jobs.registry import available_jobs

        for kind, spec in available_jobs().items():
            out.append((f"Start job: {kind}", partial(app.start_job_form, kind),
                        spec.description))
        return out

    async def discover(self) -> Hits:
        for name, cb, help_text in self.commands():
            yield DiscoveryHit(name, cb, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, cb, help_text in self.commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), cb, help=help_text)


class WorkbenchApp(App):
    TITLE = "workbench"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {WorkbenchCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("question_mark", "help", "Keys", id="app.help"),
        Binding("v", "review", "Review", id="app.review"),
        Binding("b", "jobs", "Jobs", id="app.jobs"),
        Binding("m", "chat", "Chat", id="app.chat"),
        Binding("R", "results", "Results", id="app.results"),
        Binding("Y", "synthesis", "Synthesis", id="app.synthesis", show=False),
    ]

    def __init__(self, db_path: Path, config: Config | None = None) -> None:
        super().__init__()
        self.db_path = Path(db_path)
        self.config = config or load_config()
        self.current_filter = TraceFilter()
        self._db: Database | None = None
        self._db_lock = threading.Lock()
        if self.config.keys:
            self.set_keymap(self.config.keys)
        if self.config.theme in self.available_themes:
            self.theme = self.config.theme
        self.sub_title = visible(self.db_path.name)

    @contextmanager
    def store(self) -> Iterator[Database]:
        """The app's connection, for worker threads only (one at a time)."""
        with self._db_lock:
            if self._db is None:
                self._db = open_db(self.db_path)
            yield self._db

    def on_mount(self) -> None:
        from workbench.app.screens.traces import TracesScreen
        self.push_screen(TracesScreen())

    def on_unmount(self) -> None:
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def notify(self, message: str, *, title: str = "", **kwargs) -> None:
        """Every notification shows its text with control characters spelled out and never
        as markup: messages and worker errors can quote data."""
        kwargs["markup"] = False
        super().notify(visible(message), title=visible(title), **kwargs)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            err = event.worker.error
            self.notify(Text(f"{type(err).__name__}: {err}").plain, title="error",
                        severity="error", markup=False, timeout=8)

    def screen_action(self, screen_id: str, action: str) -> None:
        screen = self.screen
        if screen.id != f"{screen_id}-screen":
            self.notify(f"only on the {screen_id} screen", severity="warning")
            return
        self.call_later(screen.run_action, action)

    def action_help(self) -> None:
        from workbench.app.screens.help import HelpScreen
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_review(self) -> None:
        from workbench.app.screens.review import ReviewScreen
        if not isinstance(self.screen, ReviewScreen):
            self.push_screen(ReviewScreen(self.current_filter))

    def action_jobs(self) -> None:
        from workbench.app.screens.jobs import JobsScreen
        if not isinstance(self.screen, JobsScreen):
            self.push_screen(JobsScreen())

    def action_synthesis(self) -> None:
        from workbench.app.screens.synthesis import SynthesisScreen
        if not isinstance(self.screen, SynthesisScreen):
            self.push_screen(SynthesisScreen())

    def action_chat(self) -> None:
        from workbench.app.screens.chat import ChatScreen
        if not isinstance(self.screen, ChatScreen):
            self.push_screen(ChatScreen())


    def start_job_form(self, kind: str, done: Callable[[int | None], None] | None = None,
                       selection: TraceFilter | None = None) -> None:
        """The form of a job kind on `selection` (default: the current filter); `done` gets the
        new job's id (None when cancelled). Without `done` the jobs panel opens on it."""
        from workbench.app.screens.job_form import JobFormScreen

        def started(job_id: int | None) -> None:
            if done is not None:
                done(job_id)
            elif job_id is not None:
                self.notify(f"job {job_id} started in a background worker")
                self.action_jobs()
        self.push_screen(JobFormScreen(kind, selection or self.current_filter), started)

    def action_training(self, job_id: int | None = None) -> None:
        """The training view of a train job (default: the newest one)."""
        from workbench.app.screens.training import TrainingScreen

        self.push_screen(TrainingScreen(job_id))

    def action_results(self) -> None:
        from workbench.app.screens.results import ResultsScreen

        if not isinstance(self.screen, ResultsScreen):
            self.push_screen(ResultsScreen())


def make_app(db_path: str | Path = "workbench.db", config: Config | None = None) -> WorkbenchApp:
    return WorkbenchApp(Path(db_path), config)
