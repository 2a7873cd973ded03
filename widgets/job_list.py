"""The jobs table with the selected job's progress bar and log."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, ProgressBar, RichLog, Static

from workbench.core.safe_text import visible

STATUS_STYLE = {"queued": "dim", "running": "bold yellow", "succeeded": "green",
                "failed": "bold red", "cancelled": "magenta"}


class JobList(Vertical):
    """`show_jobs(rows)` with rows from `db.jobs.list_jobs`; `show_job(job)` with a full job
    row (`db.jobs.get_job`). Posts `Selected(job_id)` when the cursor moves to a job."""

    DEFAULT_CSS = """
    JobList #jobs-table { height: 1fr; }
    JobList #job-head { height: auto; padding: 0 1; }
    JobList ProgressBar { padding: 0 1; }
    JobList #job-log { height: 1fr; border: round $panel; }
    """

    class Selected(Message):
        def __init__(self, job_id: int) -> None:
            super().__init__()
            self.job_id = job_id

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.selected: int | None = None
        self._log_len = 0

    def compose(self) -> ComposeResult:
        yield DataTable(id="jobs-table", cursor_type="row")
        yield Static(id="job-head")
        yield ProgressBar(id="job-progress", show_eta=False)
        yield RichLog(id="job-log", markup=False, highlight=False, wrap=True)

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        for key in ("id", "kind", "status", "progress", "message", "created"):
            t.add_column(key, key=key)

    def show_jobs(self, jobs: list[dict]) -> None:
        t = self.query_one(DataTable)
        for j in jobs:
            key = str(j["id"])
            prog = f"{j['done']}/{j['total']}" if j["total"] else str(j["done"])
            cells = (Text(key), Text(visible(j["kind"])),
                     Text(visible(j["status"]), style=STATUS_STYLE.get(j["status"], "")),
                     Text(prog), Text(visible((j["message"] if j["status"] != "succeeded"
                                               else "") or j["error"] or "")),
                     Text(visible(j["created_at"][:19])))
            if key in t.rows:
                for col, cell in zip(("id", "kind", "status", "progress", "message", "created"), cells):
                    t.update_cell(key, col, cell)
            else:  # newest first: jobs arrive in descending id order
                t.add_row(*cells, key=key)
        if t.row_count:
            t.sort("id", key=lambda c: -int(c.plain))
        if self.selected is None and jobs:
            self.selected = jobs[0]["id"]
            self._log_len = 0
            self.query_one(RichLog).clear()
            self.post_message(self.Selected(self.selected))
        if self.selected is not None and str(self.selected) in t.rows:
            row = t.get_row_index(str(self.selected))
            if t.cursor_row != row:
                t.move_cursor(row=row)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value is not None and int(event.row_key.value) != self.selected:
            self.selected = int(event.row_key.value)
            self._log_len = 0
            self.query_one(RichLog).clear()
            self.post_message(self.Selected(self.selected))

    def show_job(self, job: dict) -> None:
        if job["id"] != self.selected:
            return
        head = Text.assemble((f"job {job['id']} ", "bold"), visible(job["kind"]), " ",
                             (visible(job["status"]), STATUS_STYLE.get(job["status"], "")))
        if job.get("error"):
            head.append("  ")
            head.append(visible(job["error"]), style="red")
        self.query_one("#job-head", Static).update(head)
        bar = self.query_one(ProgressBar)
        if job["total"]:
            bar.update(total=job["total"], progress=job["done"])
        elif job["status"] in ("queued", "running"):
            bar.update(total=None)
        else:
            bar.update(total=1, progress=1)
        log = job.get("log") or ""
        if len(log) < self._log_len:  # the log keeps its tail: start again
            self.query_one(RichLog).clear()
            self._log_len = 0
        new = log[self._log_len:]
        if new:
            rl = self.query_one(RichLog)
            for line in new.rstrip("\n").split("\n"):
                rl.write(Text(visible(line)))
            self._log_len = len(log)
