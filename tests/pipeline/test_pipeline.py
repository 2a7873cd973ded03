"""`workbench pipeline`: the file and its errors, init, skipping unchanged stages, --from, resuming
a stopped stage, the report (real stores, real jobs; training with the tiny random model)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from db import open_db
from db.jobs import get_job, list_jobs, request_cancel
from tests.conftest import REPO
from tests.training.test_training import gguf_tokenizer, tiny_model_dir  # noqa: F401 - fixtures
from workbench.cli import app
from workbench.pipeline.config import PipelineError, load_pipeline

runner = CliRunner()
SAMPLE = REPO / "sample_traces"
CURATION = f"""
[import]
paths = ["{SAMPLE}"]

[check]

[normalize]
"""


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder to run in (the pipeline writes runs/pipeline-ID/ under the current folder)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text("")       # no endpoint is configured
    monkeypatch.setenv("WORKBENCH_CONFIG", str(tmp_path / "config.toml"))
    return tmp_path


def cli(db_path: Path, *args: str) -> Any:
    return runner.invoke(app, ["--db", str(db_path), *args])


def n_jobs(db_path: Path) -> int:
    db = open_db(db_path)
    try:
        return db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    finally:
        db.conn.close()


def stage_actions(report: dict) -> dict[str, str]:
    return {s["stage"]: s["action"] for s in report["stages"]}


# ------------------------------------------------------------------------------- the file

@pytest.mark.parametrize("text, message", [
    ("[check]\nonly = [\"schema\"]\nmodel_chekcs = true\n",
     ":3: [check] model_chekcs: unknown parameter (known: only, model_checks, threads, severity)"),
    ("[train]\n\nmax_steps = \"5\"\n", ":3: [train] max_steps: must be an integer, not \"5\""),
    ("[normalize]\n[normalize.selection]\nsplit = \"train\"\nflaged = true\n",
     ":4: [normalize.selection] flaged: unknown selection option"),
    ("[check.selection]\nsplit = \"dev\"\n",
     ":2: [check.selection] split: must be one of train, test, unassigned, not \"dev\""),
    ("[check.selection]\ntrace_id = \"abc\"\n",
     ":2: [check.selection] trace_id: must be an integer or a list of integers, not \"abc\""),
    ("[train]\nmax_steps = 99999999999999999999\n", ":2: [train] max_steps: "),
    ("[chek]\n", ":1: [chek]: unknown stage (stages, in the order they run: import, check,"),
    ("[eval]\nmax_tokens = 8\n", ": [eval]: give model (a registered name or id, or a GGUF"),
    ("[check]\nonly = [\"schema\", \"nope\"]\n", ": [check]: unknown check nope"),
    ("[import]\npaths = [\"missing.jsonl\"]\n", ":2: [import] paths: missing.jsonl: no such"),
    ("[check\n", ": not valid TOML: "),
    ("[check]\n[check.selection]\ntrace_id = \"abc\"\n",
     ":3: [check.selection] trace_id: must be an integer or a list of integers, not \"abc\""),
    ("[relabel]\ncommittee = [\"nobody\"]\n",
     ":2: [relabel] committee: --committee: unknown endpoint 'nobody'"),
    ("[train]\nepochs = 1.0\nmax_steps = -3\n",
     ":3: [train] max_steps: max_steps must be at least 1 (or -1), not -3"),
    ("[check.selection]\nlimit = 99999999999999999999999\n",
     ":2: [check.selection] limit: is too large"),
    ("[synth]\noffline = true\ntarget = 100000000000000000000\n",
     ":3: [synth] target: is too large"),
])
def test_a_bad_file_is_an_error_naming_file_table_and_key(work: Path, text: str,
                                                        message: str) -> None:
    path = work / "pipe.toml"
    path.write_text(text)
    with pytest.raises(PipelineError) as e:
        load_pipeline(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value), str(e.value)
    # the command says the same in one line and stores nothing
    db_path = work / "w.db"
    r = cli(db_path, "pipeline", "run", str(path))
    assert r.exit_code == 1 and f"error: {path}" in r.stderr and message in r.stderr, r.stderr
    assert n_jobs(db_path) == 0


def test_params_are_the_specs(work: Path) -> None:
    """Each table is its job's Params (no second vocabulary): a comma list like the CLI's,
    selection names like the CLI's, --from and --baseline checked against the file."""
    path = work / "pipe.toml"
    path.write_text(f'{CURATION}\n[check.selection]\nsearch = "Oakland"\ntrace_id = 3\n'
                    '[train]\nmax_steps = 2\nlr = 1\n[eval]\nmax_tokens = 8\n')
    cfg = load_pipeline(path)
    assert list(cfg.stages) == ["import", "check", "normalize", "train", "eval"]
    assert cfg.stages["check"].selection.text == "Oakland"
    assert cfg.stages["check"].selection.trace_ids == [3]
    assert cfg.stages["train"].params.max_steps == 2
    assert cfg.stages["eval"].model_from_train      # no model: the train stage's
    assert cfg.stages["import"].params["paths"] == [str(SAMPLE)]
    with pytest.raises(PipelineError, match="has no \\[relabel\\] stage"):
        load_pipeline(path, from_stage="relabel")
    (work / "curation.toml").write_text(CURATION)
    with pytest.raises(PipelineError, match="needs \\[train\\] and \\[eval\\]"):
        load_pipeline(work / "curation.toml", baseline="direct")


# ------------------------------------------------------------------------------- init

def test_init_writes_an_example_for_the_store_that_run_accepts(work: Path) -> None:
    db_path = work / "w.db"
    assert cli(db_path, "import", str(SAMPLE)).exit_code == 0
    r = cli(db_path, "pipeline", "init", "pipe.toml")
    assert r.exit_code == 0, r.output
    text = (work / "pipe.toml").read_text()
    assert "# Tools: " in text and "FindRestaurants" in text      # the store's task
    cfg = load_pipeline(work / "pipe.toml")                      # what `run` reads first
    assert list(cfg.stages)[:3] == ["import", "check", "normalize"]
    assert cfg.stages["import"].params["paths"] == [str(SAMPLE)]
    assert {"train", "eval"} <= set(cfg.stages)
    # every parameter of every stage is there, with its help (commented out)
    for name in ("model_checks", "committee", "arbiter", "base_model", "max_steps", "judge"):
        assert f"{name} = " in text, name
    # --max-length is not fixed: the train stage sizes it from the data; init says to what now
    assert "# max_length = ..." in text and "max_length = 4096" not in text
    assert re.search(r"#   now: --max-length [\d,]+ \(from the data: the longest conversation"
                     r" up to its last supervised turn is [\d,]+ tokens\); sized again", text), text
    again = cli(db_path, "pipeline", "init", "pipe.toml")
    assert again.exit_code == 1 and "already exists: not overwritten" in again.stderr
    assert (work / "pipe.toml").read_text() == text
    # the curation stages of the file run as they are (train and eval: the slow test below)
    (work / "curation.toml").write_text(text.split("\n[relevance]")[0].split("# [relevance]")[0])
    r = cli(db_path, "pipeline", "run", "curation.toml", "--json")
    assert r.exit_code == 0, r.output
    assert stage_actions(json.loads(r.stdout)) == {"import": "ran", "check": "ran",
                                                   "normalize": "ran"}


# -------------------------------------------------------------------- skipping and --from

def test_a_second_run_skips_unchanged_stages_and_from_forces(work: Path) -> None:
    db_path = work / "w.db"
    (work / "pipe.toml").write_text(CURATION)
    first = cli(db_path, "pipeline", "run", "pipe.toml", "--json")
    assert first.exit_code == 0, first.output
    rep = json.loads(first.stdout)
    assert stage_actions(rep) == {"import": "ran", "check": "ran", "normalize": "ran"}
    assert n_jobs(db_path) == 4                      # the pipeline and its three stages
    db = open_db(db_path)
    kids = [j for j in list_jobs(db) if j["parent_id"] == rep["pipeline_job"]]
    assert sorted(j["kind"] for j in kids) == ["check", "import", "normalize"]
    db.conn.close()
    # the report: data before and after curation, in the terminal's JSON and report.md
    d = rep["data"]
    assert d["raw"]["traces"] == d["curated"]["traces"] == 40 and d["test"]["traces"] == 5
    assert d["curated"]["relabelled"] == d["relabelled_by"]["normaliser"] > 0
    assert d["curated"]["suspect_turns"] > 0 and d["raw"]["turns"] == d["curated"]["turns"]
    md = (work / "runs" / f"pipeline-{rep['pipeline_job']}" / "report.md").read_text()
    assert "| traces (not test) | 40 | 40 |" in md
    assert f"| relabelled turns | 0 | {d['curated']['relabelled']} |" in md

    second = cli(db_path, "pipeline", "run", "pipe.toml", "--json")
    assert second.exit_code == 0, second.output
    assert set(stage_actions(json.loads(second.stdout)).values()) == {"skipped"}
    assert n_jobs(db_path) == 5                      # only the new pipeline job

    forced = cli(db_path, "pipeline", "run", "pipe.toml", "--from", "normalize", "--json")
    assert forced.exit_code == 0, forced.output
    assert stage_actions(json.loads(forced.stdout)) == {"import": "skipped", "check": "skipped",
                                                        "normalize": "forced"}
    assert n_jobs(db_path) == 7
    again = cli(db_path, "pipeline", "run", "pipe.toml", "--json")   # what --from left counts
    assert set(stage_actions(json.loads(again.stdout)).values()) == {"skipped"}

    # a change of a stage's parameters re-runs it and what comes after it
    (work / "pipe.toml").write_text(CURATION.replace("[check]", "[check]\nonly = [\"schema\"]"))
    changed = cli(db_path, "pipeline", "run", "pipe.toml", "--json")
    assert stage_actions(json.loads(changed.stdout)) == {"import": "skipped", "check": "ran",
                                                         "normalize": "ran"}
    # so does a change of the data made outside the pipeline (an analyst's decision)
    assert cli(db_path, "label", "exclude", "--trace-id", "7").exit_code == 0
    outside = cli(db_path, "pipeline", "run", "pipe.toml", "--json")
    rep = json.loads(outside.stdout)
    assert stage_actions(rep) == {"import": "skipped", "check": "ran", "normalize": "ran"}
    assert rep["data"]["curated"]["excluded"] >= 1


def test_a_stage_whose_job_kind_is_missing_is_reported_not_available(
        work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.jobs import registry

    monkeypatch.delitem(registry.REGISTRY, "synth", raising=False)
    (work / "pipe.toml").write_text(CURATION + "\n[synth]\noffline = true\ntarget = 5\n")
    r = cli(work / "w.db", "pipeline", "run", "pipe.toml", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert stage_actions(rep)["synth"] == "unavailable"
    assert [s["stage"] for s in rep["stages"]] == ["import", "check", "normalize", "synth"]


# ----------------------------------------------------------------- resuming a stopped stage

def _tiny_pipeline(work: Path, model: Path, **train: Any) -> Path:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in train.items())
    path = work / "pipe.toml"
    path.write_text(f'{CURATION}\n[train]\nbase_model = "{model}"\nmax_steps = 4\n'
                    f'save_steps = 2\nseqs_per_step = 2\nlora_r = 4\n{extra}'
                    '[train.selection]\nsplit = "unassigned"\nlimit = 6\n'
                    '[eval]\nmax_tokens = 8\nthreads = 1\n[eval.selection]\nlimit = 1\n')
    return path


def test_a_cancelled_training_stage_resumes_from_its_checkpoint(
        work: Path, tiny_model_dir: Path) -> None:  # noqa: F811 - the fixture
    """Cancelling the pipeline cancels its running stage (training saves a checkpoint); the next
    run skips what was done and resumes the same training job from its checkpoint."""
    from workbench.jobs.context import JobEvent, Progress
    from workbench.jobs.runner import execute, submit

    path = _tiny_pipeline(work, tiny_model_dir, gguf="q8_0")
    db = open_db(work / "w.db")
    pipeline_id = submit(db, "pipeline", {}, {"file": str(path)})

    def stop_at_step_2(event: JobEvent) -> None:
        if isinstance(event, Progress) and (event.message or "").startswith("train: step 2/"):
            request_cancel(db, pipeline_id)

    row = execute(db, pipeline_id, listeners=[stop_at_step_2])
    assert row["status"] == "cancelled", row["error"]
    assert "stage train" in row["error"]
    train = [j for j in list_jobs(db, kind="train")]
    assert len(train) == 1 and train[0]["status"] == "cancelled"
    train_id = train[0]["id"]
    assert (work / "runs" / f"job-{train_id}" / "checkpoints").is_dir()

    again = execute(db, submit(db, "pipeline", {}, {"file": str(path)}))
    assert again["status"] == "succeeded", again["error"]
    rep = again["result"]
    assert stage_actions(rep) == {"import": "skipped", "check": "skipped",
                                  "normalize": "skipped", "train": "resumed", "eval": "ran"}
    job = get_job(db, train_id)
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert "resuming from" in job["log"] and job["result"]["metrics"]["steps"] == 4
    assert rep["training"]["job_id"] == train_id and rep["training"]["steps"] == 4
    assert rep["evaluation"]["turns"] > 0 and "staged_tool_call" in rep["evaluation"]["metrics"]
    db.conn.close()


# ------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_init_then_run_the_whole_loop_with_a_direct_baseline(
        work: Path, tiny_model_dir: Path) -> None:  # noqa: F811 - the fixture
    """The init file of the sample (with the tiny model as base and one test conversation),
    run with --baseline direct: two models, both evaluated on the same turns, the deltas; run
    again, nothing is recomputed; the previous run's evaluation is the baseline of a new one."""
    db_path = work / "w.db"
    assert cli(db_path, "import", str(SAMPLE)).exit_code == 0
    assert cli(db_path, "pipeline", "init", "pipe.toml").exit_code == 0
    text = (work / "pipe.toml").read_text()
    text = text.replace("[train]", f'[train]\nbase_model = "{tiny_model_dir}"\nlora_r = 4', 1)
    text = text.replace("# [eval.selection]", "[eval.selection]").replace("# limit = 2",
                                                                            "limit = 1")
    text = text.replace("\nthreads = 1\n", "\nthreads = 1\nmax_tokens = 8\n")
    (work / "pipe.toml").write_text(text)
    r = cli(db_path, "pipeline", "run", "pipe.toml", "--baseline", "direct", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert set(stage_actions(rep)) == {"import", "check", "normalize", "train", "eval",
                                       "direct-train", "direct-eval"}
    b = rep["baseline"]
    assert b["training"]["job_id"] != rep["training"]["job_id"]
    assert b["evaluation"]["turns"] == rep["evaluation"]["turns"] > 0
    assert set(b["delta"]) == set(rep["evaluation"]["metrics"])
    assert "original labels" in b["definition"]
    db = open_db(db_path)
    direct = get_job(db, b["training"]["job_id"])
    assert direct["kind"] == "train-direct" and direct["params"]["suspect"] == "train"
    raw = open_db(direct["result"]["raw_store"])   # the raw copy: no labels, flags, exclusions
    assert raw.execute("SELECT count(*) FROM revisions").fetchone()[0] == 0
    assert raw.execute("SELECT count(*) FROM flags").fetchone()[0] == 0
    raw.conn.close()
    jobs_before = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    db.conn.close()
    md = (work / "runs" / f"pipeline-{rep['pipeline_job']}" / "report.md").read_text()
    assert "## Direct baseline" in md and "| metric | curated | direct | curated - direct |" in md
    floor = rep["evaluation"]["floor"]   # the same call on every test turn, scored the same way
    assert floor == b["evaluation"]["floor"] and 0.0 < floor["staged_tool_call"] <= 1.0
    assert (f"The same call on every call turn (`{floor['function']}` with the commonest"
            f" arguments) would score staged {floor['staged_tool_call']:.4f}") in md

    again = cli(db_path, "pipeline", "run", "pipe.toml", "--baseline", "direct", "--json")
    assert again.exit_code == 0, again.output
    assert set(stage_actions(json.loads(again.stdout)).values()) == {"skipped"}
    assert n_jobs(db_path) == jobs_before + 1
    # a new evaluation (forced) is compared with the previous pipeline run's
    forced = cli(db_path, "pipeline", "run", "pipe.toml", "--from", "eval", "--json")
    prev = json.loads(forced.stdout)["evaluation"]["previous"]
    assert prev["run_id"] == rep["evaluation"]["run_id"] and set(prev["delta"])
