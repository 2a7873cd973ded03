"""Flags follow labels: when a label changes (normalize accepts a mapping, an analyst edits or
accepts), the per-trace checks run again on that trace, so no error stays next to a call that
no longer has it, and an error the new label brings is found."""

from __future__ import annotations


from db.flags import flags_for
from db.revisions import add_revision, current_messages, decide
from tests.curation.test_normalize_idempotent import _drifted_with_gaps as _drifted
from workbench.checks import recheck_traces, run_checks
from workbench.curation.normalize import normalize


def _turn_flags(db, check):
    return {(f["trace_id"], f["message_idx"]) for f in flags_for(db) if f["check"] == check
            and f["severity"] == "error" and f["message_idx"] is not None}


def _by_status(db, status):
    return {tuple(r) for r in db.execute("SELECT DISTINCT trace_id, message_idx FROM revisions"
                                         " WHERE author_kind = 'normaliser' AND status = ?",
                                         [status])}


def test_normalize_clears_the_schema_errors_of_the_calls_it_rewrites(tmp_path):
    db = _drifted(tmp_path)
    run_checks(db)
    before = _turn_flags(db, "schema")
    assert len(before) > 100          # every drifted call: unknown tool
    res = normalize(db)
    accepted, proposed = _by_status(db, "accepted"), _by_status(db, "proposed")
    assert accepted and proposed
    after = _turn_flags(db, "schema")
    assert not after & accepted                        # gone with the drifted calls
    assert proposed <= after                           # still the label: still an error
    assert res["rechecked"] == len({t for t, _ in accepted})
    # what is left is exactly what a fresh schema check finds on the current labels
    fresh = run_checks(db, names=["schema"])
    assert {(f["source"], f["line"], f["message_index"]) for f in fresh["flags"]
            if f["severity"] == "error"} == {
        (f["source"], f["line"], f["message_idx"]) for f in flags_for(db)
        if f["check"] == "schema" and f["severity"] == "error"}
    db.conn.close()


def test_an_edit_and_an_accepted_proposal_recheck_their_trace(tmp_path):
    db = _drifted(tmp_path, n=30)
    run_checks(db)
    tid, idx = sorted(_turn_flags(db, "schema"))[0]
    call = current_messages(db, tid)[idx]["tool_calls"][0]
    fixed = {**call, "function": {"name": "respond_to_user",
                                  "arguments": {"message": "Which city?"}}}
    # a proposal changes no label: its flag stays
    rev = add_revision(db, tid, idx, tool_calls=[fixed], author_kind="committee",
                       author_name="c", status="proposed")
    recheck_traces(db, [tid])
    assert (tid, idx) in _turn_flags(db, "schema")
    decide(db, rev, "accepted")
    res = recheck_traces(db, [tid])
    # the per-trace checks, and coherence's verdict on the whole conversation
    assert res == {"traces": 1, "checks": ["schema", "structure", "grounding", "coherence"],
                   "flags": res["flags"]}
    assert (tid, idx) not in _turn_flags(db, "schema")
    # an edit that brings an error gets its flag, naming the bad argument
    bad = {**call, "function": {"name": "respond_to_user", "arguments": {"msg": "hi"}}}
    add_revision(db, tid, idx, tool_calls=[bad], author_kind="human", author_name="ada")
    recheck_traces(db, [tid])
    detail = [f["detail"] for f in flags_for(db, [tid])
              if f["check"] == "schema" and f["message_idx"] == idx]
    assert len(detail) == 1 and "'msg'" in detail[0]
    # other traces' flags are untouched
    others = {f["trace_id"] for f in flags_for(db) if f["check"] == "schema"} - {tid}
    assert others
    db.conn.close()


def test_recheck_uses_what_the_corpus_taught_not_the_one_trace(tmp_path):
    """Structure learns from the corpus that results answer service calls, so a service call
    left unanswered at the end is an error; one trace alone teaches nothing (fewer than five
    calls) and would make it a warning. A re-check uses what the last run learned."""
    db = _drifted(tmp_path, n=30)
    normalize(db)
    run_checks(db)
    key = lambda: {(f["trace_id"], f["message_idx"], f["check"], f["severity"], f["detail"])  # noqa: E731
                   for f in flags_for(db) if f["check"] in ("structure", "grounding")}
    stored = key()
    ids = sorted({t for t, *_ in stored})
    assert ids
    recheck_traces(db, ids[:3])
    assert key() == stored                   # nothing changed: the same flags
    tid = next(t for t in range(1, 31) if current_messages(db, t)[-1]["role"] == "assistant"
               and (t, len(current_messages(db, t)) - 1) not in {(a, b) for a, b, *_ in stored})
    last = len(current_messages(db, tid)) - 1
    search = {"id": "s", "type": "function", "function": {
        "name": "FindRestaurants", "arguments": {"city": "Fairfield", "cuisine": "Thai"}}}
    add_revision(db, tid, last, tool_calls=[search], author_kind="human", author_name="ada")
    recheck_traces(db, [tid])
    found = [f for f in flags_for(db, [tid]) if f["check"] == "structure"
             and f["message_idx"] == last]
    assert [f["severity"] for f in found] == ["error"], found
    assert "elsewhere in the corpus results answer calls" in found[0]["detail"]
    db.conn.close()


def test_nothing_is_rechecked_on_a_store_never_checked(tmp_path):
    db = _drifted(tmp_path, n=10)
    assert recheck_traces(db, [1, 2]) == {"traces": 0, "checks": [], "flags": 0}
    assert flags_for(db) == []
    db.conn.close()


def _off_domain(db):
    return {f["trace_id"] for f in flags_for(db) if f["check"] == "coherence"
            and f["severity"] == "error" and f["message_idx"] is None}


def test_normalised_drift_is_no_longer_off_domain_and_foreign_traffic_still_is(tmp_path):
    """Before normalisation a drifted conversation's calls send arguments no tool declares, so
    coherence calls it off-domain (which keeps it out of training); once the normaliser has
    mapped them, that verdict must go, as a fresh check would decide. Conversations of another
    product (scenario 5's hotels) stay out."""
    from pathlib import Path

    from db import open_db
    from workbench.traces.importing import import_files

    data = Path(__file__).parent.parent / "data" / "tft"
    task = data / "scenario-1-baseline" / "job_description.json"
    for scenario, stays in (("scenario-3-schema-drift", False), ("scenario-5-trace-mixing", True)):
        db = open_db(tmp_path / f"{scenario}.db")
        import_files(db, [data / scenario / "traces.jsonl"], task=task)
        run_checks(db)
        before = _off_domain(db)
        assert len(before) > 100, scenario
        turn_flags = {(f["trace_id"], f["message_idx"], f["detail"]) for f in flags_for(db)
                      if f["check"] == "coherence" and f["message_idx"] is not None}
        normalize(db)
        after = _off_domain(db)
        assert after == (before if stays else set()), scenario
        # coherence's turn-level flags are not re-run here: they stay as they were
        assert turn_flags == {(f["trace_id"], f["message_idx"], f["detail"])
                              for f in flags_for(db)
                              if f["check"] == "coherence" and f["message_idx"] is not None}
        fresh = run_checks(db, names=["coherence"])
        assert {(f["source"], f["line"]) for f in fresh["flags"]
                if f["severity"] == "error" and f["message_index"] is None} == {
            (f["source"], f["line"]) for f in flags_for(db) if f["check"] == "coherence"
            and f["severity"] == "error" and f["message_idx"] is None}, scenario
        db.conn.close()


def test_a_recheck_names_the_same_candidate_as_the_run(tmp_path):
    """A grounding flag names what the user asked for from the values the corpus sends as that
    argument; a re-check of its trace alone is given them and says the same sentence."""
    from pathlib import Path

    from db import open_db
    from workbench.traces.importing import import_files

    db = open_db(tmp_path / "tau.db")
    import_files(db, [Path(__file__).parent.parent / "data" / "tau-airline" / "tune.jsonl"])
    run_checks(db, names=["grounding"])
    asked = {(f["trace_id"], f["message_idx"], f["detail"]) for f in flags_for(db)
             if f["check"] == "grounding" and f["detail"].startswith("the user asked for ")}
    assert asked
    recheck_traces(db, sorted({t for t, _, _ in asked}))
    assert asked <= {(f["trace_id"], f["message_idx"], f["detail"]) for f in flags_for(db)
                     if f["check"] == "grounding"}
    db.conn.close()
