"""Hostile input (tests/data/hostile.jsonl): Textual markup, terminal escape sequences
(`ESC]0;title BEL`, `ESC[2J ESC[H`, `ESC[31m`), bidi and zero-width characters, C1 controls, a
tool name holding ESC, a 200 KB value and a value nested 90 levels deep. Imported and shown in
every view of the app and every CLI table, nothing of it may reach the terminal raw; `--json`
still gives back the exact text."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from typer.testing import CliRunner

from db import open_db
from db.revisions import add_revision
from tests.tui_data import add_flag, app_config, screen_text, until
from widgets.trace_table import TraceTable
from workbench.app import make_app
from workbench.cli import app as cli
from workbench.traces.importing import import_files
from tests.job_support import run_body

HOSTILE = Path(__file__).parent.parent / "data" / "hostile.jsonl"
ESC = "\x1b"
RED = ESC + "[31m"
TOOL = "find" + RED + "Red"
TITLE = ESC + "]0;pwned title\x07"
# what must never reach a terminal raw: C0 but \t \n, DEL, C1, bidi controls, zero-width, BOM
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
SIZE = (200, 50)

runner = CliRunner()


def _raw_chars(text: str) -> list[str]:
    return sorted({hex(ord(c)) for c in RAW.findall(text)})


def _fixture_lines() -> list[dict]:
    return [json.loads(line) for line in HOSTILE.read_text("utf-8").split("\n") if line]


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return [value, *_strings(json.loads(value))]
        except ValueError:
            pass
    return [value] if isinstance(value, str) else []


def test_fixture_holds_every_kind_of_hostile_text():
    text = "\n".join(_strings(_fixture_lines()))
    for piece in (TITLE, ESC + "[2J" + ESC + "[H", RED, "\u202e", "\u2066", "\u200b", "\ufeff",
                  "\x9b", "[@click=app.quit]", "[bold red]x[/]"):
        assert piece in text, repr(piece)
    lines = _fixture_lines()
    assert lines[0]["tools"][0]["function"]["name"] == TOOL
    assert max(len(m.get("content") or "") for m in lines[1]["messages"]) > 200_000


def _cli(db_path: Path, *args: object):
    return runner.invoke(cli, ["--db", str(db_path), *map(str, args)])


def test_cli_tables_show_escapes_and_json_keeps_exact_text(tmp_path):
    db_path = tmp_path / "h.db"
    named = tmp_path / f"hostile{RED}{TITLE}.jsonl"   # a file name holding escapes too
    shutil.copy(HOSTILE, named)
    outputs = {}
    r = _cli(db_path, "import", named)
    assert r.exit_code == 0, r.output
    outputs["import"] = r.stdout + r.stderr
    for name, args in {"stats": ["stats"], "check": ["check"], "jobs list": ["jobs", "list"],
                       "jobs show": ["jobs", "show", "1"], "models": ["models"],
                       "export": ["export", tmp_path / f"out{RED}.jsonl"]}.items():
        r = _cli(db_path, *args)
        assert r.exit_code == 0, (name, r.output)
        outputs[name] = r.stdout + r.stderr
    r = _cli(db_path, "import", tmp_path / f"missing{RED}.jsonl")   # an error message
    assert r.exit_code == 1
    outputs["error"] = r.stdout + r.stderr
    leaks = {name: _raw_chars(out) for name, out in outputs.items() if _raw_chars(out)}
    assert not leaks, leaks
    assert "\\x1b[31m" in outputs["stats"]           # the tool name, spelled out
    assert "\\x1b" in outputs["import"] and "\\x1b[31m" in outputs["error"]
    assert "\\x1b" in outputs["check"]

    # --json: the same data, exact (control characters as JSON escapes, never raw)
    r = _cli(db_path, "stats", "--json")
    assert not _raw_chars(r.stdout)
    assert TOOL in json.loads(r.stdout)["tools"]
    r = _cli(tmp_path / "second.db", "import", named, "--json")
    assert not _raw_chars(r.stdout)
    assert json.loads(r.stdout)["files"][0]["source"] == str(named)
    r = _cli(db_path, "check", "--json")
    assert not _raw_chars(r.stdout)
    flags = json.loads(r.stdout)["flags"]
    # line 2 sends an argument its tool does not declare: a schema flag naming the tool
    assert any(f["check"] == "schema" and TOOL in f["detail"] for f in flags), flags
    # three conversations are too few to say which result fields belong to the task
    assert not any("off-domain" in f["detail"] for f in flags), flags
    exported = (tmp_path / f"out{RED}.jsonl").read_text("utf-8").split("\n")
    assert [json.loads(x)["messages"][1]["content"] for x in exported[:1]] == [
        _fixture_lines()[0]["messages"][1]["content"]]


def _hostile_store(path: Path) -> None:
    db = open_db(path)
    import_files(db, [HOSTILE])
    user_text = _fixture_lines()[0]["messages"][1]["content"]
    add_flag(db, 1, 2, "hostile" + RED, "error", "detail " + user_text)
    add_flag(db, 1, None, "trace" + RED, "warning", "trace-level " + TITLE)
    add_revision(db, 1, 2, tool_calls=[{"id": "c1", "type": "function", "function": {
        "name": TOOL, "arguments": {"city" + ESC + "[2J" + ESC + "[H": "proposed " + TITLE}}}],
        author_kind="committee", author_name="judge" + RED, reason="because " + TITLE,
        status="proposed")
    run_body(db, "kind" + RED, lambda ctx: (ctx.progress(1, 2, "msg " + TITLE),
                                           ctx.log("log " + user_text)))
    db.close()


async def test_app_shows_no_raw_control_characters_in_any_view(tmp_path):
    path = tmp_path / f"h{RED}.db"      # the store's name is in the header
    _hostile_store(path)
    app = make_app(path, app_config())
    seen: dict[str, str] = {}
    leaks: dict[str, list[str]] = {}

    def look(where: str) -> str:
        text = screen_text(app)
        seen[where] = text
        if _raw_chars(text):
            leaks[where] = _raw_chars(text)
        return text

    async with app.run_test(size=SIZE, notifications=True, tooltips=True) as pilot:
        await until(pilot, lambda: app.screen.query(TraceTable)
                    and app.screen.query_one(TraceTable).row_count == 3)
        await pilot.pause(0.2)
        assert "\\x1b[31m" in look("traces")      # tools column, header
        for row in range(3):
            await pilot.press("enter")
            await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen"
                        and app.screen.turn is not None)
            await pilot.pause(0.3)
            look(f"detail {row + 1}")
            for turn in range(6):
                await pilot.press("j")
                await pilot.pause(0.1)
                look(f"detail {row + 1} turn {turn}")
            if row == 0:
                await pilot.press("k", "k", "k", "k", "e")   # the first call's editor
                await until(pilot, lambda: type(app.screen).__name__ == "EditTurnScreen")
                await pilot.pause(0.3)
                assert "\\u001b" in look("editor")          # raw JSON: JSON escapes
                raw = app.screen.query_one("#raw").text
                assert json.loads(raw) == json.loads(
                    _fixture_lines()[0]["messages"][2]["tool_calls"][0]["function"]["arguments"])
                await pilot.press("escape")
                await pilot.pause(0.2)
            await pilot.press("escape")
            await until(pilot, lambda: type(app.screen).__name__ == "TracesScreen")
            await pilot.press("down")
        assert "\\x1b]0;pwned title\\x07" in "".join(
            v for k, v in seen.items() if k.startswith("detail 1"))
        await pilot.press("v")
        await until(pilot, lambda: type(app.screen).__name__ == "ReviewScreen"
                    and app.screen.item is not None)
        await pilot.pause(0.3)
        assert "\\x1b[31m" in look("review")
        await pilot.press("escape", "b")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen"
                    and "kind\\x1b[31m" in screen_text(app))
        await pilot.pause(0.3)
        assert "log " in look("jobs")
        app.notify("note " + TITLE, title="t" + RED)
        await until(pilot, lambda: "note \\x1b]0;pwned title\\x07" in screen_text(app))
        look("notification")
    assert not leaks, leaks
