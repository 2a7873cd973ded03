"""The training view draws a train job's curve from its stored log (as a headless training
writes it), and follows the log while the job is active."""

from __future__ import annotations

import json

from db import jobs as store
from db import open_db
from tests.tui_data import app_config, screen_text, until
from widgets.training_plot import TrainingCurves
from workbench.app import make_app

SIZE = (120, 40)


def metrics(step: int, loss: float) -> str:
    return "metrics " + json.dumps({"step": step, "loss": loss, "lr": 2e-4 / step,
                                    "tokens_per_s": 300.0 + step, "eta_s": 90.0 - step})


async def test_training_view_shows_the_stored_curve_and_follows_it(tmp_path):
    path = tmp_path / "t.db"
    db = open_db(path)
    done = store.create_job(db, "train", {"max_steps": 3}, {})   # as `workbench train` leaves it
    store.start_job(db, done)
    for line in ["training into runs/job-1", metrics(1, 2.5), metrics(2, 1.75), "noise",
                 metrics(3, 1.25)]:
        store.log(db, done, line)
    store.finish_job(db, done, "succeeded", result={"steps": 3})
    live = store.create_job(db, "train", {}, {})                 # queued: still active
    store.log(db, live, metrics(1, 3.0))
    other = store.create_job(db, "recount", {}, {})
    db.close()
    app = make_app(path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        table = app.screen.query_one("#jobs-table")
        await until(pilot, lambda: table.row_count == 3)
        table.move_cursor(row=table.get_row_index(str(done)))
        await until(pilot, lambda: app.screen.query_one("#job-list").selected == done)
        await pilot.press("t")
        await until(pilot, lambda: type(app.screen).__name__ == "TrainingScreen")
        curves = app.screen.query_one(TrainingCurves)
        await until(pilot, lambda: curves.series("loss") == ([1, 2, 3], [2.5, 1.75, 1.25]))
        assert curves.series("tokens_per_s")[1] == [301.0, 302.0, 303.0]
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "job 1 train succeeded" in text and "loss 1.2500 (best 1.2500)" in text
        assert "303 tok/s" in text and "ETA 1m27s" in text and "learning rate" in text
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        app.action_training()                                    # the newest train job: live
        await until(pilot, lambda: type(app.screen).__name__ == "TrainingScreen"
                    and app.screen.query(TrainingCurves)
                    and app.screen.query_one(TrainingCurves).series("loss")[0] == [1])
        db = open_db(path)
        store.log(db, live, metrics(2, 2.0))
        db.close()
        curves = app.screen.query_one(TrainingCurves)
        await until(pilot, lambda: curves.series("loss") == ([1, 2], [3.0, 2.0]), timeout=8)
        await pilot.press("escape")
        app.action_training(other)                               # not a train job: said so
        await until(pilot, lambda: "not a train job" in screen_text(app))
