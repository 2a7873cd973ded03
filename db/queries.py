"""Trace selection shared by export, checks, training and the app: one filter, one SQL."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Split = Literal["train", "test", "unassigned"]
Origin = Literal["imported", "synthetic"]
LabelStatus = Literal["original", "revised", "proposed"]
LABEL_STATUSES: tuple[str, ...] = LabelStatus.__args__   # type: ignore[attr-defined]
SPLITS: tuple[str, ...] = Split.__args__                 # type: ignore[attr-defined]
ORIGINS: tuple[str, ...] = Origin.__args__               # type: ignore[attr-defined]


def _opt(help: str, **more: str) -> Any:  # noqa: A002 - the field's help text
    """A selection field: any value by default, with its help (and CLI name) for the options,
    forms and pipeline files that are made from these fields."""
    return field(default=None, metadata={"help": help, **more})


# Traces of an import still running (or killed) are hidden from every query until the import
# is marked complete (db.imports): a big import commits in batches, yet readers see all or none.
VISIBLE_SQL = ("coalesce(traces.import_id, 0) NOT IN"
               " (SELECT id FROM imports WHERE status = 'pending')")

# Excluded from training: the analyst's decision when there is one, else a trace-level error.
# Checks never write the decision, so re-running them cannot undo what the analyst chose.
EXCLUDED_SQL = ("coalesce(traces.excluded, traces.id IN (SELECT trace_id FROM flags"
                " WHERE message_idx IS NULL AND severity = 'error'))")


@dataclass
class TraceFilter:
    """Which traces to take. Every field narrows the selection; None means "any"."""

    split: Split | None = _opt("train | test | unassigned")
    origin: Origin | None = _opt("imported | synthetic")
    status: LabelStatus | None = _opt("label status: original | revised | proposed")
    tool: str | None = _opt("traces calling this tool (some assistant turn calls it)")
    check: str | None = _opt("traces flagged by this check")
    flagged: bool | None = _opt("with / without error flags", off="unflagged")
    has_revisions: bool | None = _opt("with / without revisions", off="no-revisions")
    excluded: bool | None = _opt("excluded from training or not", off="included")
    text: str | None = _opt("full-text search over messages and calls (words, \"phrases\","
                            " prefix*)", cli="search")
    source: str | None = _opt("part of the source file name")
    trace_ids: list[int] | None = _opt("only this trace (repeatable; a comma list in forms)",
                                       cli="trace-id")
    outcome: list[str] | None = _opt("an outcome condition: 'reward<1', 'passed=true', 'reward'"
                                     " (has one); repeatable, all must hold")
    meta: list[str] | None = _opt("a metadata condition: 'user_tier=gold', 'env.region!=eu';"
                                  " repeatable, all must hold")
    limit: int | None = _opt("only the first N selected traces")

    def __post_init__(self) -> None:
        for name, allowed in (("split", SPLITS), ("origin", ORIGINS), ("status", LABEL_STATUSES)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"--{name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.limit is not None and self.limit < 0:
            raise ValueError("--limit must be 0 or more")
        for name in ("outcome", "meta"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, value := [value])
            for cond in value or ():
                parse_condition(cond, f"--{name}")   # a bad condition fails before any query

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def to_dict(self) -> dict:
        """The fields that narrow the selection (what a job row stores)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: dict | None) -> TraceFilter:
        known = {f.name for f in fields(cls)}
        unknown = set(data or {}) - known
        if unknown:
            raise ValueError(f"unknown selection field {', '.join(sorted(unknown))}")
        return cls(**(data or {}))

    def where(self) -> tuple[str, list]:
        """SQL condition over `traces` (aliased as the bare table) and its parameters."""
        where, params = self._where()
        if self.limit is None:
            return where, params
        return (f"traces.id IN (SELECT traces.id FROM traces WHERE {where}"
                " ORDER BY traces.id LIMIT ?)"), [*params, self.limit]

    def _where(self) -> tuple[str, list]:
        conds: list[str] = [VISIBLE_SQL]
        params: list = []
        if self.trace_ids is not None:
            ids = [int(i) for i in self.trace_ids]
            conds.append(f"traces.id IN ({','.join('?' * len(ids)) or 'NULL'})")
            params += ids
        if self.split:
            conds.append("traces.split = ?")
            params.append(self.split)
        if self.origin:
            conds.append("traces.origin = ?")
            params.append(self.origin)
        if self.source:
            conds.append("instr(traces.source, ?) > 0")
            params.append(self.source)
        if self.tool:
            conds.append("traces.id IN (SELECT trace_id FROM tool_calls WHERE name = ?)")
            params.append(self.tool)
        if self.check:
            conds.append("traces.id IN (SELECT trace_id FROM flags WHERE check_name = ?)")
            params.append(self.check)
        if self.flagged is not None:
            op = "IN" if self.flagged else "NOT IN"
            conds.append(f"traces.id {op} (SELECT trace_id FROM flags WHERE severity = 'error')")
        if self.excluded is not None:
            conds.append(EXCLUDED_SQL if self.excluded else f"NOT {EXCLUDED_SQL}")
        if self.has_revisions is not None:
            op = "IN" if self.has_revisions else "NOT IN"
            conds.append(f"traces.id {op} (SELECT trace_id FROM revisions)")
        if self.status:
            if self.status not in LABEL_STATUSES:
                raise ValueError(f"status must be one of {', '.join(LABEL_STATUSES)}")
            if self.status == "original":
                conds.append("traces.id NOT IN (SELECT trace_id FROM revisions"
                             " WHERE status != 'rejected')")
            elif self.status == "revised":
                conds.append("traces.id IN (SELECT trace_id FROM revisions WHERE status = 'accepted')")
            else:
                conds.append("traces.id IN (SELECT trace_id FROM revisions WHERE status = 'proposed')")
        for column, name in (("outcomes", "outcome"), ("metadata", "meta")):
            for cond in getattr(self, name) or ():
                sql, args = condition_sql(f"traces.{column}", parse_condition(cond, f"--{name}"))
                conds.append(sql)
                params += args
        if self.text and self.text.strip():
            # rowids from the FTS index, then trace ids through a covering index (migration
            # m002): reading `trace_id` from `search` itself would load every matching text.
            conds.append("traces.id IN (SELECT c1 FROM search_content INDEXED BY"
                         " search_content_trace WHERE id IN"
                         " (SELECT rowid FROM search WHERE search MATCH ?))")
            params.append(fts_query(self.text))
        return (" AND ".join(conds) or "1"), params


_OPS = ("<=", ">=", "!=", "=", "<", ">")
_COND = re.compile(r"^\s*([^<>=!]+?)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Condition:
    """`NAME OP VALUE` over a JSON object column, or `NAME` alone (the key is present)."""

    path: tuple[str, ...]     # a dotted name reaches into nested objects
    op: str | None
    value: str | float | bool | None


def parse_condition(text: str, option: str = "--outcome") -> Condition:
    """`reward<1`, `user_tier=gold`, `passed=true`, `env.region!=eu`, `reward` (present).
    Values: a number compares as a number, true/false as a boolean, anything else as text
    (quotes optional); `<`, `>`, `<=`, `>=` need a number."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{option} needs a condition such as 'reward<1' or 'user_tier=gold'")
    m = _COND.match(text)
    if not m:
        if any(c in text for c in "<>=!"):
            raise ValueError(f"{option} {text!r}: expected NAME OP VALUE with OP one of"
                             f" {' '.join(_OPS)}")
        name, op, raw = text.strip(), None, None
    else:
        name, op, raw = m.groups()
    path = tuple(p.strip() for p in name.split("."))
    if not all(path):
        raise ValueError(f"{option} {text!r}: empty name")
    if op is None or raw is None:
        return Condition(path, None, None)
    value: str | float | bool
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        value = raw[1:-1]
    elif raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        try:
            value = float(raw)
        except ValueError:
            value = raw
    if op in ("<", ">", "<=", ">=") and (isinstance(value, (str, bool))):
        raise ValueError(f"{option} {text!r}: {op} compares numbers, not {raw!r}")
    return Condition(path, op, value)


def json_path(path: tuple[str, ...]) -> str:
    """A JSON path for SQLite's json_extract with every key quoted (keys may hold any text)."""
    return "$" + "".join('."' + p.replace("\\", "\\\\").replace('"', '\\"') + '"'
                         for p in path)


def condition_sql(column: str, cond: Condition) -> tuple[str, list]:
    """SQL for one condition over a JSON object column (NULL column: no key holds)."""
    path = json_path(cond.path)
    if cond.op is None:
        return f"json_type({column}, ?) IS NOT NULL", [path]
    value = cond.value
    kind = f"json_type({column}, ?)"
    if isinstance(value, bool):
        test = f"{kind} = ?" if cond.op == "=" else f"coalesce({kind} != ?, 1)"
        return test, [path, "true" if value else "false"]
    if isinstance(value, float):
        numeric = f"{kind} IN ('integer', 'real', 'true', 'false')"   # true is 1
        if cond.op == "!=":
            return (f"NOT coalesce({numeric} AND json_extract({column}, ?) = ?, 0)",
                    [path, path, value])
        return f"({numeric} AND json_extract({column}, ?) {cond.op} ?)", [path, path, value]
    if cond.op == "!=":
        return (f"NOT coalesce({kind} = 'text' AND json_extract({column}, ?) = ?, 0)",
                [path, path, value])
    return f"({kind} = 'text' AND json_extract({column}, ?) = ?)", [path, path, value]


def fts_query(text: str) -> str:
    """User words -> a safe FTS5 query: each word must match (a trailing * keeps prefix search),
    "quoted phrases" stay phrases, and FTS syntax characters are never interpreted."""
    out = []
    for phrase, word in re.findall(r'"([^"]*)"|(\S+)', text):
        if phrase:
            tokens = re.findall(r"\w+", phrase)
            if tokens:
                out.append('"' + " ".join(tokens) + '"')
            continue
        prefix = word.endswith("*")
        for tok in re.findall(r"\w+", word):
            out.append(f'"{tok}"' + ("*" if prefix else ""))
    return " ".join(out) or '""'
