"""JSON from data, parsed with a depth limit: the one parser for every JSON text that comes
from a trace, a task file, a prediction or a model.

Parsers and everything after them (Python's `json`, Rich's JSON view, schema validation,
`json.dumps`) recurse once per nesting level: a tool result of 100,000 nested lists raises
`RecursionError` somewhere far from the import that let it in. `loads` measures the nesting of
the text before any parser sees it and refuses more than `MAX_JSON_DEPTH` levels with
`TooDeep` (a `ValueError`), so callers that already treat bad JSON as a `ValueError` stay
safe. Imports turn it into `FILE:LINE: field: too deeply nested`.
"""

from __future__ import annotations

import json
import re
from collections import deque
from itertools import accumulate
from typing import Any

import orjson

MAX_JSON_DEPTH = 100   # levels of [ and { in one JSON text; real traces use fewer than 20

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)   # a JSON string literal
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class TooDeep(ValueError):
    """JSON nested more than the limit allows."""

    def __init__(self, limit: int = MAX_JSON_DEPTH) -> None:
        super().__init__(f"too deeply nested (more than {limit} levels of [ and {{)")
        self.limit = limit


def text_depth(text: str | bytes) -> int:
    """How deeply the brackets of a JSON text nest (brackets inside strings do not count).

    Linear and without recursion: strings are cut out, the brackets left are summed up."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def check_depth(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise TooDeep when `text` nests more than `limit` levels. Text with no more brackets
    than the limit cannot nest deeper, so the common case costs two counts."""
    if isinstance(text, (bytes, bytearray)):
        opened = text.count(b"[") + text.count(b"{")
    else:
        opened = text.count("[") + text.count("{")
    if opened > limit and text_depth(text) > limit:
        raise TooDeep(limit)


def loads(text: str | bytes, *, fast: bool = False, limit: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` that refuses JSON nested deeper than `limit` (TooDeep, a ValueError).

    `fast=True` parses with orjson (what the importers always used: it refuses NaN, Infinity
    and lone surrogates); the default is the standard library, which the benchmark's metrics
    match. Invalid JSON raises the parser's own ValueError."""
    check_depth(text, limit)
    if fast:
        return orjson.loads(text)
    return json.loads(text)


def value_depth(value: Any) -> int:
    """Nesting of an already parsed value (lists and dicts), without recursion."""
    deepest = 0
    todo: deque[tuple[Any, int]] = deque([(value, 1)])
    while todo:
        v, d = todo.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            todo.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            todo.extend((x, d + 1) for x in v)
    return deepest


def deep_path(text: str | bytes, limit: int = MAX_JSON_DEPTH, shown: int = 6) -> str | None:
    """Where a too-deep JSON text first nests past `limit`, as a field path
    (`messages[2].tool_calls[0].function.arguments…`), its first `shown` steps; None when the
    text is too deep even for orjson (over 1,024 levels) or is not JSON."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    todo: list[tuple[Any, tuple]] = [(value, ())]
    while todo:
        v, path = todo.pop()
        if isinstance(v, (dict, list)) and len(path) >= limit:
            steps = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[:shown])
            return steps.lstrip(".") + ("…" if len(path) > shown else "")
        if isinstance(v, dict):
            todo.extend((x, (*path, k)) for k, x in v.items())
        elif isinstance(v, list):
            todo.extend((x, (*path, i)) for i, x in enumerate(v))
    return None
