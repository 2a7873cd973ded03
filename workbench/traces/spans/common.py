"""Small helpers the span readers share: timestamps, dotted attribute names, outcomes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from workbench.conversations.messages import FieldError


def timestamp(value: Any, field: str) -> float | None:
    """Seconds since the epoch from ISO 8601 text or a number of s, ms or ns (OTLP)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        return v / 1e9 if v > 1e14 else v / 1e3 if v > 1e11 else v
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            raise FieldError(field, f"is not a timestamp: {value[:40]!r}") from None
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    raise FieldError(field, f"is not a timestamp ({type(value).__name__})")


MAX_NAME_PARTS = 40   # dotted parts of one attribute name (real ones have under 10)


def unflatten(value: Any) -> Any:
    """Dotted attribute names as nesting, numeric parts as list indices:
    `{"llm.input_messages.0.message.role": "user"}` -> `{"llm": {"input_messages":
    [{"message": {"role": "user"}}]}}`. Already nested values are unflattened too."""
    if isinstance(value, list):
        return [unflatten(v) for v in value]
    if not isinstance(value, dict):
        return value
    root: dict = {}
    for key, v in value.items():
        parts = str(key).split(".")
        if len(parts) > MAX_NAME_PARTS:
            raise FieldError(str(key)[:60], f"attribute name of more than {MAX_NAME_PARTS} parts")
        node = root
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        v = unflatten(v)
        if isinstance(node.get(parts[-1]), dict) and isinstance(v, dict):
            node[parts[-1]].update(v)
        else:
            node[parts[-1]] = v
    return _lists(root)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(k.isascii() and k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    elif isinstance(node, list):
        return [_lists(v) for v in node]
    return node


def nonempty_str(value: Any, field: str) -> str:
    """An id or a name: a non-empty string, else a FieldError naming the field."""
    if not isinstance(value, str) or not value:
        raise FieldError(field, "must be a non-empty string")
    return value


def sub(pre: str, name: str) -> str:
    """A field path below `pre` (which is empty at the top of a line)."""
    return f"{pre}.{name}" if pre else name


def dig(node: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(node, dict):
            return None
        node = node.get(p)
    return node


def outcome_value(value: Any) -> Any:
    """Outcomes are numbers, booleans or short strings."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return str(value)[:200]
