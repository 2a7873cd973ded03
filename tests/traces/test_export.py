"""Exporters: current labels, filters, pairs, datasets loading, exact round trip."""

from __future__ import annotations

import json

from db import open_db
from db.queries import TraceFilter
from db.revisions import add_revision
from db.traces import original_messages, stats
from tests.conftest import DATA, S1
from workbench.traces.exporting import export
from workbench.traces.importing import import_files


def _all_messages(db):
    ids = [r[0] for r in db.execute("SELECT id FROM traces ORDER BY id")]
    return [original_messages(db, t) for t in ids]


def test_openai_round_trip_reproduces_traces_exactly(db, tmp_path):
    import_files(db, [S1 / "job_description.json", S1 / "traces.jsonl", DATA / "test.jsonl"])
    out = tmp_path / "out.jsonl"
    result = export(db, out, "openai")
    assert result["traces"] == 361
    first = json.loads(out.read_text().splitlines()[0])
    assert first["meta"]["source"].endswith("traces.jsonl") and first["meta"]["line"] == 1
    assert first["meta"]["trace_id"] == 1
    assert isinstance(first["messages"][1]["tool_calls"][0]["function"]["arguments"], str)
    assert [t["function"]["name"] for t in first["tools"]] == [
        "respond_to_user", "ReserveRestaurant", "FindRestaurants"]

    other = open_db(tmp_path / "again.db")
    import_files(other, [out])
    assert _all_messages(other) == _all_messages(db)
    hashes = lambda d: [r[0] for r in d.execute("SELECT content_hash FROM traces ORDER BY id")]  # noqa: E731
    assert hashes(other) == hashes(db)
    # and importing the export into the source store adds nothing
    [report] = import_files(db, [out])
    assert report.added == 0 and report.duplicates == 361


def test_export_carries_current_labels_and_filters(db, tmp_path):
    import_files(db, [S1 / "traces.jsonl", DATA / "test.jsonl"])
    call = [{"id": "x", "type": "function", "function": {"name": "respond_to_user",
                                                          "arguments": {"message": "fixed"}}}]
    add_revision(db, 2, 1, tool_calls=call, author_kind="human", author_name="ana")
    out = tmp_path / "rev.jsonl"
    assert export(db, out, "openai", TraceFilter(status="revised"))["traces"] == 1
    line = json.loads(out.read_text())
    assert line["meta"]["trace_id"] == 2
    assert json.loads(line["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {"message": "fixed"}
    assert export(db, tmp_path / "t.jsonl", "openai", TraceFilter(split="test"))["traces"] == 34
    assert export(db, tmp_path / "s.jsonl", "openai", TraceFilter(text="Fairfield breakfast"))["traces"] >= 1
    assert export(db, tmp_path / "n.jsonl", "openai", TraceFilter(text="zzzunknownzzz"))["traces"] == 0


def test_pairs_export_matches_benchmark_format(db, tmp_path):
    import_files(db, [DATA / "test.jsonl"])
    out = tmp_path / "pairs.jsonl"
    result = export(db, out, "pairs")
    assert result["lines"] == 359
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    # the last pair of each conversation is exactly the benchmark's own line
    originals = [json.loads(l) for l in (DATA / "test.jsonl").read_text().splitlines()]
    by_line = {r["meta"]["line"]: r for r in rows}  # the last pair of each conversation
    for i, orig in enumerate(originals, 1):
        mine = by_line[i]
        assert json.loads(mine["question"]) == json.loads(orig["question"])
        assert json.loads(mine["answer"]) == json.loads(orig["answer"])
    # re-importing the pairs gives one trace per pair
    other = open_db(tmp_path / "p.db")
    import_files(other, [out])
    assert stats(other)["traces"] == 359


def test_hf_export_loads_with_datasets(db, tmp_path):
    import datasets

    import_files(db, [S1 / "job_description.json", S1 / "traces.jsonl"])
    out = tmp_path / "hf.jsonl"
    export(db, out, "hf")
    ds = datasets.load_dataset("json", data_files=str(out), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 327
    assert ds[0]["messages"][0]["role"] == "user"
    assert json.loads(ds[0]["tools"])[0]["function"]["name"] == "respond_to_user"
