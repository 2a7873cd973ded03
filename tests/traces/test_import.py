"""Importers on the real benchmark files, bad input, idempotency, streaming."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from db.tasks import current_task, current_tools
from db.traces import original_messages, stats
from tests.conftest import DATA, S1
from workbench.core.errors import InputError
from workbench.traces.formats import detect_format
from workbench.traces.importing import import_files
from workbench.conversations.messages import per_turn_pairs


def snapshot(db) -> dict:
    """Row counts of every table: 'unchanged' means all of these are equal."""
    names = [n for n in db.table_names() if not n.startswith("search_")]
    return {n: db.execute(f"SELECT count(*) FROM [{n}]").fetchone()[0] for n in names}


def test_tft_traces_scenario1_counts(db):
    [report] = import_files(db, [S1 / "traces.jsonl"])
    assert (report.format, report.lines, report.added) == ("tft", 327, 327)
    s = stats(db)
    assert (s["traces"], s["messages"], s["assistant_turns"]) == (327, 6554, 3277)
    # tool results (user messages holding a JSON list) became tool messages tied to their call
    msgs = original_messages(db, 1)
    tool_msgs = [m for m in msgs if m["role"] == "tool"]
    assert tool_msgs and all(m["tool_call_id"].startswith("call_") for m in tool_msgs)
    first_call = next(m for m in msgs if m["tool_calls"])["tool_calls"][0]
    assert isinstance(first_call["function"]["arguments"], dict)


def test_question_answer_test_set_expands_to_359_pairs(db):
    [report] = import_files(db, [DATA / "test.jsonl"])
    assert (report.format, report.split, report.added) == ("qa", "test", 34)
    pairs = 0
    for (tid,) in db.execute("SELECT id FROM traces").fetchall():
        pairs += sum(1 for _ in per_turn_pairs(original_messages(db, tid)))
    assert pairs == 359


def test_direct_train_is_question_plus_final_call(db):
    [report] = import_files(db, [S1 / "direct-train.jsonl"])
    assert report.format == "qa" and report.added == 327
    first_line = json.loads((S1 / "direct-train.jsonl").read_text().splitlines()[0])
    answer = json.loads(first_line["answer"])
    last = original_messages(db, 1)[-1]
    assert last["role"] == "assistant"
    assert last["tool_calls"][0]["function"] == {"name": answer["name"],
                                                 "arguments": answer["parameters"]}


def test_task_files(db):
    import_files(db, [S1 / "job_description.json", S1 / "task.txt"])
    task = current_task(db)
    job = json.loads((S1 / "job_description.json").read_text())
    assert task["description"] == job["task_description"]
    assert task["rubric"] == job["llm_as_a_judge_instructions"]
    assert len(task["mutation_topics"]) == 4 and task["mutation_topics"][0].startswith("short conversation")
    assert [t["function"]["name"] for t in current_tools(db)] == [
        t["function"]["name"] for t in job["tools"]]


def test_openai_format_with_tools_and_tool_messages(db, tmp_path):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    line = {"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 3}"},
        {"role": "assistant", "content": "3 degrees"}], "tools": tools}
    f = tmp_path / "chat.jsonl"
    f.write_text(json.dumps(line) + "\n")
    [report] = import_files(db, [f])
    assert report.format == "openai" and report.added == 1
    msgs = original_messages(db, 1)
    assert msgs[1]["content"] == "Weather in Oslo?"
    assert msgs[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert msgs[3] == {"role": "tool", "content": "{\"temp\": 3}", "tool_call_id": "c1", "name": None,
                       "tool_calls": None}
    assert current_tools(db) == tools


def test_unparseable_arguments_are_kept_raw(db, tmp_path):
    line = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}
    f = tmp_path / "raw.jsonl"
    f.write_text(json.dumps(line) + "\n")
    import_files(db, [f])
    assert original_messages(db, 1)[1]["tool_calls"][0]["function"]["arguments"] == "{not json"
    assert db.execute("SELECT arguments, arguments_raw FROM tool_calls").fetchone() == (None, "{not json")


def test_reimport_adds_nothing(db):
    import_files(db, [S1 / "traces.jsonl", DATA / "test.jsonl"])
    before = snapshot(db)
    reports = import_files(db, [S1 / "traces.jsonl", DATA / "test.jsonl"])
    assert [r.added for r in reports] == [0, 0]
    assert [r.duplicates for r in reports] == [327, 34]
    after = snapshot(db)
    assert {k: v for k, v in after.items() if k != "imports"} == {
        k: v for k, v in before.items() if k != "imports"}


GOOD = json.dumps({"messages": [{"role": "user", "content": "hello"},
                                {"role": "assistant", "content": "hi"}]})


@pytest.mark.parametrize("name, body, expected", [
    ("truncated.jsonl", GOOD + "\n" + GOOD[:40] + "\n", r"truncated\.jsonl:2: not valid JSON"),
    ("wrongtype.jsonl", GOOD + "\n" + json.dumps({"messages": "hello"}) + "\n",
     r"wrongtype\.jsonl:2: messages: must be a list"),
    ("role.jsonl", GOOD + "\n" + json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n",
     r"role\.jsonl:2: messages\[0\]\.role: unknown role 'robot'"),
    ("content.jsonl", json.dumps({"messages": [{"role": "user", "content": 5}]}) + "\n",
     r"content\.jsonl:1: messages\[0\]\.content: must be a string, not int"),
    ("args.jsonl", json.dumps({"messages": [{"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": 7}}]}]}) + "\n",
     r"args\.jsonl:1: messages\[0\]\.tool_calls\[0\]\.function\.arguments: must be a JSON string or object"),
    ("ctx.jsonl", json.dumps({"context": "{\"messages\": [{\"role\": \"user\""}) + "\n",
     r"ctx\.jsonl:1: context: is not valid JSON"),
    ("empty.jsonl", "", r"empty\.jsonl: empty file"),
    ("blank.jsonl", "\n\n", r"blank\.jsonl: empty file"),
])
def test_malformed_input_names_file_line_field_and_changes_nothing(db, tmp_path, name, body, expected):
    import_files(db, [S1 / "traces.jsonl"])
    before = snapshot(db)
    bad = tmp_path / name
    bad.write_text(body)
    good = tmp_path / "good.jsonl"
    good.write_text(GOOD + "\n")
    with pytest.raises(InputError, match=expected):
        import_files(db, [good, bad])  # the good file is rolled back too: all or nothing
    assert snapshot(db) == before


def test_invalid_utf8(db, tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes((GOOD + "\n").encode() + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    with pytest.raises(InputError, match=r"latin1\.jsonl:2: invalid UTF-8 at byte 46"):
        import_files(db, [bad])
    assert snapshot(db)["traces"] == 0


def test_ten_megabyte_message_is_rejected(db, tmp_path):
    huge = json.dumps({"messages": [{"role": "user", "content": "x" * (10 << 20)}]})
    bad = tmp_path / "huge.jsonl"
    bad.write_text(GOOD + "\n" + huge + "\n")
    with pytest.raises(InputError, match=r"huge\.jsonl:2: messages\[0\]\.content: 10485760 bytes is over the limit"):
        import_files(db, [bad])
    assert snapshot(db)["traces"] == 0
    # the limit is a setting, not a wall
    [report] = import_files(db, [bad], max_message_bytes=11 << 20)
    assert report.added == 2


def test_unknown_format_and_missing_path(db, tmp_path):
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"foo": 1}) + "\n")
    with pytest.raises(InputError, match=r"odd\.jsonl:1: unknown format"):
        import_files(db, [odd])
    with pytest.raises(InputError, match="no such file"):
        import_files(db, [tmp_path / "nope.jsonl"])


def test_format_detection_on_real_files():
    assert detect_format(S1 / "traces.jsonl") == "tft"
    assert detect_format(S1 / "direct-train.jsonl") == "qa"
    assert detect_format(DATA / "test.jsonl") == "qa"
    assert detect_format(S1 / "job_description.json") == "task-json"
    assert detect_format(S1 / "task.txt") == "task-text"


def _write_corpus(path: Path, n: int) -> None:
    base = [json.loads(l) for l in (S1 / "traces.jsonl").read_text().splitlines()]
    with open(path, "w") as fh:
        for i in range(n):
            ctx = json.loads(base[i % len(base)]["context"])
            ctx["messages"][0]["content"] += f" (copy {i})"
            fh.write(json.dumps({"context": json.dumps(ctx)}) + "\n")


def test_import_streams_memory_flat_in_file_size(tmp_path):
    from db import open_db

    peaks = []
    for n in (600, 2400):  # both beyond one write batch
        f = tmp_path / f"corpus{n}.jsonl"
        _write_corpus(f, n)
        db = open_db(tmp_path / f"c{n}.db")
        tracemalloc.start()
        import_files(db, [f])
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert stats(db)["traces"] == n
        db.conn.close()
    assert peaks[1] < peaks[0] * 1.5, peaks  # 4x the file, not 4x the memory
