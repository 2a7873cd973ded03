"""Outcomes of a conversation (rewards, scores, feedback values) picked from its record.

An outcome is a named scalar: a number, true/false, or a short text ("thumbs_up"). They come
from three places, later ones winning on a name:

* what the format itself carries (a ShareGPT `kto_tag`, scores of a span export);
* a record's `outcomes` object (what our own export writes) and its top-level `reward` and
  `score` keys when they hold a number or true/false (the names most logs use);
* the fields the analyst names with `workbench import --outcome FIELD` (a dotted path reaches
  into nested objects: `--outcome feedback.rating`; the outcome is named by its last part).

The record's keys stay in its metadata as they were; the outcomes are what selection
(`--outcome "reward<1"`), the tables and training read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from workbench.conversations.messages import FieldError

DEFAULT_FIELDS = ("reward", "score")
MAX_TEXT = 200   # a longer text is a comment, not an outcome


def is_outcome(value: Any) -> bool:
    return (isinstance(value, (bool, int, float)) and not _nan(value)
            or isinstance(value, str) and 0 < len(value) <= MAX_TEXT)


def _nan(value: bool | float) -> bool:
    return isinstance(value, float) and math.isnan(value)   # NaN is no outcome


def check(value: Any, field: str) -> bool | int | float | str:
    if not is_outcome(value):
        raise FieldError(field, f"an outcome must be a number, true/false or a text of at most"
                                f" {MAX_TEXT} characters, not {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"a text of {len(value)} characters" if value else "an empty text"
    return type(value).__name__ if not isinstance(value, float) else "NaN"


def lookup(obj: dict, path: str) -> tuple[bool, Any]:
    """(found, value) of a dotted path in a record."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def check_fields(fields: Sequence[str]) -> list[str]:
    """`--outcome FIELD` values, validated before anything is read."""
    out = []
    for f in fields:
        if not isinstance(f, str) or not f.strip() or not all(p.strip() for p in f.split(".")):
            raise ValueError(f"--outcome needs a field name such as 'reward' or"
                             f" 'feedback.rating', not {f!r}")
        out.append(f.strip())
    return out


def collect(obj: dict, carried: dict | None = None,
            fields: Sequence[str] = ()) -> dict[str, Any] | None:
    """The outcomes of one record (None when it has none); a bad value raises FieldError."""
    out: dict[str, Any] = {}
    for name, value in (carried or {}).items():
        if is_outcome(value):
            out[name] = value
    own = obj.get("outcomes")
    if own is not None:
        if not isinstance(own, dict):
            raise FieldError("outcomes", "must be an object of outcomes by name")
        for name, value in own.items():
            out[str(name)] = check(value, f"outcomes.{name}")
    for name in DEFAULT_FIELDS:
        value = obj.get(name)
        if isinstance(value, (bool, int, float)) and not _nan(value):
            out[name] = value
    for path in fields:
        found, value = lookup(obj, path)
        if found and value is not None:
            out[path.split(".")[-1]] = check(value, path)
    return out or None
