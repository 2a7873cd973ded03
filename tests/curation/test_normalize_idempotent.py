"""Normalising twice writes nothing new: the mapping is learned from the original calls (and
non-normaliser labels), never from the normaliser's own earlier revisions, and a turn that
already has the same normaliser revision (proposed or accepted) gets no second copy."""

from __future__ import annotations

import json

from db import open_db
from db.revisions import decide
from tests.conftest import S1
from workbench.traces.importing import import_files
from workbench.curation.normalize import normalize

RENAME_TOOL = {"FindRestaurants": "lookup_places", "ReserveRestaurant": "book_seat",
               "respond_to_user": "say"}
RENAME_ARG = {"city": "town", "cuisine": "food_kind", "restaurant_name": "venue",
              "party_size": "guests", "message": "text", "time": "slot", "date": "day"}


def _drifted_with_gaps(tmp_path, n=40, every=5):
    """Scenario-1 traces with tools and arguments renamed, and every `every`-th search call
    missing its city (a required parameter): those mappings stay ambiguous (proposed)."""
    lines = (S1 / "traces.jsonl").read_text().splitlines()[:n]
    out, searches = [], 0
    for line in lines:
        ctx = json.loads(json.loads(line)["context"])
        for m in ctx["messages"]:
            for c in m.get("tool_calls") or []:
                fn = c["function"]
                args = {RENAME_ARG.get(k, k): v for k, v in json.loads(fn["arguments"]).items()}
                if fn["name"] == "FindRestaurants":
                    searches += 1
                    if searches % every == 0:
                        args.pop("town", None)
                fn["name"] = RENAME_TOOL[fn["name"]]
                fn["arguments"] = json.dumps(args)
        out.append(json.dumps({"context": json.dumps(ctx)}))
    path = tmp_path / "drift.jsonl"
    path.write_text("\n".join(out) + "\n")
    db = open_db(tmp_path / "x.db")
    import_files(db, [path], task=S1 / "job_description.json")
    return db


def _counts(db):
    return dict(db.execute("SELECT status, count(*) FROM revisions GROUP BY status").fetchall())


def _per_turn(db):
    return db.execute("SELECT trace_id, message_idx, count(*) FROM revisions"
                      " GROUP BY trace_id, message_idx HAVING count(*) > 1").fetchall()


def _summary(res):
    return {(m["from"], m["to"]): (m["calls"], m["confidence"], m["arguments"])
            for m in res["mapping_summary"]}


def test_second_run_writes_nothing_and_finds_the_same_mapping(tmp_path):
    db = _drifted_with_gaps(tmp_path)
    first = normalize(db)
    assert first["accepted"] > 0 and first["proposed"] > 0      # the fixture has both kinds
    search = _summary(first)[("lookup_places", "FindRestaurants")]
    assert 0 < search[1] < 1
    before = _counts(db)
    flags = db.execute("SELECT count(*) FROM flags WHERE check_name = 'normalize'").fetchone()[0]
    assert flags == first["proposed"]

    second = normalize(db)
    assert second["revisions"] == 0 and second["accepted"] == 0 and second["proposed"] == 0
    assert second["unchanged"] == first["revisions"]
    assert _summary(second) == _summary(first)                   # same mapping, same confidence
    assert _counts(db) == before and _per_turn(db) == []
    # the still-proposed turns keep their review flag
    assert db.execute("SELECT count(*) FROM flags WHERE check_name = 'normalize'"
                      ).fetchone()[0] == flags

    third = normalize(db)
    assert third["revisions"] == 0 and _summary(third) == _summary(first)


def test_accepting_a_proposal_leaves_no_duplicate_proposed(tmp_path):
    db = _drifted_with_gaps(tmp_path)
    normalize(db)
    normalize(db)
    rev_id, tid, idx = db.execute("SELECT id, trace_id, message_idx FROM revisions"
                                  " WHERE status = 'proposed' ORDER BY id LIMIT 1").fetchone()
    decide(db, rev_id, "accepted")
    assert db.execute("SELECT count(*) FROM revisions WHERE trace_id = ? AND message_idx = ?"
                      " AND status = 'proposed'", [tid, idx]).fetchone()[0] == 0
    again = normalize(db)
    assert again["revisions"] == 0
    assert db.execute("SELECT count(*) FROM flags WHERE check_name = 'normalize'"
                      " AND trace_id = ? AND message_idx = ?", [tid, idx]).fetchone()[0] == 0
