"""The app's queries (db.browse), config and job registry, without Textual; import hygiene."""

from __future__ import annotations

import subprocess
import sys

import pytest

from db import open_db
from db.browse import (count_traces, drop_turn, get_setting, page_key,
                       review_queue, set_excluded, set_setting, trace_page)
from db.queries import TraceFilter
from tests.tui_data import ROOT, build_db, first_assistant
from workbench.core.config import load_config
from workbench.curation.decisions import bulk_decide
from workbench.core.errors import InputError


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    return build_db(tmp_path_factory.mktemp("store") / "t.db")


@pytest.fixture
def db(db_path, tmp_path):
    import shutil
    path = tmp_path / "t.db"
    shutil.copy(db_path, path)
    d = open_db(path)
    yield d
    d.close()


def test_import_hygiene():
    """Code outside workbench/app* and workbench/app/screens must not load Textual."""
    code = ("import sys, db, db.browse, workbench.cli, workbench.traces.importing, workbench.core.config,"
            " workbench.jobs.registry, workbench.jobs.runner, workbench.traces.exporting;"
            " bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.')];"
            " print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("sort,desc", [("id", False), ("id", True), ("turns", False), ("turns", True),
                                       ("errors", True), ("errors", False)])
def test_keyset_pages_cover_everything_once_in_order(db, sort, desc):
    flt = TraceFilter()
    seen, after = [], None
    while True:
        rows = trace_page(db, flt, sort=sort, descending=desc, after=after, limit=7)
        if not rows:
            break
        seen += rows
        after = page_key(rows[-1], sort)
    assert len(seen) == count_traces(db, flt) == 45
    keys = [page_key(r, sort) for r in seen]
    assert keys == sorted(keys, reverse=desc)


def test_page_row_columns(db):
    rows = {r["id"]: r for r in trace_page(db, TraceFilter())}
    assert rows[1]["flags"] == 1 and rows[2]["label"] == "proposed" and rows[4]["label"] == "original"
    assert rows[3]["flags"] == 1 and rows[1]["split"] == "test"
    assert (rows[1]["errors"], rows[3]["errors"]) == (1, 0)   # an error; a warning
    assert rows[1]["source"].endswith("test.jsonl") and rows[1]["line"] == 1


def test_errors_first_sort_and_the_cells_an_analyst_scans(db):
    from widgets.trace_table import flags_cell, source_cell

    first = trace_page(db, TraceFilter(), sort="errors", descending=True)[0]
    assert first["id"] == 1 and first["errors"] == 1          # the one trace with an error
    assert source_cell("/very/long/folder/name/of/the/logs/traces.jsonl", 1234) \
        == "traces.jsonl:1234"
    assert flags_cell({"flags": 3, "errors": 2}).plain == "2E 1W"
    assert flags_cell({"flags": 1, "errors": 0}).plain == "1W"
    assert flags_cell({"flags": 0, "errors": 0}).plain == ""


def test_bulk_on_filter_and_on_ids(db):
    assert bulk_decide(db, "accepted", "ada", selection=TraceFilter(status="proposed")).written == 1
    assert count_traces(db, TraceFilter(status="revised")) == 1
    assert set_excluded(db, TraceFilter(split="test"), True) == 5
    assert count_traces(db, TraceFilter(excluded=True)) == 5
    assert set_excluded(db, TraceFilter(), False, ids=[1, 2]) == 2
    assert count_traces(db, TraceFilter(excluded=True)) == 3
    # originals untouched
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] > 0


def test_review_queue_and_drop(db):
    q = review_queue(db)
    assert q == [(1, first_assistant(db, 1)), (2, first_assistant(db, 2))]
    drop_turn(db, *q[0], "ada")
    assert review_queue(db) == [q[1]]
    assert review_queue(db, TraceFilter(split="unassigned")) == []


def test_settings_roundtrip(db):
    assert get_setting(db, "last_filter", {}) == {}
    set_setting(db, "last_filter", {"text": "[bold]x"})
    assert get_setting(db, "last_filter") == {"text": "[bold]x"}


def test_config_file(tmp_path, monkeypatch):
    p = tmp_path / "config.toml"
    p.write_text('analyst = "ada"\ntheme = "nord"\n[keys]\n"traces.sort" = "o"\n')
    monkeypatch.setenv("WORKBENCH_CONFIG", str(p))
    cfg = load_config()
    assert (cfg.analyst, cfg.theme, cfg.keys) == ("ada", "nord", {"traces.sort": "o"})
    p.write_text("analyst = [")
    with pytest.raises(InputError):
        load_config()
    monkeypatch.setenv("WORKBENCH_CONFIG", str(tmp_path / "missing.toml"))
    assert load_config().theme == "textual-dark"


def test_rows_carry_the_first_user_message_and_the_newest_finished_score(db):
    from widgets.trace_table import TraceTable

    rows = {r["id"]: r for r in trace_page(db, TraceFilter())}
    assert rows[1]["first_user"] == "I need a reservation to a restaurant."
    assert rows[1]["score"] is None
    for status, scores in (("succeeded", (1.0, 0.5)), ("failed", (0.0, 0.0)), (None, (0.0,))):
        run_id = db.execute("INSERT INTO eval_runs (model_ref, created_at, status) VALUES"
                            " ('m', 'now', ?)", [status]).lastrowid
        for i, score in enumerate(scores):
            db.execute("INSERT INTO eval_results (run_id, trace_id, message_idx, reference,"
                       " prediction, staged_tool_call, tool_call_equivalence, function_match,"
                       " rouge_l) VALUES (?, 1, ?, '', '', ?, 0, 0, 0)", [run_id, i, score])
    db.conn.commit()
    rows = {r["id"]: r for r in trace_page(db, TraceFilter())}
    assert rows[1]["score"] == 0.75            # the newest run that finished (not a failed one)
    table = TraceTable()
    table.highlight = ["reservation"]
    cell = table._message_cell(rows[1]["first_user"])
    assert [cell.plain[s.start:s.end] for s in cell.spans] == ["reservation"]
