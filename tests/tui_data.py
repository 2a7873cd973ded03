"""A small store for the app tests: the sample traces, some flags and proposed revisions."""

from __future__ import annotations

import contextlib
from pathlib import Path

from db import open_db
from db.revisions import add_revision
from db.traces import NewTrace, TraceWriter
from db.tx import now, write_tx
from workbench.core.config import Config
from workbench.traces.importing import import_files
from workbench.conversations.messages import content_hash

ROOT = Path(__file__).resolve().parent.parent
MARKUP = "[bold]x[/] [@click=app.quit]y[/]"


async def until(pilot, cond, timeout: float = 5.0) -> None:
    """Let the app run until `cond()` holds; fail after `timeout` seconds."""
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def read(path: Path, fn):
    """`fn(db)` on the store at `path`, opened for the call and closed after it: what a test
    reads while the app holds its own connection."""
    db = open_db(path)
    try:
        return fn(db)
    finally:
        db.close()


def first_assistant(db, trace_id: int) -> int:
    return db.execute("SELECT min(idx) FROM messages WHERE trace_id = ? AND role = 'assistant'",
                      [trace_id]).fetchone()[0]


def add_flag(db, trace_id: int, idx: int | None, check: str, severity: str, detail: str) -> None:
    with write_tx(db):
        db.execute("INSERT INTO flags (trace_id, message_idx, check_name, severity, detail,"
                   " created_at) VALUES (?,?,?,?,?,?)", [trace_id, idx, check, severity, detail, now()])


def add_markup_trace(db) -> int:
    """A trace whose every text (source, content, call name, arguments) is markup-like."""
    msgs = [{"role": "user", "content": MARKUP, "tool_calls": None, "tool_call_id": None, "name": None},
            {"role": "assistant", "content": None, "tool_call_id": None, "name": None,
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "respond_to_user", "arguments": {"message": MARKUP}}}]}]
    with write_tx(db):
        imp = db.execute("INSERT INTO imports (source, path, format, sha256, lines, added, duplicates,"
                         " created_at) VALUES ('x','x','openai','0',1,1,0,?)", [now()]).lastrowid
        w = TraceWriter(db, imp)
        tid, _ = w.add(NewTrace(msgs, None, content_hash(msgs, None), MARKUP, MARKUP, 1, "openai"))
        w.flush()
    add_flag(db, tid, 1, "markup_check", "error", MARKUP)
    add_revision(db, tid, 1, tool_calls=[{"id": "c1", "type": "function", "function": {
        "name": "respond_to_user", "arguments": {"message": "proposed " + MARKUP}}}],
        author_kind="committee", author_name=MARKUP, reason=MARKUP, status="proposed")
    return tid


def build_db(path: Path, markup: bool = False) -> Path:
    db = open_db(path)
    with contextlib.chdir(ROOT):  # sources stay relative: the same in every checkout
        import_files(db, ["sample_traces"])
    a1 = first_assistant(db, 1)
    add_flag(db, 1, a1, "wrong_tool", "error", "called respond_to_user before searching")
    add_flag(db, 3, None, "mixed_trace", "warning", "looks like another product")
    a2 = first_assistant(db, 2)
    add_revision(db, 2, a2, tool_calls=[{"id": "p1", "type": "function", "function": {
        "name": "FindRestaurants", "arguments": {"city": "Fairfield", "cuisine": "Breakfast"}}}],
        author_kind="committee", author_name="committee-3", reason="2 of 3 votes",
        evidence={"votes": [1, 1, 0]}, status="proposed")
    if markup:
        add_markup_trace(db)
    db.close()
    return path


def app_config() -> Config:
    return Config(analyst="tester", theme="textual-dark", keys={})


def screen_text(app) -> str:
    """What the terminal shows now, as plain text (one line per row)."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(
        full=True, screen_stack=app._background_screens))
    return console.export_text()


def add_eval_runs(db, model_name: str = "smollm2-ft", prediction_text: str = "") -> tuple[int, int]:
    """Two finished evaluation runs on the same three turns: a baseline, then a registered
    model's run that is better on one turn, worse on another and the same on the third.
    `prediction_text` goes into the run's worse prediction (untrusted model output)."""
    from db.evals import add_results, create_run, finish_run
    from db.models import register_model
    from workbench.evaluation import run_metrics

    turns = [(t, first_assistant(db, t)) for t in (1, 2, 3)]
    ref = '{"name": "FindRestaurants", "arguments": {"city": "Fairfield"}}'

    def rows(scores: list[float], preds: list[str]) -> list[dict]:
        out = []
        for (tid, idx), s, p in zip(turns, scores, preds):
            out.append({"trace_id": tid, "message_idx": idx, "reference": ref, "prediction": p,
                        "staged_tool_call": s, "tool_call_equivalence": float(s == 1.0),
                        "function_match": float(s >= 0.5), "rouge_l": s / 2,
                        "details": {"reference_function": "FindRestaurants",
                                    "predicted_function": "FindRestaurants" if s >= 0.5
                                    else "respond_to_user"}})
        return out

    good = ref
    other = '{"name": "respond_to_user", "arguments": {"message": "hi"}}'
    close = '{"name": "FindRestaurants", "arguments": {"city": "Paris"}}'
    worse = ('{"name": "FindRestaurants", "arguments": {"town": "' + prediction_text + '"}}')
    sel = {"split": "test"}
    base = create_run(db, "base.gguf", test_selection=sel)
    r = rows([1.0, 0.25, 0.75], [good, other, close])
    add_results(db, base, r)
    finish_run(db, base, run_metrics(r))
    model = register_model(db, name=model_name, kind="gguf", path="model.gguf",
                           base_model="SmolLM2")
    run = create_run(db, model_name, model_id=model, test_selection=sel)
    r = rows([0.5, 1.0, 0.75], [worse, good, close])
    add_results(db, run, r)
    finish_run(db, run, run_metrics(r))
    return base, run


def sample_store(path: Path, suspect: tuple[int, ...] = ()) -> Path:
    """The sample traces in a new store, with a planted schema error on the first assistant
    turn of each trace in `suspect` (what the committee, relevance and agreement tests start
    from)."""
    db = open_db(path)
    with contextlib.chdir(ROOT):
        import_files(db, ["sample_traces"])
    for t in suspect:
        add_flag(db, t, first_assistant(db, t), "schema", "error", "planted")
    db.close()
    return path
