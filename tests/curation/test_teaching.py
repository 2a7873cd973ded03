"""The analyst teaches the checks (issue #31): a flag marked "not a problem" ends, is not raised
again on its turn by a re-check (`workbench check`, or `recheck_traces` after an edit), and the
same kind of finding elsewhere is demoted to a warning that says why; bulk keep by check; undo
brings everything back; a random sample of a check's flags, judged by the decisions taken on
them, gives the check's precision with a 95% Wilson interval that survives a restart."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from db import open_db
from db.browse import flags_of
from db.flags import default_pattern, flags_for, replace_flags, suspect_turns
from db.queries import TraceFilter
from db.teaching import open_sample_items
from tests.curation.test_normalize_idempotent import _drifted_with_gaps
from tests.tui_data import add_flag, build_db
from workbench.curation import precision
from workbench.curation import decisions
from workbench.checks import recheck_traces, run_checks
from workbench.cli import app


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """Scenario-1 traces whose tools were renamed: every call an "unknown tool" schema error
    (one kind of finding on many turns), checked once and copied for each test."""
    base = tmp_path_factory.mktemp("teach")
    db = _drifted_with_gaps(base, n=12)
    run_checks(db, names=["schema"])
    db.conn.close()
    return base / "x.db"


@pytest.fixture
def db_path(checked, tmp_path):
    import shutil

    path = tmp_path / "x.db"
    shutil.copy(checked, path)
    return path


@pytest.fixture
def db(db_path):
    database = open_db(db_path)
    yield database
    database.conn.close()


def _schema(db) -> dict[tuple[int, int | None], list[dict]]:
    out: dict = {}
    for f in flags_for(db):
        if f["check"] == "schema":
            out.setdefault((f["trace_id"], f["message_idx"]), []).append(f)
    return out


def test_the_default_pattern_drops_the_values_of_one_trace():
    a = default_pattern("grounding", "Search: not supported: origin='JFK', destination='SEA'")
    b = default_pattern("grounding", "Search: not supported: origin='LHR', destination='CDG'")
    c = default_pattern("grounding", "Search: disagrees with its result: origin='JFK'")
    assert a == b != c and a.startswith("grounding: ") and "JFK" not in a
    assert (default_pattern("x", "3 of 17 results (a, b, c) are late")
            == default_pattern("x", "12 of 40 results (d) are late"))
    # an apostrophe inside a word is not a quote
    assert "user's" in default_pattern("x", "the user's 'city' value")


def test_not_a_problem_ends_the_flag_teaches_the_check_and_undo_brings_it_back(db):
    before = _schema(db)
    assert len(before) > 10 and all(f["severity"] == "error" for fs in before.values()
                                    for f in fs)
    turn = sorted(before)[0]
    out = decisions.dismiss(db, *turn, "ada", checks=["schema"])
    assert out.written == len(before[turn]) and out.action
    after = _schema(db)
    assert turn not in after                                     # the flag ended
    assert turn[1] not in suspect_turns(db, [turn[0]]).get(turn[0], set())
    # the same kind of finding on other turns (the same unknown tool): a warning that says
    # why; another kind (another unknown tool) stays an error
    taught = {f["pattern"] for f in before[turn]}
    others = [f for fs in after.values() for f in fs]
    assert len(others) == sum(len(fs) for t, fs in before.items() if t != turn)
    like = [f for f in others if f["pattern"] in taught]
    assert like and {(f["severity"], f["demoted_from"], f["dismissed_like"]) for f in like} == {
        ("warning", "error", len(before[turn]))}
    assert {f["severity"] for f in others if f["pattern"] not in taught} == {"error"}
    shown = [f for f in flags_of(db, like[0]["trace_id"]) if f["check_name"] == "schema"
             and f["pattern"] in taught]
    from widgets.render import flag_details
    assert (f"an analyst marked {len(before[turn])} like this as not a problem (error →"
            " warning)") in flag_details(shown).plain
    # a whole check run and a re-check after an edit do not raise it again
    run_checks(db, names=["schema"])
    assert turn not in _schema(db) and len(_schema(db)) == len(after)
    recheck_traces(db, [turn[0]])
    assert turn not in _schema(db)
    assert {f["severity"] for fs in _schema(db).values() for f in fs
            if f["pattern"] in taught} == {"warning"}
    # undo: the flag is back as its check raises it, and the others are errors again
    out = decisions.undo_dismissal(db, "ada")
    assert out.written == len(before[turn])
    back = _schema(db)
    assert set(back) == set(before)
    assert {(f["severity"], f["demoted_from"], f["dismissed_like"]) for fs in back.values()
            for f in fs} == {("error", None, 0)}
    assert decisions.undo_dismissal(db, "ada").message.startswith("no ")


def test_keep_on_a_turn_dismisses_its_flags_and_asks_for_a_flag_that_exists(db):
    turn = sorted(_schema(db))[1]
    out = decisions.keep(db, *turn, "ada")
    assert "marked not a problem" in out.message and out.revision_id is not None
    assert turn not in _schema(db)
    with pytest.raises(decisions.DecisionError, match="no flag of schema"):
        decisions.dismiss(db, *turn, "ada", checks=["schema"])
    # the analyst's own drop is a decision, not a finding: never dismissed
    other = sorted(_schema(db))[0]
    decisions.drop(db, *other, "ada")
    decisions.dismiss(db, *other, "ada")
    assert [f["check_name"] for f in flags_of(db, other[0])
            if f["message_idx"] == other[1]] == ["review.drop"]


def test_a_trace_level_dismissal_includes_the_trace_and_demotes_its_kind(tmp_path):
    db = open_db(build_db(tmp_path / "t.db"))
    for tid, words in ((4, "alpha, beta"), (5, "gamma")):
        add_flag(db, tid, None, "coherence", "error",
                 f"off-domain conversation: most of its words are foreign to the task ({words})")
    excluded = lambda: {r[0] for r in db.execute(  # noqa: E731
        "SELECT id FROM traces WHERE " + TraceFilter(excluded=True).where()[0])}
    assert {4, 5} <= excluded()
    out = decisions.dismiss(db, 4, None, "ada")
    assert out.written == 1 and "1 like them elsewhere now warnings" in out.message
    assert not {4, 5} & excluded()                       # 5: its error is now a warning
    assert [(f["severity"], f["demoted_from"]) for f in flags_of(db, 5)
            if f["check_name"] == "coherence"] == [("warning", "error")]
    decisions.undo_dismissal(db, "ada", trace_id=4)
    assert {4, 5} <= excluded()
    db.conn.close()


def _cli(path, *args):
    res = CliRunner().invoke(app, ["--db", str(path), *args])
    assert res.exit_code == 0, res.output
    return res


def test_cli_keeps_one_flag_a_trace_and_a_whole_check_and_undoes(db_path):
    db = open_db(db_path)
    turns = sorted(_schema(db))
    db.conn.close()
    t, i = turns[0]
    out = json.loads(_cli(db_path, "label", "keep", str(t), str(i), "--flag", "schema",
                          "--json").stdout)
    assert out["written"] >= 1 and out["action"]
    # bulk: every flag of the check on the selected traces, one action
    res = _cli(db_path, "label", "keep", "--check", "schema", "--trace-id", str(turns[-1][0]))
    assert "of schema on 1 trace(s) marked not a problem" in res.stdout
    db = open_db(db_path)
    assert not any(tid == turns[-1][0] for tid, _ in _schema(db))
    db.conn.close()
    res = _cli(db_path, "label", "keep", "--check", "schema")
    db = open_db(db_path)
    assert _schema(db) == {}
    db.conn.close()
    # the newest action first, then the one before
    _cli(db_path, "label", "undo-keep")
    _cli(db_path, "label", "undo-keep")
    db = open_db(db_path)
    assert set(_schema(db)) == set(turns) - {(t, i)}
    db.conn.close()
    bad = CliRunner().invoke(app, ["--db", str(db_path), "label", "keep"])
    assert bad.exit_code != 0 and "--check NAME" in bad.output


def _wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959964
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return mid - half, mid + half


def test_a_judged_sample_gives_the_checks_precision_with_its_interval(db_path):
    out = json.loads(_cli(db_path, "review", "sample", "--check", "schema", "--n", "6",
                          "--seed", "3", "--json").stdout)
    assert out["drawn"] == 6 and len(out["waiting"]) == 6
    items = out["waiting"]
    db = open_db(db_path)
    # two kept (not a problem), three dropped or edited (real), one left waiting
    decisions.keep(db, items[0]["trace_id"], items[0]["message_idx"], "ada")
    decisions.dismiss(db, items[1]["trace_id"], items[1]["message_idx"], "ada")
    decisions.drop(db, items[2]["trace_id"], items[2]["message_idx"], "ada")
    decisions.drop(db, items[3]["trace_id"], items[3]["message_idx"], "ada")
    decisions.edit(db, items[4]["trace_id"], items[4]["message_idx"], "ada",
                   content="Which city?", tool_calls=None)
    db.conn.close()
    # a restart: the verdicts were stored
    rows = json.loads(_cli(db_path, "review", "precision", "--json").stdout)
    (row,) = rows
    assert (row["real"], row["not_a_problem"], row["open"], row["judged"]) == (3, 2, 1, 5)
    assert row["precision"] == pytest.approx(3 / 5, abs=1e-3)
    lo, hi = _wilson(3, 5)
    assert row["interval"] == [pytest.approx(lo, abs=2e-3), pytest.approx(hi, abs=2e-3)]
    text = _cli(db_path, "review", "precision").stdout
    assert "schema" in text and "60%" in text
    db = open_db(db_path)
    # a second draw takes only flags no earlier sample holds
    again = precision.draw(db, "schema", 10_000)
    first = {(w["trace_id"], w["message_idx"]) for w in items}
    new = [w for w in open_sample_items(db, "schema") if w["id"] > max(x["id"] for x in items)]
    assert len(new) == again["drawn"] == again["population"] > 0
    assert not first & {(w["trace_id"], w["message_idx"]) for w in new}
    # undoing a dismissal takes its verdict back
    decisions.undo_dismissal(db, "ada", trace_id=items[1]["trace_id"])
    assert precision.report(db)[0]["not_a_problem"] == 1
    db.conn.close()


def test_statistics_are_behind_a_toggle_on_the_cli(db_path):
    db = open_db(db_path)
    t, i = sorted(_schema(db))[0]
    replace_flags(db, [t], ["schema"], [{
        "trace_id": t, "message_idx": i, "check": "schema", "severity": "error",
        "detail": "the call names a tool the task does not have",
        "evidence": [{"source": "schema", "text": "the task's tools are A, B"},
                     {"source": "statistics", "text": "score 0.89 >= 0.88 (cosine)"}]}])
    db.conn.close()
    plain = _cli(db_path, "label", "show", str(t), str(i)).stdout
    assert "the call names a tool the task does not have" in plain
    assert "the task's tools are A, B" in plain and "0.89" not in plain
    assert "1 statistical detail(s): --stats" in plain
    full = _cli(db_path, "label", "show", str(t), str(i), "--stats").stdout
    assert "score 0.89 >= 0.88 (cosine)" in full
    from widgets.render import flag_details

    db = open_db(db_path)
    shown = [f for f in flags_of(db, t) if f["message_idx"] == i]
    db.conn.close()
    assert "0.89" not in flag_details(shown).plain and "hidden" in flag_details(shown).plain
    assert "0.89" in flag_details(shown, stats=True).plain
