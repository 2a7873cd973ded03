"""Severity from measured evidence (#31): each check's precision estimated on the corpus, errors
only where it is high, overrides that win, outcomes as evidence, and off-domain verdicts that
need several signals (real data: tau-bench airline tune logs, the TFT restaurant scenarios)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db import open_db
from db.browse import get_setting
from db.flags import flags_for
from db.jobs import job_metrics
from workbench.checks import coherence, load_context, recheck_traces, run_checks
from workbench.checks.calibration import ERROR_PRECISION, SEVERITY_KEY
from workbench.cli import app
from workbench.traces.importing import import_files

DATA = Path(__file__).parent.parent / "data"
TAU = DATA / "tau-airline" / "tune.jsonl"
TFT = DATA / "tft"
runner = CliRunner()


def _tau_store(path: Path, lines: list[str] | None = None):
    src = path.parent / f"{path.stem}.jsonl"
    src.write_text("\n".join(lines if lines is not None else TAU.read_text().splitlines())
                   + "\n")
    db = open_db(path)
    import_files(db, [src])
    return db


def _stored(db, check: str, level: str) -> set[str]:
    return {f["severity"] for f in flags_for(db) if f["check"] == check
            and (f["message_idx"] is None) == (level == "trace")}


@pytest.fixture(scope="module")
def tau(tmp_path_factory):
    """The tau-bench airline tune logs (each with its reward) checked through the CLI once."""
    path = tmp_path_factory.mktemp("tau") / "w.db"
    db = _tau_store(path)
    res = runner.invoke(app, ["--db", str(path), "check", "--json"])
    assert res.exit_code == 0, res.output
    return path, db, json.loads(res.stdout)


def test_a_check_unreliable_on_a_corpus_raises_warnings_there(tau):
    """On these logs sampled flags were mostly wrong: the successful conversations (taken as
    clean) carry nearly as many, so the estimate is low and the check's flags are stored as
    warnings, which keep the turns in training."""
    path, db, out = tau
    rows = out["calibration"]
    demoted = [r for r in rows if r["errors"] and r["precision"] is not None
               and r["precision"] < ERROR_PRECISION]
    assert demoted, rows
    for r in rows:
        assert r["method"] is None or "successful conversations" in r["method"]
        if r in demoted:
            assert r["severity"] == "warning" and "below 0.95" in r["reason"], r
            assert r["false_alarms"][0] > 0      # measured: flags on successful conversations
            assert _stored(db, r["check"], r["level"]) == {"warning"}
        lo, hi = r["interval"] or (0, 1)
        assert 0 <= lo <= (r["precision"] if r["precision"] is not None else lo) <= hi <= 1
    # kept with the job for the app: the metrics and the result carry the estimates
    job = db.execute("SELECT id FROM jobs WHERE kind = 'check' ORDER BY id DESC").fetchone()[0]
    assert job_metrics(db, job)[0]["calibration"] == rows
    # a re-check of relabelled conversations gives the severities the run decided
    ids = [r[0] for r in db.execute("SELECT id FROM traces")]
    recheck_traces(db, ids)
    for r in demoted:
        if r["check"] in ("schema", "structure", "grounding"):
            assert "error" not in _stored(db, r["check"], r["level"])


def test_the_report_prints_each_checks_precision_and_severity(tau):
    path, _, out = tau
    res = runner.invoke(app, ["--db", str(path), "check", "--only", "grounding"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "precision [95%]" in text and "severity used" in text
    assert "successful conversations (reward: 1 is successful, 0 failed) taken as clean" in text


def test_an_override_wins_over_the_estimate_and_stays_in_the_store(tau):
    path, db, out = tau
    row = next(r for r in out["calibration"] if r["check"] == "coherence")
    assert row["severity"] == "warning", row     # the estimate demoted it on these logs
    res = runner.invoke(app, ["--db", str(path), "check", "--only", "coherence", "--severity",
                              "coherence=error", "--json"])
    assert res.exit_code == 0, res.output
    assert get_setting(db, f"{SEVERITY_KEY}.coherence") == "error"
    assert "error" in _stored(db, "coherence", "turn")
    again = json.loads(runner.invoke(app, ["--db", str(path), "check", "--only", "coherence",
                                           "--json"]).stdout)   # the setting is kept
    assert again["calibration"][0]["severity"] == "error"
    assert "set by the store's setting" in again["calibration"][0]["reason"]
    auto = json.loads(runner.invoke(app, ["--db", str(path), "check", "--only", "coherence",
                                          "--severity", "coherence=auto", "--json"]).stdout)
    assert auto["calibration"][0]["severity"] == "warning"
    assert "error" not in _stored(db, "coherence", "turn")
    bad = runner.invoke(app, ["--db", str(path), "check", "--severity", "coherence=loud"])
    assert bad.exit_code != 0 and "must be one of error, warning, auto" in bad.output


def test_the_pipeline_files_override_wins(tau, tmp_path):
    from workbench.jobs.runner import run as run_job_kind
    from workbench.pipeline.config import PipelineError, load_pipeline

    path, db, _ = tau
    pipe = tmp_path / "pipe.toml"
    pipe.write_text('[check]\nonly = ["grounding"]\nseverity = ["grounding=error"]\n')
    stage = load_pipeline(pipe).stages["check"]
    assert stage.params.severity == ["grounding=error"]
    run_job_kind(db, "check", stage.selection, stage.params)
    assert "error" in _stored(db, "grounding", "turn")
    pipe.write_text('[check]\nseverity = ["grounding=sometimes"]\n')
    with pytest.raises(PipelineError, match="pipe.toml.*check.*must be one of error"):
        load_pipeline(pipe)
    run_job_kind(db, "check", stage.selection, {"only": ["grounding"],
                                                "severity": ["grounding=auto"]})


def test_a_check_flagging_successful_conversations_more_gets_a_warning_line(tmp_path):
    """The same logs with each reward turned over: what the checks flag is now on the
    successful side more often, and the report says so for each check where it is."""
    lines = []
    for line in TAU.read_text().splitlines():
        rec = json.loads(line)
        rec["reward"] = 1.0 - rec["reward"]
        lines.append(json.dumps(rec))
    path = tmp_path / "w.db"
    _tau_store(path, lines)
    out = json.loads(runner.invoke(app, ["--db", str(path), "check", "--json"]).stdout)
    more = {r["check"] for r in out["calibration"] if r["outcomes"]
            and r["outcomes"]["successful"]["share"] > r["outcomes"]["failed"]["share"]}
    assert more
    res = runner.invoke(app, ["--db", str(path), "check"])
    text = " ".join(res.output.split())
    for r in out["calibration"]:
        line = f"warning: {r['check']} flags successful conversations more often"
        assert (line in text) == (r["check"] in more), (r["check"], text[-2000:])
        if r["check"] in more and r["errors"]:
            assert r["severity"] == "warning"


def test_errors_stay_errors_on_a_noisy_corpus_where_the_checks_are_right(tmp_path):
    """TFT scenario 2: about one assistant turn in ten corrupted, no outcomes. Damage planted in
    held-out conversations that no check flags finds few false alarms on their other turns,
    so the estimates are high and the errors that keep noisy turns out of the loss stay."""
    db = open_db(tmp_path / "w.db")
    import_files(db, [TFT / "scenario-2-noisy-labels" / "traces.jsonl"],
                 task=TFT / "scenario-1-baseline" / "job_description.json")
    rep = run_checks(db)
    rows = {r["check"]: r for r in rep["calibration"] if r["level"] == "turn"}
    for name in ("schema", "structure", "grounding", "coherence"):
        r = rows[name]
        assert r["errors"] > 50 and r["severity"] == "error", r
        assert r["precision"] >= ERROR_PRECISION and "held-out" in r["method"], r
        assert "error" in _stored(db, name, "turn")


def _rare_service_lines() -> list[str]:
    """The tune logs and a real conversation of the one that calls a tool no other does
    (list_all_airports, whose result is a dict keyed by airport codes), cut right after that
    call was answered: most of its result fields are then data values."""
    lines = TAU.read_text().splitlines()

    def calls(rec):
        return [c["function"]["name"] for m in rec["messages"] for c in m.get("tool_calls") or ()]

    counts: dict[str, int] = {}
    recs = [json.loads(line) for line in lines]
    for rec in recs:
        for name in set(calls(rec)):
            counts[name] = counts.get(name, 0) + 1
    rare = min(counts, key=lambda n: (counts[n], n))
    rec = next(r for r in recs if rare in calls(r))
    k = next(i for i, m in enumerate(rec["messages"])
             if rare in [c["function"]["name"] for c in m.get("tool_calls") or ()])
    rec["messages"] = rec["messages"][:k + 3]
    return lines + [json.dumps(rec)]


def test_a_rarely_used_service_of_the_task_is_not_off_domain(tmp_path):
    db = _tau_store(tmp_path / "w.db", _rare_service_lines())
    ctx = load_context(db)
    rare_traces = {t.id for t in ctx.traces if any(
        c["function"]["name"] in ("list_all_airports", "send_certificate",
                                  "update_reservation_passengers")
        for m in t.messages for c in m.get("tool_calls") or ())}
    assert len(rare_traces) >= 3
    verdicts = {f["trace_id"]: f for f in coherence.trace_level(ctx)}
    assert not rare_traces & set(verdicts), [verdicts[i]["detail"] for i in rare_traces
                                             if i in verdicts]
