"""Normalisation on drifted examples: mapped as revisions, reversible, ambiguity flagged."""

from __future__ import annotations

import json
from pathlib import Path

from db import open_db
from db.revisions import current_messages, history, undo
from db.traces import original_messages
from workbench.traces.importing import import_files
from workbench.curation.normalize import normalize

DATA = Path(__file__).parent.parent / "data" / "tft"


def _drifted(tmp_path, n=40):
    """Scenario-1 traces with the tools and argument names renamed (a drift made here)."""
    rename_tool = {"FindRestaurants": "lookup_places", "ReserveRestaurant": "book_seat",
                   "respond_to_user": "say"}
    rename_arg = {"city": "town", "cuisine": "food_kind", "restaurant_name": "venue",
                  "party_size": "guests", "message": "text", "time": "slot", "date": "day"}
    lines = (DATA / "scenario-1-baseline" / "traces.jsonl").read_text().splitlines()[:n]
    out = []
    for line in lines:
        ctx = json.loads(json.loads(line)["context"])
        for m in ctx["messages"]:
            for c in m.get("tool_calls") or []:
                fn = c["function"]
                args = json.loads(fn["arguments"])
                fn["name"] = rename_tool[fn["name"]]
                fn["arguments"] = json.dumps({rename_arg.get(k, k): v for k, v in args.items()})
        out.append(json.dumps({"context": json.dumps(ctx)}))
    path = tmp_path / "drift.jsonl"
    path.write_text("\n".join(out) + "\n")
    db = open_db(tmp_path / "x.db")
    import_files(db, [path], task=DATA / "scenario-1-baseline" / "job_description.json")
    clean = [json.loads(json.loads(line)["context"])["messages"] for line in lines]
    return db, clean


def test_normalize_maps_drift_back_to_canonical(tmp_path):
    db, clean = _drifted(tmp_path)
    res = normalize(db)
    assert res["revisions"] > 0
    pairs = {(m["from"], m["to"]) for m in res["mapping_summary"]}
    assert ("lookup_places", "FindRestaurants") in pairs and ("say", "respond_to_user") in pairs
    equal = total = 0
    for tid, orig in zip(range(1, len(clean) + 1), clean):
        cur = current_messages(db, tid)
        for a, b in zip(orig, cur):
            if a["role"] == "assistant":
                want = [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                        for c in a["tool_calls"]]
                got = [(c["function"]["name"], c["function"]["arguments"])
                       for c in b["tool_calls"]]
                total += 1
                equal += want == got
    assert equal / total >= 0.98


def test_revisions_carry_evidence_and_are_reversible(tmp_path):
    db, _ = _drifted(tmp_path, n=20)
    normalize(db)
    tid, idx = db.execute("SELECT trace_id, message_idx FROM revisions WHERE status = 'accepted'"
                          " ORDER BY id LIMIT 1").fetchone()
    rev = history(db, tid, idx)[0]
    assert rev["author_kind"] == "normaliser" and rev["evidence"][0]["to"]
    before = original_messages(db, tid)[idx]
    assert current_messages(db, tid)[idx] != before
    undo(db, tid, idx, author_kind="human", author_name="t")
    assert current_messages(db, tid)[idx]["tool_calls"] == before["tool_calls"]


def _with_extra_arg(tmp_path, echoed: bool, n=30):
    """Drifted traces whose search calls carry a parameter no canonical tool has
    (`has_terrace`), echoed by the result under its own name or not."""
    lines = (DATA / "scenario-1-baseline" / "traces.jsonl").read_text().splitlines()[:n]
    out = []
    for line in lines:
        ctx = json.loads(json.loads(line)["context"])
        msgs = ctx["messages"]
        for i, m in enumerate(msgs):
            for c in m.get("tool_calls") or []:
                fn = c["function"]
                if fn["name"] != "FindRestaurants":
                    continue
                args = json.loads(fn["arguments"])
                args = {"town": args["city"], "food_kind": args["cuisine"], "has_terrace": "True"}
                fn["name"], fn["arguments"] = "lookup_places", json.dumps(args)
                if echoed and i + 1 < len(msgs) and msgs[i + 1]["role"] in ("tool", "user"):
                    try:
                        recs = json.loads(msgs[i + 1]["content"])
                    except ValueError:
                        continue
                    if isinstance(recs, list) and recs and isinstance(recs[0], dict):
                        msgs[i + 1]["content"] = json.dumps(
                            [dict(r, has_terrace="True") for r in recs])
        out.append(json.dumps({"context": json.dumps(ctx)}))
    path = tmp_path / "extra.jsonl"
    path.write_text("\n".join(out) + "\n")
    db = open_db(tmp_path / "e.db")
    import_files(db, [path], task=DATA / "scenario-1-baseline" / "job_description.json")
    return db


def _search_revisions(db):
    rows = db.execute("SELECT tool_calls, status, evidence FROM revisions").fetchall()
    return [(json.loads(tc)[0]["function"], st, json.loads(ev)) for tc, st, ev in rows
            if json.loads(tc)[0]["function"]["name"] == "FindRestaurants"]


def test_argument_echoed_under_its_own_name_is_dropped_not_mapped(tmp_path):
    db = _with_extra_arg(tmp_path, echoed=True)
    normalize(db)
    revs = _search_revisions(db)
    assert revs
    for fn, status, ev in revs:
        assert status == "accepted"
        assert set(fn["arguments"]) == {"city", "cuisine"}
        why = ev[0]["arguments"]["has_terrace"]["why"][0]
        assert "own name" in why and ev[0]["arguments"]["has_terrace"]["field"] is None


def test_unechoed_unknown_argument_is_not_dropped_by_the_echo_rule(tmp_path):
    db = _with_extra_arg(tmp_path, echoed=False)
    normalize(db)
    revs = _search_revisions(db)
    assert revs
    for fn, status, ev in revs:
        why = ev[0]["arguments"].get("has_terrace", {}).get("why", [])
        assert not any("own name" in w for w in why)  # the own-name rule needs the echo


def test_enum_value_translated_from_user_phrasing():
    from workbench.curation.normalize import translate_value

    enum = ["inexpensive", "moderate", "expensive"]
    phrasing = {"price_range": [("inexpensive", {"something", "cheap"})] * 4
                + [("moderate", {"a", "moderate", "place"})] * 10
                + [("expensive", {"a", "fancy", "one"})] * 3}
    model = {"phrasing": phrasing}
    assert translate_value(model, "price_range", "cheap", enum)[0] == "inexpensive"
    assert translate_value(model, "price_range", "ultra high-end", enum)[0] is None
    # words users use for several values decide nothing
    mixed = {"price_range": [("inexpensive", {"a", "cheap"})] * 4
             + [("expensive", {"a", "cheap"})] * 4}
    assert translate_value({"phrasing": mixed}, "price_range", "cheap", enum)[0] is None


def test_enum_value_translated_through_records_of_the_same_entities():
    """Results in two vocabularies describe the same restaurants (same phone and address):
    their price_range values are a crosswalk, whatever users say."""
    from workbench.checks.base import CheckContext, TraceView
    from workbench.curation.normalize import record_crosswalk, translate_value

    def trace(tid, recs):
        return TraceView(trace_id=tid, source="t.jsonl", line=tid, tools=None, system=None,
                         messages=[{"role": "user", "content": "find food"},
                                   {"role": "tool", "content": json.dumps(recs)}])

    places = [("Chez A", "650-111-0001", "1 Main Street"), ("Bistro B", "650-111-0002",
                                                            "2 Oak Avenue"),
              ("Cafe C", "650-111-0003", "3 Elm Road")]
    canon = [{"restaurant_name": n, "phone_number": p, "street_address": a, "city": "Napa",
              "price_range": "expensive"} for n, p, a in places]
    drift = [{"restaurant_name": n, "phone_number": p, "address": a, "location": "Napa",
              "price_range": "pricey"} for n, p, a in places]
    # a single shared value (the city) links nothing: "moderate" here must not become "cheap"
    other = [{"restaurant_name": "Diner D", "phone_number": "650-111-0004", "city": "Napa",
              "price_range": "cheap"}, {"restaurant_name": "Grill E", "phone_number":
                                        "650-111-0005", "city": "Napa",
                                        "price_range": "moderate"}]
    ctx = CheckContext([trace(1, canon), trace(2, drift), trace(3, other)], {})
    walk = record_crosswalk(ctx)
    enum = ["inexpensive", "moderate", "expensive", "very expensive"]
    value, why = translate_value({"crosswalk": walk, "phrasing": {}}, "price_range", "pricey",
                                 enum)
    assert value == "expensive" and "3 records" in why
    assert translate_value({"crosswalk": walk, "phrasing": {}}, "price_range", "cheap",
                           enum)[0] is None
    # one linked record is not enough evidence
    one = CheckContext([trace(1, canon[:1]), trace(2, drift[:1])], {})
    assert translate_value({"crosswalk": record_crosswalk(one), "phrasing": {}}, "price_range",
                           "pricey", enum)[0] is None
