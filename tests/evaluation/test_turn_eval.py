"""Evaluation of every kind of assistant turn (text, one call, several calls at once, text with
calls) and the one system prompt of a conversation that chat, replay and evaluation share.

The corpus is five public conversations of two other agents (`tests/data/tau-airline`: a
6,155-char policy as the system prompt, text replies, text with a call; `tests/data/bfcl-multi-
turn`: several calls at once, no system prompt of their own); the commands run for real (typer
CliRunner, SQLite files, a scripted OpenAI-compatible server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db import evals as eval_store
from db import open_db
from db.queries import TraceFilter
from tests.scripted_openai import ScriptedServer
from workbench.cli import app
from workbench.conversations.view import (conversation, new_conversation_system, system_prompt,
                                         task_context)
from workbench.evaluation import Selection, expand_pairs, report, trace_ids
from workbench.traces.importing import import_files
from workbench.conversations.messages import normalize_messages, turn_answer
from workbench.evaluation.metrics import (TURN_METRICS, constant_floor, read_turn, score_pair, score_rows,
                               score_turn)
from workbench.conversations.toolcalls import format_tool_call

DATA = Path(__file__).parent.parent / "data"
PICKED = {"tau-airline/heldout.jsonl": (68, 92, 93),        # 0-based line numbers
          "bfcl-multi-turn/heldout.jsonl": (63, 64)}
LINES = [(DATA / name).read_text(encoding="utf-8").splitlines()[i]
         for name, picked in PICKED.items() for i in picked]
RECORDS = [json.loads(line) for line in LINES]
POLICY = RECORDS[0]["messages"][0]["content"]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    return path


def call(name: str, **args) -> str:
    return json.dumps({"name": name, "parameters": args})


def tagged(*calls: tuple[str, dict], text: str = "") -> str:
    return "\n".join([text] * bool(text) + [format_tool_call(n, a) for n, a in calls])


# ------------------------------------------------------------------------- the definitions

def test_a_turn_is_its_text_and_its_calls() -> None:
    assert read_turn("Your flight is booked.").decision == "text"
    assert read_turn(call("f", a=1)).decision == "f"
    several = read_turn(tagged(("g", {}), ("f", {"a": 1})))
    assert several.decision == "f + g" and several.text == ""
    both = read_turn(tagged(("f", {"a": 1}), text="Let me look that up."))
    assert (both.text, both.decision) == ("Let me look that up.", "f")
    assert read_turn('<tool_call>\n{"name": "f", "arguments": {\n</tool_call>').decision == \
        "(malformed)"
    assert read_turn("").decision == "(empty)"
    # the reference string of a stored turn reads back as that turn
    msg = normalize_messages([{"role": "assistant", "content": "Checking both.", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": [1]}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}])[0]
    turn = read_turn(turn_answer(msg))
    assert turn.text == "Checking both."
    assert [(c["name"], c["arguments"]) for c in turn.calls] == [("f", {"x": [1]}), ("g", {})]


@pytest.mark.parametrize("prediction", [
    call("f", a=1, b="x"), call("f", a=1, b="y"), call("f", a=1), call("g", a=1), "",
    "not a call", tagged(("f", {"a": 1, "b": "x"}), ("f", {"a": 1, "b": "x"})),
    tagged(("f", {"a": 1, "b": "x"}), text="Sure."), '{"name": "f", "arguments": {'])
def test_one_call_turns_score_exactly_as_the_benchmark(prediction: str) -> None:
    answer = call("f", a=1, b="x")
    turn, bench = score_turn(answer, prediction), score_pair(answer, prediction)
    assert {k: turn[k] for k in bench} == bench
    assert turn["text_rouge_l"] is None          # the reference has no text


def test_the_benchmark_test_set_scores_as_the_benchmark() -> None:
    """Every TFT test answer against itself, against the next answer, and with a value changed:
    the turn scores of these one-call turns are the benchmark's, and the means too."""
    lines = (DATA / "tft" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    answers = [json.loads(line)["answer"] for line in lines if line.strip()]
    rows = []
    for i, a in enumerate(answers):
        obj = json.loads(a)
        key = sorted(obj["parameters"])[0]
        changed = json.dumps({**obj, "parameters": {**obj["parameters"], key: "other"}})
        for prediction in (a, answers[(i + 1) % len(answers)], changed):
            turn, bench = score_turn(a, prediction), score_pair(a, prediction)
            assert {k: turn[k] for k in bench} == bench
            rows.append({"answer": a, "prediction": prediction})
    result = score_rows(rows)
    assert result["call_turns"] == result["n"] == 3 * len(answers)
    for key in bench:
        assert result[key] == pytest.approx(sum(score_pair(r["answer"], r["prediction"])[key]
                                                for r in rows) / len(rows))


def test_several_calls_at_once_are_matched_as_a_set() -> None:
    a, b = ("find", {"city": "Oakland"}), ("weather", {"day": 2})
    ref = tagged(a, b)
    swapped = score_turn(ref, tagged(b, a))
    assert all(swapped[k] == 1.0 for k in ("decision", "staged_tool_call",
                                             "tool_call_equivalence", "function_match"))
    missing = score_turn(ref, tagged(a))
    assert (missing["decision"], missing["staged_tool_call"], missing["tool_call_equivalence"],
            missing["function_match"]) == (0.0, 0.5, 0.0, 0.5)
    extra = score_turn(ref, tagged(b, ("other", {}), a))
    assert extra["staged_tool_call"] == pytest.approx(2 / 3)
    assert extra["function_match"] == pytest.approx(2 / 3)
    one_value = score_turn(ref, tagged(("weather", {"day": 3}), a))
    assert one_value["staged_tool_call"] == pytest.approx((1.0 + 0.75) / 2)
    assert one_value["decision"] == 1.0 and one_value["tool_call_equivalence"] == 0.0
    # pairs go by best match, not by position
    assert score_turn(tagged(a, a), tagged(("find", {"city": "X"}), a))[
        "staged_tool_call"] == pytest.approx((1.0 + 0.75) / 2)


def test_text_turns_are_scored_by_their_decision_and_rouge_l() -> None:
    ref = "Your reservation ABC123 is cancelled and the refund goes to your card."
    same = score_turn(ref, ref)
    assert same["decision"] == same["text_rouge_l"] == same["rouge_l"] == 1.0
    assert same["staged_tool_call"] is None    # no call metric on a text turn
    close = score_turn(ref, "The reservation ABC123 is cancelled; the refund goes to the card.")
    assert close["decision"] == 1.0 and 0.5 < close["text_rouge_l"] < 1.0
    called = score_turn(ref, call("cancel_reservation", reservation_id="ABC123"))
    assert called["decision"] == 0.0 and called["text_rouge_l"] == 0.0
    assert called["predicted_decision"] == "cancel_reservation"
    # text with a call: both parts are scored
    ref2 = tagged(("f", {"a": 1}), text="One moment while I check.")
    mixed = score_turn(ref2, tagged(("f", {"a": 1}), text="One moment, I check."))
    assert mixed["decision"] == mixed["staged_tool_call"] == 1.0
    assert 0.5 < mixed["text_rouge_l"] < 1.0
    result = score_rows([{"answer": ref, "prediction": ref}, {"answer": ref2, "prediction": ""}])
    assert (result["call_turns"], result["text_turns"]) == (1, 2)
    assert result["staged_tool_call"] == 0.0 and result["decision"] == 0.5


def test_the_floor_uses_the_same_definitions() -> None:
    answers = ["Anything else?", "Anything else?", "Which city?", call("find", city="Oakland"),
               call("find", city="Oakland"), call("find", city="Oakland"),
               call("find", city="Paris"),
               tagged(("find", {"city": "Oakland"}), ("weather", {"day": 1})),
               '{"name": "find", "parameters": ']
    floor = constant_floor(answers)
    assert (floor["decision_label"], floor["decision"]) == ("find", 4 / 9)
    assert (floor["function"], floor["arguments"]) == ("find", {"city": "Oakland"})
    assert floor["n"] == 6             # call turns, the broken reference among them
    # what the constant call really scores under score_turn, over the same call turns
    scored = score_rows({"answer": a, "prediction": floor["call"]} for a in answers)
    for key in ("staged_tool_call", "function_match", "tool_call_equivalence"):
        assert scored[key] == pytest.approx(floor[key])
    assert floor["staged_tool_call"] == pytest.approx((1 + 1 + 1 + 0.75 + 0.5 + 0) / 6)
    texted = score_rows({"answer": a, "prediction": floor["text"]} for a in answers)
    assert floor["text"] == "Anything else?"
    assert texted["text_rouge_l"] == pytest.approx(floor["text_rouge_l"])
    # a corpus of text replies only still has a floor
    assert constant_floor(["Hi.", "Hi.", "Bye."])["decision"] == 1.0
    assert constant_floor([]) is None


# ---------------------------------------------------------- a corpus of text-reply agents

def _turn_kinds(records: list[dict]) -> set[str]:
    kinds = set()
    for r in records:
        for m in r["messages"]:
            if m["role"] == "assistant":
                calls = m.get("tool_calls") or []
                kinds.add("several" if len(calls) > 1 else "call" if calls else "text")
                if calls and (m.get("content") or "").strip():
                    kinds.add("text+call")
    return kinds


def test_the_corpus_has_every_kind_of_turn() -> None:
    assert _turn_kinds(RECORDS) == {"text", "call", "several", "text+call"}
    assert len(POLICY) > 5000


def test_identical_predictions_score_one_on_every_metric(tmp_path: Path,
                                                         corpus: Path) -> None:
    runner = CliRunner()
    base = ["--db", str(tmp_path / "w.db")]
    assert runner.invoke(app, [*base, "import", str(corpus)]).exit_code == 0
    pairs = tmp_path / "pairs.jsonl"
    done = runner.invoke(app, [*base, "export", str(pairs), "--format", "pairs"])
    assert done.exit_code == 0, done.output
    answers = [json.loads(line)["answer"] for line in pairs.read_text().splitlines()]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"answer": a, "prediction": a}) + "\n" for a in answers))
    scored = runner.invoke(app, ["score", str(preds), "--json"])
    assert scored.exit_code == 0, scored.output
    result = json.loads(scored.stdout)
    assert result["n"] == len(answers) == sum(
        m["role"] == "assistant" for r in RECORDS for m in r["messages"])
    for key in TURN_METRICS:
        assert result[key] == 1.0, key
    assert 0 < result["call_turns"] < result["n"] and 0 < result["text_turns"] < result["n"]
    conf = result["confusion"]
    assert all(set(row) == {ref} for ref, row in conf.items())     # only the diagonal
    assert "text" in conf and any(" + " in ref for ref in conf)
    human = runner.invoke(app, ["score", str(preds)])
    assert human.exit_code == 0 and "decision confusion" in human.stdout
    assert "text_rouge_l" in human.stdout


def _reference_reply(body: dict) -> dict:
    """The corpus's own next assistant message for the conversation the request holds: an
    oracle model, as an OpenAI-compatible endpoint answers (content and tool_calls)."""
    sent = [m for m in body["messages"] if m["role"] != "system"]
    for r in RECORDS:
        own = [m for m in r["messages"] if m["role"] != "system"]
        if len(own) > len(sent) and [m.get("content") or "" for m in own[:len(sent)]] == \
                [m.get("content") or "" for m in sent]:
            nxt = own[len(sent)]
            if nxt["role"] == "assistant":
                out = {"content": nxt.get("content")}
                if nxt.get("tool_calls"):
                    out["tool_calls"] = nxt["tool_calls"]
                return out
    return {"content": "no such conversation"}


def test_eval_of_the_reference_model_scores_one_and_runs_under_each_policy(
        tmp_path: Path, corpus: Path) -> None:
    judged: list[str] = []

    def judge(body: dict) -> dict:
        prompt = body["messages"][-1]["content"]
        judged.append(prompt)
        ref, pred = prompt.split("# Reference\n")[1].split("\n\n# Prediction\n")
        same = read_turn(ref) == read_turn(pred)    # the same text and calls, in any shape
        return {"content": json.dumps({"verdict": "good" if same else "bad"})}

    with ScriptedServer(_reference_reply) as model, ScriptedServer(judge) as judge_server:
        runner = CliRunner()
        db_path = tmp_path / "w.db"
        out = runner.invoke(app, ["--db", str(db_path), "eval", "--endpoint",
                                  f"{model.url}#m", "--judge", f"{judge_server.url}#j",
                                  "--test", str(corpus), "--json"])
        assert out.exit_code == 0, out.output
        rep = json.loads(out.stdout)
        m = rep["metrics"]
        # (`rouge_l` is the benchmark's, on raw strings: a call written as the endpoint's
        # `<tool_call>` text is not the bare reference string)
        for key in ("decision", "staged_tool_call", "tool_call_equivalence", "function_match",
                    "text_rouge_l", "llm_as_a_judge"):
            assert m[key] == 1.0, key
        assert m["errors"] == 0 and m["unjudged"] == 0
        assert m["n"] == m["turns"] == sum(
            msg["role"] == "assistant" for r in RECORDS for msg in r["messages"])
        assert all(set(row) == {ref} for ref, row in rep["confusion"].items())
        # each conversation was predicted under its own system prompt, given once
        for body in model.requests:
            systems = [msg for msg in body["messages"] if msg["role"] == "system"]
            first_user = next(msg["content"] for msg in body["messages"] if msg["role"] == "user")
            rec = next(r for r in RECORDS if any(msg.get("content") == first_user
                                                 for msg in r["messages"]))
            own = rec["messages"][0]["content"] if rec["messages"][0]["role"] == "system" else None
            assert [s["content"] for s in systems] == ([own] if own else [])
        # the judge saw the policy once, as the policy, beside the reference
        with_policy = [p for p in judged if "# Policy (the assistant's system prompt)" in p]
        assert with_policy and all(p.count(POLICY) == 1 for p in with_policy)
        # the human report and the stored rows agree
        db = open_db(db_path)
        rows = eval_store.results(db, rep["run_id"])
        assert report(db, rep["run_id"])["metrics"]["decision"] == 1.0
        assert {r["details"]["call_turn"] for r in rows} == {True, False}
        # the pipeline report states the same means, floor and decisions
        from workbench.pipeline.report import DATA_ROWS, _eval_summary, report_markdown

        summary = _eval_summary(db, {"id": 1, "result": {"run_id": rep["run_id"]}})
        assert summary["metrics"] == {k: m[k] for k in summary["metrics"]}
        assert summary["floor"]["decision"] == rep["floor"]["decision"]
        counts = {k: 0 for k, _ in DATA_ROWS}
        md = report_markdown({
            "pipeline_job": 1, "file": "p.toml", "stages": [], "training": None,
            "data": {"raw": counts, "curated": counts, "relabelled_by": {},
                     "test": {"traces": 5, "turns": m["n"]}},
            "evaluation": summary, "baseline": None})
        assert "| decision | 1.0000 |" in md and "| text_rouge_l | 1.0000 |" in md
        assert f"The commonest decision on every turn (`{rep['floor']['decision_label']}`)" in md
        assert "| text |" in md and f"{m['call_turns']} call turns" in md
        db.conn.close()


class AlwaysText:
    """A model that always replies in text (never calls)."""

    name, template_note = "always-text", None

    def complete(self, messages, tools=None, system=None, *, max_tokens=256, on_token=None):
        from workbench.models.chat_backend import Completion

        return Completion(text="I can help with that.")

    def close(self) -> None:
        pass


async def test_a_wrong_decision_shows_in_the_report_and_the_results_screen(
        db, db_path: Path, corpus: Path) -> None:
    from tests.tui_data import app_config, screen_text, until
    from workbench.app import make_app
    from tests.job_support import run_body
    from workbench.evaluation import evaluation_body

    import_files(db, [corpus], split="test")
    job = run_body(db, "eval", evaluation_body(AlwaysText(), Selection()))
    rep = report(db, job["result"]["run_id"])
    m, floor = rep["metrics"], rep["floor"]
    assert m["staged_tool_call"] == 0.0 and 0.0 < m["decision"] < 1.0
    assert m["decision"] == pytest.approx(rep["confusion"]["text"]["text"] / m["n"])
    assert set().union(*rep["confusion"].values()) == {"text"}
    assert floor["decision_label"] in rep["confusion"]
    assert rep["worst"][0]["decision"] == 0.0 and rep["worst"][0]["staged_tool_call"] == 0.0
    db.conn.close()

    app = make_app(db_path, app_config())
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("R")
        await until(pilot, lambda: type(app.screen).__name__ == "ResultsScreen"
                    and app.screen.report is not None)
        scr = app.screen
        assert f"decision {m['decision']:.3f}" in screen_text(app)
        tools = scr.query_one("#per-tool")
        rows = {str(tools.get_row_at(i)[0]): tools.get_row_at(i) for i in range(tools.row_count)}
        assert str(rows["text"][2]) == "1.000" and str(rows["text"][3]) == "-"   # no call metric
        assert any(" + " in name for name in rows)
        matrix = scr.query_one("#confusion")
        assert [str(c.label) for c in matrix.columns.values()][1:] == ["text"]


# ------------------------------------------------------------ the conversation's system prompt

def test_one_system_prompt_for_chat_replay_and_evaluation(db, db_path: Path,
                                                          corpus: Path) -> None:
    from db.tasks import update_task

    assert system_prompt([{"role": "system", "content": "own"}], "task's") == "own"
    assert system_prompt([{"role": "user", "content": "hi"}], "task's") == "task's"
    assert system_prompt([], None) is None
    import_files(db, [corpus], split="train")
    update_task(db, source="t", description="The task's short description.")
    task = task_context(db)
    # evaluation: each pair carries its conversation's own policy, else the task's
    pairs = [p for c in expand_pairs(db, trace_ids(db, Selection(TraceFilter(split="train"))))
             for p in c]
    own = {p.trace_id for p in pairs if p.system == POLICY}
    assert own and {p.system for p in pairs if p.trace_id not in own} == {task.description}
    conv = conversation(db, min(own))
    assert conv.system_prompt == POLICY and conv.system is None     # nothing added twice
    # a new chat: the prompt most stored conversations have (3 of 5 here bring the policy)
    assert new_conversation_system(db, task) == POLICY
    db.conn.close()

    with ScriptedServer(lambda body: {"content": "Hello, how can I help?"}) as server:
        runner = CliRunner()
        base = ["--db", str(db_path)]
        chat = runner.invoke(app, [*base, "chat", "--endpoint", f"{server.url}#m"],
                             input="Hello\n/history\n/quit\n")
        assert chat.exit_code == 0, chat.output
        assert server.requests[0]["messages"][0] == {"role": "system", "content": POLICY}
        assert "Airline Agent Policy" in POLICY and "Airline Agent Policy" in chat.stdout
        assert "The task's short description" not in chat.stdout
        replay = runner.invoke(app, [*base, "chat", "--endpoint", f"{server.url}#m",
                                     "--replay", str(min(own))])
        assert replay.exit_code == 0, replay.output
        assert "text score" in replay.stdout
        for body in server.requests[1:]:
            systems = [m["content"] for m in body["messages"] if m["role"] == "system"]
            assert systems == [POLICY]
