"""One meaning of each analyst decision (workbench.curation.decisions), from the domain and the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from db import open_db, revisions
from db.browse import review_queue
from db.flags import suspect_turns
from db.queries import TraceFilter
from tests.tui_data import add_flag, build_db, first_assistant
from workbench.curation import decisions
from workbench.cli import app

CALL = {"id": "c", "type": "function", "function": {"name": "FindRestaurants",
                                                    "arguments": {"city": "A", "cuisine": "Thai"}}}


def _call(city: str) -> list[dict]:
    return [{**CALL, "function": {**CALL["function"], "arguments": {"city": city,
                                                                  "cuisine": "Thai"}}}]


def _propose(db, tid: int, idx: int, city: str, author: str = "m1") -> int:
    return revisions.add_revision(db, tid, idx, tool_calls=_call(city), author_kind="committee",
                                  author_name=author, status="proposed")


@pytest.fixture
def db(tmp_path):
    database = open_db(build_db(tmp_path / "w.db"))
    yield database
    database.conn.close()


def _statuses(db, tid, idx) -> list[str]:
    return [r["status"] for r in revisions.history(db, tid, idx)]


def test_accepting_one_proposal_rejects_the_competing_ones(db):
    idx = first_assistant(db, 5)
    a, b, c = (_propose(db, 5, idx, city) for city in ("A", "B", "C"))
    out = decisions.accept(db, b, "ada")
    assert out.written == 3 and "2 competing" in out.message
    hist = {r["id"]: r["status"] for r in revisions.history(db, 5, idx)}
    assert hist == {a: "rejected", b: "accepted", c: "rejected"}
    assert revisions.current_messages(db, 5)[idx]["tool_calls"] == _call("B")
    # the newest proposal (c) did not silently win; a decided revision cannot be decided again
    with pytest.raises(decisions.DecisionError):
        decisions.accept(db, c, "ada")


def test_bulk_accept_skips_turns_with_competing_proposals_and_says_so(db):
    i5, i6 = first_assistant(db, 5), first_assistant(db, 6)
    _propose(db, 5, i5, "A")
    _propose(db, 5, i5, "B")
    single = _propose(db, 6, i6, "C")
    out = decisions.bulk_decide(db, "accepted", "ada", ids=[5, 6])
    assert (out.written, out.skipped) == (1, 1)
    assert "1 turn(s) skipped" in out.message and "competing" in out.message
    assert _statuses(db, 5, i5)[-2:] == ["proposed", "proposed"]
    assert revisions.history(db, 6, i6)[-1]["id"] == single
    assert _statuses(db, 6, i6)[-1] == "accepted"
    # rejecting in bulk takes every open proposal, competing or not
    out = decisions.bulk_decide(db, "rejected", "ada", ids=[5])
    assert out.written == 2 and _statuses(db, 5, i5)[-2:] == ["rejected", "rejected"]


def test_keep_on_a_flagged_turn_ends_its_suspicion_and_rejects_proposals(db):
    idx = first_assistant(db, 7)
    add_flag(db, 7, idx, "schema", "error", "missing city")
    prop = _propose(db, 7, idx, "Z")
    assert idx in suspect_turns(db, [7])[7]
    before = revisions.current_messages(db, 7)[idx]
    out = decisions.keep(db, 7, idx, "ada")
    assert out.revision_id is not None and "1 proposal(s) rejected" in out.message
    assert 7 not in suspect_turns(db, [7])
    assert revisions.current_messages(db, 7)[idx]["tool_calls"] == before["tool_calls"]
    assert {r["id"]: r["status"] for r in revisions.history(db, 7, idx)}[prop] == "rejected"
    assert (7, idx) not in review_queue(db)


def test_edit_then_undo_restores_the_label_and_edit_rejects_proposals(db):
    idx = first_assistant(db, 8)
    original = revisions.current_messages(db, 8)[idx]["tool_calls"]
    prop = _propose(db, 8, idx, "P")
    decisions.edit(db, 8, idx, "ada", tool_calls=_call("E"), content=None, reason="fix")
    assert revisions.current_messages(db, 8)[idx]["tool_calls"] == _call("E")
    assert {r["id"]: r["status"] for r in revisions.history(db, 8, idx)}[prop] == "rejected"
    assert decisions.undo(db, 8, idx, "ada").written == 1
    assert revisions.current_messages(db, 8)[idx]["tool_calls"] == original
    # undo goes back, never forward: at the original there is nothing left to undo
    assert decisions.undo(db, 8, idx, "ada").message.endswith("nothing to undo")
    assert revisions.current_messages(db, 8)[idx]["tool_calls"] == original


def test_undo_twice_goes_back_two_steps(db):
    idx = first_assistant(db, 9)
    original = revisions.current_messages(db, 9)[idx]["tool_calls"]
    decisions.edit(db, 9, idx, "ada", tool_calls=_call("one"), content=None)
    decisions.edit(db, 9, idx, "ada", tool_calls=_call("two"), content=None)
    decisions.undo(db, 9, idx, "ada")
    assert revisions.current_messages(db, 9)[idx]["tool_calls"] == _call("one")
    decisions.undo(db, 9, idx, "ada")
    assert revisions.current_messages(db, 9)[idx]["tool_calls"] == original
    assert decisions.undo(db, 9, idx, "ada").written == 0


def test_label_cli_uses_the_same_decisions(tmp_path):
    path = build_db(tmp_path / "c.db")
    db = open_db(path)
    idx = first_assistant(db, 5)
    a = _propose(db, 5, idx, "A")
    b = _propose(db, 5, idx, "B")
    db.conn.close()
    run = lambda *args: CliRunner().invoke(app, ["--db", str(path), "label", *args])  # noqa: E731
    r = run("accept-all", "--trace-id", "5", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["skipped"] == 1
    r = run("accept", str(a), "--analyst", "bo")
    assert r.exit_code == 0 and "1 competing proposal(s) rejected" in r.stdout
    r = run("accept", str(b))
    assert r.exit_code == 1 and "not proposed" in r.output
    r = run("edit", str(5), str(idx), "--call", '{"name": "FindRestaurants", "arguments":'
            ' {"city": "Q", "cuisine": "Thai"}}', "--reason", "because")
    assert r.exit_code == 0, r.output
    r = run("show", "5", str(idx), "--json")
    hist = json.loads(r.stdout)["revisions"]
    assert hist[-1]["reason"] == "because" and hist[-1]["author_kind"] == "human"
    assert hist[-1]["tool_calls"][0]["function"]["arguments"] == {"city": "Q", "cuisine": "Thai"}
    assert [h["id"] for h in hist if h["status"] == "accepted"] == [a, hist[-1]["id"]]
    r = run("edit", "5", str(idx), "--call", "not json")
    assert r.exit_code == 1 and "--call 1: not JSON" in r.output
    r = run("exclude")
    assert r.exit_code == 1 and "refusing" in r.output
    r = run("exclude", "--trace-id", "5", "--trace-id", "6")
    assert r.exit_code == 0 and "2 trace(s) excluded" in r.stdout
    db = open_db(path)
    assert db.execute("SELECT count(*) FROM traces WHERE excluded = 1").fetchone()[0] == 2
    assert db.execute("SELECT count(*) FROM traces").fetchone()[0] > 2
    db.conn.close()


def test_exclusion_is_a_decision_with_undo_that_spares_later_decisions(db):
    before = dict(db.execute("SELECT id, excluded FROM traces").fetchall())
    db.execute("UPDATE traces SET excluded = 1 WHERE id = 3")      # an earlier decision
    db.conn.commit()
    bulk = decisions.set_excluded(db, True, "ada", selection=TraceFilter())
    assert bulk.written == len(before) - 1 and bulk.action
    later = decisions.set_excluded(db, False, "bo", ids=[4])        # decided again since
    undo = decisions.undo_exclusion(db, "ada", bulk.action)
    assert undo.written == len(before) - 2 and undo.skipped == 1
    now = dict(db.execute("SELECT id, excluded FROM traces").fetchall())
    assert now[3] == 1 and now[4] == 0                              # both decisions kept
    assert all(now[t] is None for t in now if t not in (3, 4))     # the rest as before
    # include everything, then undo the newest action: the per-trace decisions come back
    inc = decisions.set_excluded(db, False, "ada", selection=TraceFilter())
    assert decisions.undo_exclusion(db, "ada").written == inc.written
    assert dict(db.execute("SELECT id, excluded FROM traces").fetchall()) == now
    assert later.action != bulk.action
    hist = db.execute("SELECT count(*) FROM exclusion_decisions WHERE trace_id = 4"
                      ).fetchone()[0]
    assert hist == 2   # the bulk exclude and bo's include; nothing else changed it
