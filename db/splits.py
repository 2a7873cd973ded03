"""Moves of traces between splits, recorded as decisions (`split_decisions`): each change of
`traces.split` is a row with the split before it, under the id of the action that made it, so an
action is undone as one without touching moves made since. And the per-trace fields a split can
be grouped by."""

from __future__ import annotations

import json
import re

from sqlite_utils import Database
from ulid import ULID

from db.queries import SPLITS, VISIBLE_SQL
from db.tx import now, write_tx

# fields every trace has, whatever its format: the file it came from
BUILTIN_FIELDS = {"source": "traces.source"}
META_COLUMNS = ("meta", "metadata")   # a JSON object of the trace's own metadata, where stored
_KEY = re.compile(r"[^.]+")


def move(db: Database, moves: list[tuple[int, str]], *, author_name: str, reason: str = "",
         action: str | None = None) -> tuple[str, int]:
    """Put each trace in its split (`(trace_id, split)`; a trace already there is left alone),
    as one action. Returns (the action id, how many traces moved)."""
    bad = sorted({s for _, s in moves if s not in SPLITS})
    if bad:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {bad[0]!r}")
    action = action or str(ULID())
    with write_tx(db):
        current = _splits_of(db, [t for t, _ in moves])
        changed = [(t, s, current[t]) for t, s in moves if t in current and current[t] != s]
        ts = now()
        db.conn.executemany("INSERT INTO split_decisions (trace_id, split, previous, action,"
                            " author_name, reason, created_at) VALUES (?,?,?,?,?,?,?)",
                            [(t, s, prev, action, author_name, reason, ts)
                             for t, s, prev in changed])
        db.conn.executemany("UPDATE traces SET split = ? WHERE id = ?",
                            [(s, t) for t, s, _ in changed])
    return action, len(changed)


def _splits_of(db: Database, ids: list[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        out.update(db.execute("SELECT id, split FROM traces WHERE id IN (SELECT value FROM"
                              " json_each(?))", [json.dumps(chunk)]).fetchall())
    return out


def last_action(db: Database) -> str | None:
    row = db.execute("SELECT action FROM split_decisions ORDER BY id DESC LIMIT 1").fetchone()
    return row[0] if row else None


def undo_action(db: Database, action: str, author_name: str) -> tuple[int, int]:
    """Put back what a split action changed, as a new action; a trace moved again since is left
    where it is. Returns (restored, skipped)."""
    with write_tx(db):
        rows = db.execute("SELECT trace_id, split, previous FROM split_decisions WHERE action = ?",
                          [action]).fetchall()
        if not rows:
            raise ValueError(f"no split action {action}")
        later = {r[0] for r in db.execute(
            "SELECT DISTINCT trace_id FROM split_decisions WHERE action != ? AND id >"
            " (SELECT max(id) FROM split_decisions WHERE action = ?) AND trace_id IN"
            " (SELECT trace_id FROM split_decisions WHERE action = ?)", [action] * 3)}
        current = _splits_of(db, [r[0] for r in rows])
        restore = [(t, prev) for t, split, prev in rows
                   if t not in later and current.get(t) == split]
        _, n = move(db, restore, author_name=author_name, reason=f"undo {action}")
    return n, len(rows) - len(restore)


def meta_column(db: Database) -> str | None:
    """The traces' metadata column (a JSON object per trace), when this store has one."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(traces)")}
    return next((c for c in META_COLUMNS if c in cols), None)


def field_sql(db: Database, field: str) -> str:
    """SQL for a trace's value of `field`: a key of its metadata object (`a.b` reaches into
    nested objects; a plain key is also found in the record's `meta` object), else a field
    every trace has (`source`: its file)."""
    col = meta_column(db)
    if col is not None and field not in BUILTIN_FIELDS:
        keys = _KEY.findall(field.replace('"', ""))
        paths = ["$" + "".join(f'."{k}"' for k in keys)]
        if len(keys) == 1:   # a plain key is also looked for in the record's `meta` object
            paths.append(f'$."meta"."{keys[0]}"')
        found = [f"json_extract(traces.{col}, {_quote(p)})" for p in paths]
        return found[0] if len(found) == 1 else f"coalesce({', '.join(found)})"
    if field in BUILTIN_FIELDS:
        return BUILTIN_FIELDS[field]
    known = ", ".join(sorted(BUILTIN_FIELDS))
    raise ValueError(f"--by {field}: no such per-trace field in this store (traces carry no"
                     f" metadata object here; fields: {known})")


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def group_values(db: Database, field: str, where: str, params: list) -> dict[int, str | None]:
    """Each selected trace's value of `field` as text (None where it has none)."""
    expr = field_sql(db, field)
    return {t: (None if v is None else v if isinstance(v, str) else json.dumps(v))
            for t, v in db.execute(f"SELECT traces.id, {expr} FROM traces WHERE {where}"
                                   " ORDER BY traces.id", params).fetchall()}


def ids_in_split(db: Database, split: str, where: str, params: list) -> set[int]:
    """The selected traces (a `TraceFilter.where`) already in `split`."""
    return {r[0] for r in db.execute(f"SELECT id FROM traces WHERE {where} AND"
                                     " traces.split = ?", [*params, split])}


def split_counts(db: Database) -> dict[str, int]:
    """Visible traces per split."""
    return dict(db.execute(f"SELECT split, count(*) FROM traces WHERE {VISIBLE_SQL}"
                           " GROUP BY split ORDER BY split").fetchall())
