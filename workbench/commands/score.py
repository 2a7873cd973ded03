"""`score`: benchmark metrics over a predictions file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from workbench.commands.common import console, print_json, user_errors
from workbench.metrics import METRICS, constant_floor, read_predictions, score_rows


def register(app: typer.Typer) -> None:
    @app.command("score")
    def score_cmd(
        predictions: Path = typer.Argument(..., help="JSONL with 'answer' and 'prediction'"),
        as_json: bool = typer.Option(False, "--json", help="print means and per-row scores"),
    ) -> None:
        """Score predictions exactly as the TFT benchmark does (staged, equivalence,
        function match, ROUGE-L), beside what the same call on every row would score."""
        with user_errors():
            rows = list(read_predictions(predictions))
        result = score_rows(rows)
        result["floor"] = constant_floor([r["answer"] for r in rows])
        if as_json:
            print_json(result)
            return
        table = Table("metric", "mean", title=f"{result['n']} predictions")
        for m in METRICS:
            table.add_row(m, f"{result[m]:.4f}")
        console.print(table)
        from workbench.commands.evaluate import print_floor

        print_floor(result["floor"], result)
