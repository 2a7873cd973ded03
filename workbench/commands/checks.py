"""`check` and `normalize`: jobs run through the one runner (foreground or --detach)."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from workbench.commands.common import (
    JobRequest, console, job_options, print_json, print_json_stream, state)
from workbench.commands.jobs import run_request
from workbench.core.safe_text import visible


TABLE_ROWS = 200  # a terminal shows the first flags; --json gives them all


def flag_cell(f: dict, stats: bool) -> Text:
    """A flag's sentence, what analysts taught its check, and its reasons (the statistical ones
    with --stats)."""
    from workbench.checks.flag_text import reasons, taught_note

    shown, hidden = reasons(f, stats)
    note = taught_note(f)
    return Text(visible(f["detail"]) + (f"\n{visible(note)}" if note else "") + "".join(
        f"\nwhy ({visible(str(e.get('source')))}): {visible(str(e.get('text')))}"
        for e in shown) + (f"\n({hidden} statistical detail(s): --stats)" if hidden else ""))


def register(app: typer.Typer) -> None:
    @app.command("check")
    @job_options("check")
    def check_cmd(
        ctx: typer.Context,
        job: JobRequest,
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
        stats: bool = typer.Option(False, "--stats", help="show each flag's statistical detail"
                                   " (scores, thresholds, shares) under its sentence"),
    ) -> None:
        """Run the checks (schema, structure, grounding, coherence, duplicates) and store flags.
        The model-based coherence_model check runs with --model-checks or --only. Flags marked
        "not a problem" are not raised again, and others like them are warnings at most."""
        from itertools import islice

        from db.queries import TraceFilter
        from workbench.checks import stored_report
        from workbench.checks.outcome_flags import flags_by_outcome

        row = run_request(ctx, job, quiet=as_json)
        result = row["result"]
        flags = stored_report(state(ctx).db(), row["selection"], result["checks"])
        sel = row["selection"]
        by_outcome = flags_by_outcome(state(ctx).db(), sel if isinstance(sel, TraceFilter)
                                      else TraceFilter.from_dict(sel))
        if as_json:
            print_json_stream({"traces": result["traces"],
                               "assistant_turns": result["assistant_turns"],
                               "calibration": result.get("calibration") or [],
                               **({"outcomes": by_outcome} if by_outcome else {})},
                              "flags", flags)
            return
        table = Table("source:line", "msg", "check", "severity", "detail")
        for f in islice(flags, TABLE_ROWS):
            table.add_row(Text(visible(f"{f['source']}:{f['line']}")),
                          "" if f["message_index"] is None else str(f["message_index"]),
                          Text(visible(f["check"])), Text(visible(f["severity"])),
                          flag_cell(f, stats))
        console.print(table)
        if result["flags"] > TABLE_ROWS:
            console.print(Text(f"{TABLE_ROWS} of {result['flags']} flags shown; all of them:"
                               " workbench check --json, or browse them in the app"))
        console.print(Text(f"{result['traces']} traces, {result['assistant_turns']} assistant"
                           f" turns, {result['flags']} flags ({result['errors']} errors)"))
        _print_calibration(result.get("calibration") or [])
        if by_outcome:
            out = Table("outcome", "failed: flagged", "successful: flagged", "split")
            for r in by_outcome:
                cells = [f"{s['flagged']}/{s['n']} = {s['share']:.0%}"
                         f" [{s['interval'][0]:.0%}, {s['interval'][1]:.0%}]"
                         for s in (r["failed"], r["successful"])]
                out.add_row(Text(visible(r["outcome"])), *cells, Text(visible(r["split"])))
            console.print(Text("error flags by outcome (95% intervals): the flags find damage"
                               " when failed conversations are flagged more often"))
            console.print(out)

    @app.command("normalize")
    @job_options("normalize")
    def normalize_cmd(
        ctx: typer.Context,
        job: JobRequest,
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Map non-canonical tool calls onto the canonical tools (revisions, reversible)."""
        result = run_request(ctx, job, quiet=as_json)["result"]
        if as_json:
            print_json(result)
            return
        table = Table("from", "to", "calls", "confidence", "arguments")
        for m in result["mapping_summary"]:
            table.add_row(Text(visible(m["from"])), Text(visible(m["to"])), str(m["calls"]),
                          f"{m['confidence']:.2f}",
                          Text(visible(", ".join(f"{a}->{b}" for a, b in m["arguments"].items()))))
        console.print(table)
        console.print(Text(f"{result['revisions']} revisions: {result['accepted']} accepted,"
                           f" {result['proposed']} proposed for review"))


def _share(s: dict) -> str:
    return (f"{s['flagged']}/{s['n']} = {s['share']:.0%}"
            f" [{s['interval'][0]:.0%}, {s['interval'][1]:.0%}]")


def _print_calibration(rows: list[dict]) -> None:
    """Per check and level: errors raised, the precision estimated on this corpus, the
    conversations flagged by outcome, and the severity the flags were stored with."""
    from workbench.checks.calibration import describe

    if not rows:
        return
    with_outcomes = any(r.get("outcomes") for r in rows)
    cols = ["check", "errors raised", "precision [95%]"]
    if with_outcomes:
        cols += ["failed: flagged", "successful: flagged"]
    table = Table(*cols, "severity used")
    for r in rows:
        name = r["check"] + (" (conversations)" if r["level"] == "trace" else "")
        p = ("no errors" if not r["errors"] else "not estimated" if r["precision"] is None else
             f"{r['precision']:.2f} [{r['interval'][0]:.2f}, {r['interval'][1]:.2f}]")
        cells = [Text(visible(name)), str(r["errors"]), p]
        if with_outcomes:
            o = r.get("outcomes")
            cells += ([_share(o["failed"]), _share(o["successful"])] if o else ["", ""])
        table.add_row(*cells, Text(visible(describe(r))))
    console.print(Text("severity per check: errors only where the check's precision estimated"
                       " on this corpus reaches 0.95, else warnings (override: --severity"
                       " CHECK=error|warning|auto)"))
    console.print(table)
    for r in {r["check"]: r for r in rows if (r.get("outcomes") or {}).get("warning")}.values():
        console.print(Text(visible(f"warning: {r['check']} {r['outcomes']['warning']}")))
    methods = dict.fromkeys(r["method"] for r in rows if r.get("method"))
    for m in methods:
        console.print(Text(visible(f"precision estimated from: {m}")))
    found = [f"{r['check']} {r['planted_found']:.0%}" for r in rows
             if r.get("planted_found") is not None]
    if found:
        console.print(Text(visible("planted damage found: " + ", ".join(found))))
