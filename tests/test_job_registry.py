"""The jobs the app can start run the same code as the CLI and leave their results in the store."""

from __future__ import annotations

from db.flags import flags_for
from db.jobs import get_job
from db.queries import TraceFilter
from tests.conftest import DATA, S1
from workbench.importing import import_files
from workbench.job_registry import available_jobs
from workbench.jobs import run_job


def test_registry_offers_check_normalize_train():
    assert {"check", "normalize", "train", "recount"} <= set(available_jobs())


def test_check_and_normalize_jobs_write_flags_and_revisions(db):
    import_files(db, [DATA / "scenario-3-schema-drift" / "traces.jsonl"],
                 task=S1 / "job_description.json")
    jobs = available_jobs()
    done = run_job(db, "check", lambda ctx: jobs["check"].fn(ctx, TraceFilter()))
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["flags"] == len(flags_for(db)) > 0
    norm = run_job(db, "normalize", lambda ctx: jobs["normalize"].fn(ctx, TraceFilter()))
    assert norm["status"] == "succeeded", norm["error"]
    assert norm["result"]["revisions"] > 0
    assert db.execute("SELECT count(*) FROM revisions WHERE author_kind = 'normaliser'").fetchone()[0] \
        == norm["result"]["revisions"]
    assert "revisions" in get_job(db, norm["id"])["log"]


def test_check_job_reports_each_check_and_a_cancel_changes_nothing(db):
    from db.jobs import request_cancel

    import_files(db, [S1 / "traces.jsonl"], task=S1 / "job_description.json")
    jobs = available_jobs()
    seen: list[str] = []
    done = run_job(db, "check", lambda ctx: jobs["check"].fn(ctx, TraceFilter()),
                   listeners=[lambda kind, v: seen.append(v[2]) if kind == "progress" else None])
    assert done["status"] == "succeeded"
    assert [m for m in seen if m.startswith("check ")] == [
        "check 1/5: schema", "check 2/5: structure", "check 3/5: grounding",
        "check 4/5: coherence", "check 5/5: duplicates"]
    before = len(flags_for(db))

    def cancel_at_coherence(kind, value):
        if kind == "progress" and value[2] and value[2].endswith("coherence"):
            request_cancel(db, db.execute("SELECT max(id) FROM jobs").fetchone()[0])
    db.execute("DELETE FROM flags")
    stopped = run_job(db, "check", lambda ctx: jobs["check"].fn(ctx, TraceFilter()),
                      listeners=[cancel_at_coherence])
    assert stopped["status"] == "cancelled"
    assert len(flags_for(db)) == 0 < before   # no flag of the stopped run was stored
