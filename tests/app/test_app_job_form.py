"""The job form: built from the kind's Params, validated as you type, refused by the job's own
checks inline (nothing stored), and a valid start stores the job and starts its worker."""

from __future__ import annotations

import shutil

import pytest

from db import jobs as store
from db import open_db
from db.queries import TraceFilter
from tests.tui_data import app_config, build_db, until
from workbench.app import make_app
from workbench.jobs.forms import FormField, param_fields, read_form, selection_fields
from workbench.jobs.registry import get_spec

SIZE = (120, 40)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_db(tmp_path_factory.mktemp("form") / "t.db")


@pytest.fixture
def db_path(template, tmp_path):
    path = tmp_path / "t.db"
    shutil.copy(template, path)
    return path


def jobs(path) -> list[dict]:
    db = open_db(path)
    try:
        return [store.get_job(db, j["id"]) for j in store.list_jobs(db)]
    finally:
        db.close()


def test_form_fields_follow_the_params_types():
    train = {f.name: f for f in param_fields(get_spec("train"))}
    assert train["lr"].widget == "input" and train["lr"].parse("3e-4") == 3e-4
    assert train["gguf"].widget == "select" and "f16" in train["gguf"].options
    assert train["per_turn"].widget == "switch"
    assert train["base_model"].optional and train["base_model"].parse("") is None
    with pytest.raises(ValueError, match="lora_r: '1.5' is not a whole number"):
        train["lora_r"].parse("1.5")
    with pytest.raises(ValueError, match="epochs: a number is needed"):
        train["epochs"].parse(" ")
    check = {f.name: f for f in param_fields(get_spec("check"))}
    assert check["only"].parse("schema, structure") == ["schema", "structure"]
    assert check["only"].to_widget(["a", "b"]) == "a, b"
    sel = {f.name: f for f in selection_fields()}
    assert sel["split"].options == ["train", "test", "unassigned"]
    assert sel["flagged"].widget == "select" and sel["flagged"].parse("no") is False
    assert sel["trace_ids"].parse("3, 4") == [3, 4]
    values, errors = read_form(selection_fields(), {"split": None, "limit": "x", "text": "a"})
    assert values == {"text": "a"} and errors == {"limit": "limit: 'x' is not a whole number"}
    assert FormField("x", "list[str]", False, []).parse("") == []


async def test_form_validates_then_starts_a_job(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        from widgets.trace_table import TraceTable

        # the traces screen sets the app's filter when it has loaded: set ours after that
        await until(pilot, lambda: app.screen.query(TraceTable)
                    and app.screen.query_one(TraceTable).row_count == 45)
        app.current_filter = TraceFilter(split="train")
        await pilot.press("b")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        app.screen.query_one("#job-kind").value = "check"
        await pilot.pause(0.1)
        await pilot.press("n")
        await until(pilot, lambda: type(app.screen).__name__ == "JobFormScreen")
        form = app.screen
        assert form.query_one("#s-split").value == "train"      # the current selection
        assert form.query_one("#p-threads").value.isdigit()      # the default
        help_texts = " ".join(str(w.content) for w in form.query(".form-help"))
        assert "run only these checks" in help_texts
        form.query_one("#p-threads").value = "two"               # validation as you type
        await until(pilot, lambda: "not a whole number" in str(form.query_one("#p-threads-error").content))
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "not a whole number" in str(form.query_one("#form-error").content))
        form.query_one("#p-threads").value = "1"
        await until(pilot, lambda: str(form.query_one("#p-threads-error").content) == "")
        form.query_one("#p-only").value = "schema, nope"         # the job's own check refuses
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "unknown check nope" in str(form.query_one("#form-error").content),
                    timeout=15)
        assert type(app.screen).__name__ == "JobFormScreen" and jobs(db_path) == []
        form.query_one("#p-only").value = "schema"
        form.query_one("#s-limit").value = "2"                   # the selection is editable
        await pilot.press("ctrl+s")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen", timeout=15)
        (job,) = jobs(db_path)
        assert job["kind"] == "check" and job["params"]["only"] == ["schema"]
        assert job["params"]["threads"] == 1
        assert job["selection"] == {"split": "train", "limit": 2}
        await until(pilot, lambda: jobs(db_path)[0]["status"] == "succeeded", timeout=90)


async def test_palette_starts_a_job_form(db_path):
    app = make_app(db_path, app_config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await until(pilot, lambda: type(app.screen).__name__ == "CommandPalette")
        await pilot.press(*"start job: eval")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "JobFormScreen")
        assert app.screen.kind == "eval"
        assert app.screen.query_one("#s-split").value == "test"   # eval's selection default
        await pilot.press("ctrl+s")                               # neither model nor endpoint
        await until(pilot, lambda: "exactly one of --model" in
                    str(app.screen.query_one("#form-error").content), timeout=15)
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "TracesScreen")
        assert jobs(db_path) == []
