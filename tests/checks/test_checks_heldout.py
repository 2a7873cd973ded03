"""The checks on held-out data built differently from the TFT scenarios (bench/heldout.py):
a small noisy corpus whose foreign replies come from other service domains, and a mix in which
foreign conversations, renamed to the task's tools, are almost half the corpus (issue #15). And
every flag says why, down to the detail view and `check --json`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench.heldout import (
    SMALL_SETS,
    measure_mix,
    measure_small,
    mix,
    read_traces,
    small_noisy,
    write_traces,
)
from db import open_db
from db.flags import flags_for
from tests.conftest import DATA, S1
from tests.tui_data import app_config, screen_text, until
from workbench.app import make_app
from workbench.checks import run_checks
from workbench.cli import app as cli
from workbench.traces.importing import import_files

TASK = S1 / "job_description.json"


@pytest.mark.parametrize(("n", "seed"), SMALL_SETS, ids=[f"{n}-{s}" for n, s in SMALL_SETS])
def test_each_small_noisy_corpus_meets_the_suspect_turn_targets(tmp_path, n, seed):
    """Every small corpus on its own, not only pooled: an analyst checks one corpus."""
    r = measure_small(tmp_path, DATA, n, seed)
    assert r["corrupted"] > 100
    assert r["precision"] >= 0.95, r
    assert r["recall"] >= 0.85, r
    assert r["excluded"] == 0, r   # damaged calls are not another domain


def test_mix_with_almost_half_foreign_traces_excludes_them_all(tmp_path):
    r = measure_mix(tmp_path, DATA, 0.45, 202)
    assert r["foreign"] >= 30
    assert r["precision"] >= 0.98, r
    assert r["recall"] >= 0.98, r


def _mix_store(tmp_path, share=0.45, seed=202):
    traces, foreign = mix(read_traces(S1 / "traces.jsonl"), seed, share)
    path = write_traces(tmp_path / "mix.jsonl", traces)
    db = open_db(tmp_path / "mix.db")
    import_files(db, [path], task=TASK)
    return db, traces, foreign


def test_off_domain_flag_names_the_undeclared_arguments_from_the_schema(tmp_path):
    db, traces, foreign = _mix_store(tmp_path)
    run_checks(db)
    flags = [f for f in flags_for(db) if f["check"] == "coherence" and f["message_idx"] is None]
    assert {f["line"] - 1 for f in flags} == foreign
    for f in flags:
        t = traces[f["line"] - 1]
        sent = {(c["function"]["name"], k) for m in t for c in m.get("tool_calls") or ()
                if c["function"]["name"] != "respond_to_user"
                for k in json.loads(c["function"]["arguments"])}
        schema = [e for e in f["evidence"] if e["source"] == "schema"]
        assert schema, f
        # each schema reason names arguments this trace really sends to the task's tools
        for e in schema:
            if e["text"].startswith("no tool of the task declares"):
                named = e["text"].split(" declares argument", 1)[1].lstrip("s ").split(", yet")[0]
            else:
                tool, rest = e["text"].split(" does not declare argument", 1)
                named = rest.lstrip("s ")
                assert tool in ("FindRestaurants", "ReserveRestaurant")
            assert set(named.split(", ")) <= {k for _, k in sent}, (e, sent)
    db.close()


def test_turn_flags_carry_their_evidence_source(tmp_path):
    """A reply pasted from another domain is flagged from the task's words; a call whose
    arguments no tool declares, from the schema."""
    s1 = read_traces(S1 / "traces.jsonl")[:40]
    bank = "Your checking account balance is $4,820.17 and the overdraft limit is $500."
    s1[0][1] = {"role": "assistant", "tool_calls": [{"id": "c0", "type": "function", "function": {
        "name": "respond_to_user", "arguments": json.dumps({"message": bank})}}]}
    call = next(i for i, m in enumerate(s1[1]) if m.get("tool_calls")
                and m["tool_calls"][0]["function"]["name"] == "FindRestaurants")
    s1[1][call]["tool_calls"][0]["function"]["arguments"] = json.dumps(
        {"city": "Oakland", "cuisine": "Thai", "airline": "Delta"})
    path = write_traces(tmp_path / "t.jsonl", s1)
    db = open_db(tmp_path / "t.db")
    import_files(db, [path], task=TASK)
    run_checks(db)
    flags = {(f["line"], f["message_idx"], f["check"]): f for f in flags_for(db)}
    reply = flags[(1, 1, "coherence")]
    task = [e for e in reply["evidence"] if e["source"] == "task"]
    assert task and "checking" in task[0]["text"] and "overdraft" in task[0]["text"], reply
    bad = flags[(2, call, "schema")]
    assert bad["evidence"] == [{"source": "schema",
                                "text": "the parameters of FindRestaurants: unknown argument"
                                        " 'airline'"}]
    db.close()


def test_check_json_reports_evidence(tmp_path):
    traces, _ = mix(read_traces(S1 / "traces.jsonl"), 201, 0.3, on_task=20)
    path = write_traces(tmp_path / "m.jsonl", traces)
    db_path = tmp_path / "m.db"
    r = CliRunner().invoke(cli, ["--db", str(db_path), "import", str(path), "--task", str(TASK)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["--db", str(db_path), "check", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    off = [f for f in out["flags"] if f["check"] == "coherence" and f["message_index"] is None]
    assert off and all(any(e["source"] == "schema" for e in f["evidence"]) for f in off)


async def test_detail_view_shows_the_evidence_of_a_flag(tmp_path):
    db, traces, foreign = _mix_store(tmp_path, 0.3, 201)
    run_checks(db)
    line = min(foreign) + 1
    tid = db.execute("SELECT id FROM traces WHERE line = ?", [line]).fetchone()[0]
    f = next(f for f in flags_for(db, [tid]) if f["message_idx"] is None
             and f["check"] == "coherence")
    why = next(e["text"] for e in f["evidence"] if e["source"] == "schema")
    db.close()
    app = make_app(tmp_path / "mix.db", app_config())
    async with app.run_test(size=(240, 60)) as pilot:
        from workbench.app.screens.detail import DetailScreen

        await pilot.pause(0.2)
        app.push_screen(DetailScreen(tid))
        await until(pilot, lambda: isinstance(app.screen, DetailScreen)
                    and app.screen.view is not None)
        await pilot.pause(0.2)
        text = " ".join(screen_text(app).split())
        assert "why (schema):" in text, text
        assert " ".join(why.split())[:60] in text, (why, text)


def test_conversation_without_calls_is_judged_by_the_task_words(tmp_path):
    """Foreign conversations that make no service call (nothing for the schema to judge) are
    off-domain by their words, even when they are a third of the corpus; on-task ones are not."""
    import random

    from bench.heldout import DOMAIN_NAMES, foreign_trace

    own = read_traces(S1 / "traces.jsonl")[:40]
    rng = random.Random(5)
    talk = [foreign_trace(rng, DOMAIN_NAMES[k % len(DOMAIN_NAMES)], calls=False)
            for k in range(20)]
    path = write_traces(tmp_path / "t.jsonl", own + talk)
    db = open_db(tmp_path / "t.db")
    import_files(db, [path], task=TASK)
    run_checks(db)
    off = {f["line"]: f for f in flags_for(db) if f["check"] == "coherence"
           and f["message_idx"] is None}
    assert set(off) == set(range(41, 61))
    assert all(f["evidence"][0]["source"] == "task" for f in off.values())
    db.close()


def _reply(text: str) -> dict:
    return {"role": "assistant", "tool_calls": [{"id": "r0", "type": "function", "function": {
        "name": "respond_to_user", "arguments": json.dumps({"message": text})}}]}


def _turn_flags(tmp_path, traces) -> dict:
    path = write_traces(tmp_path / "t.jsonl", traces)
    db = open_db(tmp_path / "t.db")
    import_files(db, [path], task=TASK)
    run_checks(db)
    out = {(f["line"], f["message_idx"], f["check"]): f for f in flags_for(db)}
    db.close()
    return out


def test_reply_naming_what_its_conversation_never_does_is_flagged(tmp_path):
    """A confirmation moved in from another conversation names that conversation's restaurant
    and city; the rest of this one (user turns, calls, results) never does."""
    s1 = read_traces(S1 / "traces.jsonl")[:40]
    assert "Fairfield" in s1[0][2]["content"]
    s1[0][7] = _reply("Please confirm: a table for 2 in San Francisco at 12:15 pm.")
    f = _turn_flags(tmp_path, s1)[(1, 7, "coherence")]
    assert "but the conversation is about city 'fairfield'" in f["detail"], f
    assert "city 'san francisco'" in f["detail"] and "time '12:15 pm'" in f["detail"], f
    assert any(e["source"] == "statistics" and "city values named in replies" in e["text"]
               for e in f["evidence"]), f


def test_reply_after_a_search_result_naming_none_of_it_is_flagged(tmp_path):
    """Replies right after a search's results report what it found; one that names nothing
    of it is from elsewhere."""
    s1 = read_traces(S1 / "traces.jsonl")[:40]
    assert "Mimi's Cafe" in s1[0][4]["content"]   # the search's result
    s1[0][5] = _reply("Your booking is complete.")
    f = _turn_flags(tmp_path, s1)[(1, 5, "coherence")]
    assert "names nothing of the FindRestaurants result it follows" in f["detail"], f


def test_usual_value_of_a_small_noisy_corpus_is_learned_from_every_call(tmp_path):
    """In 45 conversations with 4 in 10 turns damaged, today's date is under half of the sound
    calls' dates, yet the usual one: a call filled with it where the confirmation that said
    "today" was damaged gets a warning, not an error."""
    from workbench.checks import grounding, load_context

    traces, _ = small_noisy(read_traces(S1 / "traces.jsonl"), 108, 45)
    path = write_traces(tmp_path / "s.jsonl", traces)
    db = open_db(tmp_path / "s.db")
    import_files(db, [path], task=TASK)
    ctx = load_context(db)
    assert grounding.argument_defaults(ctx)[("ReserveRestaurant", "date")] == "2019 03 01"
    db.close()
