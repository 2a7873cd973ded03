"""The training view: a train job's live curves, read from the job's stored log, so a training
started from the CLI, headless or on another machine that writes the same store shows too."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header

from db import jobs as store
from db.jobs import newest_job
from widgets.job_list import STATUS_STYLE
from widgets.training_plot import TrainingCurves
from workbench.core.safe_text import visible
from workbench.app.screens.messages import TrainingLoaded
from workbench.training.metrics_log import job_points

POLL_S = 2.0


def newest_train_job(db) -> int | None:
    return newest_job(db, "train")


class TrainingScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="training.back")]

    def __init__(self, job_id: int | None = None) -> None:
        super().__init__(id="training-screen")
        self.job_id = job_id
        self.job: dict | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield TrainingCurves(id="curves")
        yield Footer()

    def on_mount(self) -> None:
        self.load()
        self.set_interval(POLL_S, self.poll)

    def poll(self) -> None:
        if self.job is None or self.job["status"] in store.ACTIVE:
            self.load()   # a finished job's curve does not change

    @work(thread=True, exit_on_error=False, group="training", exclusive=True)
    def load(self) -> None:
        with self.app.store() as db:
            job_id = self.job_id if self.job_id is not None else newest_train_job(db)
            job = store.get_job(db, job_id) if job_id is not None else None
            stored = store.job_metrics(db, job_id) if job is not None else []
        points = job_points(stored, job["log"]) if job and job["kind"] == "train" else []
        self.post_message(TrainingLoaded(job, points))

    def on_training_loaded(self, event: TrainingLoaded) -> None:
        job = self.job = event.job
        curves = self.query_one(TrainingCurves)
        if job is None:
            curves.show([], Text("no train job in the store (start one with b, then n)"))
            return
        head = Text.assemble((f"job {job['id']} ", "bold"), visible(job["kind"]), " ",
                             (visible(job["status"]), STATUS_STYLE.get(job["status"], "")))
        if job["kind"] != "train":
            head.append("  not a train job: no training curve", style="yellow")
        elif job.get("error"):
            head.append("  ")
            head.append(visible(job["error"]), style="red")
        curves.show(event.points, head)
