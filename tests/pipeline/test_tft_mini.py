"""bench/tft_mini.py's own parts: the pipeline file it writes is one `workbench pipeline`
accepts (so a renamed parameter breaks this test, not a long bench run), the subsets are fixed,
and the paired bootstrap is the turn-weighted difference of the means."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import tft_mini
from tests.conftest import REPO
from workbench.pipeline.config import load_pipeline

DATA = REPO / "tests" / "data" / "tft"


@pytest.mark.parametrize("scenario, committee", [(2, False), (4, False), (3, True)])
def test_the_pipeline_file_is_valid_and_curates_only_the_imported_traces(
        tmp_path: Path, scenario: int, committee: bool) -> None:
    cfg = tft_mini.parse(["--committee"] if committee else [])
    scen = tft_mini.scenario_dirs(DATA)[scenario]
    traces, test = tmp_path / "traces.jsonl", tmp_path / "test.jsonl"
    tft_mini.write_subset(scen / "traces.jsonl", traces, [0, 2])
    tft_mini.write_subset(DATA / "test.jsonl", test, [1])
    path = tmp_path / "pipeline.toml"
    path.write_text(tft_mini.pipeline_toml(scenario, scen, traces, test, cfg))
    pipe = load_pipeline(path, baseline="direct")
    expected = ["import", "check", "normalize", *(["relabel"] if committee else []),
                *(["synth"] if scenario == 4 else []), "train", "eval"]
    assert list(pipe.stages) == expected
    for stage in ("check", "normalize", *(["relabel"] if committee else [])):
        assert pipe.stages[stage].selection.split == "unassigned", stage
    train = pipe.stages["train"].params
    assert (train.max_steps, train.seqs_per_step, train.max_length, train.suspect) == (
        cfg.max_steps, cfg.seqs_per_step, cfg.max_length, "mask")
    assert pipe.stages["eval"].model_from_train
    if scenario == 4:
        assert pipe.stages["synth"].params.offline
        assert pipe.stages["synth"].params.target == cfg.synth_target
    assert test.read_text().splitlines() == [(DATA / "test.jsonl").read_text().splitlines()[1]]


def test_subsets_are_chosen_once() -> None:
    assert tft_mini.pick(327, 24) == tft_mini.pick(327, 24)
    assert len(set(tft_mini.pick(327, 24))) == 24 and tft_mini.pick(5, 24) == list(range(5))
    assert tft_mini.pick(34, 0) == list(range(34))


def test_paired_bootstrap_weights_turns_and_resamples_conversations() -> None:
    def conv(n: int, staged: float) -> dict:
        return {"n": n, **{m: staged * n for m in tft_mini.METRICS}}

    curated = {1: conv(10, 0.8), 2: conv(2, 0.5), 3: conv(4, 1.0)}
    direct = {1: conv(10, 0.6), 2: conv(2, 0.5), 3: conv(4, 0.5), 9: conv(5, 0.0)}
    d = tft_mini.paired_bootstrap(curated, direct, "staged_tool_call")
    assert d["conversations"] == 3                       # only those both scored
    assert d["delta"] == pytest.approx((8 + 1 + 4) / 16 - (6 + 1 + 2) / 16)
    assert 0 <= d["lo"] < d["delta"] < d["hi"]   # no conversation got worse: never below 0
    assert tft_mini.paired_bootstrap(curated, direct, "staged_tool_call") == d   # seeded
    assert tft_mini.goal_met(tft_mini.goal_of(1), 0.019) and not tft_mini.goal_met(
        tft_mini.goal_of(1), -0.03)
    assert tft_mini.goal_met(tft_mini.goal_of(4), 0.10) and not tft_mini.goal_met(
        tft_mini.goal_of(2), 0.04)


def test_a_resumed_report_names_the_code_of_both_attempts() -> None:
    """A run finished by other code than began it says so (its numbers may mix the two)."""
    config = {"scenarios": [4], "traces": 24, "test_conversations": 3, "max_steps": 6,
              "epochs": 1.0, "seqs_per_step": 1, "max_length": 1536, "lr": 0.001,
              "lora_r": 16, "synth_target": 19, "threads": 1, "base_model": None,
              "committee": False, "full": False}
    results = {"rev": "1111111", "data": "tft", "config": config, "test_lines": [2, 24, 26],
               "base": None, "scenarios": []}
    assert "rev 1111111," in tft_mini.report(results)
    results["resumed_rev"] = "2222222"
    assert "rev 1111111, resumed at rev 2222222," in tft_mini.report(results)
