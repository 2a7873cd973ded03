"""The held-out corpora of other agents and the bench that measures the checks on them
(bench/heldout_convert.py, bench/heldout_agents.py; issue #31).

The held-out files are only imported here (counts of turns and calls, never check results: no
test may tune the checks on them); the corruption planting is tested on the tune half of
tau-airline and on tiny synthetic lines.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from bench.heldout_agents import DATA, corpora, plant_foreign, plant_noise, read
from bench.heldout_convert import (
    sgd_messages,
    sgd_tools,
    tm4_messages,
    tm4_tools,
    tooltalk_messages,
    tooltalk_tool,
)
from workbench.cli import app

runner = CliRunner()
TUNE = DATA / "tau-airline" / "tune.jsonl"


def wb(db: Path, *args: str) -> dict:
    r = runner.invoke(app, ["--db", str(db), *args])
    assert r.exit_code == 0, (args, r.output)
    return json.loads(r.stdout) if "--json" in args else {}


def test_every_heldout_corpus_imports_with_its_turns_and_calls(tmp_path: Path) -> None:
    held = {k: v for k, v in corpora().items() if not v["tuned"]}
    assert {"sgd-services", "tooltalk", "taskmaster-coffee"} <= set(held)
    for name, spec in held.items():
        folder = spec["path"].parent
        assert (folder / "ATTRIBUTION.md").exists() and (folder / "LICENSE").exists()
        lines = spec["path"].read_text(encoding="utf-8").splitlines()[:5]
        stem = name.replace("/", "-")         # "tau-airline/heldout": a half of a corpus
        src = tmp_path / f"{stem}.jsonl"
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
        recs = [json.loads(x) for x in lines]
        db = tmp_path / f"{stem}.db"
        wb(db, "import", str(src), *(["--task", str(spec["task"])] if spec["task"] else []))
        stats = wb(db, "stats", "--json")
        msgs = [m for r in recs for m in r["messages"]]
        assert stats["traces"] == 5
        assert stats["assistant_turns"] == sum(m["role"] == "assistant" for m in msgs)
        assert stats["tool_calls"] == sum(len(m.get("tool_calls") or []) for m in msgs) > 0


def test_sgd_system_turn_with_a_service_call_becomes_call_result_and_reply() -> None:
    services = [{"service_name": "Ferry_1", "description": "Ferry tickets", "slots": [
        {"name": "port", "description": "Departure port", "is_categorical": False,
         "possible_values": []},
        {"name": "deck", "description": "Deck", "is_categorical": True,
         "possible_values": ["upper", "lower"]}],
        "intents": [{"name": "FindFerry", "description": "Find a ferry", "required_slots": ["port"],
                     "optional_slots": {"deck": "upper"}}]},
        {"service_name": "Ferry_2", "description": "More ferries", "slots": [],
         "intents": [{"name": "FindFerry", "description": "Find", "required_slots": [],
                      "optional_slots": {}}]}]
    tools, names = sgd_tools(services)
    assert [t["function"]["name"] for t in tools] == ["Ferry_1_FindFerry", "Ferry_2_FindFerry"]
    params = tools[0]["function"]["parameters"]
    assert params["required"] == ["port"] and params["properties"]["deck"]["enum"] == ["upper", "lower"]
    dialogue = {"dialogue_id": "9_001", "turns": [
        {"speaker": "USER", "utterance": "A ferry from Oban?", "frames": []},
        {"speaker": "SYSTEM", "utterance": "One leaves at 9.", "frames": [
            {"service": "Ferry_1", "service_call": {"method": "FindFerry",
                                                    "parameters": {"port": "Oban"}},
             "service_results": [{"port": "Oban", "time": "9:00"}]}]},
        {"speaker": "SYSTEM", "utterance": "Anything else?", "frames": [{"service": "Ferry_1"}]}]}
    msgs = sgd_messages(dialogue, names)
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant", "assistant"]
    call = msgs[1]["tool_calls"][0]
    assert call["function"] == {"name": "Ferry_1_FindFerry", "arguments": '{"port": "Oban"}'}
    assert msgs[2]["tool_call_id"] == call["id"] and json.loads(msgs[2]["content"])[0]["time"] == "9:00"
    assert msgs[3]["content"] == "One leaves at 9."


def test_tooltalk_calls_drop_the_injected_session_token_and_keep_results() -> None:
    apis = {"AddNote": {"description": "Adds a note", "requires_auth": True, "parameters": {
        "text": {"type": "string", "description": "Note", "required": True}}}}
    tool = tooltalk_tool("AddNote", apis["AddNote"])
    assert tool["function"]["parameters"]["required"] == ["text"]
    assert "required" not in tool["function"]["parameters"]["properties"]["text"]
    conv = {"metadata": {"location": "Oslo", "timestamp": "2023-01-01 10:00:00", "username": "u"},
            "conversation": [
                {"role": "user", "text": "Note: buy milk"},
                {"role": "assistant", "text": "Noted.", "apis": [{
                    "request": {"api_name": "AddNote",
                                "parameters": {"session_token": "t", "text": "buy milk"}},
                    "response": {"note_id": "n1"}, "exception": None}]}]}
    msgs = tooltalk_messages(conv, apis, "abc")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert "Oslo" in msgs[0]["content"]
    assert json.loads(msgs[2]["tool_calls"][0]["function"]["arguments"]) == {"text": "buy milk"}
    assert json.loads(msgs[3]["content"]) == {"response": {"note_id": "n1"}, "exception": None}


def test_noise_planting_is_deterministic_and_labels_each_change() -> None:
    recs = read(TUNE)[:30]
    a, truth = plant_noise(recs, 7, 0.3)
    b, again = plant_noise(recs, 7, 0.3)
    assert a == b and truth == again
    _, other = plant_noise(recs, 8, 0.3)
    assert other != truth
    assert {"reply", "value", "drop", "tool"} <= set(truth.values())
    for ri, rec in enumerate(recs):
        assert "meta" not in a[ri] and "reward" not in a[ri]
        for mi, m in enumerate(rec["messages"]):
            new = a[ri]["messages"][mi]
            kind = truth.get((ri, mi))
            if kind is None:
                assert new == m
                continue
            assert m["role"] == "assistant" and new != m
            if kind == "reply":
                assert new["content"] != m["content"] and not m.get("tool_calls")
                continue
            (fn_old, fn_new), = [(o["function"], n["function"]) for o, n in
                                 zip(m["tool_calls"], new["tool_calls"]) if o != n]
            old_args, new_args = json.loads(fn_old["arguments"]), json.loads(fn_new["arguments"])
            if kind == "tool":
                assert fn_new["name"] != fn_old["name"] and new_args == old_args
            elif kind == "drop":
                assert fn_new["name"] == fn_old["name"] and len(new_args) == len(old_args) - 1
            else:
                assert new_args.keys() == old_args.keys() and new_args != old_args


def test_foreign_mix_labels_the_foreign_lines_and_keeps_the_host() -> None:
    host = read(TUNE)[:14]
    others = {"bfcl": read(DATA / "bfcl-multi-turn" / "tune.jsonl")[:10],
              "synthetic": [{"messages": [{"role": "user", "content": f"hello {i}"},
                                          {"role": "assistant", "content": "hi"}]}
                            for i in range(10)]}
    mixed, foreign = plant_foreign(host, others, 5, share=0.3)
    assert (mixed, foreign) == plant_foreign(host, others, 5, share=0.3)
    assert len(foreign) == 6 and len(mixed) == 20 and set(foreign.values()) == {"bfcl", "synthetic"}
    host_msgs = [r["messages"] for r in host]
    for i, rec in enumerate(mixed):
        assert "meta" not in rec and "reward" not in rec
        if i in foreign:
            assert rec["messages"] in [r["messages"] for r in others[foreign[i]]]
            assert rec["tools"] in [r["tools"] for r in host]      # the host's declaration
        else:
            assert rec["messages"] in host_msgs


def test_taskmaster_calls_follow_their_user_turn_and_tools_are_inferred_from_calls() -> None:
    def call(k: int, name: str, request: str, response: str) -> list[dict]:
        return [{"name": "api_call", "value": name, "context": f"api_call_{k}"},
                {"name": "request", "value": request, "context": f"api_call_{k}"},
                {"name": "api_response", "value": name, "context": f"api_response_{k}"},
                {"name": "response", "value": response, "context": f"api_response_{k}"}]
    dialogs = [{"conversation_id": "dlg-0123456789", "utterances": [
        {"speaker": "user", "text": "A tea with honey", "annotations":
            call(0, "find_item", '{"query": "tea"}', '{"id": "tea-1"}')
            + call(1, "add_item", '{"id": "tea-1", "extras": [{"x": "honey"}]}', '{"ok": "yes"}')},
        {"speaker": "assistant", "text": "Done.", "annotations": []}]},
        {"conversation_id": "dlg-abc", "utterances": [
            {"speaker": "user", "text": "tea", "annotations":
                call(0, "find_item", '{"query": "tea", "size": "big"}', "{}")
                + call(1, "add_item", '{"id":""tea-1""}', "{}")}]}]
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in tm4_tools(dialogs)}
    assert tools["find_item"]["required"] == ["query"]          # size: only in one call
    assert tools["add_item"]["properties"]["extras"] == {"type": "array"}
    assert tools["add_item"]["required"] == ["id", "extras"]    # the unparseable call says nothing
    msgs = tm4_messages(dialogs[0])
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert [m["tool_calls"][0]["function"]["name"] for m in msgs if m.get("tool_calls")] == [
        "find_item", "add_item"]
    assert msgs[2]["content"] == '{"id": "tea-1"}' and msgs[-1]["content"] == "Done."
    bad = tm4_messages(dialogs[1])[3]["tool_calls"][0]["function"]["arguments"]
    assert bad == '{"id":""tea-1""}'                            # kept as the log wrote it
