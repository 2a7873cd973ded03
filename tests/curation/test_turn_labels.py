"""Assistant turns of every kind (text, calls, parallel calls, text with calls) as labels: the
one validation (`checks.schema.label_problems`), `label edit --text/--call` and the other label
commands on real stores, and exports that stay valid chat data and re-import identically when a
revision turns a call into text or text into a call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db import open_db, revisions
from tests.tui_data import build_db, first_assistant
from workbench.curation import decisions
from workbench.checks.schema import label_problems
from workbench.cli import app
from workbench.traces.exporting import export
from workbench.traces.importing import import_files

DATA = Path(__file__).parent.parent / "data" / "labels" / "mixed_turns.jsonl"


def valid_chat(messages: list[dict]) -> None:
    """OpenAI/HF chat validity: every `tool_calls` turn is followed by exactly one tool message
    per call, answering it by id; a tool message appears nowhere else; ids are strings."""
    i = 0
    while i < len(messages):
        m = messages[i]
        assert m["role"] in ("system", "user", "assistant", "tool"), m
        if m["role"] == "tool":
            raise AssertionError(f"message {i}: a tool result that answers no call")
        calls = m.get("tool_calls") or []
        if m["role"] == "assistant":
            assert calls or isinstance(m.get("content"), str), f"message {i} is empty"
        ids = [c["id"] for c in calls]
        assert all(isinstance(x, str) and x for x in ids), f"message {i}: ids {ids}"
        assert len(set(ids)) == len(ids)
        for c in calls:
            json.loads(c["function"]["arguments"])      # arguments as a JSON string
        j = i + 1
        answered = []
        while j < len(messages) and messages[j]["role"] == "tool":
            answered.append(messages[j]["tool_call_id"])
            j += 1
        if calls and j < len(messages):                 # the last turn may be a call
            assert sorted(answered) == sorted(ids), f"message {i}: {ids} answered by {answered}"
        else:
            assert sorted(answered) == sorted(ids) or not answered, f"message {i}"
        i = j


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture
def store(tmp_path):
    db = open_db(tmp_path / "m.db")
    import_files(db, [DATA])
    yield db
    db.conn.close()


def _export(db, path: Path, fmt: str = "openai") -> list[dict]:
    export(db, path, fmt)
    return lines(path)


def _round_trip(db, tmp_path: Path, name: str) -> list[dict]:
    """Export, import into a fresh store, export again: the two exports are the same."""
    first = _export(db, tmp_path / f"{name}.1.jsonl")
    for obj in first:
        valid_chat(obj["messages"])
    again = open_db(tmp_path / f"{name}.again.db")
    import_files(again, [tmp_path / f"{name}.1.jsonl"])
    second = _export(again, tmp_path / f"{name}.2.jsonl")
    again.conn.close()
    strip = lambda objs: [(o["messages"], o.get("tools")) for o in objs]
    assert strip(second) == strip(first)
    return first


def _edit(db, tid, idx, *, text=None, calls=None):
    return decisions.edit(db, tid, idx, "ada", content=text, tool_calls=calls)


def _call(name, **args):
    return {"name": name, "arguments": args}


# -- export validity and re-import identity ---------------------------------------------------

def test_an_unrevised_export_is_valid_and_re_imports_identically(store, tmp_path):
    out = _round_trip(store, tmp_path, "plain")
    source = lines(DATA)
    assert [o["messages"] for o in out] == [s["messages"] for s in source]
    calls = out[0]["messages"][2]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_a1", "call_b2"]      # parallel, in order
    assert out[0]["messages"][2]["content"] == "Let me check both orders."


def test_a_call_turned_into_text_ends_the_conversation_there(store, tmp_path):
    _edit(store, 1, 2, text="Which of the two orders do you mean?")
    out = _round_trip(store, tmp_path, "to_text")
    msgs = out[0]["messages"]
    assert len(msgs) == 3 and msgs[-1] == {"role": "assistant",
                                           "content": "Which of the two orders do you mean?"}
    assert len(out[1]["messages"]) == 7        # the other conversation is whole


def test_text_turned_into_a_call_is_the_last_turn(store, tmp_path):
    _edit(store, 2, 2, calls=[_call("get_order", order_id="C3")])
    out = _round_trip(store, tmp_path, "to_call")
    msgs = out[1]["messages"]
    assert len(msgs) == 3 and msgs[-1]["tool_calls"][0]["function"]["name"] == "get_order"
    assert msgs[-1]["tool_calls"][0]["id"].startswith("call_")


def test_back_and_forth_comes_back_whole(store, tmp_path):
    _edit(store, 2, 2, calls=[_call("get_order", order_id="C3")])
    decisions.undo(store, 2, 2, "ada")
    out = _round_trip(store, tmp_path, "undone")
    assert out[1]["messages"] == lines(DATA)[1]["messages"]


def test_editing_arguments_keeps_ids_and_results(store, tmp_path):
    _edit(store, 1, 2, text="Checking.", calls=[_call("get_order", order_id="A1"),
                                                 _call("get_order", order_id="B9")])
    cur = revisions.current_messages(store, 1)[2]
    assert [c["id"] for c in cur["tool_calls"]] == ["call_a1", "call_b2"]
    out = _round_trip(store, tmp_path, "args")
    msgs = out[0]["messages"]
    assert len(msgs) == 12 and json.loads(msgs[2]["tool_calls"][1]["function"]["arguments"]) \
        == {"order_id": "B9"}
    assert [m["tool_call_id"] for m in msgs[3:5]] == ["call_a1", "call_b2"]


def test_dropping_one_of_two_parallel_calls_cuts_after_the_turn(store, tmp_path):
    _edit(store, 1, 2, calls=[_call("get_order", order_id="A1")])
    out = _round_trip(store, tmp_path, "one_call")
    assert len(out[0]["messages"]) == 3


def test_another_tool_is_a_new_call_with_a_new_id(store, tmp_path):
    _edit(store, 1, 7, calls=[_call("get_order", order_id="B2")])
    cur = revisions.current_messages(store, 1)[7]
    assert cur["tool_calls"][0]["id"] not in (None, "call_x1")
    out = _round_trip(store, tmp_path, "other_tool")
    assert len(out[0]["messages"]) == 8


def test_text_edited_to_other_text_keeps_the_rest(store, tmp_path):
    _edit(store, 1, 5, text="A1 shipped. B2 is pending.")
    out = _round_trip(store, tmp_path, "text")
    assert len(out[0]["messages"]) == 12 and out[0]["messages"][5]["content"] == \
        "A1 shipped. B2 is pending."


def test_pairs_and_hf_follow_the_same_cut(store, tmp_path):
    _edit(store, 1, 2, text="Which one?")
    pairs = _export(store, tmp_path / "p.jsonl", "pairs")
    assert [p["meta"]["message_index"] for p in pairs if p["meta"]["trace_id"] == 1] == [2]
    assert pairs[0]["answer"] == "Which one?"
    hf = _export(store, tmp_path / "h.jsonl", "hf")
    assert len(hf[0]["messages"]) == 3 and isinstance(hf[0]["tools"], str)


def test_a_reply_tool_needs_no_result(tmp_path):
    """The benchmark's style: a reply is a call of a tool that gets no result; editing it keeps
    the conversation whole."""
    path = build_db(tmp_path / "b.db")
    db = open_db(path)
    before = _export(db, tmp_path / "before.jsonl")
    idx = first_assistant(db, 1)
    cur = revisions.current_messages(db, 1)[idx]
    fn = cur["tool_calls"][0]["function"]
    assert cur["tool_calls"] and tuple(fn["arguments"]) == ("message",)
    _edit(db, 1, idx, calls=[_call(fn["name"], message="Which city are you in?")])
    after = _export(db, tmp_path / "after.jsonl")
    assert len(after[0]["messages"]) == len(before[0]["messages"])
    assert after[1:] == before[1:]
    db.conn.close()


# -- one validation -------------------------------------------------------------------------

def test_label_problems_names_each_problem(store):
    tools = json.loads(DATA.read_text().splitlines()[0])["tools"]
    assert label_problems(tools, "hi", None) == []
    empty = "the turn is empty: give it text or at least one call"
    assert label_problems(tools, " ", []) == [empty]
    assert label_problems(tools, None, [_call("nope")])[0].startswith(
        "call 1 (nope): unknown tool 'nope' (known: cancel_order, get_order)")
    assert label_problems(tools, None, [_call("get_order")]) == [
        "call 1 (get_order): 'order_id' is missing (required)"]
    assert label_problems(tools, None, [_call("get_order", order_id="A", x=1)]) == [
        "call 1 (get_order): unknown argument 'x'"]
    assert label_problems(tools, None, [_call("get_order", order_id=5)]) == [
        "call 1 (get_order): order_id = 5 is not of type string"]
    nested = _call("cancel_order", order_id="A", reason="customer request",
                   items=[{"sku": "K", "qty": "two"}])
    assert label_problems(tools, None, [nested]) == [
        "call 1 (cancel_order): items.0.qty = 'two' is not of type integer"]
    dup = [{"id": "a", **_call("get_order", order_id="A")},
           {"id": "a", **_call("get_order", order_id="B")}]
    assert "used by another call" in label_problems(tools, None, dup)[0]


# -- the command line ---------------------------------------------------------------------

def _cli(path):
    def run(*args):
        return CliRunner().invoke(app, ["--db", str(path), "label", *args])
    return run


@pytest.fixture
def cli_store(tmp_path):
    path = tmp_path / "c.db"
    db = open_db(path)
    import_files(db, [DATA])
    db.conn.close()
    return path


def _history(path, tid, idx):
    db = open_db(path)
    try:
        return revisions.history(db, tid, idx)
    finally:
        db.conn.close()


def test_label_edit_text_calls_and_both(cli_store):
    run = _cli(cli_store)
    r = run("edit", "1", "7", "--text", "I cannot cancel B2: it has shipped.")
    assert r.exit_code == 0, r.output
    assert "exports now end this conversation after turn 7 (the 4 message(s)" in r.stdout
    rev = _history(cli_store, 1, 7)[-1]
    assert (rev["content"], rev["tool_calls"]) == ("I cannot cancel B2: it has shipped.", None)
    r = run("edit", "1", "7", "--call", '{"name": "get_order", "arguments": {"order_id": "B2"}}',
            "--call", '{"name": "get_order", "arguments": {"order_id": "A1"}, "id": "mine"}')
    assert r.exit_code == 0, r.output
    rev = _history(cli_store, 1, 7)[-1]
    assert rev["content"] is None
    ids = [c["id"] for c in rev["tool_calls"]]
    assert ids[0].startswith("call_") and ids[1] == "mine"
    r = run("edit", "1", "2", "--text", "Both:", "--call",
            '{"name": "get_order", "arguments": {"order_id": "A1"}}', "--call",
            '{"name": "get_order", "arguments": "{\\"order_id\\": \\"B3\\"}"}', "--json")
    assert r.exit_code == 0, r.output
    assert "exports now end" not in json.loads(r.stdout)["message"]     # same calls, ids kept
    rev = _history(cli_store, 1, 2)[-1]
    assert rev["content"] == "Both:"
    assert [(c["id"], c["function"]["arguments"]) for c in rev["tool_calls"]] == [
        ("call_a1", {"order_id": "A1"}), ("call_b2", {"order_id": "B3"})]
    r = run("show", "1", "2")
    assert r.exit_code == 0 and "Both:" in r.stdout and "[call_b2] get_order" in r.stdout


@pytest.mark.parametrize("args, says", [
    ((), "give the new label"),
    (("--call", '{"name": "nope", "arguments": {}}'), "unknown tool 'nope'"),
    (("--call", '{"name": "get_order", "arguments": {}}'), "'order_id' is missing (required)"),
    (("--call", '{"name": "get_order", "arguments": {"order_id": "A", "z": 1}}'),
     "unknown argument 'z'"),
    (("--call", '{"name": "get_order", "arguments": {"order_id": 1}}'),
     "order_id = 1 is not of type string"),
    (("--call", '{"name": "get_order", "arguments": [1]}'), "'arguments' must be a JSON object"),
    (("--call", "{"), "--call 1: not JSON"),
    (("--text", "  "), "the turn is empty"),
])
def test_label_edit_refuses_what_the_schemas_do_not_allow(cli_store, args, says):
    r = _cli(cli_store)("edit", "1", "7", *args)
    assert r.exit_code == 1
    lines_ = r.output.strip().splitlines()
    assert len(lines_) == 1 and lines_[0].startswith("error: ") and says in lines_[0], r.output
    assert _history(cli_store, 1, 7) == []                 # nothing written


@pytest.mark.parametrize("cmd, tid, turn, says", [
    ("keep", 99999, 3, "no trace 99999"),
    ("keep", 1, 99, "trace 1 has no turn 99"),
    ("drop", 1, 0, "turn 0 of trace 1 is a system message"),
    ("drop", 1, 1, "turn 1 of trace 1 is a user message"),
    ("drop", 99999, 1, "no trace 99999"),
    ("undo", 1, 3, "is a tool message"),
    ("undo", 99999, 1, "no trace 99999"),
    ("edit", 99999, 1, "no trace 99999"),
    ("edit", 1, 99, "trace 1 has no turn 99"),
    ("edit", 1, 1, "is a user message"),
])
def test_label_commands_refuse_turns_that_do_not_exist(cli_store, cmd, tid, turn, says):
    extra = ("--text", "hello") if cmd == "edit" else ()
    r = _cli(cli_store)(cmd, str(tid), str(turn), *extra)
    assert r.exit_code == 1, r.output
    lines_ = r.output.strip().splitlines()
    assert len(lines_) == 1 and lines_[0] == f"error: {lines_[0][7:]}" and says in lines_[0], \
        r.output
    db = open_db(cli_store)
    assert db.execute("SELECT count(*) FROM revisions").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM flags").fetchone()[0] == 0
    db.conn.close()


# -- the export rule on its own --------------------------------------------------------------

def _msg(role, content=None, calls=None, answers=None):
    return {"role": role, "content": content, "tool_calls": calls, "tool_call_id": answers,
            "name": None}


def _c(cid, name, **args):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def test_exportable_matches_results_without_ids_by_position():
    from workbench.conversations.turns import assign_ids, exportable

    orig = _msg("assistant", calls=[_c(None, "f", x=1), _c(None, "g", y=1)])
    log = [_msg("user", "hi"), orig, _msg("tool", "1"), _msg("tool", "2"), _msg("assistant", "ok")]
    label = assign_ids([{"name": "f", "arguments": {"x": 2}}, {"name": "g", "arguments": {}}],
                       orig["tool_calls"])
    assert all(c["id"] for c in label)                          # never null
    out = exportable([*log[:1], {**orig, "tool_calls": label}, *log[2:]], {1: orig})
    assert len(out) == 5 and [m["tool_call_id"] for m in out[2:4]] == [c["id"] for c in label]
    swapped = assign_ids([{"name": "g", "arguments": {}}], orig["tool_calls"])
    assert len(exportable([log[0], {**orig, "tool_calls": swapped}, *log[2:]], {1: orig})) == 2


def test_exportable_lets_a_reply_tool_go_unanswered():
    from workbench.conversations.turns import exportable

    orig = _msg("assistant", "plain text")
    label = {**orig, "content": None, "tool_calls": [_c("r1", "reply", message="hi")]}
    log = [_msg("user", "hi"), label, _msg("user", "more"), _msg("assistant", "ok")]
    assert exportable(log, {1: orig}, message_tools={"reply"}) == log
    assert exportable(log, {1: orig}) == log[:2]
    assert exportable(log, {}) == log                      # originals are written as logged


def test_assign_ids_keeps_same_tool_ids_and_replaces_others():
    from workbench.conversations.turns import assign_ids

    old = [_c("a", "f"), _c("b", "g")]
    got = assign_ids([{"name": "g", "arguments": {}, "id": "a"},     # a was f's: not g's
                      {"name": "g", "arguments": {}}], old)
    assert got[0]["id"] not in ("a", "b") and got[1]["id"] == "b"
    got = assign_ids([{"name": "f", "arguments": {}}, {"name": "f", "arguments": {}}], old)
    assert got[0]["id"] == "a" and got[1]["id"] not in ("a", "b", None)


def test_training_takes_the_same_cut_as_the_export(store):
    """A call turned into text is trained as the last turn: the tool results logged after it
    answer a call the label no longer makes, so they are not in the training conversation."""
    from workbench.training.data import DataOptions, load_conversations

    before = {c.trace_id: c.messages for c in load_conversations(store, DataOptions())}
    _edit(store, 1, 2, text="Which of the two orders do you mean?")
    after = {c.trace_id: c.messages for c in load_conversations(store, DataOptions())}
    assert len(after[1]) == 3 < len(before[1])
    assert after[1][2]["content"] == "Which of the two orders do you mean?"
    assert not after[1][2].get("tool_calls")
    valid_chat(after[1])
    assert after[2] == before[2]            # unchanged conversations are taken whole
