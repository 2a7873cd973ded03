"""The one in-memory form of a conversation, and the rules that bring any input into it.

A message is an OpenAI chat message dict with every key present:
`{"role", "content", "tool_calls", "tool_call_id", "name"}`. A tool call is
`{"id", "type": "function", "function": {"name", "arguments"}}` where `arguments` is the
parsed JSON object, or the raw string when it does not parse as one (the checks flag it).
Keeping one canonical form makes hashing, equality and round trips exact.
"""

from __future__ import annotations

import hashlib
import json
import re

import orjson
from collections.abc import Iterator
from typing import Any

from workbench.core import safe_json

ROLES = ("system", "user", "assistant", "tool")
_JSON_START = re.compile(r"\s*[\[{]")
MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB of text per message; larger is almost surely a broken log


class FieldError(ValueError):
    """A problem with one field of one record; the importer adds file and line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, compact, UTF-8) for hashing and stored arguments."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def parse_arguments(raw: Any, field: str) -> dict | str:
    """Arguments as given (JSON string or object) -> dict, or the raw string if unparseable.
    JSON nested deeper than `safe_json.MAX_JSON_DEPTH` is refused (FieldError)."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            value = safe_json.loads(raw, fast=True)
        except safe_json.TooDeep as e:
            raise FieldError(field, str(e)) from None
        except orjson.JSONDecodeError:
            return raw
        return value if isinstance(value, dict) else raw
    raise FieldError(field, f"must be a JSON string or object, not {_type_name(raw)}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text(value: Any, field: str, max_bytes: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):  # OpenAI content parts: only text parts are meaningful here
        pieces = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                part.get("text"), str
            ):
                raise FieldError(f"{field}[{j}]", "only text content parts are supported")
            pieces.append(part["text"])
        value = "".join(pieces)
    if not isinstance(value, str):
        raise FieldError(field, f"must be a string, not {_type_name(value)}")
    if len(value) * 4 > max_bytes and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        size = len(value.encode("utf-8", "surrogatepass"))
        raise FieldError(field, f"{size} bytes is over the limit of {max_bytes} bytes per message")
    return value


def _tool_call(raw: Any, field: str) -> dict:
    if not isinstance(raw, dict):
        raise FieldError(field, f"must be an object, not {_type_name(raw)}")
    fn = raw.get("function", raw)  # the flat {"name", "arguments"} form appears in some logs
    if not isinstance(fn, dict):
        raise FieldError(f"{field}.function", f"must be an object, not {_type_name(fn)}")
    fn_field = f"{field}.function" if "function" in raw else field
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise FieldError(f"{fn_field}.name", "must be a non-empty string")
    if "arguments" in fn:
        args = parse_arguments(fn["arguments"], f"{fn_field}.arguments")
    elif "parameters" in fn:
        args = parse_arguments(fn["parameters"], f"{fn_field}.parameters")
    else:
        args = {}
    call_id = raw.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise FieldError(f"{field}.id", f"must be a string, not {_type_name(call_id)}")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def normalize_message(raw: Any, field: str, max_bytes: int = MAX_MESSAGE_BYTES) -> dict:
    """Validate one chat message and return it in canonical form."""
    if not isinstance(raw, dict):
        raise FieldError(field, f"must be an object, not {_type_name(raw)}")
    role = raw.get("role")
    if role not in ROLES:
        raise FieldError(f"{field}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    content = _text(raw.get("content"), f"{field}.content", max_bytes)
    if content and _JSON_START.match(content):   # a tool result (or any JSON text) that
        try:                                     # every later reader must be able to parse
            safe_json.check_depth(content)
        except safe_json.TooDeep as e:
            raise FieldError(f"{field}.content", str(e)) from None
    calls = raw.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise FieldError(f"{field}.tool_calls", f"must be a list, not {_type_name(calls)}")
        if role != "assistant" and calls:
            raise FieldError(f"{field}.tool_calls", f"only assistant messages carry tool calls, not {role}")
        calls = [_tool_call(c, f"{field}.tool_calls[{j}]") for j, c in enumerate(calls)] or None
    tool_call_id = raw.get("tool_call_id")
    if tool_call_id is not None and not isinstance(tool_call_id, str):
        raise FieldError(f"{field}.tool_call_id", f"must be a string, not {_type_name(tool_call_id)}")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise FieldError(f"{field}.name", f"must be a string, not {_type_name(name)}")
    return {"role": role, "content": content, "tool_calls": calls,
            "tool_call_id": tool_call_id, "name": name}


def normalize_messages(raw: Any, field: str = "messages", *, results_as_user_json: bool = False,
                       max_bytes: int = MAX_MESSAGE_BYTES) -> list[dict]:
    """Validate a message list. With `results_as_user_json` (the TFT and question/answer
    formats), a user message whose content is a JSON list is a tool result: it becomes a
    `tool` message answering the oldest unanswered call of the assistant turn before it."""
    if not isinstance(raw, list):
        raise FieldError(field, f"must be a list of messages, not {_type_name(raw)}")
    if not raw:
        raise FieldError(field, "is empty")
    out = [normalize_message(m, f"{field}[{i}]", max_bytes) for i, m in enumerate(raw)]
    if results_as_user_json:
        pending: list[str | None] = []
        for m in out:
            if m["role"] == "assistant":
                pending = [c["id"] for c in m["tool_calls"] or []]
            elif m["role"] == "user" and is_json_list(m["content"]):
                m["role"] = "tool"
                m["tool_call_id"] = pending.pop(0) if pending else None
            elif m["role"] == "user":
                pending = []
    return out


def is_json_list(text: str | None) -> bool:
    if not text or not text.lstrip().startswith("["):
        return False
    try:
        return isinstance(safe_json.loads(text), list)
    except ValueError:
        return False


def content_hash(messages: list[dict], tools: list | None,
                 extras: list[dict | None] | None = None) -> str:
    """Identity of a trace: identical conversations (with identical tools) are one trace. The
    messages' format attributes (a turn's training `weight`, a result's `is_error`) are part
    of it when there are any: the same talk with a turn left out of training is another trace."""
    obj: dict[str, Any] = {"messages": messages, "tools": tools}
    if extras and any(extras):
        obj["extras"] = extras
    payload = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()


def call_to_answer(call: dict) -> str:
    """A tool call as the benchmark's answer string: `{"name": ..., "parameters": ...}`."""
    fn = call["function"]
    return json.dumps({"name": fn["name"], "parameters": fn["arguments"]}, ensure_ascii=False)


def turn_answer(message: dict) -> str:
    """The reference string of an assistant turn, text and calls (`metrics.read_turn` reads it
    back): one call alone as the benchmark's bare `{"name", "parameters"}`; otherwise its text,
    then each call as a `<tool_call>` block, in order."""
    calls = message.get("tool_calls") or []
    text = (message.get("content") or "").strip()
    if len(calls) == 1 and not text:
        return call_to_answer(calls[0])
    if calls:
        blocks = [f"<tool_call>\n{call_to_answer(c)}\n</tool_call>" for c in calls]
        return "\n".join([text, *blocks] if text else blocks)
    return message.get("content") or ""


def per_turn_pairs(messages: list[dict]) -> Iterator[tuple[int, list[dict], dict]]:
    """Every assistant turn with the messages before it: the benchmark's per-turn expansion."""
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            yield i, messages[:i], m


def to_openai(message: dict, *, arguments_as_string: bool = True) -> dict:
    """Canonical message -> OpenAI chat message (no null keys; arguments as JSON strings)."""
    out: dict[str, Any] = {"role": message["role"]}
    if message["content"] is not None or not message["tool_calls"]:
        out["content"] = message["content"]
    if message["tool_calls"]:
        out["tool_calls"] = []
        for c in message["tool_calls"]:
            args = c["function"]["arguments"]
            if arguments_as_string and isinstance(args, dict):
                args = json.dumps(args, ensure_ascii=False)
            call: dict[str, Any] = {"id": c["id"], "type": "function",
                                    "function": {"name": c["function"]["name"], "arguments": args}}
            out["tool_calls"].append(call)
    if message["tool_call_id"] is not None:
        out["tool_call_id"] = message["tool_call_id"]
    if message["name"] is not None:
        out["name"] = message["name"]
    return out


def to_benchmark_question(messages: list[dict]) -> list[dict]:
    """Messages as the TFT question format has them: tool results as user messages,
    arguments as objects."""
    out = []
    for m in messages:
        if m["role"] == "tool":
            out.append({"role": "user", "content": m["content"]})
        else:
            out.append(to_openai(m, arguments_as_string=False))
    return out
