"""The `workbench` command: `workbench` alone opens the app; subcommands run headless."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from typer._click import exceptions as click_errors   # typer's own click (vendored)
from typer.core import TyperGroup

from workbench.commands import register_all
from workbench.commands.common import State, fail, report_failure

DEFAULT_DB = "workbench.db"


class _Commands(TyperGroup):
    """Every command's failures end as one `error: ...` line on stderr and a non-zero exit
    code, usage errors (a missing argument, an unknown command or option) included;
    `--debug` lets the exception (and its traceback) through instead."""

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except click_errors.NoArgsIsHelpError:
            raise   # a group called bare shows its help
        except click_errors.UsageError as e:
            sub = (e.ctx.command_path[len(e.ctx.find_root().command_path):].strip()
                   if e.ctx else "")
            where = f"workbench {sub}".strip()
            fail(f"{e.format_message()} (see `{where} --help`)")
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise   # typer's own: usage errors, exits with a code, Ctrl-C
        except Exception as e:  # noqa: BLE001 - mapped to one line, or re-raised with --debug
            if getattr(ctx.obj, "debug", False):
                raise
            report_failure(e, getattr(ctx.obj, "db_path", None))


app = typer.Typer(
    cls=_Commands,
    help="Curate tool-calling traces and turn them into a small fine-tuned model.",
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    db: Path = typer.Option(Path(DEFAULT_DB), "--db", envvar="WORKBENCH_DB",
                            help="SQLite store to use (created if missing)."),
    debug: bool = typer.Option(False, "--debug", help="on a failure, show the traceback"
                               " instead of one error line"),
) -> None:
    """Without a command: open the workbench app on the store."""
    ctx.obj = State(db_path=db, debug=debug)
    if ctx.invoked_subcommand is None:
        from workbench.app import make_app  # Textual loads only when the app opens
        from workbench.app.terminal_watch import watch_terminal

        if sys.stdin.isatty():   # a closed terminal ends the app instead of leaving it spinning
            watch_terminal(sys.stdin.fileno())
        make_app(db_path=db).run()


register_all(app)


# tqdm bars of transformers, datasets and huggingface_hub redraw with carriage returns: in a
# file or a pipe every redraw is a line (thousands per model load); our own jobs print one
# progress line per stage there instead (commands.jobs.run_foreground)
LIBRARY_BARS_OFF = ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS",
                    "HF_HUB_DISABLE_PROGRESS_BARS")


def quiet_library_bars(stream=None) -> None:
    """Switch the libraries' progress bars off when `stream` (stderr) is not a terminal; a
    variable the user set wins. Set in the environment, so workers and subprocesses follow."""
    stream = sys.stderr if stream is None else stream
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if not terminal:
        for name in LIBRARY_BARS_OFF:
            os.environ.setdefault(name, "1")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_library_bars()
    app()
