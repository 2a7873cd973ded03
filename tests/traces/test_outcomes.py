"""Metadata and outcomes are data (issue #29): kept on import, selected by `--outcome` /
`--meta` everywhere the selection is, carried into training data and exported back; the
trainers' exports checked against their documented schemas; `weight: 0` out of the loss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from db import open_db
from db.flags import replace_flags
from db.queries import TraceFilter, parse_condition
from tests.traces.test_import import snapshot
from tests.tui_data import app_config, screen_text, until
from workbench.models.chat_template import IGNORE_INDEX
from workbench.cli import app
from workbench.conversations.view import conversations
from workbench.core.errors import InputError
from workbench.traces.exporting import export
from workbench.traces.importing import import_files
from workbench.training.data import (
    DataOptions,
    EmptySelectionError,
    encode_all,
    examples_for,
    load_conversations,
)

runner = CliRunner()
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look a thing up",
                                           "parameters": {"type": "object", "properties": {
                                               "q": {"type": "string"}}}}}]


def _record(i: int, reward: Any, tier: str, rating: str | None = None) -> dict:
    rec: dict[str, Any] = {"messages": [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function",
             "function": {"name": "lookup", "arguments": json.dumps({"q": f"q{i}"})}}]},
        {"role": "tool", "tool_call_id": f"c{i}", "content": f"answer {i}"},
        {"role": "assistant", "content": f"It is {i}."}],
        "tools": TOOLS, "reward": reward, "session": {"user_tier": tier, "region": "eu"},
        "request_id": f"r-{i}"}
    if rating is not None:
        rec["feedback"] = {"rating": rating}
    return rec


@pytest.fixture
def traces_file(tmp_path: Path) -> Path:
    rows = [_record(0, 1.0, "gold", "up"), _record(1, 0.25, "gold", "down"),
            _record(2, 0, "free"), _record(3, 0.5, "free", "up")]
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ids(db, flt: TraceFilter) -> list[int]:
    where, params = flt.where()
    return [r[0] for r in db.execute(f"SELECT id FROM traces WHERE {where} ORDER BY id",
                                     params)]


def test_metadata_and_outcomes_kept_and_selected(db, traces_file):
    [r] = import_files(db, [traces_file], outcomes=["feedback.rating"])
    assert r.outcomes == {"rating": 3, "reward": 4}
    convs = conversations(db)
    assert convs[0].outcomes == {"reward": 1.0, "rating": "up"}
    assert convs[2].outcomes == {"reward": 0}
    assert convs[1].metadata == {"reward": 0.25, "session": {"user_tier": "gold",
                                                             "region": "eu"},
                                 "request_id": "r-1", "feedback": {"rating": "down"}}
    assert _ids(db, TraceFilter(outcome=["reward<1"])) == [2, 3, 4]
    assert _ids(db, TraceFilter(outcome=["reward>=0.5"])) == [1, 4]
    assert _ids(db, TraceFilter(outcome=["rating=up"])) == [1, 4]
    assert _ids(db, TraceFilter(outcome=["rating"])) == [1, 2, 4]      # has one
    assert _ids(db, TraceFilter(outcome=["rating!=up"])) == [2, 3]
    assert _ids(db, TraceFilter(meta=["session.user_tier=gold"])) == [1, 2]
    assert _ids(db, TraceFilter(meta=["session.user_tier=gold"], outcome=["reward<1"])) == [2]
    assert _ids(db, TraceFilter(meta=["request_id=r-3"])) == [4]


def test_bad_conditions_and_outcome_values_are_refused(db, tmp_path):
    for bad in ("reward<abc", "<1", "reward<=true", ""):
        with pytest.raises(ValueError):
            parse_condition(bad)
    with pytest.raises(ValueError, match="--meta"):
        TraceFilter(meta=["a..b=1"])
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_record(0, 1, "gold")) + "\n"
                    + json.dumps({**_record(1, 1, "gold"), "outcomes": {"judge": [1, 2]}})
                    + "\n")
    before = snapshot(db)
    with pytest.raises(InputError, match=r"bad.jsonl:2: outcomes.judge: an outcome must be"):
        import_files(db, [path])
    assert snapshot(db) == before


def test_cli_outcome_and_meta_selection(db_path, traces_file, tmp_path):
    res = runner.invoke(app, ["--db", str(db_path), "import", str(traces_file),
                              "--outcome", "feedback.rating"])
    assert res.exit_code == 0, res.output
    assert "outcomes: rating (3), reward (4)" in res.output
    out = tmp_path / "sel.jsonl"
    res = runner.invoke(app, ["--db", str(db_path), "export", str(out), "--outcome", "reward<1",
                              "--meta", "session.user_tier=gold", "--json"])
    assert res.exit_code == 0, res.output
    [line] = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["outcomes"] == {"reward": 0.25, "rating": "down"}
    assert line["request_id"] == "r-1" and line["session"]["user_tier"] == "gold"
    res = runner.invoke(app, ["--db", str(db_path), "export", str(out), "--outcome",
                              "reward<high"])
    assert res.exit_code == 1 and "--outcome 'reward<high': < compares numbers" in res.output
    # a job command takes the same options (the selection is shared)
    res = runner.invoke(app, ["--db", str(db_path), "check", "--help"])
    assert "--outcome" in res.output and "--meta" in res.output


def test_outcome_survives_import_selection_training_data_and_export(db, traces_file,
                                                                     tmp_path):
    import_files(db, [traces_file], split="train", outcomes=["feedback.rating"])
    good = DataOptions(selection=TraceFilter(outcome=["reward>=0.5"]))
    convs = load_conversations(db, good)
    assert [c.outcomes["reward"] for c in convs] == [1.0, 0.5]
    out = tmp_path / "good.jsonl"
    export(db, out, "openai", good.selection)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["outcomes"] for x in lines] == [{"reward": 1.0, "rating": "up"},
                                               {"reward": 0.5, "rating": "up"}]
    db2 = open_db(tmp_path / "again.db")
    import_files(db2, [out])
    assert [c.outcomes for c in conversations(db2)] == [c.outcomes for c in convs]
    assert [c.metadata for c in conversations(db2)] == [c.metadata for c in convs]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from workbench.models.hf_loading import load_tokenizer

    return load_tokenizer(None)


def sup(ex) -> list[int]:
    """The supervised token ids of an example."""
    return [t for t in ex.labels if t != IGNORE_INDEX]


def test_weight_zero_turns_are_out_of_the_loss(db, tmp_path, tokenizer):
    rec = _record(0, 1, "gold")
    plain = json.loads(json.dumps(rec))
    rec["messages"][1]["weight"] = 0
    rec["messages"][0]["content"] = "another question"
    path = tmp_path / "w.jsonl"
    path.write_text(json.dumps(plain) + "\n" + json.dumps(rec) + "\n")
    import_files(db, [path], split="train")
    convs = load_conversations(db, DataOptions())
    assert [c.unweighted for c in convs] == [frozenset(), frozenset({1})]
    full, weighted = (examples_for(e, DataOptions()) for e in encode_all(tokenizer, convs))
    # the weighted conversation supervises only its last turn: the same tokens as the plain
    # one's last turn, none of the call's
    (a,), (b,) = full, weighted
    assert 0 < len(sup(b)) < len(sup(a))
    assert sup(a)[-len(sup(b)):] == sup(b)
    # also with suspect="train": the source's mask is not a flag the options can override
    (b2,) = examples_for(encode_all(tokenizer, convs[1:])[0], DataOptions(suspect="train"))
    assert sup(b2) == sup(b)


def _schema_checks(db, tmp_path) -> dict[str, list[dict]]:
    out = {}
    for fmt in ("llamafactory", "axolotl", "trl"):
        path = tmp_path / f"{fmt}.jsonl"
        out[fmt] = export(db, path, fmt)
        out[fmt]["lines_read"] = [json.loads(x) for x in path.read_text().splitlines()]
    return out


def test_trainer_exports_follow_their_documented_schemas(db, traces_file, tmp_path):
    path = tmp_path / "mixed.jsonl"
    rec = _record(9, 1, "gold")
    rec["messages"][1]["weight"] = 0     # the call turn: out of training
    greeting = {"messages": [{"role": "assistant", "content": "Hello! How can I help?"},
                             {"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "hi"}]}
    path.write_text(json.dumps(rec) + "\n" + json.dumps(greeting) + "\n")
    import_files(db, [traces_file, path])
    replace_flags(db, [1], ["schema"], [{"trace_id": 1, "message_idx": 3, "check": "schema",
                                         "severity": "error", "detail": "bad"}])
    got = _schema_checks(db, tmp_path)
    # LLaMA-Factory sharegpt: human/observation at odd positions, gpt/function_call at even,
    # tools a JSON string of function definitions; function_call values {name, arguments}
    lf = got["llamafactory"]
    assert lf["lines"] == 5 and lf["skipped_shape"] == 1 and lf["masks_lost"] == 2
    for line in lf["lines_read"]:
        assert set(line) <= {"conversations", "system", "tools", "kto_tag"}
        for k, turn in enumerate(line["conversations"]):
            assert set(turn) == {"from", "value"} and isinstance(turn["value"], str)
            assert turn["from"] in (("human", "observation") if k % 2 == 0
                                    else ("gpt", "function_call"))
            if turn["from"] == "function_call":
                call = json.loads(turn["value"])
                assert set(call) == {"name", "arguments"} and isinstance(call["arguments"], dict)
        tools = json.loads(line["tools"])
        assert all(set(t) >= {"name", "parameters"} for t in tools)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["llamafactory"]["formatting"] == "sharegpt"
    # axolotl chat_template: messages with role/content and a boolean `train` per message,
    # false on the weight-0 turn and the suspect turn
    ax = got["axolotl"]["lines_read"]
    for line in ax:
        assert all(isinstance(m["train"], bool) and m["role"] in ("system", "user", "assistant",
                                                                   "tool") for m in line["messages"])
    assert [m["train"] for m in ax[0]["messages"]] == [False, True, False, False]   # suspect
    assert [m["train"] for m in ax[4]["messages"]] == [False, False, False, True]   # weight 0
    # TRL conversational: messages + tools; calls as {type, function: {name, arguments: {}}}
    trl = got["trl"]["lines_read"]
    assert len(trl) == 6 and trl[0]["tools"] == TOOLS
    call = trl[0]["messages"][1]["tool_calls"][0]
    assert call["type"] == "function" and call["function"] == {"name": "lookup",
                                                               "arguments": {"q": "q0"}}
    assert all(set(m) <= {"role", "content", "tool_calls", "tool_call_id", "name"}
               for line in trl for m in line["messages"])


async def test_app_shows_outcomes_in_table_and_detail(db_path, traces_file):
    from widgets.trace_table import TraceTable
    from workbench.app import make_app
    from workbench.app.screens.detail import DetailScreen

    db = open_db(db_path)
    import_files(db, [traces_file], outcomes=["feedback.rating"])
    db.conn.close()
    app = make_app(db_path, app_config())
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "reward=1 +1" in screen_text(app))
        assert "outcome" in screen_text(app)
        # the search box takes the selection's outcome: and meta: terms
        await pilot.press("slash", *"outcome:reward<1 meta:session.user_tier=gold", "enter")
        await until(pilot, lambda: app.screen.query_one(TraceTable).row_count == 1)
        assert app.current_filter.outcome == ["reward<1"]
        assert app.current_filter.meta == ["session.user_tier=gold"]
        app.push_screen(DetailScreen(2))
        await until(pilot, lambda: "outcomes  reward=0.25  rating=down" in screen_text(app))


def test_search_box_terms_round_trip():
    from workbench.app.screens.traces import search_box_text, split_search

    text, outcome, meta = split_search('"a phrase" outcome:reward<1 word meta:tier=gold')
    assert (text, outcome, meta) == ('"a phrase" word', ["reward<1"], ["tier=gold"])
    flt = TraceFilter(text=text, outcome=outcome, meta=meta)
    assert split_search(search_box_text(flt)) == (text, outcome, meta)


def test_pipeline_file_names_outcomes_and_selects_by_them(traces_file, tmp_path):
    from workbench.pipeline.config import load_pipeline

    path = tmp_path / "pipe.toml"
    path.write_text(f'[import]\npaths = ["{traces_file.name}"]\noutcome = ["feedback.rating"]\n'
                    '[train]\nmax_steps = 1\n[train.selection]\noutcome = ["reward>=1"]\n'
                    'meta = "session.user_tier=gold"\n')
    cfg = load_pipeline(path)
    assert cfg.stages["import"].params["outcome"] == ["feedback.rating"]
    sel = cfg.stages["train"].selection
    assert (sel.outcome, sel.meta) == (["reward>=1"], ["session.user_tier=gold"])


def test_credentials_in_a_record_never_reach_the_store(db, tmp_path):
    rec = {**_record(0, 1, "gold"), "headers": {"Authorization": "Bearer abc123secret",
                                                "x-api-key": "sk-live-999999", "accept": "json"},
           "api_key": "sk-live-999999"}
    path = tmp_path / "keys.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    import_files(db, [path])
    [conv] = conversations(db)
    assert conv.metadata["headers"] == {"Authorization": "[redacted]", "x-api-key": "[redacted]",
                                        "accept": "json"}
    assert conv.metadata["api_key"] == "[redacted]"
    dump = "\n".join(str(r) for r in db.execute("SELECT metadata FROM traces"))
    assert "abc123secret" not in dump and "sk-live" not in dump


def test_flags_by_outcome_with_intervals(db, traces_file, db_path):
    from workbench.checks.outcome_flags import flags_by_outcome

    import_files(db, [traces_file], outcomes=["feedback.rating"])
    assert all(r["failed"]["flagged"] == r["successful"]["flagged"] == 0
               for r in flags_by_outcome(db))
    # rewards 1, 0.25, 0, 0.5: at or above the median 0.375 successful (traces 1, 4)
    replace_flags(db, [2, 3], ["schema"], [
        {"trace_id": t, "message_idx": 1, "check": "schema", "severity": "error",
         "detail": "bad"} for t in (2, 3)])
    [reward] = [r for r in flags_by_outcome(db) if r["outcome"] == "reward"]
    assert reward["split"] == "at or above the median 0.375 is successful"
    assert reward["failed"]["flagged"] == 2 and reward["failed"]["n"] == 2
    assert reward["successful"]["flagged"] == 0 and reward["successful"]["n"] == 2
    low, high = reward["failed"]["interval"]
    assert 0 < low < 1 == high         # 2 of 2: certain only that it is not small
    assert reward["successful"]["interval"][0] == 0
    assert "rating" not in {r["outcome"] for r in flags_by_outcome(db)}   # text: not split
    # the check command prints the comparison where outcomes exist
    db.conn.commit()
    res = runner.invoke(app, ["--db", str(db_path), "check", "--only", "schema"])
    assert res.exit_code == 0, res.output
    assert "error flags by outcome" in res.output and "reward" in res.output


def test_pipeline_report_shows_outcomes_before_and_after_curation(db, traces_file):
    from db.pipeline import data_counts
    from workbench.pipeline.report import report_markdown

    import_files(db, [traces_file], split="train", outcomes=["feedback.rating"])
    with db.conn:
        db.execute("UPDATE traces SET excluded = 1 WHERE id = 1")   # reward 1.0 left out
    d = data_counts(db)
    assert d["outcomes"] == {"reward": {"raw": {"traces": 4, "mean": 0.4375},
                                        "curated": {"traces": 3, "mean": 0.25}}}
    rep = {"pipeline_job": 1, "file": "p.toml", "folder": ".", "stages": [], "data": d,
           "training": None, "evaluation": None, "baseline": None}
    assert "| outcome reward: mean (traces) | 0.4375 (4) | 0.2500 (3) |" in report_markdown(rep)


def test_span_export_outcomes_are_stored_and_selected(db, tmp_path):
    """The span importers' outcomes (Langfuse scores) and trace metadata are kept like any
    format's: selectable, exported back."""
    spans = Path(__file__).parent.parent / "data" / "spans" / "langfuse-openai-agents.trace.json"
    [r] = import_files(db, [spans])
    assert r.format == "langfuse" and r.outcomes == {"hallucination": 1, "toxicity": 1}
    assert _ids(db, TraceFilter(outcome=["toxicity>0.5"])) == [1]
    assert _ids(db, TraceFilter(outcome=["toxicity<0.5"])) == []
    [conv] = conversations(db)
    assert conv.outcomes == {"toxicity": 0.8, "hallucination": 0}
    assert conv.metadata and "source_trace_id" in conv.metadata
    out = tmp_path / "lf.jsonl"
    export(db, out, "openai")
    assert json.loads(out.read_text())["outcomes"] == conv.outcomes


def test_training_weighted_by_an_outcome_resamples_conversations(db, tmp_path, tokenizer):
    """--outcome-weight reward: a conversation is trained on as many times as its reward in
    expectation (0: not at all, 2: twice, 0.5: once or not, the same way every run); the plan
    says how many were left out and repeated; a field nothing has leaves nothing to train."""
    from workbench.training.data import build_examples, outcome_copies, plan

    rows = [_record(0, 2, "gold"), _record(1, 0, "free"), _record(2, 1, "free"),
            _record(3, 0.5, "gold"), _record(4, True, "gold")]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_files(db, [path], split="train")
    encoded = encode_all(tokenizer, load_conversations(db, DataOptions()))
    copies = outcome_copies(encoded, "reward")
    assert [copies[e.trace_id] for e in encoded][:3] == [2, 0, 1]
    assert copies[encoded[3].trace_id] in (0, 1) and copies[encoded[4].trace_id] == 1
    assert outcome_copies(encoded, "reward") == copies          # the same draw every run
    opts = DataOptions(outcome_weight="reward")
    trained = [ex.trace_id for ex in build_examples(encoded, opts)]
    assert trained.count(encoded[0].trace_id) == 2 and encoded[1].trace_id not in trained
    assert len(trained) == sum(copies.values())
    assert len(build_examples(encoded, DataOptions())) == 5      # unweighted: each once
    p = plan(encoded, opts)["outcome_weight"]
    assert p["conversations_left_out"] >= 1 and p["conversations_repeated"] == 1
    with pytest.raises(EmptySelectionError, match="'rating' at 0 or not at all"):
        build_examples(encoded, DataOptions(outcome_weight="rating"))


def test_train_takes_outcome_weight_from_cli_and_pipeline(traces_file, tmp_path):
    from workbench.jobs.registry import get_spec

    params = get_spec("train").make_params({"outcome_weight": "reward"})
    assert params.data(TraceFilter()).outcome_weight == "reward"
    r = runner.invoke(app, ["--db", str(tmp_path / "w.db"), "train", "--help"])
    assert "--outcome-weight" in r.stdout


def test_the_trl_export_loads_with_trls_own_loader(tmp_path, tokenizer):
    """TRL installs here: its documented path (`datasets.load_dataset("json")`, then
    `trl.data_utils.apply_chat_template` with the tools) reads our export of text turns,
    parallel calls and a long policy, and renders every conversation with its calls."""
    import datasets
    from trl.data_utils import apply_chat_template, is_conversational

    db = open_db(tmp_path / "w.db")
    import_files(db, [Path(__file__).parent.parent / "data" / "labels" / "mixed_turns.jsonl"])
    out = tmp_path / "trl.jsonl"
    export(db, out, "trl", TraceFilter())
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert len(ds) == 2
    for ex in ds:
        assert is_conversational(ex)
        text = apply_chat_template(ex, tokenizer, tools=ex["tools"])["text"]
        assert ex["messages"][0]["content"][:40] in text
        assert all((m["content"] or "")[:20] in text for m in ex["messages"])
    db.conn.close()
