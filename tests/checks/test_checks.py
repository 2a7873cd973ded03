"""Checks on hand-made positive and negative cases, the flag store and the JSON contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from db import open_db
from db.flags import flags_for, replace_flags
from db.queries import EXCLUDED_SQL
from workbench.checks import coherence, duplicates, grounding, run_checks, schema, structure
from workbench.checks.base import CheckContext, TraceView
from workbench.checks.grounding import norm
from workbench.cli import app
from workbench.traces.importing import import_files

DATA = Path(__file__).parent.parent / "data" / "tft"
TOOLS = {t["function"]["name"]: t["function"] for t in json.loads(
    (DATA / "scenario-1-baseline" / "job_description.json").read_text())["tools"]}


def call(name, **args):
    return {"role": "assistant", "content": None, "tool_call_id": None, "name": None,
            "tool_calls": [{"id": "c", "type": "function",
                            "function": {"name": name, "arguments": args}}]}


def user(text):
    return {"role": "user", "content": text, "tool_calls": None, "tool_call_id": None,
            "name": None}


def result(**rec):
    return {"role": "tool", "content": json.dumps([rec]), "tool_calls": None,
            "tool_call_id": "c", "name": None}


def ctx_of(*traces):
    return CheckContext([TraceView(trace_id=i + 1, messages=m, tools=None, system=None,
                                  source="t.jsonl", line=i + 1) for i, m in enumerate(traces)],
                        TOOLS, message_tools={"respond_to_user"})


GOOD = [user("Find Thai food in San Jose"), call("FindRestaurants", city="San Jose", cuisine="Thai"),
        result(city="San Jose", cuisine="Thai", restaurant_name="Thai Basil"),
        call("respond_to_user", message="Thai Basil is nice. Book it?"),
        user("Yes, for two people this evening 4:45"),
        call("ReserveRestaurant", restaurant_name="Thai Basil", city="San Jose", time="16:45",
             party_size="2"),
        result(city="San Jose", restaurant_name="Thai Basil", time="16:45", party_size="2"),
        call("respond_to_user", message="Booked.")]


def test_clean_trace_has_no_errors():
    ctx = ctx_of(GOOD)
    for check in (schema, structure, grounding, duplicates):
        assert [f for f in check.run(ctx) if f["severity"] == "error"] == [], check.NAME


def test_schema_violations():
    bad = [user("x"), call("FindRestaurant", city="A"), user("y"),
           call("FindRestaurants", city="A", colour="red"), user("z"),
           call("ReserveRestaurant", restaurant_name="R", city="A", time="1", party_size="9")]
    details = [f["detail"] for f in schema.run(ctx_of(bad))]
    assert "unknown tool 'FindRestaurant'" in details[0]
    assert "'cuisine' is missing" in details[1] and "unknown argument 'colour'" in details[1]
    assert "party_size = '9' is not one of" in details[2]


def test_schema_flags_say_what_would_fit():
    bad = [user("x"), call("FindRestaurant", city="A"), user("y"),
           call("FindRestaurants", city="A", cuisine="Thai", price_range="Moderat", colour="red"),
           user("z"), call("ReserveRestaurant", restaurant_name="R", city="A", time="1",
                           party_size=2)]
    details = [f["detail"] for f in schema.run(ctx_of(bad))]
    assert "the nearest tool of the task is 'FindRestaurants'" in details[0]
    assert "(the nearest it allows is 'moderate')" in details[1]
    assert "unknown argument 'colour' (it declares 'cuisine', 'city'" in details[1]
    assert "party_size = 2 is not of type string (it should be the string '2')" in details[2]
    missing = [user("x"), call("ReserveRestaurant", city="A")]
    assert "required arguments 'restaurant_name', 'time' are missing" in (
        schema.run(ctx_of(missing))[0]["detail"])


def test_structure_violations():
    service_then_user = [user("Thai in San Jose"),
                         call("FindRestaurants", city="San Jose", cuisine="Thai"), user("hm")]
    message_then_result = [user("Thai in San Jose"), call("respond_to_user", message="ok"),
                           result(city="San Jose")]
    starts_wrong = [call("respond_to_user", message="hi"), user("hello"),
                    call("respond_to_user", message="hi")]
    flags = structure.run(ctx_of(service_then_user, message_then_result, starts_wrong))
    by_trace = {f["trace_id"]: f for f in flags}
    assert by_trace[1]["message_idx"] == 1 and "instead of its result" in by_trace[1]["detail"]
    assert by_trace[2]["message_idx"] == 1 and "returns nothing" in by_trace[2]["detail"]
    assert by_trace[3]["message_idx"] is None and "starts with" in by_trace[3]["detail"]


def test_grounding_normalised_forms_and_unsupported_values():
    assert grounding.supported("16:45", "one people this evening 4:45", "")
    assert grounding.supported("2", "a table for two", "")
    assert grounding.supported("San Francisco", "eat in SFO", "eat in sfo")
    assert not grounding.supported("17:30", "at 4:45 pm", "")
    other = [user("Find Thai food in San Jose"),
             call("FindRestaurants", city="Berkeley", cuisine="Thai"),
             result(city="San Jose", cuisine="Thai")]
    ctx = ctx_of(*([GOOD] * 6), other)
    errors = [f for f in grounding.run(ctx) if f["severity"] == "error"]
    assert errors and {f["trace_id"] for f in errors} == {7}
    assert "Berkeley" in errors[0]["detail"]


def test_off_domain_trace_and_duplicates():
    hotel = [user("Book a room"), call("ReserveRestaurant", hotel_name="W", check_in_date="x"),
             result(hotel_name="W", check_in_date="x", has_wifi="True")]
    ctx = ctx_of(GOOD, hotel, list(GOOD))
    off = [f for f in coherence.trace_level(ctx)]
    assert [f["trace_id"] for f in off] == [2] and f"{off[0]['message_idx']}" == "None"
    dup = duplicates.run(ctx)
    assert [(f["trace_id"], f["severity"]) for f in dup] == [(3, "error")]


def _import(tmp_path, scenario="scenario-1-baseline"):
    db = open_db(tmp_path / "x.db")
    import_files(db, [DATA / scenario / "traces.jsonl"],
                 task=DATA / "scenario-1-baseline" / "job_description.json")
    return db


def test_rerun_replaces_only_its_own_flags(tmp_path):
    db = _import(tmp_path, "scenario-5-trace-mixing")
    tid = db.execute("SELECT min(id) FROM traces").fetchone()[0]
    replace_flags(db, [tid], ["human"], [{"trace_id": tid, "message_idx": None, "check": "human",
                                          "severity": "warning", "detail": "keep me"}])
    first = run_checks(db, names=["structure", "coherence"])
    second = run_checks(db, names=["structure", "coherence"])
    assert len(first["flags"]) == len(second["flags"]) > 0
    assert any(f["check"] == "human" for f in flags_for(db, [tid]))
    excluded = f"SELECT count(*) FROM traces WHERE {EXCLUDED_SQL}"
    assert db.execute(excluded).fetchone()[0] > 100


def test_rerun_never_overrides_the_analysts_exclusion_decision(tmp_path):
    db = _import(tmp_path, "scenario-5-trace-mixing")
    run_checks(db, names=["coherence"])
    flagged = db.execute("SELECT min(trace_id) FROM flags WHERE message_idx IS NULL"
                         " AND severity = 'error'").fetchone()[0]
    clean = db.execute(f"SELECT min(id) FROM traces WHERE NOT {EXCLUDED_SQL}").fetchone()[0]
    db.execute("UPDATE traces SET excluded = 0 WHERE id = ?", [flagged])  # keep it anyway
    db.execute("UPDATE traces SET excluded = 1 WHERE id = ?", [clean])    # drop it anyway
    run_checks(db, names=["coherence"])
    out = {r[0] for r in db.execute(f"SELECT id FROM traces WHERE {EXCLUDED_SQL}")}
    assert flagged not in out and clean in out


def test_check_json_contract(tmp_path):
    db = _import(tmp_path, "scenario-4-low-data")
    res = CliRunner().invoke(app, ["--db", str(tmp_path / "x.db"), "check", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"traces", "assistant_turns", "flags", "calibration"}
    assert out["traces"] == 5 and out["assistant_turns"] == 58
    # one entry per check run (and level): its errors, precision estimate and severity used
    assert {r["check"] for r in out["calibration"]} == {
        "schema", "structure", "grounding", "coherence", "duplicates"}
    for r in out["calibration"]:
        assert r["severity"] in ("error", "warning") and r["level"] in ("turn", "trace")
        assert r["precision"] is None or 0 <= r["interval"][0] <= r["precision"] <= 1
    for f in out["flags"]:
        assert set(f) == {"source", "line", "message_index", "check", "severity", "detail",
                          "evidence", "pattern", "demoted_from", "dismissed_like"}
        assert f["pattern"].startswith(f["check"] + ": ") and f["dismissed_like"] == 0
        assert f["severity"] in ("error", "warning")
        # why: each reason says where it comes from (#15)
        assert all(set(e) == {"source", "text"}
                   and e["source"] in ("schema", "task", "corpus", "statistics")
                   for e in f["evidence"])
        assert f["message_index"] is None or isinstance(f["message_index"], int)
    job = db.execute("SELECT kind, status FROM jobs ORDER BY id DESC").fetchone()
    assert tuple(job) == ("check", "succeeded")


def test_check_report_streams_every_flag_and_the_table_says_what_it_leaves_out(tmp_path,
                                                                            monkeypatch):
    from workbench.commands import checks as check_command

    db = _import(tmp_path, "scenario-4-low-data")
    res = CliRunner().invoke(app, ["--db", str(tmp_path / "x.db"), "check", "--json"])
    flags = json.loads(res.stdout)["flags"]
    stored = db.execute("SELECT count(*) FROM flags").fetchone()[0]
    assert len(flags) == stored == 2
    monkeypatch.setattr(check_command, "TABLE_ROWS", 1)
    res = CliRunner().invoke(app, ["--db", str(tmp_path / "x.db"), "check"])
    assert res.exit_code == 0, res.output
    assert "1 of 2 flags shown; all of them: workbench check --json" in res.output
    assert f"{stored} flags" in res.output
    # an empty report is still one JSON document
    empty = CliRunner().invoke(app, ["--db", str(tmp_path / "x.db"), "check", "--json",
                                     "--search", "no trace says this"])
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.stdout)["flags"] == []


def test_scenario1_suspect_rate_under_2_percent(tmp_path):
    db = _import(tmp_path)
    rep = run_checks(db)
    suspect = {(f["line"], f["message_index"]) for f in rep["flags"]
               if f["severity"] == "error" and f["message_index"] is not None}
    assert len(suspect) / rep["assistant_turns"] < 0.02
    assert not [f for f in rep["flags"] if f["severity"] == "error" and f["message_index"] is None]


def _booking_trace(last_call: bool):
    msgs = [user("Find me Thai food in Oakland"), call("FindRestaurants", cuisine="Thai",
                                                         city="Oakland"),
            result(restaurant_name="Kin Khao", city="Oakland"),
            call("respond_to_user", message="Kin Khao is a Thai place in Oakland."),
            user("Great, thanks, that is all.")]
    if last_call:
        msgs.append(call("FindRestaurants", cuisine="Thai", city="Oakland"))
    else:
        msgs.append(call("respond_to_user", message="Enjoy your meal."))
    return msgs


def test_structure_unanswered_last_call_is_error_where_calls_get_results():
    ctx = ctx_of(*([_booking_trace(False)] * 5 + [_booking_trace(True)]))
    flags = structure.run(ctx)
    last = [f for f in flags if f["message_idx"] == 5]
    assert [(f["trace_id"], f["severity"]) for f in last] == [(6, "error")]
    assert "result is missing" in last[0]["detail"]


def test_structure_unanswered_last_call_is_warning_where_calls_get_no_results():
    trace = [user("Find me Thai food in Oakland"),
             call("FindRestaurants", cuisine="Thai", city="Oakland")]
    flags = structure.run(ctx_of(trace))
    assert [f["severity"] for f in flags if f["message_idx"] == 1] == ["warning"]



def test_coherence_flags_a_message_moved_in_and_spares_clean_turns(tmp_path):
    db = open_db(tmp_path / "c.db")
    import_files(db, [DATA / "scenario-1-baseline" / "traces.jsonl"],
                 task=DATA / "scenario-1-baseline" / "job_description.json")
    from workbench.checks import load_context

    ctx = load_context(db)
    clean_flags = coherence.turn_level(ctx)
    turns = sum(1 for t in ctx.traces for m in t.messages if m["role"] == "assistant")
    assert len(clean_flags) / turns < 0.03
    # a closing reply moved in as the answer to the user's opening request
    t = next(t for t in ctx.traces if t.messages[1]["tool_calls"][0]["function"]["name"]
             == "respond_to_user")
    idx = 1
    t.messages[idx] = call("respond_to_user", message="Your table at Aster in Fairfield for 4"
                           " people at 7:30 pm has been booked. Enjoy your meal!")
    ctx.cache.clear()
    moved = [f for f in coherence.turn_level(ctx)
             if f["trace_id"] == t.id and f["message_idx"] == idx]
    # one sentence that says what is wrong and what the conversation is about instead
    detail = moved[0]["detail"]
    assert detail.startswith("this reply names ") and "'aster'" in detail, detail
    named, about = detail.split(", but the conversation is about ")
    theirs = re.findall(r"'([^']+)'", about)
    text = norm(" ".join(m.get("content") or json.dumps(m.get("tool_calls") or "")
                         for k, m in enumerate(t.messages) if k != idx))
    assert theirs and all(norm(v) in text for v in theirs), (theirs, detail)
    assert "aster" not in theirs


def test_analyst_decision_outlives_rerun_checks(tmp_path):
    """A human revision after a flag ends the turn's suspicion, also after checks re-run
    (a flag found again keeps its first time); an analyst's review.drop always counts."""
    from db.flags import suspect_turns
    from db.revisions import add_revision, current_messages

    db = _import(tmp_path, "scenario-4-low-data")
    tid = db.execute("SELECT min(id) FROM traces").fetchone()[0]
    idx = db.execute("SELECT min(idx) FROM messages WHERE trace_id = ? AND role = 'assistant'",
                     [tid]).fetchone()[0]
    replace_flags(db, [tid], ["human"], [{"trace_id": tid, "message_idx": idx, "check": "human",
                                          "severity": "error", "detail": "looks wrong"}])
    assert idx in suspect_turns(db, [tid])[tid]
    keep = current_messages(db, tid)[idx]
    add_revision(db, tid, idx, tool_calls=keep["tool_calls"], content=keep["content"],
                 author_kind="human", author_name="ana", reason="checked: correct")
    assert idx not in suspect_turns(db, [tid]).get(tid, set())
    replace_flags(db, [tid], ["human"], [{"trace_id": tid, "message_idx": idx, "check": "human",
                                          "severity": "error", "detail": "looks wrong"}])
    assert idx not in suspect_turns(db, [tid]).get(tid, set())  # the same flag, found again
    replace_flags(db, [tid], ["review.drop"], [{"trace_id": tid, "message_idx": idx,
                                                "check": "review.drop", "severity": "error",
                                                "detail": "dropped"}])
    assert idx in suspect_turns(db, [tid])[tid]


def _oakland():
    return [user("Find Thai food in Oakland"), call("FindRestaurants", city="Oakland", cuisine="Thai"),
            result(city="Oakland", cuisine="Thai", restaurant_name="Kin Khao"),
            call("respond_to_user", message="Kin Khao is nice.")]


def test_an_ungrounded_argument_names_what_the_conversation_offers_instead():
    """The sentence says what would be right: what the user asked for (a value the corpus
    sends as that argument), else the value an earlier result gives for a field of that name,
    else what the argument should be grounded in."""
    asked = [user("Find Thai food in Oakland please"),
             call("FindRestaurants", city="Berkeley", cuisine="Thai"),
             result(cuisine="Thai", restaurant_name="Kin Khao")]
    from_result = [*GOOD[:4], user("Yes, for two people this evening 4:45"),
                   call("ReserveRestaurant", restaurant_name="Zuni", city="San Jose",
                        time="16:45", party_size="2"),
                   result(restaurant_name="Zuni", city="San Jose", time="16:45")]
    nothing = [user("Book a table for two at 4:45 in San Jose"),
               call("ReserveRestaurant", restaurant_name="Qwxyz Grill", city="San Jose",
                    time="16:45", party_size="2"),
               result(restaurant_name="Qwxyz Grill", city="San Jose", time="16:45")]
    # enough sound calls that the three damaged ones leave every argument held strictly
    ctx = ctx_of(*([GOOD] * 12), _oakland(), _oakland(), asked, from_result, nothing)
    by_trace = {f["trace_id"]: f for f in grounding.run(ctx) if f["severity"] == "error"}
    assert set(by_trace) == {15, 16, 17}, by_trace
    assert by_trace[15]["detail"] == (
        "the user asked for 'Oakland'; the FindRestaurants call says city='Berkeley', which no"
        " earlier message or result mentions.")
    assert by_trace[16]["detail"].startswith(
        "an earlier result gives restaurant_name 'Thai Basil'; the ReserveRestaurant call says"
        " restaurant_name='Zuni'")
    assert by_trace[17]["detail"].endswith(
        "restaurant_name='Qwxyz Grill', which no earlier message or result mentions; it should"
        " carry what the user said or a result returned.")
    # the wording changes nothing else: the same pattern for the same kind of finding
    assert {f["pattern"] for f in by_trace.values()} == {
        "grounding: ungrounded:FindRestaurants.city",
        "grounding: ungrounded:ReserveRestaurant.restaurant_name"}
    assert all(len(f["detail"]) < 200 for f in by_trace.values())


def test_a_long_value_is_cut_in_the_sentence():
    long_name = "The Very Long Restaurant Name " * 5
    trace = [user("Book a table for two at 4:45 in San Jose"),
             call("ReserveRestaurant", restaurant_name=long_name, city="San Jose",
                  time="16:45", party_size="2"),
             result(restaurant_name=long_name, city="San Jose", time="16:45")]
    f = next(f for f in grounding.run(ctx_of(*([GOOD] * 6), trace)) if f["trace_id"] == 7)
    assert long_name not in f["detail"] and "…'" in f["detail"] and len(f["detail"]) < 200


def _booking(city, name, time, date, said_date="today"):
    return [user(f"Book {name} in {city} at {time} {said_date} for two"),
            call("ReserveRestaurant", restaurant_name=name, city=city, time=time,
                 party_size="2", date=date),
            result(restaurant_name=name, city=city, time=time, party_size="2", date=date),
            call("respond_to_user", message="Booked.")]


def test_grounding_strictness_is_learned_from_sound_calls_and_defaults_warn():
    good = [_booking(c, f"Cafe {c}", "18:00", "2019-03-01")
            for c in ("Napa", "Oakland", "Berkeley", "Fremont", "Dublin", "Gilroy", "Alameda",
                      "Albany", "Campbell", "Danville", "Hayward", "Milpitas")]
    # calls placed where no call belongs (no result follows) with values from elsewhere: as many
    # as the good ones, they would make every argument look loosely held if counted
    damaged = [[user("Thanks, that is all"),
                call("ReserveRestaurant", restaurant_name="Zuni", city="Palo Alto",
                     time="12:00", party_size="4", date="2019-03-05"),
                user("Bye")] for _ in range(12)]
    swapped = _booking("Napa", "Cafe Napa", "18:00", "2019-03-01")
    swapped[1] = call("ReserveRestaurant", restaurant_name="Zuni", city="Palo Alto",
                      time="18:00", party_size="2", date="2019-03-01")
    usual = _booking("Ukiah", "Cafe Ukiah", "18:00", "2019-03-01", said_date="")
    ctx = ctx_of(*good, *damaged, swapped, usual)
    strict = grounding.argument_strictness(ctx)
    assert strict[("ReserveRestaurant", "city")] > 0.9
    assert grounding.argument_defaults(ctx)[("ReserveRestaurant", "date")] == "2019 03 01"
    flags = {f["trace_id"]: f for f in grounding.run(ctx) if f["message_idx"] == 1}
    assert flags[25]["severity"] == "error" and "Palo Alto" in flags[25]["detail"]
    # today's date, never said: the assistant's usual value, a warning and not an error
    assert flags[26]["severity"] == "warning" and "usual value" in flags[26]["detail"]


def test_slot_words_make_messages_of_different_conversations_alike():
    ctx = ctx_of(GOOD)
    lexicon = coherence.slot_lexicon(ctx)
    assert lexicon[("thai", "basil")] == "slotrestaurantname"
    assert lexicon[("san", "jose")] == "slotcity"
    text = coherence.delexicalise("Thai Basil in San Jose at 4:45 pm for 2 people?", lexicon)
    assert text == "slotrestaurantname in slotcity at slottime for slotnum people"
    assert coherence.delexicalise("Any Thai place?", lexicon) == "any slotcuisine place"


def test_coherence_finds_messages_from_another_domain(tmp_path):
    """Assistant messages of hotel conversations (scenario 5's foreign traces), put in place of
    restaurant messages: most are found, and clean turns stay clean."""
    import random

    from workbench.checks import load_context

    db = open_db(tmp_path / "c.db")
    import_files(db, [DATA / "scenario-1-baseline" / "traces.jsonl"],
                 task=DATA / "scenario-1-baseline" / "job_description.json")
    s1_users = set()
    for line in (DATA / "scenario-1-baseline" / "traces.jsonl").read_text().splitlines():
        msgs = json.loads(json.loads(line)["context"])["messages"]
        s1_users.add(msgs[0]["content"])
    hotel_texts = []
    for line in (DATA / "scenario-5-trace-mixing" / "traces.jsonl").read_text().splitlines():
        msgs = json.loads(json.loads(line)["context"])["messages"]
        if not any(m["role"] == "user" and m["content"] in s1_users for m in msgs):
            hotel_texts += [json.loads(c["function"]["arguments"])["message"]
                            for m in msgs for c in m.get("tool_calls") or []
                            if c["function"]["name"] == "respond_to_user"]
    ctx = load_context(db)
    rng = random.Random(0)
    by_id = {t.id: t for t in ctx.traces}
    places = [(t.id, i) for t in ctx.traces for i, m in enumerate(t.messages)
              if m["role"] == "assistant" and m["tool_calls"][0]["function"]["name"]
              == "respond_to_user"]
    planted = rng.sample(places, 120)
    for (tid, i), text in zip(planted, rng.sample(hotel_texts, 120)):
        by_id[tid].messages[i] = call("respond_to_user", message=text)
    flagged = {(f["trace_id"], f["message_idx"]) for f in coherence.turn_level(ctx)}
    found = set(planted) & flagged
    assert len(found) / len(planted) >= 0.75   # measured 0.82 (0.66 before response models)
    clean_turns = sum(1 for t in ctx.traces for m in t.messages if m["role"] == "assistant")
    assert len(flagged - found) / clean_turns < 0.02


def test_coherence_stays_silent_on_a_corpus_too_small_to_learn_from(tmp_path):
    from workbench.checks import load_context

    db = _import(tmp_path, "scenario-4-low-data")   # 5 clean conversations
    ctx = load_context(db)
    assert len(ctx.traces) == 5
    assert coherence.turn_level(ctx) == []


def test_coherence_learns_a_large_corpus_in_groups(tmp_path, monkeypatch):
    """Past CHUNK_TRACES conversations the corpus is learned from in interleaved groups (memory
    and time stay bounded); every turn is still scored, and calibration indices stay valid."""
    from workbench.checks import load_context

    db = _import(tmp_path)
    ctx = load_context(db)
    monkeypatch.setattr(coherence, "CHUNK_TRACES", 120)   # 327 conversations: 3 groups
    units = coherence.swap_scores(ctx)
    message_turns = sum(1 for t in ctx.traces for m in t.messages if m["role"] == "assistant"
                        and m["tool_calls"][0]["function"]["name"] == "respond_to_user")
    assert len(units) == message_turns
    position = {t.id: n for n, t in enumerate(ctx.traces)}
    for u in units:
        src = units[u["moved_from"]]
        assert src["trace"].id != u["trace"].id
        assert position[src["trace"].id] % 3 == position[u["trace"].id] % 3   # same group
    assert len({u["threshold"] for u in units}) == 3
    flagged = [u for u in units if u["p_moved"] >= u["threshold"]]
    assert len(flagged) / message_turns < 0.03


def test_a_name_said_by_its_first_words_supports_it():
    """People shorten names: "Kana" for "Kana Sushi", "State Bird" for "State Bird
    Provisions". A short word alone ("il") or the last word ("sushi") does not."""
    for value, said in (("Kana Sushi", "Make it at Kana for two"),
                        ("State Bird Provisions", "Yes, the State Bird in SFO")):
        assert grounding.supported(value, said, grounding.norm(said)), value
    for value, said in (("Il Fornaio", "il"), ("Kana Sushi", "I want sushi")):
        assert not grounding.supported(value, said, grounding.norm(said)), value


def test_result_changing_the_value_the_user_asked_for_is_not_an_error():
    """Results echo the time a booking was made for, yet a restaurant may give another one:
    the call that asked for the user's time is right."""
    asked = [user("Book Thai Basil in San Jose at 4:45 pm for two"),
             call("ReserveRestaurant", restaurant_name="Thai Basil", city="San Jose",
                  time="16:45", party_size="2"),
             result(city="San Jose", restaurant_name="Thai Basil", time="17:00", party_size="2"),
             call("respond_to_user", message="They could only give us 5 pm.")]
    ctx = ctx_of(*([GOOD] * 8), asked)
    assert grounding.echo_fidelity(ctx)[("ReserveRestaurant", "time")] >= 0.8
    assert [f for f in grounding.run(ctx) if f["trace_id"] == 9 and f["severity"] == "error"] == []
