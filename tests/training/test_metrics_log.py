"""The training curve read back from a job's stored log lines."""

from __future__ import annotations

from workbench.training.metrics_log import fmt_eta, parse_metrics, summary

LOG = "\n".join([
    "training into runs/job-1",
    'metrics {"step": 1, "loss": 2.5, "lr": 0.0002, "tokens_per_s": 310.5, "eta_s": 120.0}',
    "metrics {not json",
    'metrics ["a list"]',
    'metrics {"loss": 9}',                                     # no step
    'metrics {"step": 2, "loss": 2.0, "lr": 0.00015, "tokens_per_s": 320, "eta_s": 60}',
    'metrics {"step": 3, "loss": "NaN", "lr": null, "tokens_per_s": 330, "eta_s": 30}',
    'metrics {"step": 2, "loss": 1.9, "lr": 0.00015, "tokens_per_s": 321, "eta_s": 61}',  # resumed
    "step 3/4 · loss 1.9",
])


def test_parse_metrics_keeps_good_points_in_step_order():
    pts = parse_metrics(LOG)
    assert [p["step"] for p in pts] == [1, 2, 3]
    assert pts[1]["loss"] == 1.9 and pts[1]["tokens_per_s"] == 321.0
    assert pts[2]["loss"] is None and pts[2]["lr"] is None     # a string is not a number
    assert parse_metrics(None) == [] and parse_metrics("") == []


def test_summary_and_eta():
    s = summary(parse_metrics(LOG))
    assert s["step"] == 3 and s["loss"] == 1.9 and s["lr"] == 0.00015
    assert s["best_loss"] == 1.9 and s["eta_s"] == 30.0 and s["steps"] == 3
    assert fmt_eta(None) == "-" and fmt_eta(59) == "59s" and fmt_eta(61) == "1m01s"
    assert fmt_eta(3725) == "1h02m"


def test_the_app_helpers_do_not_import_textual():
    """The form fields, the results' data and the curve parser stay usable without the app."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent.parent
    code = ("import sys, workbench.jobs.forms, workbench.evaluation.results,"
            " workbench.training.metrics_log; print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.stdout.strip() == "False", out.stderr


def test_training_metrics_are_stored_as_rows_and_preferred_to_log_lines(tmp_path):
    from db import open_db
    from db import jobs as store
    from workbench.jobs.context import JobContext, Metrics
    from workbench.training.metrics_log import job_points

    db = open_db(tmp_path / "w.db")
    job_id = store.create_job(db, "train")
    seen = []
    ctx = JobContext(db, job_id, [seen.append])
    ctx.metrics({"step": 2, "loss": 1.5, "lr": 1e-4})
    ctx.metrics({"step": 1, "loss": 2.0})
    ctx.metrics({"step": 2, "loss": 1.25})          # a resumed run records step 2 again
    rows = store.job_metrics(db, job_id)
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["loss"] == 1.25
    assert seen == [Metrics({"step": 2, "loss": 1.5, "lr": 1e-4}), Metrics({"step": 1, "loss": 2.0}),
                    Metrics({"step": 2, "loss": 1.25})]
    assert store.get_job(db, job_id)["log"] == ""    # no metrics text in the log
    points = job_points(rows, LOG)
    assert [p["step"] for p in points] == [1, 2] and points[1]["loss"] == 1.25
    assert job_points([], LOG) == parse_metrics(LOG)   # runs from before: their log lines
