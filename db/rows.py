"""Rows as dicts, with the JSON columns decoded (NULL or empty stays None)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable


def _decode(row: dict, json_fields: Iterable[str]) -> dict:
    for key in json_fields:
        row[key] = json.loads(row[key]) if row[key] else None
    return row


def dicts(cur: sqlite3.Cursor, json_fields: Iterable[str] = ()) -> list[dict]:
    cols = [d[0] for d in cur.description]
    fields = tuple(json_fields)
    return [_decode(dict(zip(cols, r)), fields) for r in cur.fetchall()]


def first(cur: sqlite3.Cursor, json_fields: Iterable[str] = ()) -> dict | None:
    row = cur.fetchone()
    if row is None:
        return None
    return _decode(dict(zip([d[0] for d in cur.description], row)), json_fields)


def rowid(cursor: sqlite3.Cursor) -> int:
    """The id of the row an INSERT made (sqlite3 types `lastrowid` as optional)."""
    rid = cursor.lastrowid
    if rid is None:
        raise RuntimeError("the INSERT made no row")
    return rid
