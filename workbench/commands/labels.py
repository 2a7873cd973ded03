"""`workbench label ...`: the analyst's decisions from the command line, with the same meaning
as in the app (one module, `workbench.curation.decisions`)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.text import Text

from db.queries import TraceFilter
from workbench.commands.common import (console, fail, print_json, selection_options, state,
                                       user_errors)
from workbench.core.safe_text import visible


def _analyst(name: str | None) -> str:
    from workbench.core.config import load_config

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
                 stats: bool = typer.Option(False, "--stats", help="show the flags' statistical"
                                            " detail"),
                 as_json: bool = json_opt) -> None:
        """A turn's current label, its flags (and the trace's own), and every revision of it
        (proposals first to decide on)."""
        from db import revisions
        from db.browse import flags_of
        from workbench.commands.checks import flag_cell

        db = state(ctx).db()
        with user_errors():
            msgs = revisions.current_messages(db, trace_id)
            if not 0 <= turn < len(msgs):
                raise ValueError(f"trace {trace_id} has no message {turn}")
        hist = revisions.history(db, trace_id, turn)
        flags = [f for f in flags_of(db, trace_id) if f["message_idx"] in (turn, None)]
        if as_json:
            print_json({"trace_id": trace_id, "turn": turn, "current": msgs[turn],
                        "revisions": hist, "flags": flags})
            return
        cur = msgs[turn]
        console.print(Text(f"trace {trace_id} turn {turn} ({cur['role']})", style="bold"))
        console.print(Text(visible(_label_line(cur))))
        for f in flags:
            where = "trace" if f["message_idx"] is None else "turn"
            console.print(Text(visible(f"  {f['severity']} {f['check_name']} ({where}): "))
                          + flag_cell(f, stats))
        for r in hist:
            console.print(Text(visible(
                f"  #{r['id']} {r['status']:<8} {r['author_kind']}:{r['author_name']}"
                f"  {r.get('reason') or ''}  " + _label_line(r))))

    def turn_decision(name: str, doc: str):
        def cmd(ctx: typer.Context, trace_id: int, turn: int,
                analyst: Optional[str] = analyst_opt, as_json: bool = json_opt) -> None:
            from workbench.curation import decisions

            with user_errors():
                outcome = getattr(decisions, name)(state(ctx).db(), trace_id, turn,
                                                   _analyst(analyst))
            _report(outcome, as_json)
        cmd.__doc__ = doc
        label.command(name)(cmd)

    @label.command("keep")
    @selection_options
    def keep_cmd(ctx: typer.Context,
                 trace: Optional[int] = typer.Argument(None, help="the trace id"),
                 turn: Optional[int] = typer.Argument(None, help="the turn (message index);"
                                                      " without it: the trace's own flags"),
                 flag: Optional[list[str]] = typer.Option(
                     None, "--flag", help="only the flags of this check are not a problem"
                     " (repeatable); the label and its proposals are left as they are"),
                 severity: Optional[str] = typer.Option(None, "--severity", help="bulk: only"
                                                        " flags of this severity (error |"
                                                        " warning)"),
                 *, selection: TraceFilter,
                 analyst: Optional[str] = analyst_opt, as_json: bool = json_opt) -> None:
        """Keep a turn's label: open proposals are rejected and its flags are "not a problem"
        (their check does not raise them there again, and demotes the same kind of finding
        elsewhere to a warning). TRACE alone (or with --flag): the trace's own flags (a
        trace-level error no longer excludes it). Without TRACE, --check NAME and any
        selection: every flag of that check on the selected traces, as one action.
        `workbench label undo-keep` takes the newest back."""
        from workbench.curation import decisions

        db = state(ctx).db()
        with user_errors():
            if trace is None:
                if not selection.check:
                    fail("say which turn (TRACE TURN), which trace (TRACE), or which"
                         " check's flags to keep in bulk (--check NAME, with any selection)")
                if severity not in (None, "error", "warning"):
                    fail(f"--severity must be error or warning, not {severity!r}")
                outcome = decisions.dismiss_check(db, selection.check, _analyst(analyst),
                                                  selection=selection, severity=severity)
            elif not selection.is_empty() or severity:
                fail("a selection (or --severity) goes with a bulk keep (--check NAME without"
                     " TRACE); for one trace give TRACE [TURN] [--flag CHECK]")
            elif turn is not None and not flag:
                outcome = decisions.keep(db, trace, turn, _analyst(analyst))
            else:
                outcome = decisions.dismiss(db, trace, turn, _analyst(analyst),
                                            checks=list(flag or []) or None)
        _report(outcome, as_json)

    @label.command("undo-keep")
    def undo_keep_cmd(ctx: typer.Context,
                      action: Optional[str] = typer.Option(None, "--action", help="the action id"
                                                           " (default: the newest)"),
                      analyst: Optional[str] = analyst_opt, as_json: bool = json_opt) -> None:
        """Take back a "not a problem" decision: its flags come back and flags it demoted get
        their severity back (the label itself is left as it is: `label undo` for that)."""
        from workbench.curation import decisions

        with user_errors():
            outcome = decisions.undo_dismissal(state(ctx).db(), _analyst(analyst), action)
        _report(outcome, as_json)

    turn_decision("drop", "Drop the turn from training (an error flag `review.drop`).")
    turn_decision("undo", "Bring back the label before the current one (as a new revision).")

    def revision_decision(name: str, doc: str):
        def cmd(ctx: typer.Context, revision_id: int,
                analyst: Optional[str] = analyst_opt, as_json: bool = json_opt) -> None:
            from workbench.curation import decisions

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
        from workbench.curation import decisions
        from workbench.conversations.turns import parse_call_json

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
            from workbench.curation import decisions

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
            from workbench.curation import decisions

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
        from workbench.curation import decisions

        with user_errors():
            outcome = decisions.undo_exclusion(state(ctx).db(), _analyst(analyst), action)
        _report(outcome, as_json)
    label.command("include")(exclusion(False, "Include the selected traces in training (the"
                                       " analyst's decision wins over the checks)."))
