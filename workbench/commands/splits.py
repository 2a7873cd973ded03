"""`workbench split`: draw a test split from the store, move traces between splits, undo; the
same decisions as the app's (`workbench.curation.decisions`)."""

from __future__ import annotations

import re
from typing import Optional

import typer
from rich.text import Text

from db.queries import SPLITS, TraceFilter
from db.splits import split_counts
from workbench.commands.common import (console, fail, print_json, selection_options, state,
                                       user_errors)
from workbench.core.safe_text import visible


def parse_ids(text: str) -> list[int]:
    """`3,5,9-12` (commas or spaces; ranges) -> trace ids."""
    ids: list[int] = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"--move {text!r}: {part!r} is not a trace id or a range (3-7)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or hi - lo > 1_000_000:
            raise ValueError(f"--move {text!r}: bad range {part!r}")
        ids += range(lo, hi + 1)
    if not ids:
        raise ValueError("--move: no trace id given")
    return ids


def register(app: typer.Typer) -> None:
    @app.command("split")
    @selection_options
    def split_cmd(
        ctx: typer.Context,
        *,
        selection: TraceFilter,
        test: Optional[str] = typer.Option(None, "--test", help="draw a test split of this"
                                           " share of the imported traces: 10%, 0.1 or a number"
                                           " of traces; the others go to train"),
        by: Optional[str] = typer.Option(None, "--by", help="keep traces with the same value"
                                         " of this metadata field together (a user or session"
                                         " id; `a.b` for a nested key; `source`: the file)"),
        seed: int = typer.Option(0, "--seed", help="seed of the draw (same store, same split)"),
        move: Optional[str] = typer.Option(None, "--move", help="trace ids to move, e.g."
                                           " 3,5,9-12 (or use the selection options)"),
        to: Optional[str] = typer.Option(None, "--to", help="the split to move them to:"
                                         " train | test | unassigned"),
        undo: bool = typer.Option(False, "--undo", help="take back the newest split or move"
                                  " (or --action ID)"),
        action: Optional[str] = typer.Option(None, "--action", help="with --undo: that action"),
        analyst: Optional[str] = typer.Option(None, "--analyst", help="author name (default:"
                                              " the config's analyst, else the OS user)"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable result"),
    ) -> None:
        """Hold out a test split, move traces between splits, or show the splits.

        `--test 10% [--by FIELD] [--seed N]` draws whole groups (one user's or one session's
        conversations stay together) until the share is reached; traces in test already stay
        there, so running it again changes nothing. `--move IDS --to SPLIT` (or a selection and
        --to) moves chosen traces. Every change is a decision `--undo` takes back. Without an
        option: the number of traces in each split."""
        from workbench.curation import decisions
        from workbench.commands.labels import _analyst

        db = state(ctx).db()
        modes = [m for m, on in (("--test", test is not None), ("--to", to is not None),
                                 ("--undo", undo)) if on]
        if len(modes) > 1:
            fail(f"give one of --test, --move/--to, --undo (not {' and '.join(modes)})")
        if move is not None and to is None:
            fail("--move needs --to train | test | unassigned")
        if (by is not None) and test is None:
            fail("--by goes with --test")
        if action is not None and not undo:
            fail("--action goes with --undo")
        with user_errors():
            if test is not None:
                outcome = decisions.split_test(db, test, _analyst(analyst), by=by, seed=seed,
                                               selection=selection)
            elif to is not None:
                if to not in SPLITS:
                    raise ValueError(f"--to must be one of {', '.join(SPLITS)}, not {to!r}")
                ids = parse_ids(move) if move is not None else None
                if ids is None and selection.is_empty():
                    raise ValueError("say which traces: --move IDS or a selection option;"
                                     " refusing to move every trace at once")
                outcome = decisions.move_to_split(db, to, _analyst(analyst),
                                                  selection=selection, ids=ids)
            elif undo:
                outcome = decisions.undo_split(db, _analyst(analyst), action)
            else:
                outcome = None
        counts = split_counts(db)
        if as_json:
            out = {"splits": counts}
            if outcome is not None:
                out.update({"message": outcome.message, "written": outcome.written,
                            "skipped": outcome.skipped, "action": outcome.action})
            print_json(out)
            return
        if outcome is not None:
            console.print(Text(visible(outcome.message)))
        console.print(Text("splits: " + (", ".join(f"{k} {v}" for k, v in counts.items())
                                         or "no traces")))
