"""Data in and out: `import`, `export`, `stats`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from db.traces import stats as store_stats
from db.queries import TraceFilter
from workbench.commands.common import (console, err_console, print_json, selection_options,
                                       state, user_errors)
from workbench.conversations.messages import MAX_MESSAGE_BYTES
from workbench.core.safe_text import visible, visible_json


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_cmd(
        ctx: typer.Context,
        paths: list[Path] = typer.Argument(..., help="trace files (.jsonl), task files or folders"),
        split: Optional[str] = typer.Option(None, help="train | test | unassigned (default:"
                                            " test for files named test*, else unassigned)"),
        task: Optional[Path] = typer.Option(None, help="job_description.json or task.txt"),
        max_message_bytes: int = typer.Option(MAX_MESSAGE_BYTES, help="reject larger messages;"
                                              " a line (one trace) may be 16 times as long"),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
        outcome: Optional[list[str]] = typer.Option(
            None, "--outcome", help="a field of each record that is an outcome (a reward,"
            " score or feedback value; repeatable; a.b reaches into objects)"),
    ) -> None:
        """Import traces (OpenAI chat and fine-tuning, Anthropic Messages, ShareGPT, span
        exports of Langfuse, LangSmith, OpenTelemetry and OpenInference, TFT traces,
        question/answer; JSON Lines or a JSON array) and task files.

        Every key of a record beyond its conversation is kept as metadata (`--meta` selects on
        it); outcomes (`reward`, `score`, an `outcomes` object, the format's own, and the
        fields named with --outcome) are selected with `--outcome "reward<1"`.

        All or nothing: any bad line aborts everything with FILE:LINE and leaves the store
        unchanged. Traces are committed in batches that nothing shows until the import is
        complete, so the app and other jobs can write meanwhile. Traces already stored are not
        added again.
        """
        from workbench.traces.importing import import_files, report_dict

        db = state(ctx).db()
        with user_errors():
            reports = import_files(db, paths, split=split, task=task,
                                   max_message_bytes=max_message_bytes,
                                   outcomes=outcome or (),
                                   notify=lambda line: err_console.print(Text(line)))
        if as_json:
            print_json({"files": [report_dict(r) for r in reports], **store_stats(db)})
            return
        table = Table("file", "format", "split", "lines", "added", "duplicates", "notes")
        for r in reports:
            notes = []
            if r.tools_added:
                notes.append("tools: " + ", ".join(r.tools_added))
            if r.task_updated:
                notes.append("task updated")
            if r.outcomes:
                notes.append("outcomes: " + ", ".join(f"{k} ({n})" for k, n in r.outcomes.items()))
            table.add_row(Text(visible(r.source)), r.format, Text(visible(r.split or "")),
                          str(r.lines), str(r.added), str(r.duplicates),
                          Text(visible("; ".join(notes))))
        console.print(table)
        s = store_stats(db)
        console.print(Text(f"store: {s['traces']} traces, {s['messages']} messages,"
                           f" {s['assistant_turns']} assistant turns"))

    @app.command("export")
    @selection_options
    def export_cmd(
        ctx: typer.Context,
        selection: TraceFilter,
        out: Path = typer.Argument(..., help="output JSONL file, or - for standard output"
                                   " (the summary then goes to stderr)"),
        fmt: str = typer.Option("openai", "--format", help="openai | pairs | hf |"
                                " llamafactory | axolotl | trl"),
        as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    ) -> None:
        """Export current labels (originals with accepted revisions applied).

        OUT is replaced only when the export is complete, and never when it is something other
        than a regular file (a device, pipe, link or folder). With OUT `-` the lines go to
        stdout and the summary (`--json` too) to stderr, so stdout is pure JSONL."""
        import json
        import sys

        from workbench.commands.common import err_console
        from workbench.traces.exporting import STDOUT, check_format, export

        to_stdout = str(out) == STDOUT
        with user_errors():
            check_format(fmt)
            result = export(state(ctx).db(), STDOUT if to_stdout else out, fmt, selection)
        if as_json:
            if to_stdout:
                sys.stderr.write(visible_json(json.dumps(result, ensure_ascii=False, indent=2))
                                 + "\n")
            else:
                print_json(result)
            return
        where = "standard output" if to_stdout else visible(out)
        said = (err_console if to_stdout else console)
        said.print(Text(
            f"wrote {result['lines']} lines ({result['traces']} traces, format {fmt}) to {where}"))
        for key, what in (("skipped_shape", ("conversations left out: LLaMA-Factory needs user"
                                             " and tool turns alternating with the model's")),
                          ("masks_lost", ("turns out of training here (weight 0 or suspect)"
                                          " that this format cannot mask")),
                          ("text_dropped", ("assistant texts beside a call that a function_call"
                                            " turn cannot hold"))):
            if result.get(key):
                said.print(Text(f"  {result[key]} {what}"))
        if result.get("dataset_info"):
            said.print(Text(f"  dataset entry {visible(Path(out).stem)} written to"
                            f" {visible(result['dataset_info'])}"))

    @app.command("stats")
    def stats_cmd(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="print as JSON"),
    ) -> None:
        """Counts of traces, messages, turns and calls, by split and origin."""
        s = store_stats(state(ctx).db())
        if as_json:
            print_json(s)
            return
        table = Table("what", "count", show_header=False)
        for key in ("traces", "messages", "assistant_turns", "tool_calls", "excluded"):
            table.add_row(key.replace("_", " "), str(s[key]))
        for group in ("by_split", "by_origin", "revisions", "flags"):
            for k, v in s[group].items():
                table.add_row(Text(visible(f"{group.replace('by_', '').replace('_', ' ')}: {k}")),
                              str(v))
        table.add_row("tools called", Text(visible(", ".join(s["tools"]))))
        console.print(table)
