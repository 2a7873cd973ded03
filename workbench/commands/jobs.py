"""Running job commands (foreground or `--detach`), `workbench jobs ...`, `workbench models`."""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import typer
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn)
from rich.table import Table
from rich.text import Text

from db import jobs as store
from workbench.commands.common import (JobRequest, console, err_console, fail, print_json,
                                       state, user_errors)
from workbench.core.safe_text import visible
from workbench.jobs.context import JobEvent, LogLine
from workbench.jobs.context import Progress as ProgressEvent

EXIT_STOPPED = 130   # cancelled or interrupted, like a command stopped by Ctrl-C


def _detached(ctx: typer.Context, job_id: int, as_json: bool, resume: bool = False) -> None:
    from workbench.jobs.runner import log_path_for, start_worker

    st = state(ctx)
    row = store.get_job(st.db(), job_id)
    proc = start_worker(st.db_path, job_id, resume=resume, cwd=row["cwd"])
    log = str(log_path_for(st.db_path, job_id))
    if as_json:
        print_json({"job_id": job_id, "status": "started", "pid": proc.pid, "log": log})
    else:
        console.print(Text(f"job {job_id} ({row['kind']}) runs in the background (pid"
                           f" {proc.pid}); `workbench jobs show {job_id}` follows it, log: ")
                      + Text(visible(log)))
    raise typer.Exit(0)


LINE_EVERY_S = 15.0   # without a terminal: a progress line at most this often (per phase)


def run_foreground(ctx: typer.Context, job_id: int, *, quiet: bool, resume: bool = False,
                   progress_bar: bool | None = None) -> dict:
    """Run a stored job here with a progress bar and its log on stderr; returns the final row,
    or exits non-zero (with the reason) when it did not succeed. `quiet` (--json) keeps the log
    off stderr and prints a failure as JSON; the bar shows unless `progress_bar` is False
    (default: not quiet). When stderr is not a terminal (a file, a pipe), where a live bar
    would show nothing until the end, progress is printed as lines: at each new phase and at
    most every LINE_EVERY_S seconds within one."""
    from workbench.jobs.runner import execute

    db = state(ctx).db()
    kind = store.get_job(db, job_id)["kind"]
    show = not quiet if progress_bar is None else progress_bar
    progress = Progress(TextColumn(f"[bold]{kind}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("{task.fields[msg]}"),
                        TimeElapsedColumn(), console=err_console, disable=not show,
                        transient=False)
    task = progress.add_task(kind, total=None, msg="starting")
    lines = show and not err_console.is_terminal
    last = {"at": 0.0, "phase": None}

    def as_line(message: str) -> None:
        phase = message.split(" ", 1)[0]
        now = time.monotonic()
        if phase == last["phase"] and now - last["at"] < LINE_EVERY_S:
            return
        last.update(at=now, phase=phase)
        err_console.print(Text(f"{kind}: {visible(message)}"), soft_wrap=True)

    def listener(event: JobEvent) -> None:
        if isinstance(event, ProgressEvent):
            progress.update(task, completed=event.done, total=event.total,
                            msg=Text(visible(event.message)) if event.message else "")
            if lines and event.message:
                as_line(event.message)
        elif isinstance(event, LogLine) and not quiet:
            progress.console.print(Text(visible(event.text)))

    with progress:
        row = execute(db, job_id, listeners=[listener], resume=resume)
    if row["status"] != "succeeded":
        if quiet:
            print_json({"job_id": job_id, "status": row["status"], "error": row["error"]})
        fail(f"{kind} job {job_id} {row['status']}: {row['error'] or ''}",
             code=1 if row["status"] == "failed" else EXIT_STOPPED)
    return row


def run_request(ctx: typer.Context, job: JobRequest, *, quiet: bool,
                progress_bar: bool | None = None) -> dict:
    """Store the job and run it: here (default) or in a detached worker (`--detach`)."""
    from workbench.jobs.runner import submit

    db = state(ctx).db()
    with user_errors():
        job_id = submit(db, job.kind, job.selection, job.params)
    if job.detach:
        _detached(ctx, job_id, quiet)
    return run_foreground(ctx, job_id, quiet=quiet, progress_bar=progress_bar)


def _bar(row: dict) -> str:
    if row["total"]:
        return f"{row['done']}/{row['total']}"
    return str(row["done"] or "")


def register(app: typer.Typer) -> None:
    jobs_app = typer.Typer(help="List, inspect, cancel, resume and re-run jobs.",
                           no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(jobs_app, name="jobs")

    @jobs_app.command("list")
    def list_cmd(ctx: typer.Context,
                 status: Optional[str] = typer.Option(None, help=" | ".join(store.STATUSES)),
                 kind: Optional[str] = typer.Option(None, help="job kind"),
                 limit: int = typer.Option(50, help="newest N"),
                 as_json: bool = typer.Option(False, "--json", help="print as JSON")) -> None:
        """Jobs, newest first (from the CLI, the app and detached workers alike)."""
        if status is not None and status not in store.STATUSES:
            fail(f"--status must be one of {', '.join(store.STATUSES)}")
        rows = store.list_jobs(state(ctx).db(), limit, status=status, kind=kind)
        if as_json:
            print_json(rows)
            return
        table = Table("id", "kind", "status", "parent", "progress", "message", "created")
        for r in rows:
            table.add_row(str(r["id"]), Text(visible(r["kind"])), r["status"],
                          "" if r["parent_id"] is None else str(r["parent_id"]), _bar(r),
                          Text(visible(r["error"] or (r["message"] if r["status"] != "succeeded"
                                                      else "") or "")[:80]),
                          (r["created_at"] or "")[:19])
        console.print(table)

    @jobs_app.command("show")
    def show_cmd(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="ID"),
                 tail: int = typer.Option(20, help="log lines to show"),
                 as_json: bool = typer.Option(False, "--json", help="print as JSON")) -> None:
        """One job: its selection and parameters, progress, log tail, result or error."""
        row = store.get_job(state(ctx).db(), job_id)
        if row is None:
            fail(f"no job {job_id}")
        if as_json:
            print_json(row)
            return
        asked = (" (cancel requested: it stops at its next unit of work)"
                 if row.get("cancel_requested") and row["status"] in store.ACTIVE else "")
        lines = [f"job {row['id']}: {row['kind']}, {row['status']}{asked}"
                 f" ({_bar(row)}) {row['message'] or ''}",
                 f"selection: {row['selection'] or {}}", f"params: {row['params'] or {}}",
                 f"created {row['created_at']}, started {row['started_at']},"
                 f" finished {row['finished_at']}, pid {row['pid']}, attempts {row['attempts']}"]
        if row["log_path"]:
            lines.append(f"worker log: {row['log_path']}")
        if row["error"]:
            lines.append(f"error: {row['error']}")
        if row["result"] is not None:
            lines.append(f"result: {row['result']}")
        log = [ln for ln in row["log"].splitlines() if not ln.startswith("metrics ")]
        lines += ["log:", *log[-tail:]]
        console.print(Text(visible("\n".join(lines))))

    @jobs_app.command("cancel")
    def cancel_cmd(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="ID")) -> None:
        """Ask a queued or running job to stop (it ends `cancelled`, keeping what it did)."""
        db = state(ctx).db()
        if store.get_job(db, job_id) is None:
            fail(f"no job {job_id}")
        if not store.request_cancel(db, job_id):
            fail(f"job {job_id} is {store.get_job(db, job_id)['status']}: nothing to cancel")
        console.print(Text(f"cancel requested for job {job_id}"))

    @jobs_app.command("resume")
    def resume_cmd(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="ID"),
                   detach: bool = typer.Option(False, "--detach", help="in a background worker"),
                   as_json: bool = typer.Option(False, "--json", help="print as JSON")) -> None:
        """Continue a failed, cancelled or interrupted job where it stopped (training from
        its last checkpoint, evaluation from its scored turns)."""
        from workbench.jobs.runner import resume

        with user_errors():
            resume(state(ctx).db(), job_id)
        if detach:
            _detached(ctx, job_id, as_json, resume=True)
        row = run_foreground(ctx, job_id, quiet=as_json, resume=True)
        _print_row(row, as_json)

    @jobs_app.command("rerun")
    def rerun_cmd(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="ID"),
                  detach: bool = typer.Option(False, "--detach", help="in a background worker"),
                  as_json: bool = typer.Option(False, "--json", help="print as JSON")) -> None:
        """Run a job again as a new job: same kind, selection and parameters."""
        from workbench.jobs.runner import rerun

        with user_errors():
            new_id = rerun(state(ctx).db(), job_id)
        if detach:
            _detached(ctx, new_id, as_json)
        _print_row(run_foreground(ctx, new_id, quiet=as_json), as_json)

    job_app = typer.Typer(hidden=True, rich_markup_mode=None)
    app.add_typer(job_app, name="job")

    @job_app.command("run")
    def job_run_cmd(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="ID"),
                    resume: bool = typer.Option(False, "--resume")) -> None:
        """The worker: run stored job ID in this process (what `--detach` and the app start)."""
        db = state(ctx).db()
        row = store.get_job(db, job_id)
        if row is None:
            fail(f"no job {job_id}")
        if row["status"] != "queued":
            fail(f"job {job_id} is {row['status']}, not queued")
        if row["cwd"] and os.path.isdir(row["cwd"]):
            os.chdir(row["cwd"])   # relative paths in the params mean what they meant
        from workbench.jobs.runner import execute, log_path_for

        store.set_log_path(db, job_id, str(log_path_for(state(ctx).db_path, job_id)))

        def echo(event: JobEvent) -> None:
            if isinstance(event, LogLine):
                err_console.print(Text(visible(event.text)))

        done = execute(db, job_id, listeners=[echo], resume=resume)
        err_console.print(Text(f"job {job_id} {done['status']}"))
        raise typer.Exit(0 if done["status"] == "succeeded" else 1)

    @app.command("models")
    def models_cmd(ctx: typer.Context,
                   as_json: bool = typer.Option(False, "--json", help="print as JSON")) -> None:
        """Registered models: name, base, data, metrics, files, and their evaluation runs."""
        from db.evals import runs_of_models
        from db.models import list_models

        db = state(ctx).db()
        models = list_models(db)
        runs = runs_of_models(db)
        for m in models:
            m["eval_runs"] = runs.get(m["id"], [])
        if as_json:
            print_json(models)
            return
        table = Table("id", "name", "kind", "base", "traces", "loss", "evals", "path")
        for m in models:
            metrics = m["metrics"] or {}
            plan = (m["data_selection"] or {}).get("plan") or {}
            evals = ", ".join(
                f"#{r['id']} {r['staged_tool_call']:.3f}" if r.get("staged_tool_call") is not None
                else f"#{r['id']} failed ({r['errors']}/{r['turns']} turns without a reply)"
                for r in m["eval_runs"] if r["status"] in ("succeeded", "failed"))
            table.add_row(str(m["id"]), Text(visible(m["name"])), m["kind"],
                          Text(visible(m["base_model"] or "")), str(plan.get("sequences", "")),
                          _number(metrics.get("last_loss")), Text(evals),
                          Text(visible(m["path"] or "")))
        console.print(table)


def _number(value: Any) -> str:
    """A number as a person reads it: floats to 4 significant digits, nothing as ''."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flat(value: Any, key: str = "") -> list[tuple[str, str]]:
    """A result as (dotted key, text) rows: nested tables become dotted keys, a list of plain
    values one comma-separated cell, anything else compact JSON."""
    import json

    if isinstance(value, dict) and value:
        return [row for k, v in value.items() for row in _flat(v, f"{key}.{k}" if key else str(k))]
    if isinstance(value, (list, tuple)) and all(
            not isinstance(v, (dict, list, tuple)) for v in value):
        return [(key, ", ".join(_number(v) for v in value))]
    if isinstance(value, (dict, list, tuple)):
        return [(key, json.dumps(value, ensure_ascii=False, default=str))]
    return [(key, _number(value))]


def result_table(row: dict) -> Table:
    """A job's result, one row per value (`jobs resume`, `jobs rerun`)."""
    table = Table("result", "value", title=f"job {row['id']} ({row['kind']}) {row['status']}")
    result = row["result"]
    for key, text in _flat(result if isinstance(result, dict) else {"result": result}):
        table.add_row(Text(visible(key)), Text(visible(text)))
    return table


def _print_row(row: dict, as_json: bool) -> None:
    if as_json:
        print_json({"job_id": row["id"], "status": row["status"], "result": row["result"]})
    else:
        console.print(result_table(row))
