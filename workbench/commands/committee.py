"""`relabel` (the committee) and `agreement`: jobs and reports over the stored votes."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from workbench.commands.common import JobRequest, console, job_options, print_json
from workbench.commands.jobs import run_request
from workbench.safe_text import visible


def print_relabel(result: dict) -> None:
    out = result["outcomes"]
    console.print(Text(
        f"{result['voted']} turns voted on: {out['revised']} relabelled, {out['confirmed']}"
        f" confirmed, {out['review']} sent to review, {out['failed']} failed; {out['human']}"
        f" kept as the analyst decided"))
    table = Table("member", "calls", "tokens in", "tokens out", "cost", "failures")
    for name, m in result["members"].items():
        table.add_row(Text(visible(name)), str(m["calls"]), str(m["tokens_in"]),
                      str(m["tokens_out"]), "" if m["cost"] is None else f"{m['cost']:.4f}",
                      str(m["failures"]))
    console.print(table)
    console.print(Text(f"{result['calls']} calls ({result['calls_per_turn']} per turn);"
                       f" {result['units']['reused']} replies reused from earlier runs"))


def register(app: typer.Typer) -> None:
    @app.command("relabel")
    @job_options("relabel")
    def relabel_cmd(
        ctx: typer.Context,
        job: JobRequest,
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """A committee of LLMs votes on the doubtful turns: agreement becomes a revision (or a
        confirmation), disagreement goes to the arbiter or the review queue. Every vote is
        stored; an analyst's own label is never overwritten."""
        result = run_request(ctx, job, quiet=as_json)["result"]
        if as_json:
            print_json(result)
        else:
            print_relabel(result)
