"""`workbench pipeline run FILE` (the whole loop as jobs under one pipeline job) and
`workbench pipeline init [PATH]` (a commented example for the store's task)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from workbench.commands.common import console, print_json, state, user_errors
from workbench.commands.jobs import run_foreground
from workbench.core.safe_text import visible


def _num(v: object, fmt: str = "{:.4f}") -> str:
    if v is None:
        return "-"
    return fmt.format(v) if isinstance(v, float) else str(v)


def print_report(rep: dict, out: Console = console) -> None:
    """The pipeline's report on the terminal (the same figures as its report.md)."""
    from workbench.pipeline.report import DATA_ROWS

    st = Table("stage", "action", "job", "status", title=f"pipeline run {rep['pipeline_job']}")
    for s in rep["stages"]:
        st.add_row(s["stage"], s["action"], _num(s["job_id"]), s["status"] or "-")
    out.print(st)
    d = rep["data"]
    dt = Table("data", "before curation", "after", title="data (not the test split)")
    for key, label in DATA_ROWS:
        dt.add_row(label, _num(d["raw"][key]), _num(d["curated"][key]))
    for name, o in (d.get("outcomes") or {}).items():
        dt.add_row(Text(visible(f"outcome {name}: mean (traces)")),
                   f"{_num(o['raw']['mean'])} ({o['raw']['traces']})",
                   f"{_num(o['curated']['mean'])} ({o['curated']['traces']})")
    out.print(dt)
    if d["relabelled_by"]:
        out.print(Text("relabelled by: " + ", ".join(f"{k} {v}" for k, v in
                                                      d["relabelled_by"].items())))
    t = rep["training"]
    if t:
        out.print(Text(f"training: model {visible(t['model'])} (job {t['job_id']}),"
                       f" {_num(t['steps'])} steps, loss {_num(t['first_loss'])} ->"
                       f" {_num(t['last_loss'])}, {_num(t['tokens_per_s'], '{:.1f}')} tokens/s"))
    e = rep["evaluation"]
    b = rep.get("baseline") or {}
    if e:
        prev, be = e.get("previous"), b.get("evaluation")
        cols = ["metric", "curated"] + (["vs previous run"] if prev else []) + (
            ["direct", "curated - direct"] if be else [])
        et = Table(*cols, title=Text(f"evaluation run {e['run_id']}, {_num(e['turns'])} turns,"
                                     f" model {visible(e['model'])}"))
        for k, v in e["metrics"].items():
            row = [k, _num(v)]
            if prev:
                row.append(_num(prev["delta"].get(k), "{:+.4f}"))
            if be:
                row += [_num(be["metrics"].get(k)), _num((b["delta"] or {}).get(k), "{:+.4f}")]
            et.add_row(*row)
        out.print(et)
        if prev:
            out.print(Text(f"previous: pipeline run {prev['pipeline_job']}, evaluation run"
                           f" {prev['run_id']}"))
    if b:
        out.print(Text(f"direct baseline: {b['definition']}"))
    out.print(Text("report: ") + Text(visible(str(Path(rep["folder"]) / "report.md"))))


def register(app: typer.Typer) -> None:
    pipe = typer.Typer(help="Run the whole loop (import, checks, curation, training,"
                       " evaluation) from one pipeline file.", no_args_is_help=True,
                       rich_markup_mode=None)
    app.add_typer(pipe, name="pipeline")

    @pipe.command("run")
    def run_cmd(
        ctx: typer.Context,
        file: Path = typer.Argument(..., metavar="PIPELINE.toml", help="the pipeline file"),
        from_stage: Optional[str] = typer.Option(None, "--from", metavar="STAGE",
                                                 help="run this stage and the ones after it"
                                                 " even if their inputs did not change"),
        baseline: Optional[str] = typer.Option(None, "--baseline", metavar="direct",
                                               help="direct: also train the same way on the"
                                               " raw traces and evaluate that model on the"
                                               " same test selection"),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Run the pipeline's stages in order as jobs under one pipeline job, skipping those
        whose parameters and data did not change and resuming a stopped one; then the report
        (terminal, and report.md in runs/pipeline-ID/)."""
        from workbench.jobs.runner import submit

        db = state(ctx).db()
        with user_errors():
            job_id = submit(db, "pipeline", {}, {"file": str(file.resolve()),
                                                 "from_stage": from_stage,
                                                 "baseline": baseline})
        row = run_foreground(ctx, job_id, quiet=as_json, progress_bar=True)
        if as_json:
            print_json(row["result"])
        else:
            print_report(row["result"])

    @pipe.command("init")
    def init_cmd(
        ctx: typer.Context,
        path: Path = typer.Argument(Path("pipeline.toml"), help="the file to write (never"
                                    " overwritten)"),
    ) -> None:
        """Write a commented example pipeline for the store's task: every stage and parameter,
        the ones that need no endpoint switched on, the store's files as [import]."""
        from workbench.pipeline.init import write_init

        with user_errors():
            write_init(state(ctx).db(), path)
        console.print(Text(f"wrote {visible(path)}: edit it, then `workbench pipeline run"
                           f" {visible(path)}`"))
