"""Evidence that generalises beyond verbatim values (issue #31), on the logs of other agents in
tests/data (tau-bench airline `tune`, BFCL multi-turn `tune`): names the corpus pairs with
codes, dates and numbers written another way, free-text arguments, results keyed by data, the
task's own vocabulary in replies, an agent's role protocol; and flags an analyst can act on
(one sentence, the numbers in a "statistics" evidence entry, a pattern key)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from db import open_db
from workbench.checks import coherence, grounding, load_context, structure
from workbench.checks.base import data_keyed, record_items, result_records
from workbench.checks.grounding import norm, supported
from workbench.traces.importing import import_files

DATA = Path(__file__).parent.parent / "data"
TAU = DATA / "tau-airline" / "tune.jsonl"
BFCL = DATA / "bfcl-multi-turn" / "tune.jsonl"


def _ctx(tmp_path_factory, path: Path):
    db = open_db(tmp_path_factory.mktemp("store") / "w.db")
    import_files(db, [path])
    ctx = load_context(db)
    db.close()
    return ctx


@pytest.fixture(scope="module")
def tau(tmp_path_factory):
    return _ctx(tmp_path_factory, TAU)


@pytest.fixture(scope="module")
def bfcl(tmp_path_factory):
    return _ctx(tmp_path_factory, BFCL)


def _fresh(ctx):
    """The same traces and tools with nothing learned yet."""
    return dataclasses.replace(ctx, cache={})


def _trace(ctx, line: int):
    return next(t for t in ctx.traces if t.line == line)


def _with(ctx, trace, messages):
    """The corpus with `trace`'s messages replaced (a fresh context)."""
    changed = dataclasses.replace(trace, messages=messages)
    return dataclasses.replace(ctx, traces=[changed if t.id == trace.id else t
                                            for t in ctx.traces], cache={})


# --- values written another way -------------------------------------------------------------

def test_a_date_written_another_way_supports_the_iso_date():
    assert supported("2024-05-20", "I fly on 05/20/2024", norm("I fly on 05/20/2024"))
    assert supported("May 20, 2024", "flights on 2024-05-20", norm("flights on 2024-05-20"))
    assert not supported("2024-05-21", "I fly on 05/20/2024", norm("I fly on 05/20/2024"))


def test_a_number_formatted_or_spelled_out_supports_the_value():
    text = "the total is $1,250.00 for twenty-five bags"
    assert supported("1250", text, norm(text))
    assert supported("1250.0", text, norm(text))
    assert supported("25", text, norm(text))
    assert not supported("1260", text, norm(text))


def test_a_code_the_corpus_pairs_with_the_city_the_user_named_is_grounded(tau):
    """Line 99: the user asks for San Francisco to New York; the search says SFO and JFK,
    which the corpus writes as "San Francisco (SFO)" and "New York (JFK)"."""
    ctx = tau
    t = _trace(ctx, 99)
    call = t.messages[20]["tool_calls"][0]["function"]["arguments"]
    aliases = grounding.value_aliases(ctx)
    assert {norm(call["origin"]), norm(call["destination"])} <= set(aliases)
    flags = [f for f in grounding.run(ctx) if f["trace_id"] == t.id and f["message_idx"] == 20]
    assert flags == []


def test_a_code_nothing_pairs_with_what_was_said_stays_ungrounded(tau):
    """The same call sent to a code that neither the conversation nor any name it says stands
    for: an error whose detail says what is wrong in one sentence, numbers in evidence."""
    ctx = _fresh(tau)
    t = _trace(ctx, 99)
    aliases = grounding.value_aliases(ctx)
    text = norm(" ".join(m.get("content") or "" for m in t.messages[:20]))
    other = next(v for v in sorted(aliases) if len(v) == 3 and f" {v} " not in f" {text} "
                 and not any(f" {a} " in f" {text} " for a in aliases[v]))
    msgs = copy.deepcopy(t.messages)
    msgs[20]["tool_calls"][0]["function"]["arguments"]["destination"] = other.upper()
    ctx2 = _with(ctx, t, msgs)
    f = next(f for f in grounding.run(ctx2) if f["trace_id"] == t.id and f["message_idx"] == 20)
    assert f["severity"] == "error"
    assert f["pattern"] == "grounding: ungrounded:search_direct_flight.destination"
    assert f"destination='{other.upper()}'" in f["detail"]
    assert "no earlier message or result mentions" in f["detail"]
    # and what would be right: the city the user asked for (which the corpus writes with the
    # code), not the origin the call's other argument already carries
    assert "New York" in t.messages[17]["content"]
    assert f["detail"].startswith("the user asked for 'New York'; "), f["detail"]
    assert f["detail"].endswith(".") and f["detail"].count(". ") == 0 and "%" not in f["detail"]
    assert any(e["source"] == "statistics" and "%" in e["text"] for e in f["evidence"])


# --- free text ------------------------------------------------------------------------------

def test_free_text_arguments_are_no_grounding_target(tau):
    """A free-thought tool's argument is long, never repeated and never found as written in
    the conversation: the corpus shows it is free text, so it is never flagged ungrounded."""
    ctx = tau
    t = _trace(ctx, 7)
    (name, args), = [(c["function"]["name"], c["function"]["arguments"])
                     for c in t.messages[22]["tool_calls"]]
    free = grounding.free_text_arguments(ctx)
    assert {(name, k) for k in args} <= set(free)
    # arguments that values come from the conversation are grounding targets still
    assert not any(k in ("origin", "destination", "reservation_id") for _, k in free)
    assert not [f for f in grounding.run(ctx) if (f["trace_id"], f["message_idx"]) == (t.id, 22)]


# --- results keyed by data ------------------------------------------------------------------

def test_a_result_keyed_by_codes_is_a_collection_not_a_record(tau):
    ctx = tau

    def parsed(m):
        try:
            return json.loads(m["content"] or "null")
        except ValueError:
            return None

    keyed = next(m for t in ctx.traces for m in t.messages if m["role"] == "tool"
                 and isinstance(parsed(m), dict) and data_keyed(parsed(m)))
    codes = set(json.loads(keyed["content"]))
    assert result_records(keyed) == []
    fields, _ = coherence.result_fields(ctx)
    assert not codes & fields
    slots = set(coherence.slot_lexicon(ctx).values())
    assert not {"slot" + c.lower() for c in codes} & slots
    # and what it pairs (a code with its city) is an alias the grounding check uses
    code, city = next(iter(json.loads(keyed["content"]).items()))
    assert norm(city) in grounding.value_aliases(ctx)[norm(code)]


def test_field_names_are_not_data_keys():
    assert not data_keyed({"origin": "a", "destination": "b", "flight_number": "c"})
    assert not data_keyed({"FlightNumber": "a", "Origin": "b"})
    assert data_keyed({"2024-05-16": {"status": "x"}, "2024-05-17": {"status": "y"}})
    nested = {"payment_methods": {"credit_card_7815826": {"brand": "visa"},
                                  "gift_card_1234567": {"balance": 5}}}
    assert ("payment_methods", "credit_card_7815826") in set(record_items(nested))
    assert ("brand", "visa") in set(record_items(nested))


# --- the task's vocabulary in replies -------------------------------------------------------

def test_a_reply_offering_the_tasks_choices_names_no_foreign_value(tau):
    """Line 21 says "5 to 7 business days", lines 24 and 49 offer the cabin classes: values of
    the tools' enums are the task's vocabulary, not values moved in from elsewhere."""
    ctx = tau
    missing, _ = coherence.unechoed_values(ctx)
    ids = {_trace(ctx, line).id for line in (21, 24, 49)}
    assert not [k for k in missing if k[0] in ids]
    enums = {norm(str(v)) for fn in ctx.tools.values()
             for p in ((fn.get("parameters") or {}).get("properties") or {}).values()
             for v in p.get("enum") or ()}
    assert not [v for vs in missing.values() for v, _ in vs if norm(v) in enums]


def test_a_reply_naming_nested_values_of_the_result_reports_it(tau):
    """Line 23: the reply lists the passengers of the reservation it follows (nested in the
    result): it reports the result."""
    ctx = tau
    silent, _, _ = coherence.unreported_results(ctx)
    assert (_trace(ctx, 23).id, 6) not in silent


# --- structure: the agent's protocol --------------------------------------------------------

def test_a_consistent_order_is_the_agents_protocol(bfcl):
    """BFCL logs go on with the next user turn right after results: that is its protocol, no
    broken order; parallel calls are answered by a run of results."""
    ctx = _fresh(bfcl)
    assert ("tool", "user") in structure.protocol(ctx)
    assert not [f for f in structure.run(ctx) if f["message_idx"] is None]


def test_truly_broken_orders_stay_errors(bfcl):
    ctx = _fresh(bfcl)
    t = ctx.traces[0]
    call_at = next(i for i, m in enumerate(t.messages) if m.get("tool_calls"))
    # a result with no call: the call is dropped, its results stay
    no_call = t.messages[:call_at] + t.messages[call_at + 1:]
    flags = [f for f in structure.run(_with(ctx, t, no_call))
             if f["trace_id"] == t.id and f["message_idx"] is None]
    assert flags and "a result answers no call" in flags[0]["detail"]
    assert "(a call belongs before it)" in flags[0]["detail"]
    assert flags[0]["severity"] == "error" and flags[0]["pattern"] == "structure: role-order"
    # an assistant turn right after another answers nothing
    reply = {"role": "assistant", "content": "Done.", "tool_calls": None}
    twice = t.messages[:call_at] + [reply] + t.messages[call_at:]
    flags = [f for f in structure.run(_with(ctx, t, twice))
             if f["trace_id"] == t.id and f["message_idx"] is None]
    assert flags and "answers nothing" in flags[0]["detail"]
    assert "(a user turn or a result belongs between)" in flags[0]["detail"]


def test_an_order_few_conversations_show_is_still_broken(tau):
    """tau's agent replies after results: a user turn right after a result is broken there."""
    ctx = _fresh(tau)
    assert ("tool", "user") not in structure.protocol(ctx)
    t = _trace(ctx, 99)
    at = next(i for i, m in enumerate(t.messages[:-2]) if m["role"] == "tool"
              and t.messages[i + 2]["role"] == "user")
    msgs = t.messages[:at + 1] + t.messages[at + 2:]   # the reply after the result dropped
    assert msgs[at + 1]["role"] == "user"
    flags = [f for f in structure.run(_with(ctx, t, msgs))
             if f["trace_id"] == t.id and f["message_idx"] is None]
    assert flags and "follows results without an assistant reply" in flags[0]["detail"]
    assert "(the assistant should answer the results first)" in flags[0]["detail"]
