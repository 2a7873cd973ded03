"""CLI commands, one module per concern; each has `register(app)`."""

from __future__ import annotations

import typer


def register_all(app: typer.Typer) -> None:
    from workbench.commands import (checks, committee, data, evaluate, jobs, labels, pipeline,
                                    review, score, splits, synth, train)

    for module in (data, splits, checks, labels, review, committee, synth, train, evaluate,
                   score, jobs, pipeline):
        module.register(app)
