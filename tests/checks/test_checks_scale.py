"""Checks at scale: `run_checks` streams the conversations from the store (a batch, or one
coherence group, in memory at a time) and finds exactly the flags of the checks run on all the
conversations at once."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from db import open_db
from db.flags import flags_for, replace_flags
from workbench.checks import (DEFAULT_CHECKS, coherence, compute_flags, load_context,
                              run_checks, stored_report)
from workbench.traces.importing import import_files

DATA = Path(__file__).parent.parent / "data" / "tft"


def _comparable(flags):
    """A flag as (trace, turn, check, severity, detail), the coherence score's last digit
    aside: the float32 products behind it can round either way from one process to the next
    (seen with the same code run twice), which says nothing about what was streamed."""
    return [(f["trace_id"], f["message_idx"], f["check"], f["severity"],
             re.sub(r"\d\.\d\d\b", "#", f["detail"])) for f in flags]


def test_streamed_checks_find_the_flags_of_all_conversations_at_once(tmp_path, monkeypatch):
    """Noisy and mixed-in traces (every check finds something: schema, structure, grounding,
    off-domain and misplaced turns, near-duplicates of traces far apart in the store), checked
    7 at a time with coherence learning in groups of about 100: the stored flags, the report
    and what the checks learned are those of the checks run on the whole list, and no more
    than a group and a batch of conversations were in memory at once."""
    db = open_db(tmp_path / "s.db")
    import_files(db, [DATA / "scenario-2-noisy-labels" / "traces.jsonl",
                      DATA / "scenario-5-trace-mixing" / "traces.jsonl"],
                 task=DATA / "scenario-1-baseline" / "job_description.json")
    monkeypatch.setattr(coherence, "CHUNK_TRACES", 100)
    ctx = load_context(db)
    n = len(ctx.traces)
    expected, _ = compute_flags(ctx, DEFAULT_CHECKS)
    assert {f["check"] for f in expected} == set(DEFAULT_CHECKS)
    turns = sum(1 for t in ctx.traces for m in t.messages if m["role"] == "assistant")
    groups = -(-n // coherence.CHUNK_TRACES)
    del ctx

    # severities as raised (calibration, tested on its own, may demote a check on this mix)
    report = run_checks(db, batch=7, severity={c: "error" for c in DEFAULT_CHECKS})

    stored = [f for f in flags_for(db) if f["check"] in DEFAULT_CHECKS]
    key = lambda f: (f[0], -1 if f[1] is None else f[1], f[2])  # noqa: E731 - flags_for's order
    assert _comparable(stored) == sorted(_comparable(expected), key=key)
    assert list(report["flags"]) == list(stored_report(db, None, DEFAULT_CHECKS))
    assert len(report["flags"]) == len(expected)
    assert (report["traces"], report["assistant_turns"]) == (n, turns)
    # a group, a batch, and the group before's last turn, still in its consumer's hands while
    # the next group loads
    assert report["conversations_held"] <= -(-n // groups) + 7 + 1 < n / 3


def test_flags_written_from_a_generator_that_breaks_change_nothing(tmp_path):
    """`replace_flags` takes a generator (a run's flags are not all held as dicts); a bad flag
    after good ones is refused with a clear error and the flags stored before stay as they
    were."""
    db = open_db(tmp_path / "g.db")
    import_files(db, [DATA / "scenario-4-low-data" / "traces.jsonl"],
                 task=DATA / "scenario-1-baseline" / "job_description.json")
    ids = [r[0] for r in db.execute("SELECT id FROM traces ORDER BY id")]
    first = [{"trace_id": i, "message_idx": None, "check": "schema", "severity": "warning",
              "detail": "kept"} for i in ids]
    assert replace_flags(db, ids, ["schema"], iter(first)) == len(ids)
    before = flags_for(db)

    def flags():
        yield {"trace_id": ids[0], "message_idx": 1, "check": "schema", "severity": "error",
               "detail": "new"}
        yield {"trace_id": ids[1], "message_idx": 1, "check": "schema", "severity": "fatal",
               "detail": "bad"}

    with pytest.raises(ValueError, match="severity must be one of"):
        replace_flags(db, ids, ["schema"], flags())
    assert flags_for(db) == before


def test_a_check_run_stopped_midway_stores_nothing_and_leaves_no_staging_file(tmp_path,
                                                                            monkeypatch):
    """A run's flags are staged in a temporary file as each check ends (not in memory); a
    run stopped after some checks have staged theirs changes no stored flag, and the file
    goes."""
    import glob
    import tempfile

    from workbench.checks import run_checks

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    db = open_db(tmp_path / "s.db")
    import_files(db, [DATA / "scenario-2-noisy-labels" / "traces.jsonl"],
                 task=DATA / "scenario-1-baseline" / "job_description.json")
    report = run_checks(db, names=["schema", "structure"])
    stored = flags_for(db)
    assert len(report["flags"]) == len(stored)
    assert any(f["check"] == "schema" for f in stored)   # so an early store would show
    assert report["flags"][0] == next(iter(report["flags"]))

    class Stop(Exception):
        pass

    class Job:
        job_id = None

        def progress(self, done, total, text):
            staged = glob.glob(str(tmp_path / "workbench-flags-*.db"))
            if done == 1:   # schema's flags are staged, structure has not run
                assert len(staged) == 1
                raise Stop

    db.execute("DELETE FROM flags")   # what a run stored too early would show
    with pytest.raises(Stop):
        run_checks(db, names=["schema", "structure"], job_ctx=Job())
    assert flags_for(db) == []
    assert not glob.glob(str(tmp_path / "workbench-flags-*.db"))


def test_a_staging_file_left_by_a_killed_run_goes_with_the_next_run(tmp_path, monkeypatch):
    """A check run killed outright (SIGKILL) cannot delete its staging file; the next run
    does, and leaves alone the file of a run that is still alive."""
    import glob
    import signal
    import subprocess
    import sys
    import tempfile

    db_path = tmp_path / "s.db"
    db = open_db(db_path)
    import_files(db, [DATA / "scenario-1-baseline" / "traces.jsonl"],
                 task=DATA / "scenario-1-baseline" / "job_description.json")
    stage = ("import sys, time; from db import open_db; from db.flags import FlagStage;"
             " s = FlagStage(open_db(sys.argv[1]), ['schema']); print(s.path, flush=True);"
             " time.sleep(600)")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", stage, str(db_path)], env=env,
                              stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parent.parent.parent) for _ in range(2)]
    try:
        killed, alive = (Path(p.stdout.readline().strip()) for p in procs)
        assert killed.exists() and alive.exists()
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        assert killed.exists()          # nothing cleaned up after a SIGKILL

        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        run_checks(db, names=["schema"])
        assert not killed.exists()
        assert alive.exists()
        assert glob.glob(str(tmp_path / "workbench-flags-*.db")) == [str(alive)]
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
