"""Writing and reading traces: original messages, tool calls, provenance, search text."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlite_utils import Database

from db.queries import EXCLUDED_SQL, VISIBLE_SQL, fts_query
from db.rows import dicts, first
from db.tx import now, write_tx

BATCH = 500


def _dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def search_text(messages: Iterable[dict]) -> str:
    """What full-text search sees of a conversation: message text, call names and arguments."""
    parts: list[str] = []
    for m in messages:
        if m.get("content"):
            parts.append(m["content"])
        for c in m.get("tool_calls") or ():
            fn = c["function"]
            args = fn["arguments"]
            parts.append(fn["name"] + " " + (args if isinstance(args, str) else _dumps(args)))
    return "\n".join(parts)


@dataclass
class NewTrace:
    """A trace in canonical form, ready to store (see workbench.conversations.messages)."""

    messages: list[dict]
    tools: list | None
    content_hash: str
    source: str
    path: str
    line: int
    format: str
    split: str = "unassigned"
    origin: str = "imported"
    metadata: dict | None = None      # the record's keys beyond its messages (kept, exported)
    outcomes: dict | None = None      # rewards, scores, feedback values by name
    extras: list[dict | None] | None = None   # per message: attributes of its format (weight)


class TraceWriter:
    """Buffered insertion of traces, a short write transaction per batch (a savepoint inside
    the caller's transaction, if any). The traces stay hidden while their import is pending
    (db.imports); each batch also beats the import's heartbeat.

    A trace whose content hash is already stored is not stored again; only its new provenance
    (file and line) is recorded, so re-importing a file adds nothing.
    """

    def __init__(self, db: Database, import_id: int,
                 beat: Callable[[Database], None] | None = None) -> None:
        self.db = db
        self.import_id = import_id
        self.beat = beat
        self.next_id = (db.execute("SELECT coalesce(max(id), 0) FROM traces").fetchone()[0]) + 1
        self.pending_hashes: dict[str, int] = {}
        self.traces: list[tuple] = []
        self.sources: list[tuple] = []
        self.messages: list[tuple] = []
        self.calls: list[tuple] = []
        self.search: list[tuple] = []
        self.added = 0
        self.duplicates = 0
        self.created_at = now()

    def add(self, t: NewTrace) -> tuple[int, bool]:
        """Buffer `t`; returns (trace id, whether it is new)."""
        existing = self.pending_hashes.get(t.content_hash)
        if existing is None:
            row = self.db.execute("SELECT id FROM traces WHERE content_hash = ?",
                                  [t.content_hash]).fetchone()
            existing = row[0] if row else None
        if existing is not None:
            self.duplicates += 1
            self.sources.append((existing, self.import_id, t.source, t.path, t.line))
            self._maybe_flush()
            return existing, False
        tid = self.next_id
        self.next_id += 1
        self.pending_hashes[t.content_hash] = tid
        n_assistant = n_calls = 0
        used: dict[str, None] = {}
        for i, m in enumerate(t.messages):
            calls = m["tool_calls"]
            if m["role"] == "assistant":
                n_assistant += 1
            if calls:
                n_calls += len(calls)
                for j, c in enumerate(calls):
                    fn = c["function"]
                    args = fn["arguments"]
                    used[fn["name"]] = None
                    self.calls.append((tid, i, j, c["id"], fn["name"],
                                       None if isinstance(args, str) else _canonical(args),
                                       args if isinstance(args, str) else None))
            extra = t.extras[i] if t.extras and i < len(t.extras) else None
            self.messages.append((tid, i, m["role"], m["content"], _dumps(calls),
                                  m["tool_call_id"], m["name"], _dumps(extra or None)))
        self.traces.append((tid, t.source, t.line, t.format, t.origin, t.split, t.content_hash,
                            _dumps(t.tools), len(t.messages), n_assistant, n_calls,
                            " ".join(used), self.import_id, self.created_at,
                            _dumps(t.metadata or None), _dumps(t.outcomes or None)))
        self.sources.append((tid, self.import_id, t.source, t.path, t.line))
        self.search.append((search_text(t.messages), tid, None))
        self.added += 1
        self._maybe_flush()
        return tid, True

    def _maybe_flush(self) -> None:
        if len(self.traces) + len(self.sources) >= BATCH * 2:
            self.flush()

    def flush(self) -> None:
        with write_tx(self.db):
            self._write()
            if self.beat is not None:
                self.beat(self.db)

    def _write(self) -> None:
        ex = self.db.conn.executemany
        ex("INSERT INTO traces (id, source, line, format, origin, split, content_hash, tools,"
           " n_messages, n_assistant, n_tool_calls, tools_used, import_id, created_at,"
           " metadata, outcomes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", self.traces)
        ex("INSERT OR IGNORE INTO trace_sources (trace_id, import_id, source, path, line)"
           " VALUES (?,?,?,?,?)", self.sources)
        ex("INSERT INTO messages (trace_id, idx, role, content, tool_calls, tool_call_id, name,"
           " extra) VALUES (?,?,?,?,?,?,?,?)", self.messages)
        ex("INSERT INTO tool_calls (trace_id, message_idx, idx, call_id, name, arguments,"
           " arguments_raw) VALUES (?,?,?,?,?,?,?)", self.calls)
        ex("INSERT INTO search (text, trace_id, message_idx) VALUES (?,?,?)", self.search)
        for buf in (self.traces, self.sources, self.messages, self.calls, self.search):
            buf.clear()
        self.pending_hashes.clear()


def row_to_message(row: tuple) -> dict:
    role, content, tool_calls, tool_call_id, name = row
    return {"role": role, "content": content,
            "tool_calls": orjson.loads(tool_calls) if tool_calls else None,
            "tool_call_id": tool_call_id, "name": name}


def original_messages(db: Database, trace_id: int) -> list[dict]:
    rows = db.execute("SELECT role, content, tool_calls, tool_call_id, name FROM messages"
                      " WHERE trace_id = ? ORDER BY idx", [trace_id]).fetchall()
    return [row_to_message(r) for r in rows]


def trace_exists(db: Database, trace_id: int) -> bool:
    """Whether the store holds this trace (visible or not: a decision names it by id)."""
    return db.execute("SELECT 1 FROM traces WHERE id = ?", [trace_id]).fetchone() is not None


def message_role(db: Database, trace_id: int, idx: int) -> str | None:
    """The role of message `idx` of the trace, or None when it has no such message."""
    row = db.execute("SELECT role FROM messages WHERE trace_id = ? AND idx = ?",
                     [trace_id, idx]).fetchone()
    return None if row is None else row[0]


def message_count(db: Database, trace_id: int) -> int:
    return db.execute("SELECT count(*) FROM messages WHERE trace_id = ?",
                      [trace_id]).fetchone()[0]


def trace_ids(db: Database, where: str = "1", params: list | None = None, *,
              ordered: bool = False) -> list[int]:
    """Ids of the traces matching a selection's WHERE clause (`TraceFilter.where`), in id
    order when `ordered`."""
    sql = f"SELECT id FROM traces WHERE {where}" + (" ORDER BY id" if ordered else "")
    return [r[0] for r in db.execute(sql, params or [])]


def turns_matching(db: Database, trace_ids: list[int], query: str) -> set[tuple[int, int]]:
    """(trace, turn) of the search rows of these traces that match a full-text query
    (`fts_query`) and name a turn: a revision's text (a trace's own text names none)."""
    marks = ",".join("?" * len(trace_ids))
    return {(t, i) for t, i in db.execute(
        f"SELECT trace_id, message_idx FROM search WHERE search MATCH ? AND trace_id IN ({marks})",
        [fts_query(query), *trace_ids]) if i is not None}


def messages_for(db: Database, trace_ids: list[int]) -> dict[int, list[dict]]:
    """Original messages of several traces in one query."""
    out: dict[int, list[dict]] = {t: [] for t in trace_ids}
    if not trace_ids:
        return out
    marks = ",".join("?" * len(trace_ids))
    for tid, *rest in db.execute(
        f"SELECT trace_id, role, content, tool_calls, tool_call_id, name FROM messages"
        f" WHERE trace_id IN ({marks}) ORDER BY trace_id, idx", trace_ids):
        out[tid].append(row_to_message(tuple(rest)))
    return out


def extras_for(db: Database, trace_ids: list[int]) -> dict[int, dict[int, dict]]:
    """Per trace, the messages (by index) that carry attributes of their format (`extra`)."""
    out: dict[int, dict[int, dict]] = {}
    if not trace_ids:
        return out
    marks = ",".join("?" * len(trace_ids))
    for tid, idx, extra in db.execute(
            f"SELECT trace_id, idx, extra FROM messages WHERE trace_id IN ({marks})"
            f" AND extra IS NOT NULL", trace_ids):
        out.setdefault(tid, {})[idx] = orjson.loads(extra)
    return out


TRACE_JSON = ("tools", "metadata", "outcomes")


def get_trace(db: Database, trace_id: int) -> dict | None:
    """A trace row; `excluded` is the effective exclusion, `excluded_decision` the analyst's."""
    cur = db.execute(f"SELECT traces.*, {EXCLUDED_SQL} AS _effective FROM traces WHERE id = ?"
                     f" AND {VISIBLE_SQL}", [trace_id])
    trace = first(cur, TRACE_JSON)
    if trace is not None:
        trace["excluded_decision"] = trace["excluded"]
        trace["excluded"] = bool(trace.pop("_effective"))
    return trace


def iter_trace_rows(db: Database, where: str = "1", params: list | None = None,
                    batch: int = 500) -> Iterator[list[dict]]:
    """Trace rows matching `where`, in id order, a batch at a time (keyset paging)."""
    last = 0
    params = params or []
    while True:
        cur = db.execute(f"SELECT * FROM traces WHERE id > ? AND ({where}) ORDER BY id LIMIT ?",
                         [last, *params, batch])
        rows = dicts(cur, TRACE_JSON)
        if not rows:
            return
        yield rows
        last = rows[-1]["id"]


def stats(db: Database) -> dict:
    """Counts over the visible traces (a running import's traces are not counted yet)."""
    one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    visible = f"FROM traces WHERE {VISIBLE_SQL}"
    pending_calls = (f"(NOT EXISTS (SELECT 1 FROM imports WHERE status = 'pending') OR trace_id"
                     f" IN (SELECT id {visible}))")
    return {
        "traces": one(f"SELECT count(*) {visible}"),
        "messages": one(f"SELECT coalesce(sum(n_messages), 0) {visible}"),
        "assistant_turns": one(f"SELECT coalesce(sum(n_assistant), 0) {visible}"),
        "tool_calls": one(f"SELECT coalesce(sum(n_tool_calls), 0) {visible}"),
        "by_split": dict(db.execute(f"SELECT split, count(*) {visible} GROUP BY split ORDER BY split")),
        "by_origin": dict(db.execute(f"SELECT origin, count(*) {visible} GROUP BY origin ORDER BY origin")),
        "revisions": dict(db.execute("SELECT status, count(*) FROM revisions GROUP BY status ORDER BY status")),
        "flags": dict(db.execute("SELECT severity, count(*) FROM flags GROUP BY severity ORDER BY severity")),
        "excluded": one(f"SELECT count(*) {visible} AND {EXCLUDED_SQL}"),
        "tools": [r[0] for r in db.execute(
            f"SELECT name FROM tool_calls WHERE {pending_calls}"
            " GROUP BY name ORDER BY count(*) DESC, name")],
    }


def count_traces(db: Database, where: str = "1", params: list | None = None) -> int:
    """How many traces match a selection's WHERE clause (``TraceFilter.where``)."""
    return db.execute(f"SELECT count(*) FROM traces WHERE {where}", params or []).fetchone()[0]


def call_counts(db: Database, trace_ids: list[int]) -> dict[str, int]:
    """Tool calls per function name over these traces' original messages."""
    if not trace_ids:
        return {}
    marks = ",".join("?" * len(trace_ids))
    return dict(db.execute(f"SELECT name, count(*) FROM tool_calls WHERE trace_id IN ({marks})"
                           " GROUP BY name", trace_ids).fetchall())


def outcomes_of(db: Database, where: str = "1", params: list | None = None
                ) -> Iterator[tuple[int, dict, int]]:
    """(trace id, outcomes, assistant turns) of each matching trace that has outcomes."""
    for tid, outcomes, turns in db.execute(
            f"SELECT traces.id, traces.outcomes, coalesce(traces.n_assistant, 0) FROM traces"
            f" WHERE traces.outcomes IS NOT NULL AND ({where})", params or []):
        yield tid, orjson.loads(outcomes), turns


def outcomes_and_flags(db: Database, where: str = "1", params: list | None = None
                       ) -> Iterator[tuple[dict, bool]]:
    """(outcomes, carries an error flag) of each matching trace that has outcomes."""
    for outcomes, flagged in db.execute(
            f"SELECT traces.outcomes, traces.id IN (SELECT trace_id FROM flags WHERE"
            f" severity = 'error') FROM traces WHERE traces.outcomes IS NOT NULL AND ({where})",
            params or []):
        yield orjson.loads(outcomes), bool(flagged)


def calls_named(db: Database, name: str | None, limit: int) -> list[tuple[int, int, str]]:
    """(trace, turn, raw arguments) of the newest traces' original calls to this tool."""
    return [tuple(r) for r in db.execute(
        "SELECT trace_id, message_idx, arguments FROM tool_calls WHERE name = ?"
        " ORDER BY trace_id DESC LIMIT ?", [name, limit])]


def tool_result_after(db: Database, trace_id: int, message_idx: int) -> tuple[str | None] | None:
    """The original tool result that answered the calls of this turn, as a 1-tuple of its
    content (None when the next message is not a tool result)."""
    row = db.execute("SELECT content FROM messages WHERE trace_id = ? AND idx = ? AND"
                     " role = 'tool'", [trace_id, message_idx + 1]).fetchone()
    return None if row is None else (row[0],)


def commonest_opening_system(db: Database, where: str, params: list) -> tuple[str | None] | None:
    """The opening system message the selected traces (those left in) have most often, as a
    1-tuple (None inside: most have none); None when no trace is selected."""
    row = db.execute(
        "SELECT m.content, count(*) AS n FROM traces LEFT JOIN messages m"
        " ON m.trace_id = traces.id AND m.idx = 0 AND m.role = 'system'"
        f" WHERE {where} AND NOT {EXCLUDED_SQL}"
        " GROUP BY m.content ORDER BY n DESC, min(traces.id) LIMIT 1", params).fetchone()
    return None if row is None else (row[0],)


def answered_calls(db: Database) -> list[tuple[str, int, int]]:
    """(tool name, original calls, calls a tool result answered) per called tool."""
    return [tuple(r) for r in db.execute(
        "SELECT tc.name, count(*), sum(EXISTS (SELECT 1 FROM messages m WHERE"
        " m.trace_id = tc.trace_id AND m.idx = tc.message_idx + 1 AND m.role = 'tool'))"
        " FROM tool_calls tc GROUP BY tc.name")]


def tool_called(db: Database, name: str) -> bool:
    """Whether any stored trace calls this tool."""
    return db.execute("SELECT 1 FROM tool_calls WHERE name = ? LIMIT 1", [name]).fetchone() is not None


def excluded_among(db: Database, trace_ids: list[int]) -> set[int]:
    """Which of these traces are left out (the analyst's decision, else the checks')."""
    marks = ",".join("?" * len(trace_ids))
    return {r[0] for r in db.execute(
        f"SELECT id FROM traces WHERE {EXCLUDED_SQL} AND id IN ({marks})", trace_ids)}


def assistant_turns_of(db: Database, ids: list[int]) -> int:
    """How many assistant turns the traces `ids` hold together."""
    return sum(db.execute(f"SELECT coalesce(sum(n_assistant), 0) FROM traces WHERE id IN"
                          f" ({','.join('?' * len(chunk))})", chunk).fetchone()[0]
               for chunk in (ids[i:i + 10_000] for i in range(0, len(ids), 10_000)))
