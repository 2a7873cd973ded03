"""The one model of an assistant turn: content text and zero or more tool calls, in order, each
with an id that the tool results after the turn answer.

A label (a revision) may change the text, the calls or both, so a turn can go from a call to
text and back. What stays fixed is the rest of the logged conversation, which was recorded for
the original turn: the results that followed it answered the original calls. Two rules keep the
two consistent:

* **Ids are kept or made, never null** (`assign_ids`): an edited call keeps its id while it
  calls the same tool, so its result still answers it; a call of another tool, or a new call,
  gets a new id.
* **An export stays valid chat data** (`exportable`): after a turn whose label differs from the
  original, the results must answer its calls. When a revision removed a call that has a
  result (a call turned into text, say), or added a call of a tool that gets results (text
  turned into a call), the rest of the log followed a different turn: the exported
  conversation ends with that turn, so it is the last trained one and nothing after it
  contradicts it. A call of a tool that speaks to the user (the benchmark's reply tool) needs
  no result.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable

from ulid import ULID


def new_call_id() -> str:
    """An OpenAI-style call id (`call_` and 26 characters, unique)."""
    return f"call_{ULID()}"


def make_call(name: str, arguments, call_id: str | None = None) -> dict:
    """A tool call in the stored form."""
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments}}


def call_name(call: dict) -> str | None:
    fn = call.get("function", call)
    return fn.get("name") if isinstance(fn, dict) else None


def assign_ids(new: Iterable[dict], old: Iterable[dict] | None) -> list[dict]:
    """`new` calls (stored or `{"name", "arguments"[, "id"]}` form) in the stored form with
    every id set: an id given that belonged to an old call of another tool is replaced (its
    result answered that tool); a call without an id takes the id of the old call at the same
    position when it calls the same tool and the id is free; otherwise a new id is made."""
    old = list(old or [])
    old_names = {c.get("id"): call_name(c) for c in old if c.get("id")}
    calls = [make_call(call_name(c), c.get("function", c).get("arguments", {}), c.get("id"))
             for c in new]
    for c in calls:
        cid = c["id"]
        if cid in old_names and old_names[cid] != c["function"]["name"]:
            c["id"] = None
    used = {c["id"] for c in calls if c["id"]}
    for pos, c in enumerate(calls):
        if c["id"]:
            continue
        prev = old[pos] if pos < len(old) else None
        if (prev and prev.get("id") and prev["id"] not in used
                and call_name(prev) == c["function"]["name"]):
            c["id"] = prev["id"]
        else:
            c["id"] = new_call_id()
        used.add(c["id"])
    return calls


def parse_call_json(raw: str, where: str) -> dict:
    """One `{"name": ..., "arguments": {...}[, "id": ...]}` written by hand (`parameters` and
    arguments as a JSON string are accepted too), as a stored call (its id may still be None)."""
    try:
        obj = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{where}: not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: must be a JSON object with a string 'name'")
    fn = obj.get("function", obj) if isinstance(obj.get("function"), dict) else obj
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError(f"{where}: must be a JSON object with a string 'name'")
    args = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError as e:
            raise ValueError(f"{where}: 'arguments' is a string that is not JSON ({e})") from None
    if not isinstance(args, dict):
        raise ValueError(f"{where}: 'arguments' must be a JSON object")
    cid = obj.get("id")
    if cid is not None and (not isinstance(cid, str) or not cid):
        raise ValueError(f"{where}: 'id' must be a non-empty string")
    return make_call(fn["name"], args, cid)


def _results_after(messages: list[dict], i: int) -> int:
    """Index just past the tool messages that follow message `i`."""
    j = i + 1
    while j < len(messages) and messages[j]["role"] == "tool":
        j += 1
    return j


def _answered_call(result: dict, pos: int, calls: list[dict]) -> int | None:
    """Which of `calls` a tool result answers: by id, else (a log without ids) by position."""
    rid = result.get("tool_call_id")
    if rid is not None:
        return next((k for k, c in enumerate(calls) if c.get("id") == rid), None)
    return pos if pos < len(calls) and calls[pos].get("id") is None else None


def _counterpart(label: list[dict], k: int, original: list[dict]) -> int | None:
    """The label's call that stands for original call `k`: the one with its id, or (the
    original had no id) the call at the same position of the same tool."""
    oc = original[k]
    for j, c in enumerate(label):
        if oc.get("id") is not None and c.get("id") == oc["id"]:
            return j
    if oc.get("id") is None and k < len(label) and call_name(label[k]) == call_name(oc):
        return k
    return None


def exportable(messages: list[dict], originals: dict[int, dict],
               message_tools: Collection[str] = ()) -> list[dict]:
    """The conversation as an export writes it (see the module docstring). `originals`: the
    original message of each assistant turn whose label differs from it; `message_tools` speak
    to the user and get no result (the benchmark's reply tool), so a call of one needs none.

    After each changed turn every result must answer one of its calls (a result of a call the
    label dropped cannot) and every call that gets results must have one that was logged for
    it (a call the label added has none): else the conversation ends with that turn. Kept
    results answer the label's call by its id. Unchanged turns are written as logged."""
    out = list(messages)
    for i in sorted(originals):
        if i >= len(out) or out[i]["role"] != "assistant":
            continue
        label = out[i]["tool_calls"] or []
        orig = originals[i].get("tool_calls") or []
        end = _results_after(out, i)
        answered: set[int] = set()
        for pos in range(i + 1, end):
            k = _answered_call(out[pos], pos - i - 1, orig)
            j = _counterpart(label, k, orig) if k is not None else None
            if j is None:
                return out[:i + 1]          # a result of a call the label no longer makes
            answered.add(j)
            if out[pos]["tool_call_id"] != label[j]["id"]:
                out[pos] = {**out[pos], "tool_call_id": label[j]["id"]}
        for j, c in enumerate(label):
            if j in answered or call_name(c) in message_tools:
                continue
            if not any(_counterpart(label, k, orig) == j for k in range(len(orig))):
                return out[:i + 1]          # a new call: the log has no result for it
    return out
