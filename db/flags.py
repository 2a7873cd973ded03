"""Flags: what a check found on a trace (message_idx NULL) or on one turn of it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator

from sqlite_utils import Database

from db.tx import now, write_tx

SEVERITIES = ("error", "warning")

# what in a flag's detail belongs to one trace: quoted values, parenthesised lists, numbers
_QUOTED = re.compile(r"""(?<!\w)(?:'[^'\n]*'|"[^"\n]*"|`[^`\n]*`)(?!\w)""")
_PARENS = re.compile(r"\([^()\n]*\)")
_NUMBER = re.compile(r"[-+]?\d+(?:[.,:]\d+)*%?")
PATTERN_MAX = 200


def default_pattern(check: str, detail: str) -> str:
    """The kind of finding a flag is, without what belongs to its trace: its check and its
    detail with quoted values, parenthesised lists and numbers taken out. Flags of one check
    with the same pattern are "like this" when an analyst marks one as not a problem (a check
    that knows better passes its own `pattern`)."""
    text = _PARENS.sub("(…)", _QUOTED.sub("…", detail or ""))
    text = " ".join(_NUMBER.sub("#", text).split())
    return f"{check}: {text}"[:PATTERN_MAX]


def _flag_rows(flags: Iterable[dict], names: list[str]) -> Iterator[tuple]:
    for f in flags:
        # a stored flag read back (a re-check keeps some) goes in as its check raised it: the
        # analysts' dismissals are applied again when it is swapped in
        severity = f.get("demoted_from") or f["severity"]
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
        if f["check"] not in names:
            raise ValueError(f"flag of check {f['check']!r} outside the checks run {names}")
        evidence = f.get("evidence")
        yield (f["trace_id"], f["message_idx"], f["check"], severity, f["detail"],
               json.dumps(evidence, ensure_ascii=False) if evidence else None,
               f.get("pattern") or default_pattern(f["check"], f["detail"]))


FOUND_COLUMNS = ("(seq INTEGER PRIMARY KEY, trace_id, message_idx, check_name, severity,"
                 " detail, evidence, pattern, created_at)")
INSERT_FOUND = ("INSERT INTO {table} (trace_id, message_idx, check_name, severity, detail,"
                " evidence, pattern) VALUES (?,?,?,?,?,?,?)")

# per stored flag `flags`: how many flags like it (same check and pattern) analysts marked as
# not a problem, holding
DISMISSED_LIKE_SQL = ("(SELECT count(*) FROM flag_dismissals d WHERE d.undone_at IS NULL AND"
                      " d.check_name = flags.check_name AND d.pattern = flags.pattern)")


def apply_dismissals(db: Database, where: str = "1", params: Iterable = ()) -> int:
    """Inside the caller's write transaction: the stored flags matching `where` (over `flags`)
    follow the analysts' dismissals. A flag dismissed on its own turn (or trace) is not stored;
    another flag of a dismissed (check, pattern) is a warning at most, `demoted_from` keeping
    what its check raised; a demoted flag whose pattern no dismissal holds any more gets its
    severity back (a dismissal undone). Returns how many flags it took out."""
    if db.execute("SELECT 1 FROM flag_dismissals LIMIT 1").fetchone() is None:
        return 0   # nothing was ever dismissed: nothing demoted either
    params = list(params)
    same_pattern = ("EXISTS (SELECT 1 FROM flag_dismissals d WHERE d.undone_at IS NULL"
                    " AND d.check_name = flags.check_name AND d.pattern = flags.pattern)")
    gone = db.execute(
        "DELETE FROM flags WHERE EXISTS (SELECT 1 FROM flag_dismissals d WHERE"
        " d.undone_at IS NULL AND d.trace_id = flags.trace_id AND d.message_idx IS"
        " flags.message_idx AND d.check_name = flags.check_name AND d.pattern = flags.pattern)"
        f" AND ({where})", params).rowcount
    db.execute("UPDATE flags SET demoted_from = severity, severity = 'warning' WHERE"
               f" severity = 'error' AND {same_pattern} AND ({where})", params)
    db.execute("UPDATE flags SET severity = demoted_from, demoted_from = NULL WHERE"
               f" demoted_from IS NOT NULL AND NOT {same_pattern} AND ({where})", params)
    return gone


def _swap_in(db: Database, found: str, trace_ids: Iterable[int], names: list[str],
             job_id: int | None) -> int:
    """Inside the caller's write transaction: the flags of `names` on `trace_ids` become the
    rows of table `found`."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS _covered (id INTEGER PRIMARY KEY)")
    db.execute("DELETE FROM _covered")
    db.conn.executemany("INSERT OR IGNORE INTO _covered (id) VALUES (?)",
                        ((t,) for t in trace_ids))
    marks = ",".join("?" * len(names))
    # A flag found again keeps its first time, so a decision the analyst took after it
    # (a human revision) still counts as later than the flag.
    db.execute(
        f"UPDATE {found} SET created_at = (SELECT min(f.created_at) FROM flags f"
        f" WHERE f.trace_id = {found}.trace_id AND f.message_idx IS {found}.message_idx"
        f" AND f.check_name = {found}.check_name"
        f" AND coalesce(f.demoted_from, f.severity) = {found}.severity"
        f" AND f.detail = {found}.detail AND f.trace_id IN (SELECT id FROM _covered)"
        f" AND f.check_name IN ({marks}))", names)
    db.execute(f"DELETE FROM flags WHERE trace_id IN (SELECT id FROM _covered)"
               f" AND check_name IN ({marks})", names)
    written = db.execute(
        "INSERT INTO flags (trace_id, message_idx, check_name, severity, detail, job_id,"
        f" evidence, pattern, created_at) SELECT trace_id, message_idx, check_name, severity,"
        f" detail, ?, evidence, pattern, coalesce(created_at, ?) FROM {found} ORDER BY seq",
        [job_id, now()]).rowcount
    # what analysts marked as not a problem stays so: not raised again on its turn, and the
    # same kind of finding elsewhere demoted
    covered = f"trace_id IN (SELECT id FROM _covered) AND check_name IN ({marks})"
    written -= apply_dismissals(db, covered, names)
    db.execute("DELETE FROM _covered")
    return written


def replace_flags(db: Database, trace_ids: Iterable[int], check_names: Iterable[str],
                  flags: Iterable[dict], job_id: int | None = None) -> int:
    """Replace the flags of `check_names` on `trace_ids` with `flags`, in one transaction.

    Flags of other checks, and of traces not covered, are left as they are. Each flag is a
    dict with trace_id, message_idx (or None), check, severity, detail, and optionally
    evidence (a list of {source, text}: why it was raised). Returns how many
    were written. A trace-level error excludes its trace from training unless the analyst
    decided otherwise (see `db.queries.EXCLUDED_SQL`). `flags` may be a generator: they are
    staged in a temporary table, never all in a Python list. A whole check run stages its
    flags on disk as it finds them instead (`FlagStage`).
    """
    names = list(check_names)
    with write_tx(db):
        db.execute(f"CREATE TEMP TABLE IF NOT EXISTS _found {FOUND_COLUMNS}")
        db.execute("DELETE FROM _found")
        db.conn.executemany(INSERT_FOUND.format(table="_found"), _flag_rows(flags, names))
        written = _swap_in(db, "_found", trace_ids, names, job_id)
        db.execute("DELETE FROM _found")
    return written


STAGE_PREFIX = "workbench-flags-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:      # another user's process: alive, and not ours to judge
        return True
    return True


def remove_orphan_stages(folder: str | None = None) -> list[str]:
    """Delete staging files whose process is gone (a check run killed with SIGKILL, or a
    machine that lost power, cannot delete its own). Their names carry the writer's pid;
    files of live processes and files named otherwise are left alone. Returns the paths
    removed."""
    folder = folder or tempfile.gettempdir()
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            name = entry.name
            if not (name.startswith(STAGE_PREFIX) and name.endswith(".db")):
                continue
            pid = name[len(STAGE_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(entry.path)
    return removed


class FlagStage:
    """The flags of a check run, kept in a temporary file (the system's temporary folder) as
    each check finds them, then swapped in for the stored flags of those checks in one
    transaction (`commit`): a run stopped before that changes nothing, and a run killed
    outright leaves a file that the next run removes (`remove_orphan_stages`). At 100,000 traces a
    run finds over half a million flags: neither a Python list nor SQLite's in-memory temp
    store (this project's setting) should hold them. Use it outside a transaction (ATTACH)."""

    def __init__(self, db: Database, check_names: Iterable[str]) -> None:
        self.db, self.names = db, list(check_names)
        remove_orphan_stages()
        fd, self.path = tempfile.mkstemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", suffix=".db")
        os.close(fd)
        self.schema = f"stage_{os.getpid()}_{id(self)}"
        db.execute(f"ATTACH DATABASE ? AS {self.schema}", [self.path])
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -8192"):
            db.execute(f"PRAGMA {self.schema}.{pragma}")
        db.execute(f"CREATE TABLE {self.schema}.found {FOUND_COLUMNS}")
        self.count = 0

    def add(self, flags: Iterable[dict]) -> None:
        cur = self.db.conn.executemany(INSERT_FOUND.format(table=f"{self.schema}.found"),
                                       _flag_rows(flags, self.names))
        self.count += max(cur.rowcount, 0)

    def commit(self, trace_ids: Iterable[int], job_id: int | None = None) -> int:
        with write_tx(self.db):
            return _swap_in(self.db, f"{self.schema}.found", trace_ids, self.names, job_id)

    def _within(self, trace_ids: Iterable[int] | None) -> str:
        """A condition on `found` rows: all of them, or those of these traces (a temp table)."""
        if trace_ids is None:
            return "1"
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS _within (id INTEGER PRIMARY KEY)")
        self.db.execute("DELETE FROM _within")
        self.db.conn.executemany("INSERT OR IGNORE INTO _within (id) VALUES (?)",
                                 ((t,) for t in trace_ids))
        return "trace_id IN (SELECT id FROM _within)"

    def error_units(self, trace_ids: Iterable[int] | None = None
                    ) -> dict[tuple[str, str], int]:
        """(check, "turn" | "trace") -> distinct turns or traces with an error flag of it
        staged (of these traces only, if given)."""
        cond = self._within(trace_ids)
        rows = self.db.execute(
            f"SELECT check_name, message_idx IS NULL, count(DISTINCT trace_id || ':' ||"
            f" coalesce(message_idx, -1)) FROM {self.schema}.found WHERE severity = 'error'"
            f" AND {cond} GROUP BY 1, 2").fetchall()
        return {(c, "trace" if whole else "turn"): n for c, whole, n in rows}

    def error_traces(self, trace_ids: Iterable[int] | None = None) -> dict[str, int]:
        """check -> distinct traces carrying an error flag of it staged (of these traces)."""
        cond = self._within(trace_ids)
        return dict(self.db.execute(
            f"SELECT check_name, count(DISTINCT trace_id) FROM {self.schema}.found"
            f" WHERE severity = 'error' AND {cond} GROUP BY 1").fetchall())

    def traces_with_errors(self) -> set[int]:
        """Ids of the traces with any error flag staged."""
        return {r[0] for r in self.db.execute(
            f"SELECT DISTINCT trace_id FROM {self.schema}.found WHERE severity = 'error'")}

    def demote(self, check: str, level: str) -> int:
        """The staged errors of `check` at `level` ("turn" or "trace") become warnings."""
        if level not in ("turn", "trace"):
            raise ValueError(f"level must be turn or trace, not {level!r}")
        return self.db.execute(
            f"UPDATE {self.schema}.found SET severity = 'warning' WHERE check_name = ? AND"
            f" severity = 'error' AND message_idx IS {'' if level == 'trace' else 'NOT '}NULL",
            [check]).rowcount

    def close(self) -> None:
        try:
            self.db.execute(f"DETACH DATABASE {self.schema}")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def __enter__(self) -> FlagStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def flags_where(trace_ids: list[int] | None = None, idx: int | None = None,
                checks: Iterable[str] | None = None, *, trace_level: bool = False,
                severity: str | None = None, scope: tuple[str, list] | None = None
                ) -> tuple[str, list]:
    """A condition over `flags` (and its parameters) for a decision on flags: of these traces
    (or those `scope` selects, a `browse.trace_scope`), of the whole trace (`trace_level`) or
    of turn `idx`, of these checks, of this severity; "1" when nothing narrows it."""
    conds, params = [], []
    if scope is not None:
        conds.append(f"trace_id IN ({scope[0]})")
        params.extend(scope[1])
    if trace_ids is not None:
        conds.append("trace_id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(trace_ids))
    if trace_level:
        conds.append("message_idx IS NULL")
    elif idx is not None:
        conds.append("message_idx = ?")
        params.append(idx)
    if checks:
        conds.append("check_name IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(list(checks)))
    if severity:
        conds.append("severity = ?")
        params.append(severity)
    return " AND ".join(conds) or "1", params


def turn_has_error(db: Database, trace_id: int, message_idx: int) -> bool:
    """Whether an error flag (of any check) sits on this turn."""
    return db.execute("SELECT 1 FROM flags WHERE trace_id = ? AND message_idx = ? AND"
                      " severity = 'error' LIMIT 1", [trace_id, message_idx]).fetchone() is not None


def settle_warnings(db: Database, turns: Iterable[tuple[int, int]], check: str) -> None:
    """Inside the caller's write transaction: each turn with no open proposal left loses its
    warnings of `check` (ones that only said a proposal waits for review)."""
    for trace_id, idx in turns:
        if db.execute("SELECT 1 FROM revisions WHERE trace_id = ? AND message_idx = ? AND"
                      " status = 'proposed' LIMIT 1", [trace_id, idx]).fetchone() is None:
            db.execute("DELETE FROM flags WHERE trace_id = ? AND message_idx = ? AND"
                       " check_name = ? AND severity = 'warning'", [trace_id, idx, check])


def flags_for(db: Database, trace_ids: list[int] | None = None) -> list[dict]:
    """Flags with the trace's source and line, ordered by trace, turn, check."""
    if trace_ids is None:
        return list(iter_flags(db, "1", []))
    if not trace_ids:
        return []
    return list(iter_flags(db, f"traces.id IN ({','.join('?' * len(trace_ids))})",
                           list(trace_ids)))


def iter_flags(db: Database, traces_where: str, params: list,
               checks: Iterable[str] | None = None) -> Iterator[dict]:
    """The flags of the traces matching a condition over `traces` (a `TraceFilter.where()`),
    in `flags_for`'s order, one row at a time: a report on a large store streams."""
    sql = ("SELECT f.trace_id, t.source, t.line, f.message_idx, f.check_name, f.severity,"
           " f.detail, f.evidence, f.pattern, f.demoted_from,"
           f" {DISMISSED_LIKE_SQL.replace('flags.', 'f.')}"
           " FROM flags f JOIN traces t ON t.id = f.trace_id"
           f" WHERE f.trace_id IN (SELECT traces.id FROM traces WHERE {traces_where})")
    params = list(params)
    if checks is not None:
        checks = list(checks)
        sql += f" AND f.check_name IN ({','.join('?' * len(checks)) or 'NULL'})"
        params += checks
    sql += " ORDER BY f.trace_id, coalesce(f.message_idx, -1), f.check_name, f.id"
    keys = ("trace_id", "source", "line", "message_idx", "check", "severity", "detail",
            "evidence", "pattern", "demoted_from", "dismissed_like")
    for r in db.execute(sql, params):
        yield {**dict(zip(keys, r)), "evidence": evidence_of(r[7])}


ID_CHUNK = 10_000   # trace ids per query (SQLite's variable limit on a large store)


def _id_chunks(trace_ids: list[int]) -> Iterator[tuple[str, list[int]]]:
    for start in range(0, len(trace_ids), ID_CHUNK):
        chunk = trace_ids[start:start + ID_CHUNK]
        yield f"traces.id IN ({','.join('?' * len(chunk))})", chunk


def flags_of_traces(db: Database, trace_ids: list[int], checks: Iterable[str]
                    ) -> Iterator[dict]:
    """`iter_flags` of these checks on any number of traces, a chunk of ids per query (in
    trace order when the ids ascend)."""
    checks = list(checks)
    for where, params in _id_chunks(trace_ids):
        yield from iter_flags(db, where, params, checks)


def count_flags(db: Database, trace_ids: list[int], checks: Iterable[str]) -> int:
    """How many flags of these checks the traces carry (any number of traces)."""
    checks = list(checks)
    marks = ",".join("?" * len(checks))
    return sum(db.execute(
        f"SELECT count(*) FROM flags WHERE check_name IN ({marks}) AND trace_id IN"
        f" (SELECT traces.id FROM traces WHERE {where})", [*checks, *params]).fetchone()[0]
        for where, params in _id_chunks(trace_ids))


def checks_stored(db: Database) -> list[str]:
    """The checks that have flags in the store (those that ran on it and found something)."""
    return [r[0] for r in db.execute("SELECT DISTINCT check_name FROM flags")]


def evidence_of(value: str | None) -> list[dict]:
    """A flag's stored evidence as a list of {source, text} (empty when none was stored)."""
    if not value:
        return []
    try:
        items = json.loads(value)
    except ValueError:
        return []
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


REVIEW_DROP = "review.drop"  # flag check name: the analyst dropped this turn from training

# Error flags on turns that nobody has decided on since: no accepted revision by the analyst or
# the committee (relabelled, or confirmed where the settings say so) was written after the flag.
# Shared by training (suspect turns) and the review queue.
UNDECIDED_ERRORS_SQL = """
SELECT f.trace_id, f.message_idx, f.check_name FROM flags f
WHERE f.severity = 'error' AND f.message_idx IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM revisions r WHERE r.trace_id = f.trace_id
                  AND r.message_idx = f.message_idx AND r.author_kind IN ('human', 'committee')
                  AND r.status = 'accepted' AND r.created_at >= f.created_at)
"""


def dropped_turns(db: Database, trace_ids: list[int]) -> set[tuple[int, int]]:
    """(trace, turn) of the turns of these traces the analyst dropped in review."""
    if not trace_ids:
        return set()
    marks = ",".join("?" * len(trace_ids))
    return {(t, i) for t, i in db.execute(
        f"SELECT trace_id, message_idx FROM flags WHERE check_name = '{REVIEW_DROP}'"
        f" AND trace_id IN ({marks})", trace_ids)}


def suspect_turns(db: Database, trace_ids: list[int]) -> dict[int, set[int]]:
    """Suspect assistant turns per trace: those with an error flag nobody has decided on since
    (an accepted human or committee revision written after the flag). An analyst's
    `review.drop` always counts: it is the decision."""
    out: dict[int, set[int]] = {}
    if not trace_ids:
        return out
    marks = ",".join("?" * len(trace_ids))
    sql = (f"SELECT trace_id, message_idx FROM flags WHERE check_name = '{REVIEW_DROP}'"
           f" AND message_idx IS NOT NULL AND trace_id IN ({marks})"
           f" UNION SELECT trace_id, message_idx FROM ({UNDECIDED_ERRORS_SQL})"
           f" WHERE trace_id IN ({marks})")
    for tid, idx in db.execute(sql, [*trace_ids, *trace_ids]):
        out.setdefault(tid, set()).add(idx)
    return out
