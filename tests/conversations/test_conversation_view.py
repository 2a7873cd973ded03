"""One view of a conversation: checks, training, evaluation, export and chat see the same
messages (current labels), tools (own, else the task's) and system prompt."""

from __future__ import annotations

import contextlib
import json

from db import open_db, revisions
from db.queries import TraceFilter
from tests.tui_data import ROOT, add_flag, first_assistant
from workbench.checks import load_context
from workbench.conversations.view import conversation, conversations
from workbench.evaluation import expand_pairs
from workbench.traces.exporting import export
from workbench.traces.importing import import_files
from workbench.training.data import DataOptions, load_conversations

OWN_TOOL = {"type": "function", "function": {"name": "own_tool", "description": "only here",
                                             "parameters": {"type": "object", "properties": {}}}}


def _store(tmp_path):
    extra = tmp_path / "extra.jsonl"
    call = {"id": "x1", "type": "function", "function": {"name": "own_tool", "arguments": "{}"}}
    lines = [  # a trace with its own system prompt and tools, and one with neither
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "hi"},
                      {"role": "assistant", "tool_calls": [call]},
                      {"role": "tool", "tool_call_id": "x1", "content": "{}"},
                      {"role": "assistant", "content": "done"}], "tools": [OWN_TOOL]},
        {"messages": [{"role": "user", "content": "hello"},
                      {"role": "assistant", "content": "hello back"}]},
    ]
    extra.write_text("".join(json.dumps(x) + "\n" for x in lines))
    db = open_db(tmp_path / "v.db")
    with contextlib.chdir(ROOT):
        import_files(db, ["sample_traces", str(extra)], split="train")
    return db


def test_every_consumer_sees_the_same_conversation(tmp_path):
    db = _store(tmp_path)
    task_desc = db.execute("SELECT description FROM tasks").fetchone()[0]
    own, plain = [r[0] for r in db.execute("SELECT id FROM traces WHERE source LIKE"
                                           " '%extra.jsonl' ORDER BY line")]
    # a revised label and a suspect turn on a sample trace
    idx = first_assistant(db, 2)
    new = [{"id": "r", "type": "function", "function": {"name": "FindRestaurants",
                                                        "arguments": {"city": "Revised"}}}]
    revisions.add_revision(db, 2, idx, tool_calls=new, author_kind="human", author_name="t")
    add_flag(db, 3, first_assistant(db, 3), "schema", "error", "bad")

    view = {c.trace_id: c for c in conversations(db)}
    assert view[2].messages[idx]["tool_calls"] == new                    # current label
    assert view[own].system is None and view[own].tools == [OWN_TOOL]     # its own
    assert view[own].system_prompt == view[own].messages[0]["content"]    # the one rule
    assert view[plain].system_prompt == task_desc
    assert view[own].own_tools and not view[plain].own_tools
    assert view[plain].system == task_desc and view[plain].tools == view[2].tools
    assert view[3].suspect == {first_assistant(db, 3)}

    checks = {t.id: t for t in load_context(db).traces}
    train = {c.trace_id: c for c in load_conversations(db, DataOptions(
        selection=TraceFilter(excluded=False)))}
    ids = sorted(view)
    pairs = {ps[0].trace_id: ps for ps in expand_pairs(db, ids) if ps}
    out = tmp_path / "out.jsonl"
    export(db, out, "openai", TraceFilter())
    exported = {json.loads(line)["meta"]["trace_id"]: json.loads(line)
                for line in out.read_text().splitlines()}
    for tid, conv in view.items():
        assert checks[tid].messages == conv.messages
        if tid in train:
            t = train[tid]
            assert (t.messages, t.tools, t.system, t.suspect) == (
                conv.messages, conv.tools, conv.system, conv.suspect)
        for p in pairs.get(tid, []):
            assert p.prompt == conv.messages[:p.message_idx]
            assert (p.tools, p.system) == (conv.tools, conv.system_prompt)
        assert len(exported[tid]["messages"]) == len(conv.messages)
        assert exported[tid].get("tools") == conv.tools
    assert 2 in train and own in pairs and plain in pairs
    one = conversation(db, 3)
    assert one.messages == view[3].messages and [f["check"] for f in one.flags] == ["schema"]
    assert conversation(db, 10**6) is None
    db.conn.close()


def test_message_tools_come_from_settings_then_the_data_then_the_schemas(tmp_path):
    from db.browse import set_setting
    from workbench.checks import run_checks
    from workbench.conversations.view import task_context

    db = _store(tmp_path)
    from_data = task_context(db).message_tools          # nothing learned yet: the stored calls
    assert from_data == {"respond_to_user"}              # never answered by a result
    run_checks(db, names=["structure"])                  # learned from the data
    assert task_context(db).message_tools == {"respond_to_user"}
    set_setting(db, "checks.learned", {"structure": {"message_tools": ["own_tool"]}})
    assert task_context(db).message_tools == {"own_tool"}
    db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES"
               " ('checks.message_tools', 'a b')")
    assert task_context(db).message_tools == {"a", "b"}  # configured wins
    db.conn.close()
