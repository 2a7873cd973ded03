"""What every command shares: the store it works on, output helpers, error reporting."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text
from sqlite_utils import Database

from db.queries import TraceFilter
from workbench.errors import InputError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@dataclass
class State:
    db_path: Path
    _db: Database | None = None

    def db(self) -> Database:
        if self._db is None:
            from db import open_db

            self._db = open_db(self.db_path)
        return self._db


def state(ctx: typer.Context) -> State:
    return ctx.find_root().obj


def print_json(value: Any) -> None:
    """Machine output: plain JSON on stdout, never through Rich (no markup, no wrapping)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")


def fail(message: str, code: int = 1) -> None:
    # soft_wrap: FILE:LINE stays on one line, where editors and grep find it
    err_console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn input errors into `error: FILE:LINE: ...` and exit code 1, never a traceback."""
    try:
        yield
    except InputError as e:
        fail(str(e))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))


# Trace selection options, shared by every command that takes `[filters]`.
Split = Annotated[Optional[str], typer.Option(help="train | test | unassigned")]
Origin = Annotated[Optional[str], typer.Option(help="imported | synthetic")]
Status = Annotated[Optional[str], typer.Option(help="label status: original | revised | proposed")]
Tool = Annotated[Optional[str], typer.Option(help="traces calling this tool")]
Check = Annotated[Optional[str], typer.Option(help="traces flagged by this check")]
Flagged = Annotated[Optional[bool], typer.Option("--flagged/--unflagged",
                                                 help="with / without error flags")]
Excluded = Annotated[Optional[bool], typer.Option("--excluded/--included",
                                                  help="excluded from training or not")]
Search = Annotated[Optional[str], typer.Option(help="full-text search over messages and calls")]


def filter_options(split: str | None = None, origin: str | None = None,
                   status: str | None = None, tool: str | None = None,
                   check: str | None = None, flagged: bool | None = None,
                   excluded: bool | None = None, search: str | None = None) -> TraceFilter:
    return TraceFilter(split=split, origin=origin, status=status, tool=tool, check=check,
                       flagged=flagged, excluded=excluded, text=search)
