"""Provider and trainer chat formats (issue #29): each detected from the file and imported from
the upstream project's own example (tests/data/formats), bad input named by file, line and
field with nothing stored, and round trips through export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.tasks import current_tools
from db.traces import original_messages
from tests.traces.test_import import snapshot
from workbench.cli import app
from workbench.conversations.view import conversations
from workbench.core.errors import InputError
from workbench.traces.exporting import export
from workbench.traces.formats import REGISTRY, detect_format, read_task
from workbench.traces.importing import import_files

FORMATS = Path(__file__).parent.parent / "data" / "formats"
GLAIVE = FORMATS / "glaive_toolcall_en_demo.json"
AXOLOTL = FORMATS / "axolotl_chat_template.jsonl"
OPENAI_FT = FORMATS / "openai_finetune.jsonl"
ANTHROPIC = FORMATS / "anthropic_messages.jsonl"
TOOLS_LIST = FORMATS / "openai_tools.json"
runner = CliRunner()


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_each_example_is_detected_from_the_file():
    assert detect_format(GLAIVE) == "sharegpt"
    assert detect_format(AXOLOTL) == "sharegpt"
    assert detect_format(OPENAI_FT) == "openai"
    assert detect_format(ANTHROPIC) == "anthropic"
    assert detect_format(TOOLS_LIST) == "task-json"
    # the registry is the one place formats are listed, in detection order
    assert [f.name for f in REGISTRY][:3] == ["anthropic", "sharegpt", "openai"]


def test_anthropic_messages_import(db):
    [r] = import_files(db, [ANTHROPIC])
    assert (r.format, r.added) == ("anthropic", 2)
    first = original_messages(db, 1)
    assert [m["role"] for m in first] == ["user", "assistant", "tool", "assistant"]
    call = first[1]["tool_calls"][0]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert call["function"] == {"name": "get_weather", "arguments": {"location": "San Francisco, CA"}}
    assert first[1]["content"] == "I'll check the weather in San Francisco for you."
    assert first[2] == {"role": "tool", "content": "The weather is 73f", "tool_calls": None,
                        "tool_call_id": call["id"], "name": None}
    second = original_messages(db, 2)
    assert second[0] == {"role": "system", "content": "You are a weather assistant.",
                         "tool_calls": None, "tool_call_id": None, "name": None}
    [conv] = conversations(db, None, where="traces.id = 2")
    assert conv.extras == {3: {"is_error": True}}       # the failed result says so
    assert conv.metadata == {"model": "claude-3-opus-20240229", "max_tokens": 1024}
    # tools with input_schema are OpenAI tools with parameters
    [tool] = current_tools(db)
    assert tool["type"] == "function" and tool["function"]["parameters"]["properties"] == {
        "location": {"type": "string"}}


def test_glaive_sharegpt_json_array_import_and_llamafactory_round_trip(db, db_path, tmp_path):
    [r] = import_files(db, [GLAIVE])
    assert (r.format, r.added) == ("sharegpt", 2)
    msgs = original_messages(db, 2)
    assert [m["role"] for m in msgs[:4]] == ["user", "assistant", "tool", "assistant"]
    assert msgs[1]["tool_calls"][0]["function"] == {
        "name": "calculate_area", "arguments": {"shape": "rectangle", "dimensions": [5, 3]}}
    assert msgs[2]["content"] == '{"area": 15}'
    [conv] = conversations(db, None, where="traces.id = 2")
    assert [t["function"]["name"] for t in conv.tools] == ["calculate_area", "calculate_discount"]
    # export as LLaMA-Factory wrote it: the same conversations, tools, and dataset_info.json
    out = tmp_path / "glaive.jsonl"
    result = export(db, out, "llamafactory")
    assert result["lines"] == 2
    upstream = json.loads(GLAIVE.read_text())
    got = _lines(out)
    for mine, theirs in zip(got, upstream):
        assert mine["conversations"] == [
            {"from": t["from"], "value": t["value"] if t["from"] != "function_call"
             else json.dumps(json.loads(t["value"]))} for t in theirs["conversations"]]
        assert json.loads(mine["tools"]) == json.loads(theirs["tools"])
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["glaive"] == {"file_name": "glaive.jsonl", "formatting": "sharegpt",
                              "columns": {"messages": "conversations", "system": "system",
                                          "tools": "tools"}}
    # ... and it reads back as the same traces
    from db import open_db
    db2 = open_db(tmp_path / "again.db")
    import_files(db2, [out])
    for tid in (1, 2):
        assert original_messages(db2, tid) == original_messages(db, tid)


def test_axolotl_train_flags_are_training_masks(db, tmp_path):
    [r] = import_files(db, [AXOLOTL])
    assert (r.format, r.added) == ("sharegpt", 1)
    [conv] = conversations(db)
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant", "user",
                                                  "assistant", "user", "assistant"]
    assert conv.unweighted == frozenset()             # every assistant turn has train: true
    assert conv.extras[4]["train_detail"][1] == {"begin_offset": 9, "end_offset": 18,
                                                 "train": True}
    out = tmp_path / "ax.jsonl"
    export(db, out, "axolotl")
    [line] = _lines(out)
    upstream = _lines(AXOLOTL)[0]["conversations"]
    assert [m["train"] for m in line["messages"]] == [m.get("train", True) for m in upstream]
    assert line["messages"][4]["train_detail"] == upstream[4]["train_detail"]


def test_openai_fine_tuning_weights_roles_and_legacy_functions(db, tmp_path):
    [r] = import_files(db, [OPENAI_FT])
    assert (r.format, r.added) == ("openai", 5)
    convs = conversations(db)
    assert convs[0].unweighted == {2} and convs[0].extras == {2: {"weight": 0},
                                                              4: {"weight": 1}}
    assert convs[2].metadata == {"parallel_tool_calls": False}
    legacy = convs[3]
    assert [m["role"] for m in legacy.messages] == ["user", "assistant", "tool", "assistant"]
    assert legacy.messages[1]["tool_calls"][0]["function"]["name"] == "get_current_weather"
    assert legacy.messages[2]["name"] == "get_current_weather"
    assert legacy.tools[0]["type"] == "function"       # legacy `functions` became tools
    assert convs[4].messages[0]["role"] == "system" and convs[4].extras[0] == {
        "role": "developer"}
    # round trip: the export gives back weights, roles and the record's other keys
    out = tmp_path / "ft.jsonl"
    export(db, out, "openai")
    got, theirs = _lines(out), _lines(OPENAI_FT)
    for mine, orig in zip(got, theirs):
        assert [m["role"] for m in mine["messages"]] == [m["role"] for m in orig["messages"]]
        assert [m.get("weight") for m in mine["messages"]] == [
            m.get("weight") for m in orig["messages"]]
    assert got[2]["parallel_tool_calls"] is False
    assert got[3]["messages"][1]["function_call"]["name"] == "get_current_weather"
    from db import open_db
    db2 = open_db(tmp_path / "again.db")
    [r2] = import_files(db2, [out])
    assert r2.added == 5
    assert [c.extras for c in conversations(db2)] == [c.extras for c in convs]
    assert [c.messages for c in conversations(db2)] == [c.messages for c in convs]


def test_weight_is_part_of_identity(db, tmp_path):
    line = _lines(OPENAI_FT)[0]
    plain = json.loads(json.dumps(line))
    for m in plain["messages"]:
        m.pop("weight", None)
    [r] = import_files(db, [_write(tmp_path / "a.jsonl", [line, plain])])
    assert r.added == 2                 # a turn left out of training is another trace


def test_bare_tools_list_is_a_task_file(db):
    spec = read_task(TOOLS_LIST, "task-json")
    assert spec.tools[0]["function"]["name"] == "get_current_weather"
    [r] = import_files(db, [TOOLS_LIST])
    assert r.format == "task-json" and r.tools_added == ["get_current_weather v1"]


def test_a_json_file_neither_task_nor_traces_says_how_to_wrap_tools(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('[1, 2]')
    with pytest.raises(InputError, match=r'list of tools such as \[\{"type": "function"'):
        detect_format(bad)


@pytest.mark.parametrize("name,records,where", [
    ("anthropic", [{"system": "s", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f",
                                           "input": "not an object"}]}]}],
     ":1: messages[1].content[0].input: must be an object"),
    ("anthropic-iserror", [{"system": "s", "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": "x", "is_error": "yes"}]}]}],
     ":1: messages[0].content[0].is_error: must be true or false"),
    ("sharegpt", [{"conversations": [{"from": "human", "value": "hi"},
                                     {"from": "function_call", "value": "{not json"}]}],
     ":1: conversations[1].value: a function_call must hold JSON"),
    ("sharegpt-role", [{"conversations": [{"from": "robot", "value": "hi"}]}],
     ":1: conversations[0].from: unknown role 'robot'"),
    ("openai-weight", [{"messages": [{"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "yo", "weight": 0.5}]}],
     ":1: messages[1].weight: must be 0"),
    ("openai-weight-user", [{"messages": [{"role": "user", "content": "hi", "weight": 0}]}],
     ":1: messages[0].weight: only assistant messages"),
])
def test_bad_line_names_file_line_field_and_stores_nothing(db, tmp_path, name, records,
                                                           where):
    good = _lines(OPENAI_FT)[0] if name.startswith("openai") else (
        _lines(ANTHROPIC)[0] if name.startswith("anthropic") else
        json.loads(GLAIVE.read_text())[0])
    path = _write(tmp_path / f"{name}.jsonl", [good, *records])
    before = snapshot(db)
    with pytest.raises(InputError) as e:
        import_files(db, [path])
    assert str(e.value).startswith(str(path)) and where.replace(":1:", ":2:") in str(e.value)
    assert snapshot(db) == before


def test_bad_record_in_a_json_array_names_its_line(db, tmp_path):
    data = json.loads(GLAIVE.read_text())
    data[1]["conversations"][2]["from"] = "robot"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data, indent=2))
    start = path.read_text().splitlines().index("  {", 2) + 1   # the second record's line
    before = snapshot(db)
    with pytest.raises(InputError) as e:
        import_files(db, [path])
    assert str(e.value).startswith(f"{path}:{start}: conversations[2].from: unknown role")
    assert snapshot(db) == before


def test_cli_import_of_every_example(db_path):
    res = runner.invoke(app, ["--db", str(db_path), "import", "--json", str(GLAIVE),
                              str(AXOLOTL), str(OPENAI_FT), str(ANTHROPIC), str(TOOLS_LIST)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {f["format"] for f in out["files"]} == {"sharegpt", "openai", "anthropic",
                                                   "task-json"}
    assert out["traces"] == 2 + 1 + 5 + 2


def test_axolotl_openai_messages_under_conversations_with_train_flags(db, tmp_path):
    """axolotl's chat_template also reads OpenAI messages from `conversations`; its `train`
    flag on a model turn is a training mask."""
    rec = {"conversations": [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi", "train": False},
        {"role": "user", "content": "How are you?"},
        {"role": "assistant", "content": "Well, thanks.", "train": True}]}
    [r] = import_files(db, [_write(tmp_path / "ax.jsonl", [rec])])
    assert r.format == "sharegpt"
    [conv] = conversations(db)
    assert [m["role"] for m in conv.messages] == ["user", "assistant", "user", "assistant"]
    assert conv.unweighted == {1}
    out = tmp_path / "back.jsonl"
    export(db, out, "axolotl")
    [line] = _lines(out)
    assert [m["train"] for m in line["messages"]] == [False, False, False, True]
