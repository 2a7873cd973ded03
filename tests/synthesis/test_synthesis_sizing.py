"""Synthesis sized from the data: similarity without the shared system prompt, --max-chars from
the seeds, nested argument values re-filled, and accepted conversations that differ in what
the user says and pass every later check (the benchmark's 5 low-data seeds; a text-reply agent
with a long policy and nested arguments)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from db import open_db
from db import synthesis as records
from db.revisions import current_messages_for
from tests.tui_data import ROOT
from workbench.checks import run_checks
from workbench.traces.importing import import_files
from workbench.jobs.runner import execute, submit
from workbench.synthesis.validate import conversation_text, default_max_chars

TFT = ROOT / "tests" / "data" / "tft"


def _user_turns(messages: list[dict]) -> str:
    return json.dumps([m["content"] for m in messages if m["role"] == "user"])


def _accepted(db, job_id: int) -> dict[int, list[dict]]:
    rows = records.rows(db, job_id, "accepted")
    return current_messages_for(db, [r["trace_id"] for r in rows])


def _errors_on(db, ids) -> list[tuple]:
    return [tuple(r) for r in db.execute(
        "SELECT trace_id, message_idx, check_name, detail FROM flags WHERE severity = 'error'"
        " AND trace_id IN (SELECT value FROM json_each(?))", [json.dumps(list(ids))])]


def test_low_data_seeds_give_conversations_that_differ_and_pass_every_later_check(tmp_path):
    """The benchmark's scenario 4 (5 seeds): 50 accepted conversations, each with its own user
    turns (before: 30 distinct of 50), none flagged by a later `check` (before: 2 grounding
    errors, a party size the assistant had confirmed changed in the call only)."""
    db = open_db(tmp_path / "s.db")
    import_files(db, [TFT / "scenario-4-low-data" / "traces.jsonl"], split="train")
    import_files(db, [TFT / "test.jsonl", ROOT / "sample_traces" / "job_description.json"])
    row = execute(db, submit(db, "synth", {}, {"offline": True, "target": 50}))
    assert row["status"] == "succeeded", row["error"]
    msgs = _accepted(db, row["id"])
    assert len(msgs) == 50
    distinct = len({_user_turns(m) for m in msgs.values()})
    assert distinct >= 45, f"{distinct} distinct user-turn sequences of 50"
    run_checks(db)
    assert _errors_on(db, msgs) == []
    db.conn.close()


# ------------------------------------------------- a text-reply agent with a long policy

def _policy() -> str:
    """A 6,000-character policy, as varied as a real one (its word 3-shingles mostly unique)."""
    rng = random.Random(0)
    vocab = ("agent traveller booking reservation cabin fare refund baggage passenger payment"
             " certificate gift card insurance upgrade cancel modify confirm verify identity"
             " membership gold silver regular economy basic business flight segment origin"
             " destination date time policy rule exception compensation delay voucher"
             " consent explicit transfer human representative tool call database action").split()
    lines = [f"{i + 1}. " + " ".join(rng.choice(vocab) for _ in range(14)) + "."
             for i in range(55)]
    return "# Airline agent policy\n" + "\n".join(lines)


POLICY = _policy()
TOOLS = [
    {"type": "function", "function": {
        "name": "get_user_details", "description": "A user's profile",
        "parameters": {"type": "object", "required": ["user_id"],
                       "properties": {"user_id": {"type": "string"}}}}},
    {"type": "function", "function": {
        "name": "search_flights", "description": "Flights to a destination on a date",
        "parameters": {"type": "object", "required": ["destination", "date"],
                       "properties": {"destination": {"type": "string"},
                                      "date": {"type": "string"}}}}},
    {"type": "function", "function": {
        "name": "book_reservation", "description": "Book flights for passengers",
        "parameters": {"type": "object", "required": ["user_id", "flights", "passengers",
                                                      "total"],
                       "properties": {
                           "user_id": {"type": "string"},
                           "flights": {"type": "array", "items": {
                               "type": "object", "properties": {
                                   "flight_number": {"type": "string"},
                                   "date": {"type": "string"}}}},
                           "passengers": {"type": "array", "items": {
                               "type": "object", "properties": {
                                   "first_name": {"type": "string"},
                                   "last_name": {"type": "string"},
                                   "dob": {"type": "string"}}}},
                           "total": {"type": "integer"}}}}},
]
PEOPLE = [  # user id, first, last, dob, companion first, last, dob, city, date, flight, price
    ("ana_1", "Ana", "Lopez", "1990-01-02", "Ben", "Cruz", "1988-03-04", "Denver",
     "2024-05-20", "HAT101", 120),
    ("raj_2", "Raj", "Patel", "1985-06-07", "Mia", "Khan", "1992-08-09", "Seattle",
     "2024-05-21", "HAT202", 140),
    ("lea_3", "Lea", "Moreau", "1979-10-11", "Tom", "Berg", "1981-12-13", "Boston",
     "2024-05-22", "HAT303", 160),
    ("kai_4", "Kai", "Tanaka", "1995-02-14", "Zoe", "Hart", "1996-04-15", "Atlanta",
     "2024-05-23", "HAT404", 180),
    ("eva_5", "Eva", "Novak", "1983-05-16", "Ivan", "Petrov", "1984-07-17", "Chicago",
     "2024-05-24", "HAT505", 200),
    ("omar_6", "Omar", "Haddad", "1991-09-18", "Lina", "Saleh", "1993-11-19", "Houston",
     "2024-05-25", "HAT606", 220),
    ("nia_7", "Nia", "Okafor", "1987-01-20", "Sam", "Reed", "1989-03-21", "Phoenix",
     "2024-05-26", "HAT707", 240),
    ("leo_8", "Leo", "Rossi", "1994-06-22", "Ada", "Conti", "1997-08-23", "Miami",
     "2024-05-27", "HAT808", 260),
]
TEST_PERSON = ("ida_9", "Ida", "Berg", "1980-02-02", "Noa", "Levi", "1982-02-03", "Dallas",
               "2024-05-28", "HAT909", 280)
OPENINGS = ["Hi, I want to book a flight. My user id is {uid}.",
            "Hello! Could you book a trip for me? User id {uid}.",
            "I'd like to fly somewhere next week; my id is {uid}."]


def _call(i: int, name: str, args: dict) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{i}", "type": "function", "function": {"name": name,
                                                            "arguments": json.dumps(args)}}]}


def _result(i: int, value) -> dict:
    return {"role": "tool", "tool_call_id": f"call_{i}", "content": json.dumps(value)}


def airline_conversation(p, n: int) -> dict:
    uid, first, last, dob, cf, cl, cdob, city, date, flight, price = p
    return {"tools": TOOLS, "messages": [
        {"role": "system", "content": POLICY},
        {"role": "user", "content": OPENINGS[n % 3].format(uid=uid)},
        _call(2, "get_user_details", {"user_id": uid}),
        _result(2, {"user_id": uid, "name": {"first_name": first, "last_name": last},
                    "dob": dob, "saved_passengers": [{"first_name": cf, "last_name": cl,
                                                      "dob": cdob}]}),
        {"role": "assistant", "content": f"Thanks {first}. Where are you flying, and when?"},
        {"role": "user", "content": f"To {city} on {date}, with my friend {cf} {cl}."},
        _call(6, "search_flights", {"destination": city, "date": date}),
        _result(6, [{"flight_number": flight, "destination": city, "date": date,
                     "price": price}]),
        {"role": "assistant", "content": f"Flight {flight} to {city} on {date} costs ${price}"
                                         f" per passenger. Shall I book it for {first} and {cf}?"},
        {"role": "user", "content": "Yes please, go ahead."},
        _call(10, "book_reservation", {
            "user_id": uid, "flights": [{"flight_number": flight, "date": date}],
            "passengers": [{"first_name": first, "last_name": last, "dob": dob},
                           {"first_name": cf, "last_name": cl, "dob": cdob}],
            "total": 2 * price}),
        _result(10, {"reservation_id": f"R{flight}", "status": "booked"}),
        {"role": "assistant", "content": f"Done: reservation R{flight} is booked for you both."},
        {"role": "user", "content": "Thanks, bye."},
        {"role": "assistant", "content": "Have a good trip!"},
    ]}


@pytest.fixture
def airline(tmp_path) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "traces.jsonl").write_text("".join(
        json.dumps(airline_conversation(p, n)) + "\n" for n, p in enumerate(PEOPLE)))
    (folder / "test.jsonl").write_text(json.dumps(airline_conversation(TEST_PERSON, 0)) + "\n")
    path = tmp_path / "a.db"
    db = open_db(path)
    import_files(db, [str(folder)])
    db.conn.close()
    return path


def test_similarity_leaves_out_the_system_prompt() -> None:
    a = airline_conversation(PEOPLE[0], 0)["messages"]
    assert len(POLICY) > 5000
    text = conversation_text(a)
    assert "policy" not in text and "Ana" in text and "1990-01-02" in text   # nested values
    assert default_max_chars([a, a[:5]]) == 2 * len(json.dumps(a, ensure_ascii=False))


def test_text_reply_agent_with_a_long_policy_most_candidates_are_accepted(airline: Path):
    db = open_db(airline)
    row = execute(db, submit(db, "synth", {}, {"offline": True, "target": 8}))
    assert row["status"] == "succeeded", row["error"]
    res = row["result"]
    assert res["accepted"] == 8 and res["acceptance_rate"] > 0.5, res
    from workbench.conversations.view import conversations

    seeds = [c.messages for c in conversations(db) if c.split != "test"]
    longest = max(len(json.dumps(m, ensure_ascii=False)) for m in seeds)
    assert res["max_chars"] == 2 * longest > 2 * len(POLICY)   # --max-chars from the seeds
    msgs = _accepted(db, row["id"])
    booked = Counter()
    for m in msgs.values():
        assert m[0]["role"] == "system" and m[0]["content"] == POLICY   # the policy kept
        for turn in m:
            for c in turn.get("tool_calls") or ():
                if c["function"]["name"] == "book_reservation":
                    args = c["function"]["arguments"]
                    p = args["passengers"][0]
                    booked[json.dumps([p["first_name"], p["last_name"]])] += 1
                    assert isinstance(args["total"], int)          # a number stays a number
                    # the nested values follow the conversation: the names said before
                    said = " ".join(t["content"] or "" for t in m if t["role"] != "system")
                    assert p["first_name"] in said and args["flights"][0]["flight_number"] in said
    # nested arguments are re-filled: passengers that no seed of this shape had at that place
    assert booked and len(booked) >= 3
    assert len({_user_turns(m) for m in msgs.values()}) == len(msgs)
    run_checks(db)
    assert _errors_on(db, msgs) == []
    db.conn.close()


TAU = ROOT / "tests" / "data" / "tau-airline" / "tune.jsonl"


@pytest.mark.skipif(not TAU.is_file(), reason="the public airline corpus (tests/data/tau-airline)"
                    " is not in this checkout")
def test_public_text_reply_corpus_most_candidates_are_accepted(tmp_path):
    """τ-bench airline (gpt-4o, a 6,000-character policy, text replies, nested arguments):
    before, 0 of 200 candidates were accepted (duplicates of the policy, --max-chars 20,000
    below the average conversation, numbers turned into text)."""
    src = tmp_path / "airline.jsonl"
    src.write_text("".join(TAU.read_text().splitlines(keepends=True)[:40]))
    db = open_db(tmp_path / "t.db")
    import_files(db, [src], split="train")
    row = execute(db, submit(db, "synth", {}, {"offline": True, "target": 12}))
    assert row["status"] == "succeeded", row["error"]
    res = row["result"]
    assert res["accepted"] == 12 and res["acceptance_rate"] > 0.5, res
    assert res["max_chars"] > 20_000
    db.conn.close()
