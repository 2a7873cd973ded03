"""The analyst teaching the checks, as stored: flags marked "not a problem" (`flag_dismissals`)
and random samples of a check's flags with the analyst's verdict on each (`flag_samples`).
What a dismissal does to the stored flags is `db.flags.apply_dismissals`; what each decision
means is `workbench.curation.decisions`."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable

from sqlite_utils import Database
from ulid import ULID

from db.flags import REVIEW_DROP, apply_dismissals, default_pattern
from db.tx import now, write_tx

VERDICTS = ("real", "not_a_problem")
# the stored flags whose (check, pattern) a dismissal action named
_OF_ACTION = ("EXISTS (SELECT 1 FROM flag_dismissals a WHERE a.action = ? AND"
              " a.check_name = flags.check_name AND a.pattern = flags.pattern)")


def fill_patterns(db: Database) -> None:
    """Give a pattern to flags stored without one (written by hand, or by older code)."""
    db.conn.create_function("workbench_pattern", 2, default_pattern, deterministic=True)
    db.execute("UPDATE flags SET pattern = workbench_pattern(check_name, detail) WHERE"
               " pattern IS NULL")


def dismiss(db: Database, where: str, params: Iterable, author_name: str,
            action: str | None = None) -> dict:
    """Mark the stored flags matching `where` (over `flags`) as not a problem, as one action:
    each is copied into `flag_dismissals` and leaves `flags`; other flags of the same check and
    pattern are demoted (`apply_dismissals`); sampled flags among them are judged "not a
    problem". An analyst's `review.drop` is a decision, not a finding: never dismissed.
    Returns {"action", "dismissed", "demoted", "traces"}."""
    action = action or str(ULID())
    params = list(params)
    with write_tx(db):
        fill_patterns(db)
        rows = db.execute(
            "SELECT trace_id, message_idx, check_name, pattern, coalesce(demoted_from, severity),"
            " detail, evidence, created_at FROM flags WHERE check_name != ?"
            f" AND ({where}) ORDER BY trace_id, coalesce(message_idx, -1), id",
            [REVIEW_DROP, *params]).fetchall()
        if not rows:
            return {"action": None, "dismissed": 0, "demoted": 0, "traces": []}
        ts = now()
        db.conn.executemany(
            "INSERT INTO flag_dismissals (trace_id, message_idx, check_name, pattern, severity,"
            " detail, evidence, flag_created_at, action, author_name, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(*r, action, author_name, ts) for r in rows])
        before = _demoted(db, action)
        apply_dismissals(db, _OF_ACTION, [action])
        db.conn.executemany(
            "UPDATE flag_samples SET verdict = 'not_a_problem', judged_at = ?, author_name = ?"
            " WHERE trace_id = ? AND message_idx IS ? AND check_name = ? AND pattern = ?",
            [(ts, author_name, r[0], r[1], r[2], r[3]) for r in rows])
        return {"action": action, "dismissed": len(rows),
                "demoted": _demoted(db, action) - before,
                "traces": sorted({r[0] for r in rows})}


def _demoted(db: Database, action: str) -> int:
    return db.execute(f"SELECT count(*) FROM flags WHERE demoted_from IS NOT NULL AND"
                      f" {_OF_ACTION}", [action]).fetchone()[0]


def last_action(db: Database, trace_id: int | None = None) -> str | None:
    """The newest dismissal action that holds (on `trace_id`, if given): undo takes it back."""
    row = db.execute("SELECT action FROM flag_dismissals WHERE undone_at IS NULL"
                     " AND (? IS NULL OR trace_id = ?) ORDER BY id DESC LIMIT 1",
                     [trace_id, trace_id]).fetchone()
    return row[0] if row else None


def undo(db: Database, action: str) -> dict:
    """Take a dismissal action back: its flags are stored again as their check raised them
    (then demoted if other dismissals of their pattern hold), flags it demoted get their
    severity back where no other dismissal holds, and the sample verdicts it gave are cleared.
    The dismissals stay in the table, marked undone. Returns {"restored", "traces"}."""
    with write_tx(db):
        rows = db.execute(
            "SELECT trace_id, message_idx, check_name, pattern, severity, detail, evidence,"
            " flag_created_at FROM flag_dismissals WHERE action = ? AND undone_at IS NULL",
            [action]).fetchall()
        if not rows:
            known = db.execute("SELECT 1 FROM flag_dismissals WHERE action = ? LIMIT 1",
                               [action]).fetchone()
            raise ValueError(f"dismissal {action} was undone already" if known
                             else f"no dismissal {action}")
        ts = now()
        db.execute("UPDATE flag_dismissals SET undone_at = ? WHERE action = ? AND undone_at IS"
                   " NULL", [ts, action])
        restored = 0
        for tid, idx, check, pattern, severity, detail, evidence, created in rows:
            if db.execute("SELECT 1 FROM flags WHERE trace_id = ? AND message_idx IS ? AND"
                          " check_name = ? AND detail = ? LIMIT 1",
                          [tid, idx, check, detail]).fetchone() is None:
                db.execute("INSERT INTO flags (trace_id, message_idx, check_name, severity,"
                           " detail, evidence, pattern, created_at) VALUES (?,?,?,?,?,?,?,?)",
                           [tid, idx, check, severity, detail, evidence, pattern,
                            created or ts])
                restored += 1
            db.execute("UPDATE flag_samples SET verdict = NULL, judged_at = NULL, author_name ="
                       " NULL WHERE trace_id = ? AND message_idx IS ? AND check_name = ? AND"
                       " pattern = ? AND verdict = 'not_a_problem'", [tid, idx, check, pattern])
        apply_dismissals(db, _OF_ACTION, [action])
    return {"restored": restored, "traces": sorted({r[0] for r in rows})}


def dismissed_like(db: Database, check: str, pattern: str | None) -> int:
    """How many flags of this check and pattern analysts marked as not a problem (holding)."""
    return db.execute("SELECT count(*) FROM flag_dismissals WHERE undone_at IS NULL AND"
                      " check_name = ? AND pattern = ?", [check, pattern]).fetchone()[0]


# -- samples for precision ----------------------------------------------------------------

def draw_sample(db: Database, check: str, n: int, traces_where: str = "1",
                params: Iterable = (), *, seed: int | None = None,
                severity: str | None = None, turns_only: bool = False) -> dict:
    """Draw `n` of the check's stored flags at random (on the traces matching `traces_where`,
    over `traces`) that no earlier sample of the check holds, as one sample. Returns
    {"sample", "drawn", "population"} (population: the flags it was drawn from)."""
    if n < 1:
        raise ValueError("a sample needs at least 1 flag")
    conds = ["f.check_name = ?", f"f.trace_id IN (SELECT traces.id FROM traces WHERE"
             f" {traces_where})",
             "NOT EXISTS (SELECT 1 FROM flag_samples s WHERE s.check_name = f.check_name AND"
             " s.trace_id = f.trace_id AND s.message_idx IS f.message_idx AND s.pattern ="
             " f.pattern)"]
    args: list = [check, *params]
    if severity:
        conds.append("f.severity = ?")
        args.append(severity)
    if turns_only:
        conds.append("f.message_idx IS NOT NULL")
    with write_tx(db):
        fill_patterns(db)
        rows = db.execute("SELECT f.trace_id, f.message_idx, f.pattern, f.severity, f.detail"
                          f" FROM flags f WHERE {' AND '.join(conds)} ORDER BY f.id",
                          args).fetchall()
        picked = random.Random(seed).sample(rows, min(n, len(rows)))
        picked.sort(key=lambda r: (r[0], -1 if r[1] is None else r[1]))
        sample = str(ULID())
        ts = now()
        db.conn.executemany(
            "INSERT INTO flag_samples (sample, check_name, trace_id, message_idx, pattern,"
            " severity, detail, drawn_at) VALUES (?,?,?,?,?,?,?,?)",
            [(sample, check, *r, ts) for r in picked])
    return {"sample": sample if picked else None, "drawn": len(picked),
            "population": len(rows)}


def judge(db: Database, verdict: str, author_name: str, trace_ids: Iterable[int], *,
          message_idx: int | None = None, trace_level: bool = False,
          checks: Iterable[str] | None = None) -> int:
    """Record the analyst's verdict on the sampled flags of a turn (`message_idx`), or of whole
    traces (`trace_level`), of `checks` (default all). Returns how many it judged."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, not {verdict!r}")
    ids = list(trace_ids)
    if not ids:
        return 0
    conds = ["trace_id IN (SELECT value FROM json_each(?))"]
    args: list = [verdict, now(), author_name, json.dumps(ids)]
    if trace_level:
        conds.append("message_idx IS NULL")
    else:
        conds.append("message_idx = ?")
        args.append(message_idx)
    if checks is not None:
        conds.append("check_name IN (SELECT value FROM json_each(?))")
        args.append(json.dumps(list(checks)))
    with write_tx(db):
        return db.execute("UPDATE flag_samples SET verdict = ?, judged_at = ?, author_name = ?"
                          f" WHERE {' AND '.join(conds)}", args).rowcount


def judge_exclusion(db: Database, action: str, verdict: str, author_name: str) -> int:
    """The verdict on the sampled trace-level flags of the traces an exclude (real) or include
    (not a problem) action changed."""
    with write_tx(db):
        return db.execute(
            "UPDATE flag_samples SET verdict = ?, judged_at = ?, author_name = ? WHERE"
            " message_idx IS NULL AND trace_id IN (SELECT trace_id FROM exclusion_decisions"
            " WHERE action = ?)", [verdict, now(), author_name, action]).rowcount


def sample_counts(db: Database) -> list[dict]:
    """Per check with a sample: flags drawn, judged real, judged not a problem, still open."""
    rows = db.execute(
        "SELECT check_name, count(*), sum(verdict = 'real'), sum(verdict = 'not_a_problem'),"
        " sum(verdict IS NULL) FROM flag_samples GROUP BY check_name ORDER BY check_name")
    return [{"check": c, "drawn": n, "real": real or 0, "not_a_problem": fine or 0,
             "open": open_ or 0} for c, n, real, fine, open_ in rows]


def open_sample_turns(db: Database, checks: Iterable[str] | None = None) -> list[tuple[int, int]]:
    """Sampled flags on turns that wait for the analyst's verdict, as (trace, turn)."""
    sql = ("SELECT DISTINCT trace_id, message_idx FROM flag_samples WHERE verdict IS NULL AND"
           " message_idx IS NOT NULL")
    args: list = []
    if checks is not None:
        sql += " AND check_name IN (SELECT value FROM json_each(?))"
        args.append(json.dumps(list(checks)))
    return [tuple(r) for r in db.execute(sql + " ORDER BY trace_id, message_idx", args)]


def open_sample_items(db: Database, check: str | None = None) -> list[dict]:
    """The sampled flags that wait for a verdict, with what they said."""
    sql = ("SELECT id, check_name, trace_id, message_idx, severity, detail FROM flag_samples"
           " WHERE verdict IS NULL")
    args = []
    if check is not None:
        sql += " AND check_name = ?"
        args.append(check)
    keys = ("id", "check", "trace_id", "message_idx", "severity", "detail")
    return [dict(zip(keys, r)) for r in db.execute(
        sql + " ORDER BY check_name, trace_id, coalesce(message_idx, -1)", args)]
