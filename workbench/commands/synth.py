"""`synth`: new conversations from clean seeds, offline or by a teacher LLM (a job)."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from workbench.commands.common import JobRequest, console, job_options, print_json
from workbench.commands.jobs import run_request
from workbench.core.safe_text import visible


def print_synth(result: dict) -> None:
    console.print(Text(
        f"{result['method']}: {result['accepted']}/{result['target']} accepted of"
        f" {result['candidates']} candidates (acceptance {result['acceptance_rate']:.0%}) from"
        f" {result['seeds']} seeds; test leaks stored: {result['test_leaks_stored']}"
        + (f"; {result['repeats']} repeated draws skipped" if result.get("repeats") else "")))
    if "stored" in result:
        console.print(Text(
            f"stored as synthetic traces: {result['stored']}"
            + (f"; {result['kept_earlier']} kept by earlier runs of this job count toward the"
               " target" if result.get("kept_earlier") else "")
            + (f"; {result['surplus']} dropped (another run of this job reached the target"
               " meanwhile)" if result.get("surplus") else "")))
    if result["rejected"]:
        console.print(Text("rejected: " + ", ".join(f"{k} {v}" for k, v in
                                                    result["rejected"].items())))
    rep = result["report"]
    table = Table("topic", "target", "reached", "share %", "target %", "bucket", "in bucket")
    for t in rep["per_topic"]:
        table.add_row(Text(visible(t["topic"])[:60]), str(t["target"]), str(t["reached"]),
                      str(t["share"]), str(t["target_share"]), t.get("bucket", ""),
                      str(t.get("in_bucket", "")))
    console.print(table)
    table = Table("tool", "synthetic calls", "share %", "seed share %")
    for t in rep["per_tool"]:
        table.add_row(Text(visible(t["tool"])), str(t["synthetic"]), str(t["share"]),
                      str(t["seed_share"]))
    console.print(table)
    table = Table("argument", "distinct", "in seeds", "new", "most common (share %)")
    for a in rep["per_argument"]:
        top = ", ".join(f"{v['value']} ({v['share']})" for v in a["top"][:3])
        table.add_row(Text(visible(a["argument"])), str(a["distinct"]), str(a["seed_distinct"]),
                      str(a["new_values"]), Text(visible(top)[:80]))
    console.print(table)
    if "requests" in result:
        console.print(Text(f"teacher {visible(result['teacher'])}: {result['requests']}"
                           f" requests, {result['replies_reused']} replies reused,"
                           f" {result['failed']} failed"))
        from workbench.commands.committee import print_batch

        print_batch(result.get("batch"))


def register(app: typer.Typer) -> None:
    @app.command("synth")
    @job_options("synth")
    def synth_cmd(
        ctx: typer.Context,
        job: JobRequest,
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """New training conversations from clean seeds: --offline re-fills the values that
        flow through the tools, --teacher NAME has an LLM write them. Every candidate is
        validated by the checks (and against duplicates and the test set) before it is stored
        as a synthetic trace; rejected ones are kept with their reasons."""
        result = run_request(ctx, job, quiet=as_json)["result"]
        if as_json:
            print_json(result)
        else:
            print_synth(result)
