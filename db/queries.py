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
    limit: int | None = _opt("only the first N selected traces")

    def __post_init__(self) -> None:
        for name, allowed in (("split", SPLITS), ("origin", ORIGINS), ("status", LABEL_STATUSES)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"--{name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.limit is not None and self.limit < 0:
            raise ValueError("--limit must be 0 or more")

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
        if self.text and self.text.strip():
            # rowids from the FTS index, then trace ids through a covering index (migration
            # m002): reading `trace_id` from `search` itself would load every matching text.
            conds.append("traces.id IN (SELECT c1 FROM search_content INDEXED BY"
                         " search_content_trace WHERE id IN"
                         " (SELECT rowid FROM search WHERE search MATCH ?))")
            params.append(fts_query(self.text))
        return (" AND ".join(conds) or "1"), params


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
