"""`workbench label ...`: the analyst's decisions from the command line, with the same meaning
as in the app (one module, `workbench.decisions`)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.text import Text

from db.queries import TraceFilter
from workbench.commands.common import (console, fail, print_json, selection_options, state,
                                       user_errors)
from workbench.safe_text import visible


def _analyst(name: str | None) -> str:
    from workbench.config import load_config

    return name or load_config().analyst


def _report(outcome, as_json: bool) -> None:
    if as_json:
        print_json({"message": outcome.message, "written": outcome.written,
                    "skipped": outcome.skipped, "revision_id": outcome.revision_id,
                    "action": outcome.action})
    else:
        console.print(Text(visible(outcome.message)))


def _label_line(turn: dict) -> str:
    """A label on one line: its text (JSON-quoted) and its calls (`[id] name {arguments}`)."""
    parts = [json.dumps(turn["content"], ensure_ascii=False)] if turn.get("content") else []
    for c in turn.get("tool_calls") or ():
        fn = c["function"]
        parts.append(f"[{c.get('id')}] {fn['name']} "
                     + json.dumps(fn["arguments"], ensure_ascii=False))
    return "  ".join(parts) or "(empty)"


def register(app: typer.Typer) -> None:
    label = typer.Typer(help="Decide on labels: keep, accept, reject, edit, drop, undo,"
                        " exclude (the same decisions as in the app).", no_args_is_help=True)
    app.add_typer(label, name="label")
    json_opt = typer.Option(False, "--json", help="machine-readable result")
    analyst_opt = typer.Option(None, "--analyst", help="author name (default: the config's"
                               " analyst, else the OS user)")

    @label.command("show")
    def show_cmd(ctx: typer.Context, trace_id: int, turn: int,
                 as_json: bool = json_opt) -> None:
        """A turn's current label and every revision of it (proposals first to decide on)."""
        from db import revisions

        db = state(ctx).db()
        with user_errors():
            msgs = revisions.current_messages(db, trace_id)
            if not 0 <= turn < len(msgs):
                raise ValueError(f"trace {trace_id} has no message {turn}")
        hist = revisions.history(db, trace_id, turn)
        if as_json:
            print_json({"trace_id": trace_id, "turn": turn, "current": msgs[turn],
                        "revisions": hist})
            return
        cur = msgs[turn]
        console.print(Text(f"trace {trace_id} turn {turn} ({cur['role']})", style="bold"))
        console.print(Text(visible(_label_line(cur))))
        for r in hist:
            console.print(Text(visible(
                f"  #{r['id']} {r['status']:<8} {r['author_kind']}:{r['author_name']}"
                f"  {r.get('reason') or ''}  " + _label_line(r))))

    def turn_decision(name: str, doc: str):
        def cmd(ctx: typer.Context, trace_id: int, turn: int,
                analyst: Optional[str] = analyst_opt, as_json: bool = json_opt) -> None:
            from workbench import decisions

            with user_errors():
                outcome = getattr(decisions, name)(state(ctx).db(), trace_id, turn,
                                                   _analyst(analyst))
            _report(outcome, as_json)
        cmd.__doc__ = doc
        label.command(name)(cmd)

    turn_decision("keep", "Keep the current label: reject open proposals; on a flagged turn,"
                  " record the decision (it ends the suspicion).")
    turn_decision("drop", "Drop the turn from training (an error flag `review.drop`).")
    turn_decision("undo", "Bring back the label before the current one (as a new revision).")

    def revision_decision(name: str, doc: str):
        def cmd(ctx: typer.Context, revision_id: int,
                analyst: Optional[str] = analyst_opt, as_json: bool = json_opt) -> None:
            from workbench import decisions

            with user_errors():
                outcome = getattr(decisions, name)(state(ctx).db(), revision_id,
                                                   _analyst(analyst))
            _report(outcome, as_json)
        cmd.__doc__ = doc
        label.command(name)(cmd)

    revision_decision("accept", "Accept a proposed revision; the turn's competing proposals"
                      " are rejected.")
    revision_decision("reject", "Reject a proposed revision.")

    @label.command("edit")
    def edit_cmd(ctx: typer.Context, trace_id: int, turn: int,
                 text: Optional[str] = typer.Option(None, "--text", help="the turn's text (a"
                                                    " reply to the user, or text beside the"
                                                    " calls)"),
                 call: Optional[list[str]] = typer.Option(
                     None, "--call", help='a call as JSON: {"name": ..., "arguments": {...}}'
                     ' (repeat for parallel calls, in order; an "id" is kept)'),
                 reason: str = typer.Option("", help="why (kept with the revision)"),
                 analyst: Optional[str] = analyst_opt, as_json: bool = json_opt) -> None:
        """Write a new label for a turn: exactly the --text and --call(s) given (text only: a
        text reply; calls only: calls without text; both: text with calls). It is validated
        against the tool schemas; open proposals are rejected."""
        from workbench import decisions
        from workbench.turns import parse_call_json

        if text is None and not call:
            fail("give the new label: --text TEXT, --call JSON (repeatable), or both")
        with user_errors():
            calls = [parse_call_json(raw, f"--call {n}") for n, raw in enumerate(call or [], 1)]
            outcome = decisions.edit(state(ctx).db(), trace_id, turn, _analyst(analyst),
                                     tool_calls=calls, content=text, reason=reason)
        _report(outcome, as_json)

    def bulk(status: str, doc: str):
        @selection_options
        def cmd(ctx: typer.Context, *, selection: TraceFilter,
                analyst: Optional[str] = analyst_opt, as_json: bool = json_opt) -> None:
            from workbench import decisions

            with user_errors():
                outcome = decisions.bulk_decide(state(ctx).db(), status, _analyst(analyst),
                                                selection=selection)
            _report(outcome, as_json)
        cmd.__doc__ = doc
        return cmd

    label.command("accept-all")(bulk("accepted", "Accept the open proposals of the selected"
                                     " traces; turns with competing proposals are skipped and"
                                     " counted."))
    label.command("reject-all")(bulk("rejected", "Reject the open proposals of the selected"
                                     " traces."))

    def exclusion(excluded: bool, doc: str):
        @selection_options
        def cmd(ctx: typer.Context, *, selection: TraceFilter,
                analyst: Optional[str] = analyst_opt, as_json: bool = json_opt) -> None:
            from workbench import decisions

            if selection.is_empty():
                fail("say which traces (--trace-id, or any selection option); refusing to"
                     " change every trace at once")
            with user_errors():
                outcome = decisions.set_excluded(state(ctx).db(), excluded, _analyst(analyst),
                                                 selection=selection)
            _report(outcome, as_json)
        cmd.__doc__ = doc
        return cmd

    label.command("exclude")(exclusion(True, "Exclude the selected traces from training."))

    @label.command("undo-exclude")
    def undo_exclude_cmd(ctx: typer.Context,
                         action: Optional[str] = typer.Option(None, "--action", help="the"
                                                              " action id (default: the newest)"),
                         analyst: Optional[str] = analyst_opt,
                         as_json: bool = json_opt) -> None:
        """Undo an exclude / include action; traces decided on again since keep that decision."""
        from workbench import decisions

        with user_errors():
            outcome = decisions.undo_exclusion(state(ctx).db(), _analyst(analyst), action)
        _report(outcome, as_json)
    label.command("include")(exclusion(False, "Include the selected traces in training (the"
                                       " analyst's decision wins over the checks)."))
