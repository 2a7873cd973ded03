"""Lines for the trainers people use, from a conversation as training sees it (its system prompt
and tools included, the task's where the trace has none of its own).

| format | a line | what the trainer reads |
|---|---|---|
| `llamafactory` | `{"conversations": [{"from": "human" / "gpt" / "function_call" / "observation", "value"}], "system", "tools": "<JSON>"}` | LLaMA-Factory's `sharegpt` formatting, with the `dataset_info.json` entry written beside the file |
| `axolotl` | `{"messages": [{"role", "content", "tool_calls"?, "train": true/false}], "tools"}` | axolotl's `chat_template` type with `message_field_training: train` |
| `trl` | `{"messages": [{"role", "content", "tool_calls"?}], "tools"}` | TRL's conversational format (SFTTrainer) |

The training masks travel where the format can carry them: axolotl's per-message `train` is
false on a turn the source left out of training (`weight: 0`) and on a suspect turn (an error
flag, kept as context as our own training does). LLaMA-Factory and TRL have no per-turn mask:
such turns are counted in the export's result (`masks_lost`), never silently trained.
"""

from __future__ import annotations

import json
from typing import Any

from workbench.conversations.view import Conversation

FORMATS = ("llamafactory", "axolotl", "trl")


def _messages(conv: Conversation) -> list[dict]:
    """The messages the model is trained on: the system prompt it sees first."""
    if conv.system and not (conv.messages and conv.messages[0]["role"] == "system"):
        return [{"role": "system", "content": conv.system, "tool_calls": None,
                 "tool_call_id": None, "name": None}, *conv.messages]
    return list(conv.messages)


def _offset(conv: Conversation) -> int:
    return len(_messages(conv)) - len(conv.messages)


def masked_turns(conv: Conversation) -> set[int]:
    """Assistant turns (indices into conv.messages) out of the loss: weight 0, suspect."""
    return set(conv.unweighted) | set(conv.suspect)


def _call(c: dict) -> dict:
    return {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}


def _chat_message(m: dict) -> dict:
    """A message as chat templates (axolotl's, TRL's) take it: arguments as objects."""
    out: dict[str, Any] = {"role": m["role"], "content": m["content"] or ""}
    if m["tool_calls"]:
        out["tool_calls"] = [{"type": "function", **({"id": c["id"]} if c["id"] else {}),
                              "function": _call(c)} for c in m["tool_calls"]]
    if m["tool_call_id"]:
        out["tool_call_id"] = m["tool_call_id"]
    if m["name"]:
        out["name"] = m["name"]
    return out


def trl_line(conv: Conversation) -> tuple[dict, dict]:
    obj: dict[str, Any] = {"messages": [_chat_message(m) for m in _messages(conv)]}
    if conv.tools:
        obj["tools"] = conv.tools
    return obj, {"masks_lost": len(masked_turns(conv))}


def axolotl_line(conv: Conversation) -> tuple[dict, dict]:
    masked = {i + _offset(conv) for i in masked_turns(conv)}
    extras = {i + _offset(conv): e for i, e in conv.extras.items()}
    messages = []
    for i, m in enumerate(_messages(conv)):
        msg = _chat_message(m)
        extra = extras.get(i) or {}
        if m["role"] == "assistant":
            msg["train"] = i not in masked
        else:
            msg["train"] = bool(extra.get("train", False))
        if "train_detail" in extra:
            msg["train_detail"] = extra["train_detail"]
        messages.append(msg)
    obj: dict[str, Any] = {"messages": messages}
    if conv.tools:
        obj["tools"] = conv.tools
    return obj, {}


def _flat_tools(tools: list | None) -> list[dict]:
    return [t["function"] if isinstance(t.get("function"), dict) else t for t in tools or []]


def llamafactory_line(conv: Conversation) -> tuple[dict | None, dict]:
    """A ShareGPT line as LLaMA-Factory reads it, or None (with the reason counted) when the
    conversation cannot take its shape: human/observation turns alternating with
    gpt/function_call turns, the last one the model's."""
    msgs = _messages(conv)
    system = None
    if msgs and msgs[0]["role"] == "system":
        system, msgs = msgs[0]["content"], msgs[1:]
    turns: list[dict] = []
    notes = {"masks_lost": len(masked_turns(conv)), "text_dropped": 0}
    i = 0
    while i < len(msgs):
        m = msgs[i]
        if m["role"] == "tool":
            results = [m["content"] or ""]
            while i + 1 < len(msgs) and msgs[i + 1]["role"] == "tool":
                i += 1
                results.append(msgs[i]["content"] or "")
            value = results[0] if len(results) == 1 else json.dumps(results, ensure_ascii=False)
            turns.append({"from": "observation", "value": value})
        elif m["role"] == "assistant" and m["tool_calls"]:
            calls = [_call(c) for c in m["tool_calls"]]
            if m["content"]:
                notes["text_dropped"] += 1   # a function_call turn has no room for text
            turns.append({"from": "function_call", "value": json.dumps(
                calls[0] if len(calls) == 1 else calls, ensure_ascii=False)})
        elif m["role"] == "assistant":
            turns.append({"from": "gpt", "value": m["content"] or ""})
        elif m["role"] == "user":
            turns.append({"from": "human", "value": m["content"] or ""})
        else:
            return None, {"skipped_shape": 1}   # a system message inside the conversation
        i += 1
    while turns and turns[-1]["from"] in ("human", "observation"):
        turns.pop()   # nothing after the model's last turn is trained on
    prompt_side = ("human", "observation")
    if not turns or any((t["from"] in prompt_side) != (k % 2 == 0) for k, t in enumerate(turns)):
        return None, {"skipped_shape": 1}
    obj: dict[str, Any] = {"conversations": turns}
    if system:
        obj["system"] = system
    if conv.tools:
        obj["tools"] = json.dumps(_flat_tools(conv.tools), ensure_ascii=False)
    if isinstance((conv.outcomes or {}).get("kto_tag"), bool):
        obj["kto_tag"] = conv.outcomes["kto_tag"]
    return obj, notes


def dataset_info_entry(file_name: str, kto: bool = False) -> dict:
    """The `dataset_info.json` entry LLaMA-Factory needs for a `llamafactory` export."""
    columns = {"messages": "conversations", "system": "system", "tools": "tools"}
    if kto:
        columns["kto_tag"] = "kto_tag"
    return {"file_name": file_name, "formatting": "sharegpt", "columns": columns}


LINES = {"llamafactory": llamafactory_line, "axolotl": axolotl_line, "trl": trl_line}
