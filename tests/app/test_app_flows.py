"""Pilot tests of the app's flows on a real SQLite store built from the sample traces."""

from __future__ import annotations

import os

import shutil
import threading

import pytest

from db import open_db
from db.browse import count_traces
from db.queries import TraceFilter
from db.revisions import current_messages, history
from tests.tui_data import app_config, build_db, first_assistant, read, until
from widgets.trace_table import TraceTable
from workbench.app import make_app
from workbench.core.config import Config
from tests.job_support import run_body

SIZE = (120, 40)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_db(tmp_path_factory.mktemp("flows") / "t.db")


@pytest.fixture
def db_path(template, tmp_path):
    path = tmp_path / "t.db"
    shutil.copy(template, path)
    return path


def rows(app) -> int:
    return app.screen.query_one(TraceTable).row_count



async def test_filter_search_sort_and_remembered_filter(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == 45)
        n_fts = read(db_path, lambda db: count_traces(db, TraceFilter(text="Fairfield")))
        assert 0 < n_fts < 45
        await pilot.press("slash", *"Fairfield", "enter")
        await until(pilot, lambda: rows(app) == n_fts)
        app.screen.query_one("#f-split").value = "test"
        n_both = read(db_path, lambda db: count_traces(db, TraceFilter(text="Fairfield", split="test")))
        await until(pilot, lambda: rows(app) == n_both)
        assert app.current_filter == TraceFilter(text="Fairfield", split="test")
        assert "traces" in str(app.screen.query_one("#summary").content)
    app = make_app(db_path, app_config())  # the last filter comes back
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == n_both)
        assert app.screen.query_one("#search").value == "Fairfield"
        await pilot.press("c")
        await until(pilot, lambda: rows(app) == 45)
        await pilot.press("s")  # id descending
        await until(pilot, lambda: app.screen.query_one(TraceTable).current_id == 45)
        app.screen.query_one("#f-check").value = "wrong_tool"
        await until(pilot, lambda: rows(app) == 1)


async def test_open_edit_validate_save_undo(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == 45)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen"
                    and app.screen.turn is not None)
        turn = first_assistant(open_db(db_path), 1)
        assert app.screen.turn == turn
        await pilot.press("e")
        await until(pilot, lambda: type(app.screen).__name__ == "EditTurnScreen")
        await pilot.pause(0.2)
        from tests.tui_data import screen_text
        footer = screen_text(app).splitlines()[-1]
        assert "Save" in footer and "Cancel" in footer and "Edit label" not in footer
        app.screen.query_one("#tool").focus()
        await pilot.press("tab")                    # from the picker straight to a field
        assert app.focused.has_class("arg"), app.focused
        raw = app.screen.query_one("#raw")
        save = app.screen.query_one("#save")
        status = app.screen.query_one("#status")
        assert not save.disabled and str(status.content) == "valid"
        raw.text = '{"message": '
        await pilot.pause(0.1)
        assert save.disabled and "not JSON" in str(status.content)
        raw.text = '{"message": 5}'
        await pilot.pause(0.1)
        assert save.disabled and "message = 5 is not of type string" in str(status.content)
        assert app.screen.query_one(".arg").value == "5"  # the form follows the JSON
        app.screen.query_one("#tool").value = "FindRestaurants"
        await pilot.pause(0.2)
        labels = [str(w.content) for w in app.screen.query(".field Label")]
        assert "city *" in labels and "cuisine *" in labels
        raw.text = '{"city": "Fairfield", "cuisine": "Breakfast"}'
        await pilot.pause(0.1)
        assert not save.disabled
        await pilot.click("#reason")
        await pilot.press(*"search first")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen")
        await until(pilot, lambda: read(db_path, lambda db: len(history(db, 1, turn))) == 1)
        rev = read(db_path, lambda db: history(db, 1, turn))[0]
        assert (rev["author_kind"], rev["author_name"], rev["reason"]) == ("human", "tester", "search first")
        assert rev["tool_calls"][0]["function"] == {"name": "FindRestaurants", "arguments": {
            "city": "Fairfield", "cuisine": "Breakfast"}}
        await until(pilot, lambda: app.screen.view and app.screen.view["current_rev"].get(turn))
        await pilot.press("u")
        await until(pilot, lambda: read(db_path, lambda db: len(history(db, 1, turn))) == 2)
        orig = read(db_path, lambda db: current_messages(db, 1))[turn]
        assert orig["tool_calls"][0]["function"]["name"] == "respond_to_user"
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "TracesScreen")
        table = app.screen.query_one(TraceTable)  # the row shows the new label in place
        await until(pilot, lambda: str(table.get_cell("1", "label")) == "revised")


def _two_call_trace(db) -> int:
    """A trace whose assistant turn makes two parallel calls."""
    from db.traces import NewTrace, TraceWriter
    from db.tx import now, write_tx
    from workbench.conversations.messages import content_hash

    def call(cid, city):
        return {"id": cid, "type": "function", "function": {
            "name": "FindRestaurants", "arguments": {"city": city, "cuisine": "Thai"}}}
    msgs = [{"role": "user", "content": "Thai in Napa or Ukiah", "tool_calls": None,
             "tool_call_id": None, "name": None},
            {"role": "assistant", "content": None, "tool_call_id": None, "name": None,
             "tool_calls": [call("a", "Napa"), call("b", "Ukiah [bold]x[/]")]}]
    with write_tx(db):
        imp = db.execute("INSERT INTO imports (source, path, format, sha256, lines, added,"
                         " duplicates, created_at) VALUES ('p','p','openai','1',1,1,0,?)",
                         [now()]).lastrowid
        w = TraceWriter(db, imp)
        tid, _ = w.add(NewTrace(msgs, None, content_hash(msgs, None), "p", "p", 1, "openai"))
        w.flush()
    return tid


async def test_edit_the_second_of_two_calls(db_path):
    """A turn with several calls shows one form per call; the others stay as they were and
    every call keeps its id."""
    from workbench.app.screens.detail import DetailScreen

    tid = read(db_path, _two_call_trace)
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == 46)
        app.push_screen(DetailScreen(tid))
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen"
                    and app.screen.turn == 1)
        await pilot.press("e")
        await until(pilot, lambda: type(app.screen).__name__ == "EditTurnScreen")
        await pilot.pause(0.2)
        forms = list(app.screen.query("ToolCallEditor"))
        assert len(forms) == 2
        raw = forms[1].query_one("#raw")
        assert "Ukiah [bold]x[/]" in raw.text   # untrusted text shown as it is, not markup
        raw.text = '{"city": "Eureka", "cuisine": "Thai"}'
        await pilot.pause(0.1)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: read(db_path, lambda db: len(history(db, tid, 1))) == 1)
        calls = read(db_path, lambda db: current_messages(db, tid))[1]["tool_calls"]
        assert [(c["id"], c["function"]["arguments"]["city"]) for c in calls] == [
            ("a", "Napa"), ("b", "Eureka")]


async def test_typing_app_keys_in_search_stays_in_search(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == 45)
        await pilot.press("slash", *"qvb quiet")
        await pilot.pause(0.3)
        assert app.is_running and type(app.screen).__name__ == "TracesScreen"
        assert app.screen.query_one("#search").value == "qvb quiet"


async def test_accept_in_detail_and_bulk_reject(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == 45)
        await pilot.press("down", "enter")
        await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen"
                    and app.screen.turn is not None)
        await pilot.press("a")
        turn = first_assistant(open_db(db_path), 2)
        await until(pilot, lambda: read(db_path, lambda db: history(db, 2, turn))[0]["status"] == "accepted")
        await pilot.press("escape")
    # bulk reject on a filtered set
    from db.revisions import add_revision
    db = open_db(db_path)
    rid = add_revision(db, 5, first_assistant(db, 5), tool_calls=None, content="hi",
                       author_kind="committee", author_name="c", status="proposed")
    db.close()
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == 45)
        app.screen.query_one("#f-status").value = "proposed"
        await until(pilot, lambda: rows(app) == 1)
        await pilot.press("X")
        await until(pilot, lambda: read(db_path, lambda db: db.execute(
            "SELECT status FROM revisions WHERE id = ?", [rid]).fetchone()[0]) == "rejected")
        await until(pilot, lambda: rows(app) == 0)
        await pilot.press("c")
        await until(pilot, lambda: rows(app) == 45)
        await pilot.press("space", "space", "E")  # marks rows 1 and 2, excludes only those
        await until(pilot, lambda: read(db_path, lambda db: count_traces(db, TraceFilter(excluded=True))) == 2)


async def test_review_queue_decisions(db_path):
    app = make_app(db_path, app_config())
    t1, t2 = (read(db_path, lambda db: first_assistant(db, i)) for i in (1, 2))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == 45)
        await pilot.press("v")
        await until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen"
                    and app.screen.item is not None)
        assert len(app.screen.queue) == 2 and app.screen.item["trace_id"] == 1
        # the turn with what led to it and what followed (a flag is judged in context)
        around = [i for i, _ in app.screen.item["around"]]
        assert t1 in around and around[-1] > t1 and around[0] == max(0, t1 - 4)
        from tests.tui_data import screen_text
        shown = screen_text(app)
        msgs = read(db_path, lambda db: __import__("db.revisions", fromlist=["x"])
                    .current_messages(db, 1))
        assert f"▶ {t1:>3} assistant" in shown
        assert (msgs[t1 + 1]["content"] or "")[:30] in shown     # the message after the turn
        await pilot.press("s")  # skip: nothing written
        await until(pilot, lambda: app.screen.item and app.screen.item["trace_id"] == 2)
        assert len(app.screen.item["candidates"]) == 1
        await pilot.press("1")
        await until(pilot, lambda: app.screen.item is None)
        assert read(db_path, lambda db: history(db, 2, t2))[0]["status"] == "accepted"
        assert read(db_path, lambda db: history(db, 1, t1)) == []
        await pilot.press("escape", "v")  # a fresh queue holds the skipped turn
        await until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen"
                    and app.screen.item is not None)
        assert app.screen.queue == [(1, t1)]
        await pilot.press("k")
        await until(pilot, lambda: app.screen.item is None)
        rev = read(db_path, lambda db: history(db, 1, t1))[0]
        assert rev["author_kind"] == "human" and rev["evidence"] == {"decision": "keep"}
        assert read(db_path, lambda db: __import__("db.browse").browse.review_queue(db)) == []


async def test_review_drop(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("v")
        await until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen"
                    and app.screen.item is not None)
        await pilot.press("d")
        await until(pilot, lambda: app.screen.decided == 1)
        assert read(db_path, lambda db: db.execute(
            "SELECT count(*) FROM flags WHERE check_name = 'review.drop'").fetchone()[0]) == 1


async def test_jobs_panel_shows_outside_jobs_and_runs_its_own(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        table = app.screen.query_one("#jobs-table")
        release = threading.Event()

        def outside(ctx):  # a job started by "the CLI" on its own connection
            ctx.progress(1, 2, "half way")
            ctx.log("outside [bold]log[/]")
            release.wait(5)
            return {"ok": True}

        def cli():
            db = open_db(db_path)
            run_body(db, "cli-job", outside)
            db.close()

        th = threading.Thread(target=cli)
        th.start()
        await until(pilot, lambda: table.row_count == 1 and "running" in str(table.get_row_at(0)[2]))
        await until(pilot, lambda: "outside [bold]log[/]" in
                    "\n".join(s.text for s in app.screen.query_one("#job-log").lines))
        release.set()
        th.join()
        await until(pilot, lambda: "succeeded" in str(table.get_row_at(0)[2]))
        await pilot.press("n")  # the recount job's form (no parameters): start it
        await until(pilot, lambda: type(app.screen).__name__ == "JobFormScreen")
        await pilot.press("ctrl+s")  # stored, and run in a detached worker
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        await until(pilot, lambda: table.row_count == 2 and "succeeded" in str(table.get_row_at(0)[2]),
                    timeout=90)
        job = read(db_path, lambda db: __import__("db.jobs").jobs.get_job(db, 2))
        assert job["kind"] == "recount" and job["result"]["traces"] == 45
        assert job["pid"] != os.getpid() and job["log_path"]  # not a thread of the app
        # cancel: a queued job no worker has taken yet is cancelled at once
        jid = read(db_path, lambda db: __import__("db.jobs").jobs.create_job(db, "queued-job"))
        await until(pilot, lambda: table.row_count == 3)
        table.move_cursor(row=table.get_row_index(str(jid)))
        await until(pilot, lambda: app.screen.query_one("#job-list").selected == jid)
        await pilot.press("c")
        await until(pilot, lambda: read(db_path, lambda db: db.execute(
            "SELECT status FROM jobs WHERE id = ?", [jid]).fetchone()[0]) == "cancelled")


async def test_keymap_theme_and_help(db_path):
    app = make_app(db_path, Config(analyst="ada", theme="nord", keys={"traces.sort": "o"}))
    async with app.run_test(size=SIZE) as pilot:
        assert app.theme == "nord"
        await until(pilot, lambda: rows(app) == 45)
        await pilot.press("o")
        await until(pilot, lambda: app.screen.query_one(TraceTable).current_id == 45)
        await pilot.press("question_mark")
        await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
        keys = app.screen.query_one("#help-keys")
        ids = [str(keys.get_row_at(i)[2]) for i in range(keys.row_count)]
        assert "traces.sort" in ids and "app.review" in ids
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "TracesScreen")


async def test_command_palette_runs_app_actions(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == 45)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: type(app.screen).__name__ == "CommandPalette")
        await pilot.press(*"review queue")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen")


async def test_bulk_exclude_of_more_than_a_screenful_asks_first_and_undoes(db_path):
    excluded = lambda: read(db_path, lambda db: count_traces(  # noqa: E731
        db, TraceFilter(excluded=True)))
    before = excluded()
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == 45)
        await pilot.press("E")                          # 45 traces: more than a screenful
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen")
        await pilot.press("n")
        await until(pilot, lambda: type(app.screen).__name__ == "TracesScreen")
        await pilot.pause(0.3)
        assert excluded() == before                     # "no" changed nothing
        await pilot.press("E")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen")
        await pilot.press("y")
        await until(pilot, lambda: excluded() == 45)
        await pilot.press("U")                          # undo the whole action
        await until(pilot, lambda: excluded() == before)
        await pilot.press("space", "E")                 # one marked trace: no question
        await until(pilot, lambda: excluded() == before + 1)


async def test_the_traces_screen_fits_100_columns(db_path):
    from tests.tui_data import screen_text

    app = make_app(db_path, app_config())
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: rows(app) == 45)
        await pilot.pause(0.3)
        lines = screen_text(app).splitlines()
        header = next(line for line in lines if "file:line" in line)
        for column in ("id", "file:line", "split", "turns", "flags", "label", "score",
                       "first user"):
            assert column in header, (column, header)
        table = app.screen.query_one(TraceTable)
        message = next(c for k, c in table.columns.items() if k.value == "message")
        assert message.width >= 30                     # the first message is readable
        assert any("test.jsonl:1 " in line and "1E" in line for line in lines)
        filters = next(i for i, line in enumerate(lines) if "split" in line and "▼" in line)
        assert "▼" not in lines[filters + 1]          # no filter label wraps onto a second row
        for label in ("split", "origin", "label", "revised", "excl.", "tool", "flag"):
            assert label in lines[filters], label
        await pilot.press("s", "s")                       # id desc, then errors first
        await until(pilot, lambda: app.screen.query_one(TraceTable).current_id == 1
                    and "errors" in str(app.screen.query_one("#summary").content))


async def test_typing_a_search_slowly_keeps_every_key_and_enter_opens_nothing(db_path):
    """The table reloads under the box as one types (debounced); the box keeps the focus
    through it, so no key goes to the table and Enter applies the search."""
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == 45)
        await pilot.press("slash")
        for ch in "Fairfield":
            await pilot.press(ch)
            await pilot.pause(0.25)            # past the debounce: a reload per key
        assert app.screen.query_one("#search").value == "Fairfield"
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert type(app.screen).__name__ == "TracesScreen"
        n = read(db_path, lambda db: count_traces(db, TraceFilter(text="Fairfield")))
        await until(pilot, lambda: rows(app) == n)


async def test_bulk_committee_and_job_on_the_marked_traces(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app) == 45)
        await pilot.press("space", "space", "C")        # mark traces 1 and 2, send to committee
        await until(pilot, lambda: type(app.screen).__name__ == "JobFormScreen")
        assert app.screen.kind == "relabel"
        assert app.screen.selection.trace_ids == [1, 2]
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "TracesScreen")
        await pilot.press("J")                          # which job? then its form
        await until(pilot, lambda: type(app.screen).__name__ == "PickScreen")
        await pilot.press("enter")                      # the first kind
        await until(pilot, lambda: type(app.screen).__name__ == "JobFormScreen")
        assert app.screen.selection.trace_ids == [1, 2]


async def test_jobs_panel_resumes_a_stopped_job_in_a_worker(db_path):
    from db.jobs import finish_job, get_job, start_job
    from workbench.jobs.runner import submit

    db = open_db(db_path)
    jid = submit(db, "eval", {"split": "test"}, {"endpoint": "http://127.0.0.1:9/v1#m",
                                                 "timeout": 1})
    start_job(db, jid)
    finish_job(db, jid, "interrupted", error="killed")
    db.close()
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        table = app.screen.query_one("#jobs-table")
        await until(pilot, lambda: table.row_count == 1)
        table.move_cursor(row=0)
        await until(pilot, lambda: app.screen.query_one("#job-list").selected == jid)
        await pilot.press("r")
        await until(pilot, lambda: read(db_path, lambda db: get_job(db, jid))["attempts"] == 2
                    and read(db_path, lambda db: get_job(db, jid))["status"] not in
                    ("queued", "running"), timeout=90)
