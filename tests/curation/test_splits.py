"""Splits: `workbench split --test SHARE [--by FIELD] [--seed N]`, moves between splits from the
CLI and the app, each recorded as a decision and undone as one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db import open_db
from tests.tui_data import app_config, until
from workbench.curation import decisions
from workbench.cli import app
from workbench.traces.importing import import_files
from workbench.curation.splitting import draw, parse_share

runner = CliRunner()
FILES = {"alice": 6, "bob": 5, "carol": 4, "dave": 3, "erin": 2}   # 20 conversations


def _conversation(user: str, i: int) -> dict:
    return {"messages": [
        {"role": "user", "content": f"{user} asks question number {i} about order {user}-{i}"},
        {"role": "assistant", "content": f"Answer {i} for {user}: order {user}-{i} has shipped."},
    ]}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """20 conversations from 5 files (one per user), none in a split yet."""
    folder = tmp_path / "logs"
    folder.mkdir()
    for user, n in FILES.items():
        (folder / f"{user}.jsonl").write_text(
            "".join(json.dumps(_conversation(user, i)) + "\n" for i in range(n)))
    path = tmp_path / "w.db"
    db = open_db(path)
    import_files(db, [str(folder)])
    db.conn.close()
    return path


def _splits(path: Path) -> dict[int, str]:
    db = open_db(path)
    try:
        return dict(db.execute("SELECT id, split FROM traces").fetchall())
    finally:
        db.conn.close()


def _user_of(path: Path) -> dict[int, str]:
    db = open_db(path)
    try:
        return {t: Path(s).stem for t, s in db.execute("SELECT id, source FROM traces")}
    finally:
        db.conn.close()


def test_parse_share() -> None:
    assert parse_share("10%", 200) == 20 and parse_share("0.1", 200) == 20
    assert parse_share("34", 200) == 34 and parse_share("1%", 20) == 1
    for bad in ("0%", "100%", "ten", "-5", "2.5"):
        with pytest.raises(ValueError):
            parse_share(bad, 200)


def test_draw_keeps_groups_together_reaches_the_share_and_only_grows() -> None:
    values = {t: f"g{t % 7}" for t in range(1, 71)}      # 7 groups of 10
    d = draw(values, set(), 20, seed=3)
    assert len(d.test) == 20 and d.groups_test == 2 and d.test | d.train == set(values)
    for g in {values[t] for t in d.test}:                  # whole groups only
        assert {t for t, v in values.items() if v == g} <= d.test
    assert draw(values, set(), 20, seed=3).test == d.test  # the seed fixes the draw
    assert any(draw(values, set(), 20, seed=s).test != d.test for s in range(4, 10))
    again = draw(values, d.test, 20, seed=99)              # in test already: stays, nothing new
    assert again.test == d.test
    one = draw(values, {5}, 20, seed=3)                    # a trace in test brings its group
    assert {t for t, v in values.items() if v == values[5]} <= one.test
    # no value: every trace is its own group
    assert len(draw({t: None for t in range(10)}, set(), 3, seed=0).test) == 3


def test_cli_split_by_field_with_seed_then_undo(store: Path) -> None:
    r = runner.invoke(app, ["--db", str(store), "split", "--test", "25%", "--by", "source",
                            "--seed", "1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    splits, users = _splits(store), _user_of(store)
    test = {t for t, s in splits.items() if s == "test"}
    assert out["splits"] == {"test": len(test), "train": 20 - len(test)}
    assert 3 <= len(test) <= 5 and "unassigned" not in splits.values()
    test_users = {users[t] for t in test}
    assert all(splits[t] == "test" for t in splits if users[t] in test_users)  # groups whole
    # the same command again changes nothing; another seed neither (the test split only grows)
    r = runner.invoke(app, ["--db", str(store), "split", "--test", "25%", "--by", "source",
                            "--seed", "7"])
    assert r.exit_code == 0 and "0 trace(s) moved" in r.stdout and _splits(store) == splits
    # every move is a decision with the split before it; undo puts them back as one action
    db = open_db(store)
    rows = db.execute("SELECT count(*), count(DISTINCT action) FROM split_decisions").fetchone()
    db.conn.close()
    assert tuple(rows) == (20, 1)
    r = runner.invoke(app, ["--db", str(store), "split", "--undo"])
    assert r.exit_code == 0 and "20 trace(s) back" in r.stdout, r.output
    assert set(_splits(store).values()) == {"unassigned"}


def test_cli_move_traces_between_splits_and_bad_input_changes_nothing(store: Path) -> None:
    r = runner.invoke(app, ["--db", str(store), "split", "--move", "1,3-4", "--to", "test"])
    assert r.exit_code == 0 and "3 trace(s) moved to the test split" in r.stdout, r.output
    splits = _splits(store)
    assert {t for t, s in splits.items() if s == "test"} == {1, 3, 4}
    # a selection option works as --move does
    r = runner.invoke(app, ["--db", str(store), "split", "--trace-id", "4", "--to", "train"])
    assert r.exit_code == 0 and _splits(store)[4] == "train"
    before = _splits(store)
    for args, words in [
        (["--move", "1", "--to", "nowhere"], "--to must be one of"),
        (["--move", "1,x", "--to", "test"], "not a trace id"),
        (["--move", "999", "--to", "test"], "no trace 999"),
        (["--to", "test"], "say which traces"),
        (["--test", "150%"], "below 100%"),
        (["--test", "10%", "--by", "user_id"], "--by user_id"),
        (["--test", "10%", "--to", "test"], "give one of"),
        (["--by", "source"], "--by goes with --test"),
    ]:
        r = runner.invoke(app, ["--db", str(store), "split", *args])
        assert r.exit_code == 1 and words in r.output, (args, r.output)
    assert _splits(store) == before
    # undo the newest move only: trace 4 back in test, the first move stands
    r = runner.invoke(app, ["--db", str(store), "split", "--undo"])
    assert r.exit_code == 0 and _splits(store)[4] == "test"


def test_split_by_a_key_of_the_traces_metadata(store: Path) -> None:
    """Where the store keeps each trace's metadata object, --by takes any of its keys (a
    nested one with dots)."""
    db = open_db(store)
    column = "metadata"
    if column not in {r[1] for r in db.execute("PRAGMA table_info(traces)")}:
        db.execute(f"ALTER TABLE traces ADD COLUMN {column} TEXT")   # what stored metadata adds
    ids = [t for (t,) in db.execute("SELECT id FROM traces ORDER BY id")]
    for t in ids:   # sessions of 4 conversations, nested under `session.id`; users of 5
        db.execute(f"UPDATE traces SET {column} = ? WHERE id = ?",
                   [json.dumps({"session": {"id": f"s{(t - 1) // 4}"},
                                "meta": {"user": f"u{(t - 1) // 5}"}}), t])
    db.conn.commit()
    out = decisions.split_test(db, "20%", "ada", by="session.id", seed=2)
    test = {t for (t,) in db.execute("SELECT id FROM traces WHERE split = 'test'")}
    assert len(test) == 4 and "1 of 5 groups" in out.message
    assert len({(t - 1) // 4 for t in test}) == 1
    decisions.undo_split(db, "ada")
    out = decisions.split_test(db, "25%", "ada", by="user", seed=2)   # found under `meta`
    test = {t for (t,) in db.execute("SELECT id FROM traces WHERE split = 'test'")}
    assert len(test) == 5 and len({(t - 1) // 5 for t in test}) == 1
    with pytest.raises(decisions.DecisionError, match="none of the 20 traces"):
        decisions.split_test(db, "20%", "ada", by="nothing.here")
    db.conn.close()


async def test_app_moves_the_marked_traces_to_a_split(store: Path) -> None:
    from workbench.app import make_app

    app_ = make_app(store, app_config())
    async with app_.run_test(size=(120, 40)) as pilot:
        from widgets.trace_table import TraceTable

        await until(pilot, lambda: app_.screen.query_one(TraceTable).row_count == 20)
        await pilot.press("space", "space", "T")          # mark traces 1 and 2
        await until(pilot, lambda: type(app_.screen).__name__ == "PickScreen")
        await pilot.press("down", "enter")                # train, [test], unassigned
        await until(pilot, lambda: _splits(store)[1] == "test")
    splits = _splits(store)
    assert {t for t, s in splits.items() if s == "test"} == {1, 2}
    db = open_db(store)
    rows = db.execute("SELECT trace_id, split, previous, author_name FROM split_decisions"
                      " ORDER BY trace_id").fetchall()
    db.conn.close()
    assert [tuple(r) for r in rows] == [(1, "test", "unassigned", "tester"),
                                        (2, "test", "unassigned", "tester")]
