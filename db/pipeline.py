"""Pipeline runs and their stages (`workbench pipeline run`), and the store figures a pipeline
compares: the fingerprint of the data its stages read, and the counts before and after
curation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from db.flags import suspect_turns
from db.queries import EXCLUDED_SQL, VISIBLE_SQL
from db.rows import dicts, first, rowid
from db.tx import now, write_tx


def start_run(db: Database, job_id: int, file: str) -> None:
    with write_tx(db):
        db.execute("INSERT OR IGNORE INTO pipeline_runs (job_id, file, created_at)"
                   " VALUES (?,?,?)", [job_id, file, now()])


def set_run(db: Database, job_id: int, *, data_key: str | None = None,
            state: Any = None) -> None:
    with write_tx(db):
        if data_key is not None:
            db.execute("UPDATE pipeline_runs SET data_key = ? WHERE job_id = ?",
                       [data_key, job_id])
        if state is not None:
            db.execute("UPDATE pipeline_runs SET state = ?, updated_at = ? WHERE job_id = ?",
                       [json.dumps(state, sort_keys=True), now(), job_id])


def last_run_with_state(db: Database) -> dict | None:
    """The pipeline run that last recorded the data it left (a resumed run: itself)."""
    return first(db.execute("SELECT * FROM pipeline_runs WHERE state IS NOT NULL AND data_key"
                            " IS NOT NULL ORDER BY updated_at DESC, job_id DESC LIMIT 1"),
                 ("state",))


def add_stage(db: Database, run_id: int, stage: str, fingerprint: str, job_id: int | None,
              action: str) -> int:
    with write_tx(db):
        return rowid(db.execute("INSERT INTO pipeline_stages (run_id, stage, fingerprint, job_id,"
                          " action, created_at) VALUES (?,?,?,?,?,?)",
                          [run_id, stage, fingerprint, job_id, action, now()]))


def last_stage_job(db: Database, stage: str, fingerprint: str) -> int | None:
    """The job that last ran this stage with these inputs (any pipeline run), or None."""
    row = db.execute("SELECT job_id FROM pipeline_stages WHERE stage = ? AND fingerprint = ?"
                     " AND job_id IS NOT NULL ORDER BY id DESC LIMIT 1",
                     [stage, fingerprint]).fetchone()
    return row[0] if row else None


def stages_of(db: Database, run_id: int) -> list[dict]:
    return dicts(db.execute("SELECT * FROM pipeline_stages WHERE run_id = ? ORDER BY id",
                            [run_id]))


def previous_stage_result(db: Database, run_id: int, stage: str) -> list[dict]:
    """This stage's succeeded jobs in earlier pipeline runs, newest first (job id, result)."""
    return dicts(db.execute(
        "SELECT s.run_id, s.job_id, j.result FROM pipeline_stages s JOIN jobs j ON j.id ="
        " s.job_id WHERE s.run_id < ? AND s.stage = ? AND j.status = 'succeeded'"
        " ORDER BY s.run_id DESC, s.id DESC", [run_id, stage]), ("result",))


def data_state(db: Database) -> dict:
    """A fingerprint of everything a stage may read: traces (and their splits and the
    analyst's exclusions), labels, flags, the task, its tools and the settings that steer the
    checks and the committee. Counts and newest ids, so it is cheap on a large store; any
    write the workbench makes changes it."""
    one = lambda sql: list(db.execute(sql).fetchone())  # noqa: E731
    return {
        "traces": one(f"SELECT count(*), max(id), sum(split = 'test'), sum(split = 'train'),"
                      f" sum(excluded IS NOT NULL), sum(coalesce(excluded, 0)) FROM traces"
                      f" WHERE {VISIBLE_SQL}"),
        "revisions": one("SELECT count(*), max(id), sum(status = 'accepted'),"
                         " sum(status = 'rejected'), max(decided_at) FROM revisions"),
        "flags": one("SELECT count(*), max(id) FROM flags"),
        "exclusions": one("SELECT count(*), max(id) FROM exclusion_decisions"),
        "task": one("SELECT max(id), (SELECT count(*) FROM tool_schemas),"
                    " (SELECT max(id) FROM tool_schemas) FROM tasks"),
        "settings": [list(r) for r in db.execute(
            "SELECT key, value FROM settings WHERE key LIKE 'checks.%' OR key LIKE"
            " 'committee.%' ORDER BY key")],
    }


def raw_state(db: Database) -> dict:
    """What a model trained on the raw traces reads: the imported traces and the task."""
    one = lambda sql: list(db.execute(sql).fetchone())  # noqa: E731
    return {"traces": one(f"SELECT count(*), max(id), sum(split = 'test') FROM traces"
                          f" WHERE origin = 'imported' AND {VISIBLE_SQL}"),
            "task": one("SELECT max(id), (SELECT count(*) FROM tool_schemas) FROM tasks")}


def data_counts(db: Database) -> dict:
    """The data before curation (the traces as imported, every one but the test split) and
    after it (what training reads by default: not test, not excluded)."""
    not_test = f"{VISIBLE_SQL} AND traces.split != 'test'"
    curated = f"{not_test} AND NOT {EXCLUDED_SQL}"
    one = lambda sql: db.execute(sql).fetchone()  # noqa: E731
    raw_traces, raw_turns = one(f"SELECT count(*), coalesce(sum(n_assistant), 0) FROM traces"
                                f" WHERE {not_test} AND origin = 'imported'")
    cur_traces, cur_turns, synthetic = one(
        f"SELECT count(*), coalesce(sum(n_assistant), 0), coalesce(sum(origin = 'synthetic'),"
        f" 0) FROM traces WHERE {curated}")
    excluded = one(f"SELECT count(*) FROM traces WHERE {not_test} AND {EXCLUDED_SQL}")[0]
    test = one(f"SELECT count(*), coalesce(sum(n_assistant), 0) FROM traces"
               f" WHERE {VISIBLE_SQL} AND split = 'test'")
    suspect = 0
    ids = [r[0] for r in db.execute(f"SELECT id FROM traces WHERE {curated} ORDER BY id")]
    for i in range(0, len(ids), 500):
        suspect += sum(len(t) for t in suspect_turns(db, ids[i:i + 500]).values())
    # a turn is relabelled when its current label is a revision (its newest accepted one)
    relabelled = dict(db.execute(
        f"SELECT r.author_kind, count(*) FROM revisions r JOIN traces ON traces.id = r.trace_id"
        f" WHERE r.status = 'accepted' AND {curated} AND r.id = (SELECT max(r2.id) FROM"
        f" revisions r2 WHERE r2.trace_id = r.trace_id AND r2.message_idx = r.message_idx"
        f" AND r2.status = 'accepted') GROUP BY r.author_kind ORDER BY r.author_kind"))
    return {
        "outcomes": outcome_summary(db, f"{not_test} AND origin = 'imported'", curated),
        "raw": {"traces": raw_traces, "turns": raw_turns, "suspect_turns": None,
                "excluded": 0, "relabelled": 0, "synthetic": 0},
        "curated": {"traces": cur_traces, "turns": cur_turns, "suspect_turns": suspect,
                    "excluded": excluded, "relabelled": sum(relabelled.values()),
                    "synthetic": synthetic},
        "relabelled_by": relabelled,
        "test": {"traces": test[0], "turns": test[1]},
    }


def outcome_summary(db: Database, raw: str, curated: str) -> dict:
    """Per outcome name with numbers or true/false: how many traces carry it and its mean
    (true is 1) before curation (`raw`) and after (`curated`), SQL conditions over traces."""
    out: dict = {}
    for side, where in (("raw", raw), ("curated", curated)):
        for name, n, mean in db.execute(
                f"SELECT o.key, count(*), avg(o.value) FROM traces, json_each(traces.outcomes) o"
                f" WHERE traces.outcomes IS NOT NULL AND o.type IN ('integer', 'real', 'true',"
                f" 'false') AND {where} GROUP BY o.key ORDER BY o.key"):
            out.setdefault(name, {"raw": {"traces": 0, "mean": None},
                                  "curated": {"traces": 0, "mean": None}})[side] = {
                "traces": n, "mean": round(mean, 4)}
    return out


def make_raw_store(db: Database, path: Path) -> None:
    """A copy of the store with the raw traces: originals only (no revisions), no flags, no
    exclusion decisions. A throwaway file beside the model it trains."""
    from db.connection import open_db

    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    db.execute("VACUUM INTO ?", [str(path)])
    raw = open_db(path, migrate=False)
    try:
        raw.execute("PRAGMA foreign_keys = OFF")   # a copy: its committee rows go with them
        with write_tx(raw):
            for table in ("votes", "committee_turns", "revisions", "flags",
                          "exclusion_decisions"):
                raw.execute(f"DELETE FROM {table}")
            raw.execute("UPDATE traces SET excluded = NULL")
    finally:
        raw.conn.close()
