"""Synthesis (workbench synth): the offline re-fill on hand-made seeds, validation of exact bad
cases, and a scripted teacher (tests/scripted_openai.py) including a stopped job resumed
without repeated requests."""

from __future__ import annotations

import json
import random
import re
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db import open_db
from db import synthesis as records
from db.jobs import get_job, request_cancel
from db.queries import TraceFilter
from db.revisions import current_messages
from tests.scripted_openai import ScriptedServer
from tests.tui_data import ROOT
from workbench.cli import app
from workbench.conversations.view import conversations
from workbench.traces.importing import import_files
from workbench.jobs.runner import execute, resume, submit
from workbench.synthesis.corpus import learn
from workbench.synthesis.offline import refill

ENTITIES = [  # city, cuisine, restaurant, phone, address, time, party
    ("Oakland", "Italian", "Luigi Trattoria", "510-111-2222", "1 Main Street", "18:30", "2"),
    ("Fremont", "Thai", "Bangkok House", "510-333-4444", "22 Oak Avenue", "19:00", "4"),
    ("Sunnyvale", "Mexican", "Casa Sol", "408-555-6666", "7 Elm Road", "12:15", "3"),
    ("Berkeley", "Indian", "Tandoor Palace", "510-777-8888", "9 Cedar Lane", "20:45", "5"),
    ("San Jose", "Korean", "Seoul Garden", "408-999-0000", "31 Pine Court", "17:30", "6"),
    ("Palo Alto", "French", "Chez Marie", "650-121-3434", "4 Birch Way", "13:45", "1"),
]
TEST_ENTITY = ("Alameda", "Greek", "Olive Tree Taverna", "510-246-8100", "5 Shore Drive",
               "18:15", "2")
WORDINGS = [
    ("I'd like {cuisine} food in {city}.", "Yes, book {name} at {time} for {party} people.",
     "Thanks, bye."),
    ("Any {cuisine} places in {city}?", "Reserve {name} for {party} at {time}, please.",
     "Great, that's all."),
    ("Looking for {cuisine} in {city} tonight.", "Please get {party} seats at {name} at {time}.",
     "Perfect, thank you."),
]


def record(e, **extra) -> dict:
    city, cuisine, name, phone, address, *_ = e
    return {"city": city, "cuisine": cuisine, "has_live_music": "False",
            "phone_number": phone, "price_range": "moderate", "restaurant_name": name,
            "serves_alcohol": "True", "street_address": address, **extra}


def call(i: int, name: str, args: dict) -> dict:
    return {"role": "assistant", "tool_calls": [{"id": f"c{i}", "type": "function", "function": {
        "name": name, "arguments": json.dumps(args)}}]}


def say(i: int, text: str) -> dict:
    return call(i, "respond_to_user", {"message": text})


def conversation(e, wording: int = 0) -> list[dict]:
    city, cuisine, name, phone, address, time, party = e
    first, book, bye = (w.format(city=city, cuisine=cuisine, name=name, time=time, party=party)
                        for w in WORDINGS[wording % len(WORDINGS)])
    return [
        {"role": "user", "content": first},
        call(1, "FindRestaurants", {"city": city, "cuisine": cuisine}),
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps([record(e)])},
        say(3, f"{name} in {city} serves {cuisine} food. Shall I book it?"),
        {"role": "user", "content": book},
        call(5, "ReserveRestaurant", {"restaurant_name": name, "city": city, "time": time,
                                      "party_size": party}),
        {"role": "tool", "tool_call_id": "c5", "content": json.dumps(
            [record(e, date="2019-03-01", party_size=party, time=time)])},
        say(7, f"Your table at {name} is booked for {time}. The address is {address} and the"
               f" phone is {phone}."),
        {"role": "user", "content": bye},
        say(9, "Enjoy your meal!"),
    ]


@pytest.fixture
def store(tmp_path) -> Path:
    """Six hand-made seeds (train), one test conversation, the sample task and tools."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(ROOT / "sample_traces" / "job_description.json", folder)
    shutil.copy(ROOT / "sample_traces" / "task.txt", folder)
    (folder / "traces.jsonl").write_text("".join(
        json.dumps({"messages": conversation(e, n)}) + "\n" for n, e in enumerate(ENTITIES)))
    (folder / "test.jsonl").write_text(json.dumps({"messages": conversation(TEST_ENTITY)})
                                       + "\n")
    path = tmp_path / "s.db"
    db = open_db(path)
    import_files(db, [str(folder)])
    assert db.execute("SELECT count(*) FROM traces WHERE split = 'test'").fetchone()[0] == 1
    db.conn.close()
    return path


@pytest.fixture
def db(store):
    database = open_db(store)
    yield database
    database.conn.close()


def synth(db, **params) -> dict:
    job_id = submit(db, "synth", params.pop("selection", {}), params)
    return execute(db, job_id)


def texts(messages: list[dict]) -> dict[str, str]:
    """The conversation's text by where it is: user words, calls, results, replies."""
    out = {"user": "", "calls": "", "results": "", "replies": ""}
    for m in messages:
        if m["role"] == "user":
            out["user"] += m["content"] + "\n"
        elif m["role"] == "tool":
            out["results"] += m["content"] + "\n"
        for c in m["tool_calls"] or ():
            fn = c["function"]
            key = "replies" if fn["name"] == "respond_to_user" else "calls"
            out[key] += json.dumps(fn["arguments"]) + "\n"
    return out


# ---------------------------------------------------------------------------- offline method


def _offline_run(db, tmp_path: Path, topics_text: str, target: int) -> tuple[dict, dict]:
    """An offline synth job with these topics: its job row and result (it must succeed)."""
    topics = tmp_path / "topics.txt"
    topics.write_text(topics_text)
    row = execute(db, submit(db, "synth", {}, {"offline": True, "target": target,
                                               "topics": str(topics)}))
    assert row["status"] == "succeeded", row["error"]
    return row, row["result"]


def test_offline_refills_slots_consistently_across_user_calls_results_and_replies(db):
    seeds = conversations(db, TraceFilter(split="unassigned"))
    seeds = [s for s in seeds if s.split != "test"]
    know = learn(seeds, seeds[0].tools)
    assert "respond_to_user" in know.message_tools
    assert {"has_live_music", "serves_alcohol"} <= know.flag_fields   # flags are no slots
    rng = random.Random(3)
    for seed in seeds:
        made = refill(seed, know, rng)
        assert not made["problems"], made["problems"]
        mapping = made["mapping"]
        old_e = next(e for e in ENTITIES if e[2] in json.dumps(seed.messages))
        # the restaurant moved to another entity, with its own city, phone and address
        new_name = mapping[old_e[2]]
        new_e = next(e for e in ENTITIES if e[2] == new_name)
        assert new_e != old_e
        for old, new in zip(old_e[:5], new_e[:5]):
            if old != new:
                assert mapping[old] == new
        t = texts(made["messages"])
        everything = "".join(t.values())
        for old in (old_e[0], old_e[2], old_e[3], old_e[4]):
            assert old not in everything, old       # nothing of the old entity is left
        assert new_e[0] in t["user"] and new_e[0] in t["calls"] and new_e[0] in t["results"]
        assert new_e[2] in t["user"] and new_e[2] in t["calls"] and new_e[2] in t["results"]
        assert new_e[2] in t["replies"] and new_e[3] in t["replies"] and new_e[4] in t["replies"]
        # the time the user asked for is the call's, the result's and the reply's
        new_time = mapping.get(old_e[5], old_e[5])
        assert new_time in t["user"] and new_time in t["results"] and new_time in t["replies"]
        assert made["messages"][5]["tool_calls"][0]["function"]["arguments"]["time"] == new_time
        # the structure and the wording around the slots are the seed's
        assert [m["role"] for m in made["messages"]] == [m["role"] for m in seed.messages]
        strip = lambda s: re.sub(r"[A-Z0-9][\w' -]*", "", s)   # noqa: E731
        assert strip(made["messages"][0]["content"]) == strip(seed.messages[0]["content"])


def test_splice_joins_one_seeds_opening_to_anothers_rest_consistently(db):
    from workbench.synthesis.offline import splice

    seeds = conversations(db, TraceFilter(split="unassigned"))
    know = learn(seeds, seeds[0].tools)
    head = next(s for s in seeds if "Luigi" in json.dumps(s.messages))
    tail = next(s for s in seeds if "Bangkok" in json.dumps(s.messages))
    made = splice(head, tail, know, random.Random(0))
    assert not made["problems"]
    msgs = made["messages"]
    assert msgs[0] == head.messages[0]                         # the head's opening
    assert msgs[3]["tool_calls"][0]["function"]["arguments"]["message"].startswith(
        "Luigi Trattoria in Oakland serves Italian food")      # the tail's reply, re-filled
    assert msgs[4]["content"].startswith("Reserve Luigi Trattoria for")   # the tail's words
    assert msgs[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Oakland",
                                                                 "cuisine": "Italian"}
    reserve = msgs[5]["tool_calls"][0]["function"]["arguments"]
    assert reserve["restaurant_name"] == "Luigi Trattoria" and reserve["city"] == "Oakland"
    everything = json.dumps(msgs)
    for old in ENTITIES[1][:5]:                                # nothing of the tail's entity
        assert old not in everything, old
    assert "1 Main Street" in msgs[7]["tool_calls"][0]["function"]["arguments"]["message"]


def test_free_text_before_a_value_enters_is_left_alone(db):
    """"hit number 2" comes before the user asks for 2 people: it is not the party size."""
    from workbench.conversations.view import Conversation
    from workbench.conversations.messages import normalize_messages

    msgs = conversation(ENTITIES[0])                        # party of 2, said at message 4
    msgs[3] = say(3, "Luigi Trattoria in Oakland is hit number 2. Shall I book it?")
    seeds = conversations(db, TraceFilter(split="unassigned"))
    own = next(s.trace_id for s in seeds if "Luigi" in json.dumps(s.messages))
    conv = Conversation(trace_id=own, messages=normalize_messages(msgs), tools=None, system=None)
    know = learn(seeds, seeds[0].tools)
    for n in range(5):
        made = refill(conv, know, random.Random(n))
        party = made["messages"][5]["tool_calls"][0]["function"]["arguments"]["party_size"]
        if party == "2":
            continue
        assert "hit number 2." in made["messages"][3]["tool_calls"][0]["function"][
            "arguments"]["message"]
        assert f"for {party} people" in made["messages"][4]["content"]
        break
    else:
        pytest.fail("the party size was never re-filled")


def test_a_value_the_user_never_said_is_pinned(db):
    """The assistant inferred the cuisine ("Oriental" -> Asian): the call keeps it, because the
    text cannot follow a change."""
    msgs = conversation(ENTITIES[0])
    msgs[0]["content"] = "I'd like Oriental food in Oakland."
    from workbench.conversations.view import Conversation
    from workbench.conversations.messages import normalize_messages

    seeds = conversations(db, TraceFilter(split="unassigned"))
    own = next(s.trace_id for s in seeds if "Luigi" in json.dumps(s.messages))
    # as the stored seed of that entity: its own call is no donor for it
    conv = Conversation(trace_id=own, messages=normalize_messages(msgs), tools=None, system=None)
    know = learn(seeds, seeds[0].tools)
    made = refill(conv, know, random.Random(0))
    assert "Italian" not in made["mapping"]
    assert made["messages"][1]["tool_calls"][0]["function"]["arguments"]["cuisine"] == "Italian"
    assert made["messages"][1]["tool_calls"][0]["function"]["arguments"]["city"] != "Oakland"


def test_offline_job_stores_validated_synthetic_traces_linked_to_seeds(db, tmp_path):
    # the task's four length buckets: the 10-message seeds fit the short one; a seed's search
    # exchange (4) or whole booking (8) followed by another seed reach 14 and 18 messages; no
    # shape reaches 21-29, and no bucket takes more than its share
    row = execute(db, submit(db, "synth", {}, {"offline": True, "target": 8}))
    assert row["status"] == "succeeded", row["error"]
    per_topic = {t["topic"].split(":")[0]: t["reached"] for t in
                 row["result"]["report"]["per_topic"]}
    assert per_topic == {"short conversation": 2, "short-medium conversation": 2,
                         "medium conversation": 2, "long conversation": 0}
    assert "target not reached: 6/8" in get_job(db, row["id"])["log"]
    row, res = _offline_run(db, tmp_path, "a conversation like the seeds\n", 5)
    assert res["accepted"] == 5 and res["test_leaks_stored"] == 0
    assert sum(res["rejected"].values()) + 5 == res["candidates"]
    acc = records.rows(db, row["id"], "accepted")
    assert len(acc) == 5
    acc += records.rows(db, row["id"] - 1, "accepted")
    assert len(acc) == 11
    for r in acc:
        t = db.execute("SELECT origin, split FROM traces WHERE id = ?", [r["trace_id"]]).fetchone()
        assert tuple(t) == ("synthetic", "train")
        assert r["method"] == "offline" and r["seeds"] and r["topic"]
        assert records.origin_of(db, r["trace_id"])["job_id"] == r["job_id"]
    # the filters see them like any trace
    syn = conversations(db, TraceFilter(origin="synthetic"))
    assert {c.trace_id for c in syn} == {r["trace_id"] for r in acc}
    # every accepted conversation is new: not one is a stored or test conversation again
    hashes = [h for (h,) in db.execute("SELECT content_hash FROM traces")]
    assert len(hashes) == len(set(hashes))
    # the report: per topic, tool and argument
    rep = res["report"]
    assert rep["per_topic"][0]["reached"] == 5
    assert {t["tool"] for t in rep["per_tool"]} >= {"FindRestaurants", "ReserveRestaurant"}
    city = next(a for a in rep["per_argument"] if a["argument"] == "FindRestaurants.city")
    assert city["distinct"] >= 2
    # synthetic traces are no seeds of more (unless the selection asks for them), and a second
    # job accepts nothing that is a near-copy of the first one's
    _, again = _offline_run(db, tmp_path, "a conversation like the seeds\n", 3)
    assert again["seeds"] == len(ENTITIES)
    assert again["accepted"] == 3


def test_cli_synth_offline_json_and_bad_options(store, tmp_path):
    topics = tmp_path / "topics.txt"
    topics.write_text("a conversation like the seeds\n")
    r = CliRunner().invoke(app, ["--db", str(store), "synth", "--offline", "--target", "3",
                                 "--topics", str(topics), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["accepted"] == 3 and res["method"] == "offline"
    r = CliRunner().invoke(app, ["--db", str(store), "synth", "--target", "3"])
    assert r.exit_code == 1 and "--offline or --teacher" in r.output
    r = CliRunner().invoke(app, ["--db", str(store), "synth", "--offline", "--checks", "nope"])
    assert r.exit_code == 1 and "unknown check" in r.output
    r = CliRunner().invoke(app, ["--db", str(store), "synth", "--offline", "--split", "test"])
    assert r.exit_code != 0 and "no seeds" in r.output


# ------------------------------------------------------------------- the teacher, scripted

def reply_of(*convs) -> dict:
    return {"content": json.dumps({"conversations": [{"messages": c} for c in convs]})}


NEW = ("Campbell", "Vietnamese", "Pho Saigon", "408-864-2000", "8 Winchester Road", "19:30",
       "3")


def teacher(db, url: str, **params) -> dict:
    params = {"teacher": f"{url}#teacher", "target": 1, "per_request": 1,
              "max_requests": 1, **params}
    return execute(db, submit(db, "synth", {}, params))


def reasons_of(db, job_id: int) -> list[str]:
    return [r["reasons"][0]["reason"] for r in records.rows(db, job_id, "rejected")]


def test_teacher_request_and_a_valid_conversation_is_stored(db):
    with ScriptedServer(lambda b: reply_of(conversation(NEW, 1))) as s:
        row = teacher(db, s.url)
    assert row["status"] == "succeeded", row["error"]
    assert row["result"]["accepted"] == 1 and row["result"]["requests"] == 1
    body = s.requests[0]
    assert body["response_format"]["type"] == "json_schema"     # structured output
    prompt = body["messages"][1]["content"]
    assert "FindRestaurants" in prompt and "Topic: " in prompt and "Example 1" in prompt
    assert "Olive Tree Taverna" not in prompt                   # never a test conversation
    acc = records.rows(db, row["id"], "accepted")[0]
    assert acc["method"] == "teacher" and acc["teacher"].endswith("(teacher)")
    assert acc["topic"] in prompt and acc["seeds"]
    stored = current_messages(db, acc["trace_id"])
    assert stored[0]["content"] == conversation(NEW, 1)[0]["content"]


def test_the_reply_schema_holds_each_call_to_its_tools_schema_and_bounds_every_string(db):
    """The schema sent (and the grammar llama.cpp makes of it) admits the seeds' own kind of
    conversation and nothing that calls an undeclared tool, drops a required argument, adds one,
    answers in text where the seeds never do, or runs a string on."""
    import subprocess
    import sys

    import jsonschema

    from workbench.committee.prompt import VALUE_MAX
    from workbench.models.endpoints import get_endpoint
    from workbench.conversations.messages import normalize_messages, to_openai
    from workbench.synthesis.teacher import TEXT_MAX

    with ScriptedServer(lambda b: reply_of(conversation(NEW, 1))) as s:
        teacher(db, s.url)
    schema = s.requests[0]["response_format"]["json_schema"]["schema"]
    # llama.cpp makes a grammar of it and samples under it (a bound it refuses kills the process)
    probe = ("import json, sys; from llama_cpp import Llama;"
             " llm = Llama(model_path=sys.argv[1], n_ctx=512, n_threads=1, verbose=False);"
             " r = llm.create_chat_completion(messages=[{'role': 'user', 'content': 'hi'}],"
             " max_tokens=3, response_format={'type': 'json_object', 'schema':"
             " json.loads(sys.argv[2])}); print(r['choices'][0]['message']['content'])")
    done = subprocess.run([sys.executable, "-c", probe, get_endpoint("local").gguf,
                           json.dumps(schema)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("{"), done.stderr[-500:]
    prompt = s.requests[0]["messages"][1]["content"]
    assert '"arguments": {"city": ' in prompt       # examples show arguments as the schema does

    def reply(messages):
        return {"conversations": [{"messages": [to_openai(m, arguments_as_string=False)
                                                for m in normalize_messages(messages)]}]}

    jsonschema.validate(reply(conversation(NEW, 1)), schema)

    def broken(change):
        msgs = json.loads(json.dumps(reply(conversation(NEW, 1))))
        change(msgs["conversations"][0]["messages"])
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(msgs, schema)

    def fn(ms):
        return ms[1]["tool_calls"][0]["function"]

    broken(lambda ms: fn(ms).update(name="BookFlight"))
    broken(lambda ms: fn(ms)["arguments"].pop("city"))
    broken(lambda ms: fn(ms)["arguments"].update(group_size="4"))
    broken(lambda ms: fn(ms)["arguments"].update(city="x" * (VALUE_MAX + 1)))
    broken(lambda ms: ms[0].update(content="x" * (TEXT_MAX + 1)))
    broken(lambda ms: ms.__setitem__(3, {"role": "assistant", "content": "Shall I book it?"}))


def test_a_reply_that_is_no_json_is_a_failed_request_never_kept(db):
    """Garbage from the teacher is no candidate: a failed request, not cached (a re-run asks
    again), and a run whose every request failed ends failed."""
    with ScriptedServer(lambda b: {"content": "Sure! Here are some conversations: {oops"}) as s:
        row = teacher(db, s.url, max_requests=2)
        assert row["status"] == "failed" and "every request to the teacher failed (2)" in \
            row["error"] and "not JSON" in row["error"]
        assert db.execute("SELECT count(*) FROM job_units").fetchone()[0] == 0
        assert records.rows(db, row["id"]) == []
        s.reply = lambda b: reply_of(conversation(NEW, 1))
        row = teacher(db, s.url, max_requests=2)
        assert row["status"] == "succeeded" and s.count == 3


@pytest.mark.parametrize("case, reason", [
    ("not_messages", "format"),
    ("schema", "schema"),
    ("ungrounded", "grounding"),
    ("seed_copy", "duplicate"),
    ("test_leak", "test_leak"),
    ("too_long", "too_long"),
])
def test_validation_rejects_with_the_reason(db, case, reason):
    conv = conversation(NEW, 2)
    if case == "not_messages":
        reply = {"content": json.dumps({"conversations": [{"messages": [{"role": "robot"}]}]})}
    elif case == "schema":
        conv[1]["tool_calls"][0]["function"]["arguments"] = json.dumps(
            {"city": "Campbell", "cuisine": "Vietnamese", "stars": "5"})
        reply = reply_of(conv)
    elif case == "ungrounded":      # a city nobody said
        conv[1]["tool_calls"][0]["function"]["arguments"] = json.dumps(
            {"city": "Gilroy", "cuisine": "Vietnamese"})
        reply = reply_of(conv)
    elif case == "seed_copy":
        reply = reply_of(conversation(ENTITIES[1], 1))
    elif case == "test_leak":
        leak = conversation(TEST_ENTITY)
        leak[-1] = say(9, "Enjoy your dinner!")                 # near, not identical
        reply = reply_of(leak)
    else:
        conv[3] = say(3, "x " * 12000)
        reply = reply_of(conv)
    with ScriptedServer(lambda b: reply) as s:
        row = teacher(db, s.url)
    assert row["status"] == "succeeded", row["error"]
    assert row["result"]["accepted"] == 0
    assert reasons_of(db, row["id"]) == [reason]
    assert row["result"]["rejected"] == {reason: 1}
    rej = records.rows(db, row["id"], "rejected")[0]
    assert rej["messages"] is not None and rej["trace_id"] is None   # kept for the analyst
    assert db.execute("SELECT count(*) FROM traces WHERE origin = 'synthetic'"
                      ).fetchone()[0] == 0                     # nothing unvalidated stored


def test_two_copies_in_one_reply_only_one_is_accepted(db):
    with ScriptedServer(lambda b: reply_of(conversation(NEW, 1), conversation(NEW, 1))) as s:
        row = teacher(db, s.url, per_request=2, target=2)
    assert row["result"]["accepted"] == 1
    assert row["result"]["rejected"] == {"duplicate": 1}


def test_a_stopped_teacher_job_resumes_without_repeating_a_request(db, store, tmp_path,
                                                                 monkeypatch):
    """Six requests, one at a time; the job is cancelled once three are answered (a request
    started meanwhile gets no answer); resumed, it asks only what was never answered and
    replays the three stored replies."""
    answered: list[str] = []
    phase = {"first": True}
    lock = threading.Lock()
    job_box: dict = {}

    def script(body):
        prompt = body["messages"][1]["content"]
        with lock:
            if phase["first"] and len(answered) >= 3:
                return {"status": 400, "body": "not now"}     # not answered, not retried
            answered.append(prompt)
            n = len(answered)
        if n == 3:
            other = open_db(store)
            request_cancel(other, job_box["id"])
            other.conn.close()
        e = NEW if n == 1 else (f"Town{n}", "Vietnamese", f"Pho {n}", f"408-864-20{n:02d}",
                                f"{n} Bay Road", "19:30", "3")
        return reply_of(conversation(e, n))

    with ScriptedServer(script) as s:
        cfg = tmp_path / "config.toml"
        cfg.write_text(f'[endpoints.t]\nbase_url = "{s.url}"\nmodel = "t"\n'
                       "max_concurrency = 1\n")
        monkeypatch.setenv("WORKBENCH_CONFIG", str(cfg))
        job_id = submit(db, "synth", {}, {"teacher": "t", "target": 6, "per_request": 1,
                                          "max_requests": 6})
        job_box["id"] = job_id
        row = execute(db, job_id)
        assert row["status"] == "cancelled", row
        first = list(answered)
        assert len(first) == 3
        with lock:
            phase["first"] = False
        resume(db, job_id)
        row = execute(db, job_id, resume=True)
    assert row["status"] == "succeeded", row["error"]
    after = answered[3:]
    assert not set(first) & set(after)                       # nothing answered is asked again
    assert len(after) == len(set(after)) == 3
    assert row["result"]["requests"] == 3 and row["result"]["replies_reused"] == 3
    assert row["result"]["accepted"] == 6
    assert len(records.rows(db, job_id, "accepted")) == 6
    assert get_job(db, job_id)["status"] == "succeeded"


def test_topics_file_length_buckets_and_a_seed_query(db, tmp_path):
    """Topics from a file: a length no seed has is reached by cutting a longer seed after an
    assistant reply; --seeds narrows the seeds by a full-text query."""
    topics = tmp_path / "topics.txt"
    topics.write_text("# my topics\n- short: aim for 4-5 messages\n- full: 10-10 messages\n")
    # the hand-made seeds share one reply template, so a 4-message prefix re-filled is most of
    # another seed's prefix (a near-duplicate, rightly): only exact copies count here
    row = execute(db, submit(db, "synth", {}, {"offline": True, "target": 4, "similarity": 1.0,
                                               "topics": str(topics), "seeds": "Fremont"}))
    assert row["status"] == "succeeded", row["error"]
    res = row["result"]
    assert res["seeds"] == 1
    fremont = db.execute("SELECT trace_id FROM search WHERE search MATCH 'Fremont' AND"
                         " message_idx IS NULL").fetchone()[0]
    acc = records.rows(db, row["id"], "accepted")
    assert {tuple(r["seeds"]) for r in acc} == {(fremont,)}
    by_topic = {t["topic"]: t for t in res["report"]["per_topic"]}
    assert by_topic["short: aim for 4-5 messages"]["reached"] == 2
    assert by_topic["full: 10-10 messages"]["reached"] == 2
    for r in acc:
        msgs = current_messages(db, r["trace_id"])
        if r["topic"].startswith("short"):
            assert len(msgs) == 4 and msgs[-1]["tool_calls"][0]["function"]["name"] == \
                "respond_to_user"
        else:
            assert len(msgs) == 10
    bad = tmp_path / "empty.txt"
    bad.write_text("\n# nothing\n")
    row = execute(db, submit(db, "synth", {}, {"offline": True, "target": 1,
                                               "topics": str(bad)}))
    assert row["status"] == "failed" and "no topics" in row["error"]


# ------------------------------------------- length buckets no seed fits, request arguments

def test_a_short_bucket_no_seed_fits_is_filled_with_complete_prefixes(db, tmp_path):
    """Every seed has 10 messages; the 6-7 message bucket is reached by a seed's search
    exchange (ending on the assistant's reply to the result) and a closing learned from the
    seeds' endings, validated like any candidate, each bucket within 5 points of its share."""
    row, res = _offline_run(db, tmp_path, "- brief: 6-7 messages\n- full: 10-10 messages\n", 8)
    assert res["accepted"] == 8 and res["test_leaks_stored"] == 0
    for t in res["report"]["per_topic"]:
        assert abs(t["bucket_share"] - t["target_share"]) <= 5, t
    briefs = [r for r in records.rows(db, row["id"], "accepted") if r["topic"].startswith("brief")]
    assert len(briefs) == 4
    for r in briefs:
        msgs = current_messages(db, r["trace_id"])
        assert len(msgs) == 6
        # the exchange is complete: the search, its result, the assistant's reply to it
        assert msgs[1]["tool_calls"][0]["function"]["name"] == "FindRestaurants"
        assert msgs[2]["role"] == "tool"
        assert msgs[3]["tool_calls"][0]["function"]["name"] == "respond_to_user"
        # then a seed's closing exchange as it was (it holds no value the tools know)
        assert msgs[4]["content"] in {w[2] for w in WORDINGS}
        assert msgs[5]["tool_calls"][0]["function"]["arguments"] == {"message": "Enjoy your meal!"}
    assert db.execute("SELECT count(*) FROM traces WHERE origin = 'synthetic'").fetchone()[0] == 8


def test_closings_and_complete_points_are_learned_from_the_seeds(db):
    from workbench.synthesis.offline import closings, complete_points

    seeds = conversations(db, TraceFilter(split="unassigned"))
    know = learn(seeds, seeds[0].tools)
    # after the reply to the search's result and after the reply to the booking's
    assert complete_points(seeds[0], know) == [4, 8]
    ends = closings(seeds, know)
    assert sorted(m[0]["content"] for _, m in ends) == sorted(w[2] for w in WORDINGS)
    assert all(len(m) == 2 for _, m in ends)
    # an ending that carries a value the tools know is no closing
    msgs = conversation(ENTITIES[0])
    msgs[8]["content"] = "Thanks, see you in Oakland."
    from workbench.conversations.view import Conversation
    from workbench.conversations.messages import normalize_messages
    conv = Conversation(trace_id=1, messages=normalize_messages(msgs), tools=None, system=None)
    assert closings([conv], know) == []


def test_request_arguments_take_any_value_of_the_argument_consistently(db):
    """A reservation's time and party size are what the user asks, not the restaurant's: each
    is re-filled from the values its argument takes anywhere (the schema's enum included),
    not as the borrowed reservation's pair, and the same everywhere in the conversation."""
    seeds = conversations(db, TraceFilter(split="unassigned"))
    know = learn(seeds, seeds[0].tools)
    assert know.request_fields == {"ReserveRestaurant": {"time", "date", "party_size"},
                                   "FindRestaurants": set()}
    seen_pairs = {(e[5], e[6]) for e in ENTITIES}
    new_pairs = set()
    for n in range(30):
        for seed in seeds:
            made = refill(seed, know, random.Random(n))
            msgs = made["messages"]
            call = msgs[5]["tool_calls"][0]["function"]["arguments"]
            result = json.loads(msgs[6]["content"])[0]
            party, time, name = call["party_size"], call["time"], call["restaurant_name"]
            assert result["party_size"] == party and result["time"] == time
            assert result["restaurant_name"] == name
            assert f"{party}" in msgs[4]["content"] and time in msgs[4]["content"]
            assert time in msgs[7]["tool_calls"][0]["function"]["arguments"]["message"]
            new_pairs.add((time, party))
    # times and party sizes that no booking had together
    assert len(new_pairs - seen_pairs) >= 5


def test_a_stopped_synthesis_keeps_nothing_and_reruns_do_not_stack(db, tmp_path):
    """Cancelled once its first candidates are accepted: no synthetic trace is left (they
    wait, pending, in the record); a re-run of the same job stores the target; the cancelled
    job resumed beside it stores none of its own (the target counts what the re-run kept),
    and one more re-run makes nothing."""
    from workbench.jobs.context import Progress

    topics = tmp_path / "topics.txt"
    topics.write_text("a conversation like the seeds\n")
    params = {"offline": True, "target": 4, "topics": str(topics)}
    synthetic = "SELECT count(*) FROM traces WHERE origin = 'synthetic'"
    first = submit(db, "synth", {}, params)

    def cancel_once_accepted(event) -> None:
        if isinstance(event, Progress) and event.done:
            request_cancel(db, first)

    row = execute(db, first, listeners=[cancel_once_accepted])
    assert row["status"] == "cancelled"
    assert db.execute(synthetic).fetchone()[0] == 0
    waiting = len(records.pending(db, first))
    assert waiting >= 1
    again = execute(db, submit(db, "synth", {}, params))
    assert again["status"] == "succeeded" and again["result"]["stored"] == 4
    assert db.execute(synthetic).fetchone()[0] == 4
    resume(db, first)
    resumed = execute(db, first, resume=True)
    assert resumed["status"] == "succeeded", resumed["error"]
    assert resumed["result"]["stored"] == 0 and resumed["result"]["kept_earlier"] == 4
    assert resumed["result"]["surplus"] == waiting
    assert not records.pending(db, first)
    third = execute(db, submit(db, "synth", {}, params))
    assert third["result"]["stored"] == 0 and third["result"]["candidates"] == 0
    assert db.execute(synthetic).fetchone()[0] == 4


def test_a_batch_teacher_sends_each_round_as_one_batch(db, tmp_path, monkeypatch):
    """`batch = true`: the round's requests go as one batch, each reply parsed as online (one
    valid conversation, one that is not JSON: rejected as the online path rejects it)."""
    replies = iter([reply_of(conversation(NEW, 1)), {"content": "not json {"}])
    lock = threading.Lock()

    def script(body):
        with lock:
            return next(replies)

    config = tmp_path / "config.toml"
    monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
    with ScriptedServer(script, batch_polls=2) as s:
        config.write_text(f'[endpoints.t]\nbase_url = "{s.url}"\nmodel = "teacher"\n'
                          'batch = true\nbatch_poll_s = 0.02\n')
        row = teacher(db, "", teacher="t", target=2, max_requests=2)
        made, paid = len(s.batches), len(s.requests)
    assert row["status"] == "succeeded", row["error"]
    assert made == 1 and paid == 2
    res = row["result"]
    assert res["requests"] == 1 and res["failed"] == 1 and res["replies_reused"] == 0
    assert res["accepted"] == 1
    assert res["batch"] == {"batches": 1, "answered": 2, "failed": 0, "pending": 0}
    assert "the reply is not JSON" in get_job(db, row["id"])["log"]
