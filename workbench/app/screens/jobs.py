"""The jobs panel: every job row (from this app or the CLI), progress, live log, cancel, start
(through the job form), and the training view of a train job."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Select

from db import jobs as store
from widgets.job_list import JobList
from workbench.jobs.registry import available_jobs
from workbench.jobs.runner import start_worker
from workbench.app.screens.messages import JobCancelRequested, JobsLoaded, JobStarted

POLL_S = 1.0


class JobsScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="jobs.back"),
        Binding("n", "start", "Start job", id="jobs.start"),
        Binding("c", "cancel", "Cancel job", id="jobs.cancel"),
        Binding("t", "training", "Training view", id="jobs.training"),
        Binding("r", "resume", "Resume", id="jobs.resume"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        specs = available_jobs()
        with Horizontal(id="job-start"):
            yield Select([(Text(f"{k}: {s.description}"), k) for k, s in specs.items()],
                         value=next(iter(specs), Select.NULL), allow_blank=False, id="job-kind")
            yield Button("Start", id="job-start-button", variant="primary")
        yield JobList(id="job-list")
        yield Footer()

    def on_mount(self) -> None:
        # the list has the keys (arrows move between jobs), not the kind selector
        self.query_one("#jobs-table").focus()
        self.poll()
        self.set_interval(POLL_S, self.poll)

    def poll(self) -> None:
        self.refresh_jobs(self.query_one(JobList).selected)

    @work(thread=True, exit_on_error=False, group="jobs-poll", exclusive=True)
    def refresh_jobs(self, selected: int | None) -> None:
        with self.app.store() as db:
            jobs = store.list_jobs(db)
            job = store.get_job(db, selected) if selected is not None else None
        self.post_message(JobsLoaded(jobs, job))

    @work(thread=True, exit_on_error=False, group="jobs-write")
    def cancel(self, job_id: int) -> None:
        with self.app.store() as db:
            store.request_cancel(db, job_id)
        self.post_message(JobCancelRequested(job_id))

    def on_jobs_loaded(self, event: JobsLoaded) -> None:
        jl = self.query_one(JobList)
        jl.show_jobs(event.jobs)
        if event.job is not None:
            jl.show_job(event.job)

    def job_started(self, job_id: int | None) -> None:
        """The job form stored a job and started its detached worker (None: cancelled); the
        job goes on when the app closes, and this panel follows its row."""
        if job_id is None:
            return
        self.app.notify(f"job {job_id} started in a background worker", markup=False)
        self.query_one(JobList).selected = None  # follow the newest job
        self.poll()

    def on_job_cancel_requested(self, event: JobCancelRequested) -> None:
        self.app.notify(f"cancel requested for job {event.job_id}", markup=False)
        self.poll()

    def on_job_list_selected(self, _: JobList.Selected) -> None:
        self.poll()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "job-start-button":
            self.action_start()

    def action_start(self) -> None:
        """The selected kind's form (parameters and selection), on the current filter."""
        kind = self.query_one("#job-kind", Select).value
        if kind != Select.NULL:
            self.app.start_job_form(str(kind), self.job_started)

    def action_training(self) -> None:
        sel = self.query_one(JobList).selected
        self.app.action_training(sel)

    def action_cancel(self) -> None:
        sel = self.query_one(JobList).selected
        if sel is not None:
            self.cancel(sel)

    def action_resume(self) -> None:
        sel = self.query_one(JobList).selected
        if sel is not None:
            self.resume(sel)

    @work(thread=True, exit_on_error=False, group="jobs-write")
    def resume(self, job_id: int) -> None:
        """Make a stopped job runnable again and start its detached worker on it (train from its
        checkpoint, eval from its scored turns, the committee from its stored votes)."""
        from workbench.jobs.runner import resume as make_resumable

        with self.app.store() as db:
            row = make_resumable(db, job_id)   # a job that cannot resume says why (notified)
        start_worker(self.app.db_path, job_id, resume=True, cwd=row["cwd"])
        self.post_message(JobStarted(job_id))

    def on_job_started(self, event: JobStarted) -> None:
        self.app.notify(f"job {event.job_id} resumed in a background worker", markup=False)
        self.poll()
