"""Snapshots of the main screens at a fixed terminal size (pytest-textual-snapshot).
Regenerate after a deliberate visual change: pytest tests/app/test_app_snapshots.py --snapshot-update"""

from __future__ import annotations

import pytest

from tests.tui_data import app_config, build_db
from workbench.app import make_app

SIZE = (120, 36)


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    return build_db(tmp_path_factory.mktemp("snap") / "snap.db")


async def settle(pilot) -> None:
    for _ in range(4):
        await pilot.pause(0.1)
        await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)


def test_traces_screen(snap_compare, db_path):
    assert snap_compare(make_app(db_path, app_config()), terminal_size=SIZE, run_before=settle)


def test_detail_screen(snap_compare, db_path):
    async def run(pilot):
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
    assert snap_compare(make_app(db_path, app_config()), terminal_size=SIZE, run_before=run)


def test_review_screen(snap_compare, db_path):
    async def run(pilot):
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
    assert snap_compare(make_app(db_path, app_config()), terminal_size=SIZE, run_before=run)


@pytest.fixture(scope="module")
def results_db(tmp_path_factory):
    from db import open_db
    from tests.tui_data import add_eval_runs

    path = build_db(tmp_path_factory.mktemp("snap-results") / "snap.db")
    db = open_db(path)
    add_eval_runs(db)
    db.close()
    return path


def test_results_screen(snap_compare, results_db):
    async def run(pilot):
        await settle(pilot)
        await pilot.press("R")
        await settle(pilot)
        await pilot.press("down")               # run 2: compared with run 1
        await settle(pilot)
        pilot.app.screen.query_one("#run-tabs").active = "tab-compare"
        await settle(pilot)
    assert snap_compare(make_app(results_db, app_config()), terminal_size=SIZE, run_before=run)


# ------------------------------------------------------- 100x30: every screen, what it holds

SMALL = (100, 30)
LONG = ("a note that runs on well past the edge of the panel, so that it must wrap onto the"
        " next lines instead of being cut at the hundredth column of the terminal")
VOTES = [
    {"member": "alpha", "role": "member", "model": "m", "raw": "{}", "latency_s": 1.2,
     "call": {"name": "FindRestaurants", "arguments": {"city": "Oakland", "cuisine": "Thai"}},
     "abstain_reason": None, "tokens_in": 100, "tokens_out": 20, "cost": None},
    {"member": "beta", "role": "member", "model": "m", "raw": "nope", "call": None,
     "abstain_reason": "the reply is not JSON", "latency_s": 0.5, "tokens_in": 90,
     "tokens_out": 7, "cost": None},
]
FIXED_TIME = "2026-01-02T03:04:05"


@pytest.fixture(scope="module")
def full_db(tmp_path_factory):
    """The sample store with what every screen holds: committee votes on a flagged turn, a
    proposal with a long argument, synthesis candidates, evaluation runs and finished jobs
    (their times fixed, so the snapshots do not change from run to run)."""
    from db import open_db
    from db.committee import record_turn
    from db.revisions import add_revision
    from db.synthesis import record
    from tests.tui_data import add_eval_runs, first_assistant
    from db.jobs import create_job
    from workbench.jobs.runner import run_job

    path = build_db(tmp_path_factory.mktemp("snap-full") / "snap.db")
    db = open_db(path)
    record_turn(db, None, 1, first_assistant(db, 1), VOTES, "review")
    add_revision(db, 3, first_assistant(db, 3), tool_calls=[{
        "id": "c1", "type": "function", "function": {"name": "respond_to_user",
                                                     "arguments": {"message": LONG}}}],
        author_kind="human", author_name="tester", reason="a long argument")
    record(db, job_id=None, status="accepted", method="offline", seeds=[6, 7],
           topic="a table for two near the water", trace_id=8, teacher=None, reasons=None,
           messages=None, candidate_key="a")
    record(db, job_id=None, status="rejected", method="teacher", seeds=[9, 11, 12],
           topic="a late dinner for a large party", trace_id=None,
           teacher="a-long-teacher-endpoint-name", candidate_key="b",
           reasons=[{"reason": "grounding", "detail": "city Springfield was never said"}],
           messages=[{"role": "user", "content": "hello"}])
    add_eval_runs(db)
    run_job(db, create_job(db, "recount"),
            lambda ctx: ctx.progress(1, 1, "counting") or {"traces": 45})
    db.execute("UPDATE jobs SET created_at = ?, started_at = ?, finished_at = ?,"
               " heartbeat_at = ?", [FIXED_TIME] * 4)
    for table in ("votes", "committee_turns"):
        db.execute(f"UPDATE {table} SET created_at = ?", [FIXED_TIME])
    db.conn.commit()
    db.close()
    return path


def test_traces_screen_100x30(snap_compare, full_db):
    """The first user message keeps about 30 columns; no filter label wraps, "any error" in
    the flag selector included."""
    async def run(pilot):
        from db.queries import TraceFilter

        await settle(pilot)
        pilot.app.screen._restore(TraceFilter(flagged=True))
        pilot.app.screen.reload(save=False)
        await settle(pilot)
    assert snap_compare(make_app(full_db, app_config()), terminal_size=SMALL, run_before=run)


def test_detail_screen_100x30(snap_compare, full_db):
    """j skips the user message to the next assistant turn; a long argument wraps."""
    async def run(pilot):
        await settle(pilot)
        await pilot.press("down", "down", "enter")        # trace 3
        await settle(pilot)
        await pilot.press("j")                           # the next assistant turn
        await settle(pilot)
        assert pilot.app.screen.view["originals"][pilot.app.screen.turn]["role"] == "assistant"
    assert snap_compare(make_app(full_db, app_config()), terminal_size=SMALL, run_before=run)


def test_review_screen_100x30(snap_compare, full_db):
    """The committee's votes are on screen without scrolling; the filter is named."""
    async def run(pilot):
        from db.queries import TraceFilter

        await settle(pilot)
        pilot.app.screen._restore(TraceFilter(split="test"))
        pilot.app.screen.reload(save=False)
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        votes = pilot.app.screen.query_one("#votes")
        assert votes.region.bottom <= pilot.app.size.height - 1      # above the footer
    assert snap_compare(make_app(full_db, app_config()), terminal_size=SMALL, run_before=run)


def test_jobs_screen_100x30(snap_compare, full_db):
    """The list has the focus: the arrows move between jobs, not between job kinds."""
    async def run(pilot):
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        assert pilot.app.screen.focused.id == "jobs-table"
        await pilot.press("down")
        await settle(pilot)
    assert snap_compare(make_app(full_db, app_config()), terminal_size=SMALL, run_before=run)


def test_job_form_100x30(snap_compare, full_db):
    """Only a field the job cannot run without is marked `*` (the committee's members)."""
    async def run(pilot):
        await settle(pilot)
        pilot.app.start_job_form("relabel")
        await settle(pilot)
        for box in pilot.app.screen.query("Input"):
            box.cursor_blink = False          # a blinking cursor differs from shot to shot
        await settle(pilot)
    assert snap_compare(make_app(full_db, app_config()), terminal_size=SMALL, run_before=run)


def test_synthesis_screen_120x30(snap_compare, full_db):
    """Seeds and reasons have their columns at 120 columns."""
    async def run(pilot):
        await settle(pilot)
        pilot.app.action_synthesis()
        await settle(pilot)
    assert snap_compare(make_app(full_db, app_config()), terminal_size=(120, 30),
                        run_before=run)


def test_synthesis_screen_100x30(snap_compare, full_db):
    async def run(pilot):
        await settle(pilot)
        pilot.app.action_synthesis()
        await settle(pilot)
    assert snap_compare(make_app(full_db, app_config()), terminal_size=SMALL, run_before=run)


def test_results_screen_100x30(snap_compare, full_db):
    """The chart's legend is under the plot, not over its bars."""
    async def run(pilot):
        await settle(pilot)
        await pilot.press("R")
        await settle(pilot)
    assert snap_compare(make_app(full_db, app_config()), terminal_size=SMALL, run_before=run)


def test_replay_screen_100x30(snap_compare, full_db, tmp_path, monkeypatch):
    """Choosing a model in the list, then `n`, predicts the next turn (no Open needed)."""
    from tests.scripted_openai import ScriptedServer, tool_call_reply

    with ScriptedServer(lambda b: tool_call_reply("respond_to_user",
                                                  {"message": "Which city?"})) as server:
        config = tmp_path / "config.toml"
        config.write_text(f'[endpoints.scripted]\nbase_url = "{server.url}"\nmodel = "m"\n')
        monkeypatch.setenv("WORKBENCH_CONFIG", str(config))

        async def run(pilot):
            from tests.tui_data import until

            await settle(pilot)
            await pilot.press("enter", "p")
            await settle(pilot)
            await until(pilot, lambda: any(v == "endpoint:scripted" for _, v in
                                           pilot.app.screen.query_one("#chat-model")._options))
            pilot.app.screen.query_one("#chat-model").value = "endpoint:scripted"
            await pilot.press("n")
            await until(pilot, lambda: pilot.app.screen.scores, timeout=30)
            await settle(pilot)
            pilot.app.clear_notifications()
            await settle(pilot)
        assert snap_compare(make_app(full_db, app_config()), terminal_size=SMALL,
                            run_before=run)
        assert server.count == 1
