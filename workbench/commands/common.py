"""What every command shares: the store it works on, output helpers, error reporting."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console, ConsoleDimensions
from rich.text import Text
from sqlite_utils import Database

from db.queries import TraceFilter
from workbench.core.errors import InputError
from workbench.jobs.fields import Field, fields_of
from workbench.core.safe_text import visible, visible_json

UNBOUNDED_WIDTH = 100_000   # "no wrapping": reports written to a file or pipe


class ReportConsole(Console):
    """A console that wraps and cuts only on a terminal. Written to a file or a pipe (no tty),
    Rich would lay reports out for the width of whatever terminal it finds, or 80 columns, and
    cut file names and details; there it lays them out at their full width (an explicit
    `COLUMNS` still wins)."""

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(UNBOUNDED_WIDTH, dims.height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = ReportConsole(highlight=False)
err_console = ReportConsole(stderr=True, highlight=False)


@dataclass
class State:
    db_path: Path
    debug: bool = False      # `--debug`: failures show their traceback
    _db: Database | None = None

    def db(self) -> Database:
        if self._db is None:
            from db import open_db

            self._db = open_db(self.db_path)
        return self._db


def state(ctx: typer.Context) -> State:
    return ctx.find_root().obj


def print_json(value: Any) -> None:
    """Machine output: plain JSON on stdout, never through Rich (no markup, no wrapping).
    Control, bidi and zero-width characters inside strings are written as JSON escapes
    (`\\u001b`, `\\u202e`): the JSON reads back exactly, and a terminal is not steered by it."""
    sys.stdout.write(visible_json(json.dumps(value, ensure_ascii=False, indent=2, default=str))
                     + "\n")


def print_json_stream(head: dict, key: str, items: Iterable[Any]) -> None:
    """`print_json` of `{**head, key: list(items)}` written item by item, so a long list is
    never held whole (the same escapes; one item per line)."""
    text = json.dumps(head, ensure_ascii=False, default=str)
    sys.stdout.write(visible_json(text[:-1]) + (", " if head else "") + json.dumps(key) + ": [")
    for i, item in enumerate(items):
        sys.stdout.write((",\n  " if i else "\n  ")
                         + visible_json(json.dumps(item, ensure_ascii=False, default=str)))
    sys.stdout.write("\n]}\n")


def fail(message: str, code: int = 1) -> None:
    """`error: MESSAGE` on stderr, keys redacted, and exit `code`."""
    from workbench.core.redaction import redact

    # soft_wrap: FILE:LINE stays on one line, where editors and grep find it
    err_console.print(Text("error: ", style="bold red") + Text(visible(redact(message))),
                      soft_wrap=True)
    raise typer.Exit(code)


def failure_message(e: BaseException, db_path: Path | None = None) -> str:
    """An expected failure in one line a user can act on (no traceback)."""
    import sqlite3

    from db.tx import StoreBusy

    store = f" {db_path}" if db_path is not None else ""
    if isinstance(e, StoreBusy) or isinstance(e, sqlite3.OperationalError) and any(
            w in str(e) for w in ("locked", "busy")):
        return (f"the store{store} is busy: another process held its write lock for too long"
                f" ({e}); try again when it is done")
    if isinstance(e, sqlite3.DatabaseError) and "readonly" in str(e):
        return (f"the store{store} is read-only (a read-only file or mount): it opens for"
                f" reading (stats, export, jobs list) but cannot be changed ({e})")
    if isinstance(e, sqlite3.DatabaseError):
        return f"the store{store} cannot be used: {e}"
    if isinstance(e, RecursionError):
        return ("input nested too deeply to process (RecursionError); data imported now is"
                " limited to 100 levels of JSON")
    if isinstance(e, MemoryError):
        return "out of memory"
    if isinstance(e, (InputError, ValueError, OSError)):
        return str(e) or type(e).__name__
    return f"{type(e).__name__}: {e} (an unexpected failure: --debug shows where it happened)"


def report_failure(e: BaseException, db_path: Path | None = None) -> None:
    """Print `error: ...` for `e` on stderr and exit 1."""
    fail(failure_message(e, db_path))


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn input errors into `error: FILE:LINE: ...` and exit code 1, never a traceback."""
    try:
        yield
    except InputError as e:
        fail(str(e))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))


def cli_option(f: Field) -> tuple[str, Any, Any]:
    """A field as a typer option: its flag, default and help (choices and how to repeat said)."""
    help_text = f.help
    if f.choices and not all(str(c) in help_text for c in f.choices):
        help_text += f" ({' | '.join(map(str, f.choices))})"
    name = (f.cli or f.name).replace("-", "_")
    if f.base == "bool":
        if f.optional:
            off = "--" + (f.off or "no-" + f.option[2:])
            return name, Optional[bool], typer.Option(None, f"{f.option}/{off}", help=help_text)
        return name, bool, typer.Option(f.default, f"{f.option}/--no-{f.option[2:]}",
                                        help=help_text)
    if f.base.startswith("list"):
        item = int if f.base == "list[int]" else str
        return name, Optional[list[item]], typer.Option(  # type: ignore[valid-type]
            None, f.option, help=help_text + ("" if item is int else " (comma list, or repeat)"))
    hint = {"int": int, "float": float, "str": str}[f.base]
    return name, (Optional[hint] if f.optional else hint), typer.Option(
        f.default, f.option, help=help_text)


# Trace selection options, shared by every command that takes `[selection]`: made from the
# selection's fields, so every such command has the same names, help and validation.
SELECTION_FIELDS = fields_of(TraceFilter)
SELECTION_OPTIONS: list[tuple[str, Any, Any]] = [cli_option(f) for f in SELECTION_FIELDS]


def selection_from(values: dict) -> dict:
    """CLI option values -> the fields of a `TraceFilter` (only those given)."""
    by_option = {(f.cli or f.name).replace("-", "_"): f.name for f in SELECTION_FIELDS}
    out = {by_option[k]: v for k, v in values.items() if v is not None and v != []}
    TraceFilter.from_dict(out)  # validates: a bad value is an error before anything runs
    return out


def _extend_signature(fn: Callable, extra: list[inspect.Parameter],
                      drop: tuple[str, ...]) -> inspect.Signature:
    sig = inspect.signature(fn)
    keep = [p for p in sig.parameters.values() if p.name not in drop]
    names = {p.name for p in keep}
    clash = [p.name for p in extra if p.name in names]
    if clash:
        raise TypeError(f"{fn.__name__}: options {clash} defined twice")
    return sig.replace(parameters=keep + extra)


def _option_params(options: list[tuple[str, Any, Any]]) -> list[inspect.Parameter]:
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                              annotation=ann) for name, ann, default in options]


def selection_options(fn: Callable) -> Callable:
    """Give a command the shared selection options; it receives `selection: TraceFilter`."""
    names = tuple(n for n, _, _ in SELECTION_OPTIONS)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {n: kwargs.pop(n) for n in names}
        with user_errors():
            kwargs["selection"] = TraceFilter.from_dict(selection_from(values))
        return fn(*args, **kwargs)

    wrapper.__signature__ = _extend_signature(fn, _option_params(SELECTION_OPTIONS),
                                              ("selection",))
    return wrapper


@dataclass
class JobRequest:
    """What a job command was asked to run (params as given, selection fields)."""

    kind: str
    params: dict
    selection: dict
    detach: bool


def job_options(kind: str, *, selection: bool = True) -> Callable[[Callable], Callable]:
    """Give a command the options of job `kind`: one per field of its Params, the shared
    selection options, and --detach. The command receives `job: JobRequest`."""
    from workbench.jobs.registry import get_spec

    spec = get_spec(kind)
    param_opts = [cli_option(f) for f in fields_of(spec.Params)]
    sel_opts = SELECTION_OPTIONS if selection else []
    detach_opt = ("detach", bool, typer.Option(
        False, "--detach", help="run in a background worker process and return at once"
        " (follow it with `workbench jobs show ID`)"))

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            params = {n: kwargs.pop(n) for n, _, _ in param_opts}
            params = {k: v for k, v in params.items() if v is not None}
            sel = {n: kwargs.pop(n) for n, _, _ in sel_opts}
            with user_errors():
                request = JobRequest(kind, params, selection_from(sel), kwargs.pop("detach"))
                spec.make_params(request.params)   # validate before anything runs
                spec.make_selection(request.selection)
            kwargs["job"] = request
            return fn(*args, **kwargs)

        wrapper.__signature__ = _extend_signature(
            fn, _option_params([*param_opts, *sel_opts, detach_opt]), ("job",))
        return wrapper

    return deco
