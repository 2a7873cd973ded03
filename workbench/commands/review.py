"""`workbench review ...`: sample a check's flags for the analyst to judge, and the precision
their verdicts give each check (`workbench.curation.precision`)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from db.queries import TraceFilter
from workbench.commands.common import (console, fail, print_json, selection_options, state,
                                       user_errors)
from workbench.core.safe_text import visible


def _items_table(items: list[dict]) -> Table:
    table = Table("trace", "turn", "check", "severity", "detail")
    for it in items:
        table.add_row(str(it["trace_id"]),
                      "trace" if it["message_idx"] is None else str(it["message_idx"]),
                      Text(visible(it["check"])), Text(visible(it["severity"])),
                      Text(visible(it["detail"])))
    return table


JUDGE_HELP = ("judge each: not a problem `workbench label keep TRACE TURN` (a trace's own"
              " flag: `label keep TRACE --flag CHECK`, or `label include`); real `label drop`,"
              " `label edit` or `label exclude`; or in the app's review queue (S)")


def register(app: typer.Typer) -> None:
    review = typer.Typer(help="Sample a check's flags, judge them, and see each check's"
                         " precision with a 95% interval.", no_args_is_help=True)
    app.add_typer(review, name="review")
    json_opt = typer.Option(False, "--json", help="machine-readable result")

    @review.command("sample")
    @selection_options
    def sample_cmd(ctx: typer.Context,
                   n: int = typer.Option(30, "--n", help="how many flags to draw"),
                   seed: Optional[int] = typer.Option(None, "--seed", help="draw the same"
                                                      " flags again (default: at random)"),
                   severity: Optional[str] = typer.Option(None, "--severity", help="only flags"
                                                          " of this severity (error |"
                                                          " warning)"),
                   *, selection: TraceFilter, as_json: bool = json_opt) -> None:
        """Draw a random sample of the flags of a check (--check NAME; with any selection) that
        no earlier sample of it holds, for the analyst to judge. Each verdict counts toward
        the check's precision (`workbench review precision`)."""
        from db.teaching import open_sample_items
        from workbench.curation import precision

        if not selection.check:
            fail("say which check's flags to sample: --check NAME")
        if severity not in (None, "error", "warning"):
            fail(f"--severity must be error or warning, not {severity!r}")
        db = state(ctx).db()
        with user_errors():
            out = precision.draw(db, selection.check, n, selection, seed=seed,
                                 severity=severity)
        items = open_sample_items(db, selection.check)
        if as_json:
            print_json({**out, "waiting": items})
            return
        console.print(Text(visible(
            f"{out['drawn']} of {out['population']} flag(s) of {selection.check} not sampled"
            f" before drawn; {len(items)} wait for a verdict")))
        if items:
            console.print(_items_table(items))
            console.print(Text(JUDGE_HELP))

    @review.command("list")
    def list_cmd(ctx: typer.Context,
                 check: Optional[str] = typer.Option(None, "--check", help="only this check's"),
                 as_json: bool = json_opt) -> None:
        """The sampled flags still waiting for a verdict."""
        from db.teaching import open_sample_items

        items = open_sample_items(state(ctx).db(), check)
        if as_json:
            print_json(items)
            return
        if not items:
            console.print(Text("no sampled flag waits for a verdict"))
            return
        console.print(_items_table(items))
        console.print(Text(JUDGE_HELP))

    @review.command("precision")
    def precision_cmd(ctx: typer.Context, as_json: bool = json_opt) -> None:
        """Each sampled check's precision: the share of its judged flags that were real
        problems, with a 95% Wilson interval."""
        from workbench.curation import precision

        rows = precision.report(state(ctx).db())
        if as_json:
            print_json(rows)
            return
        if not rows:
            console.print(Text("no sample yet: `workbench review sample --check NAME`"))
            return
        table = Table("check", "precision", "95% interval", "real", "not a problem", "waiting")
        for r in rows:
            table.add_row(Text(visible(r["check"])),
                          "-" if r["precision"] is None else f"{r['precision']:.0%}",
                          f"{r['interval'][0]:.0%} to {r['interval'][1]:.0%}",
                          str(r["real"]), str(r["not_a_problem"]), str(r["open"]))
        console.print(table)
