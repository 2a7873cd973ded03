"""`check` and `normalize`."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from workbench.commands.common import (Origin, Search, Split, Status, Tool, console,
                                       filter_options, print_json, state, user_errors)


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check_cmd(
        ctx: typer.Context,
        only: Optional[list[str]] = typer.Option(None, "--only", help="run only these checks"),
        model_checks: bool = typer.Option(
            False, "--model-checks", help="also run the model-based checks (coherence_model:"
            " a small local model through llama.cpp; minutes per hundred traces on a CPU,"
            " cached)"),
        split: Split = None,
        origin: Origin = None,
        status: Status = None,
        tool: Tool = None,
        search: Search = None,
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Run the checks (schema, structure, grounding, coherence, duplicates) and store flags.
        The model-based coherence_model check runs with --model-checks or --only."""
        from workbench.checks import DEFAULT_CHECKS, MODEL_CHECKS, run_checks_job

        selection = filter_options(split, origin, status, tool, search=search)
        names = list(only or DEFAULT_CHECKS) + (MODEL_CHECKS if model_checks and not only else [])
        with user_errors():
            report = run_checks_job(state(ctx).db(), selection, names)
        if as_json:
            print_json({k: report[k] for k in ("traces", "assistant_turns", "flags")})
            return
        table = Table("source:line", "msg", "check", "severity", "detail")
        for f in report["flags"][:200]:
            table.add_row(Text(f"{f['source']}:{f['line']}"),
                          "" if f["message_index"] is None else str(f["message_index"]),
                          f["check"], f["severity"], Text(f["detail"]))
        console.print(table)
        errors = sum(f["severity"] == "error" for f in report["flags"])
        console.print(Text(f"{report['traces']} traces, {report['assistant_turns']} assistant"
                           f" turns, {len(report['flags'])} flags ({errors} errors)"))

    @app.command("normalize")
    def normalize_cmd(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Map non-canonical tool calls onto the canonical tools (revisions, reversible)."""
        from workbench.jobs import run_job
        from workbench.normalize import normalize

        db = state(ctx).db()
        with user_errors():
            job = run_job(db, "normalize", lambda jctx: normalize(db), {})
            if job["status"] != "succeeded":
                raise ValueError(f"normalize failed: {job['error']}")
        result = job["result"]
        if as_json:
            print_json(result)
            return
        table = Table("from", "to", "calls", "confidence", "arguments")
        for m in result["mapping_summary"]:
            table.add_row(Text(m["from"]), Text(m["to"]), str(m["calls"]), f"{m['confidence']:.2f}",
                          Text(", ".join(f"{a}->{b}" for a, b in m["arguments"].items())))
        console.print(table)
        console.print(Text(f"{result['revisions']} revisions: {result['accepted']} accepted,"
                           f" {result['proposed']} proposed for review"))
