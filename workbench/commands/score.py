"""`score`: the metrics of every kind of turn over a predictions file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from workbench.commands.common import console, print_json, user_errors
from workbench.evaluation.metrics import constant_floor, decision_confusion, read_predictions, score_rows


def register(app: typer.Typer) -> None:
    @app.command("score")
    def score_cmd(
        predictions: Path = typer.Argument(..., help="JSONL with 'answer' and 'prediction'"),
        as_json: bool = typer.Option(False, "--json", help="print means and per-row scores"),
    ) -> None:
        """Score predictions turn by turn: the decision (text, or which tools), the TFT
        benchmark's call metrics on call turns (staged, equivalence, function match; parallel
        calls matched as a set), ROUGE-L, and ROUGE-L of the text on turns with text; beside
        what the commonest decision, call and text would score."""
        from workbench.commands.evaluate import METRIC_ROWS, OVER, print_confusion, print_floor

        with user_errors():
            rows = list(read_predictions(predictions))
        result = score_rows(rows)
        result["floor"] = constant_floor([r["answer"] for r in rows])
        result["confusion"] = decision_confusion(
            (s["reference_decision"], s["predicted_decision"]) for s in result["rows"])
        if as_json:
            print_json(result)
            return
        table = Table("metric", "mean", "turns", title=f"{result['n']} predictions")
        for m in METRIC_ROWS:
            if m in result:
                table.add_row(m, f"{result[m]:.4f}", str(result.get(OVER[m], "")))
        console.print(table)
        print_floor(result["floor"], result)
        print_confusion(result["confusion"])
