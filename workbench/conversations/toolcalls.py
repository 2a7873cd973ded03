"""Parse tool calls out of model text, and write them in the one canonical form.

Models emit calls in several shapes: a bare `{"name", "arguments"}` object (the TFT test
set uses `"parameters"`), Hermes/Qwen `<tool_call>` tags, a ```json fence, prose before the
call, or OpenAI-style `arguments` holding a JSON *string*. Scoring must not depend on which
shape a model chose, so everything is reduced to `{"name": str, "arguments": dict}`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from workbench.core import safe_json

ToolCall = dict[str, Any]  # {"name": str, "arguments": dict}

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
# A closing tag is optional so that a reply cut off by max_tokens still yields its calls.
_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|(?=<tool_call>)|\Z)", re.DOTALL)
_FENCE = re.compile(r"```[\w-]*[ \t]*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def parse_tool_call(text: str | None) -> ToolCall | None:
    """The first tool call in `text`, or None when there is none (empty, broken JSON, no name)."""
    calls = parse_tool_calls(text)
    return calls[0] if calls else None


def parse_tool_calls(text: str | None) -> list[ToolCall]:
    """Every tool call in `text`, in order.

    With `<tool_call>` tags only the tagged blocks count (a broken block is skipped);
    without tags the whole text is searched, which also accepts a JSON list of calls.
    """
    if not isinstance(text, str) or not text.strip():
        return []
    if _OPEN in text:
        calls: list[ToolCall] = []
        for block in _BLOCK.findall(text):
            calls.extend(_calls_in(block))
        return calls
    return _calls_in(text)


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The canonical tagged form, byte-identical to the TFT benchmark's tagged answers."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{_OPEN}\n{body}\n{_CLOSE}"


def _calls_in(text: str) -> list[ToolCall]:
    """Calls in a payload: whole-text JSON first, then fenced JSON, then JSON found in prose."""
    text = text.strip()
    try:
        return _as_calls(safe_json.loads(text))
    except ValueError:
        pass
    for fenced in _FENCE.findall(text):
        try:
            return _as_calls(safe_json.loads(fenced.strip()))
        except ValueError:
            continue
    calls: list[ToolCall] = []
    pos = 0
    while (start := _next_json_start(text, pos)) != -1:
        try:
            value, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):   # RecursionError: JSON nested beyond reason
            pos = start + 1  # not JSON here; a call may still start further on
            continue
        calls.extend(_as_calls(value))
        pos = end  # never look inside a decoded value: nested dicts are not calls
    return calls


def _next_json_start(text: str, pos: int) -> int:
    starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i != -1]
    return min(starts, default=-1)


def _as_calls(value: Any) -> list[ToolCall]:
    if isinstance(value, list):
        return [c for item in value if (c := _as_call(item)) is not None]
    call = _as_call(value)
    return [call] if call is not None else []


def _as_call(value: Any) -> ToolCall | None:
    """Normalise one decoded object, or None when it is not a tool call."""
    if not isinstance(value, dict):
        return None
    if "name" not in value and isinstance(value.get("function"), dict):
        value = value["function"]  # OpenAI {"type": "function", "function": {...}}
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    args = value["arguments"] if "arguments" in value else value.get("parameters")
    if args is None:
        args = {}  # a call without arguments
    elif isinstance(args, str):
        if not args.strip():
            args = {}
        else:
            try:
                args = safe_json.loads(args)
            except ValueError:
                return None
    if not isinstance(args, dict):
        return None
    return {"name": name, "arguments": args}
