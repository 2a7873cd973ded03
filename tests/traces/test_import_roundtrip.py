"""Export then import keeps each trace's split and origin (meta written by our own export);
an explicit --split still wins; a bad meta value is a clear error naming file, line, field."""

from __future__ import annotations

import json

import pytest

from db import open_db
from tests.conftest import DATA, S1
from workbench.core.errors import InputError
from workbench.traces.exporting import export
from workbench.traces.importing import import_files


def _splits(db):
    return dict(db.execute("SELECT split, count(*) FROM traces GROUP BY split").fetchall())


def _by_hash(db):
    return {h: (s, o) for h, s, o in
            db.execute("SELECT content_hash, split, origin FROM traces").fetchall()}


@pytest.fixture
def source(db):
    import_files(db, [S1 / "job_description.json"])
    import_files(db, [S1 / "traces.jsonl"], split="train")
    import_files(db, [DATA / "test.jsonl"])                 # test* -> test
    db.execute("UPDATE traces SET origin = 'synthetic' WHERE id IN (1, 2, 3)")
    db.conn.commit()
    assert _splits(db) == {"train": 327, "test": 34}
    return db


@pytest.mark.parametrize("fmt", ["openai", "hf"])
def test_round_trip_restores_split_and_origin(source, tmp_path, fmt):
    out = tmp_path / f"all.{fmt}.jsonl"    # not named test*: the split must come from meta
    export(source, out, fmt)
    other = open_db(tmp_path / "again.db")
    [report] = import_files(other, [out])
    assert report.added == 361
    assert _splits(other) == {"train": 327, "test": 34}
    assert _by_hash(other) == _by_hash(source)   # per trace, origin 'synthetic' included


def test_explicit_split_wins_over_meta(source, tmp_path):
    out = tmp_path / "all.jsonl"
    export(source, out, "openai")
    other = open_db(tmp_path / "again.db")
    [report] = import_files(other, [out], split="unassigned")
    assert report.split == "unassigned"
    assert _splits(other) == {"unassigned": 361}
    # origin still comes from meta
    assert dict(other.execute("SELECT origin, count(*) FROM traces GROUP BY origin")) == {
        "imported": 358, "synthetic": 3}


def test_report_names_the_splits_taken_from_meta(source, tmp_path):
    out = tmp_path / "all.jsonl"
    export(source, out, "openai")
    [report] = import_files(open_db(tmp_path / "again.db"), [out])
    assert report.split == "from meta: test 34, train 327"


def test_bad_meta_split_is_an_error_naming_the_line(source, tmp_path):
    out = tmp_path / "all.jsonl"
    export(source, out, "openai", )
    lines = out.read_text().splitlines()
    bad = json.loads(lines[4])
    bad["meta"]["split"] = "validation"
    lines[4] = json.dumps(bad)
    out.write_text("\n".join(lines) + "\n")
    other = open_db(tmp_path / "again.db")
    with pytest.raises(InputError) as e:
        import_files(other, [out])
    assert str(e.value).startswith(f"{out}:5: meta.split: ")
    assert "train, test, unassigned" in str(e.value)
    assert other.execute("SELECT count(*) FROM traces").fetchone()[0] == 0


def test_files_without_meta_keep_the_old_defaults(db, tmp_path):
    [report] = import_files(db, [DATA / "test.jsonl"])
    assert report.split == "test" and _splits(db) == {"test": 34}
