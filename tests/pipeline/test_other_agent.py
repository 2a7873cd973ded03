"""The whole loop on another agent's logs, from the command line with defaults.

τ-bench airline conversations of gpt-4o (`tests/data/tau-airline`, the half named `tune`): text
replies beside calls, a 6,000-character policy as the system prompt, nested arguments, a reward
per conversation and a user id in the metadata. Nothing here is tuned on them: import, check,
split by user, `pipeline init` and `pipeline run` (only the base model is swapped for a tiny one,
so the run takes a minute), identical predictions scoring 1.0, offline synthesis accepting most
candidates, exports that re-import identically.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.training.test_training import gguf_tokenizer, tiny_model_dir  # noqa: F401 - fixtures
from workbench.cli import app

CORPUS = Path(__file__).parent.parent / "data" / "tau-airline" / "tune.jsonl"
runner = CliRunner()


def wb(db: Path, *args: str) -> dict | str:
    r = runner.invoke(app, ["--db", str(db), *args])
    assert r.exit_code == 0, (args, r.output)
    return json.loads(r.stdout) if "--json" in args else r.stdout


@pytest.fixture
def store(tmp_path: Path) -> Path:
    lines = CORPUS.read_text().splitlines()[:16]
    src = tmp_path / "data" / "airline.jsonl"
    src.parent.mkdir()
    src.write_text("\n".join(lines) + "\n")
    db = tmp_path / "w.db"
    wb(db, "import", str(src))
    return db


def test_import_check_and_split_by_user(store: Path) -> None:
    stats = wb(store, "stats", "--json")
    assert stats["traces"] == 16 and stats["assistant_turns"] > stats["tool_calls"] / 2
    out = wb(store, "check")
    assert "error flags by outcome" in out          # rewards are outcomes, compared with flags
    split = wb(store, "split", "--test", "25%", "--by", "user_id", "--seed", "1", "--json")
    assert split["splits"]["test"] >= 3 and split["splits"]["train"] >= 10
    users: dict[str, set[str]] = {}
    for name in ("train", "test"):
        out_file = store.parent / f"{name}.jsonl"
        wb(store, "export", str(out_file), "--format", "openai", "--split", name)
        for line in out_file.read_text().splitlines():
            rec = json.loads(line)
            users.setdefault(rec["meta"]["user_id"], set()).add(name)
    assert all(len(s) == 1 for s in users.values()), users   # one user, one split
    again = wb(store, "split", "--test", "25%", "--by", "user_id", "--seed", "1", "--json")
    assert again["splits"] == split["splits"]                  # a rerun changes nothing


def test_identical_predictions_score_one_on_every_metric(store: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    wb(store, "export", str(pairs), "--format", "pairs")
    ident = tmp_path / "ident.jsonl"
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    ident.write_text("".join(json.dumps({"answer": r["answer"], "prediction": r["answer"]}) + "\n"
                             for r in rows))
    scores = wb(store, "score", str(ident), "--json")
    assert scores["text_turns"] > 0 and scores["call_turns"] > 0
    for metric in ("decision", "staged_tool_call", "tool_call_equivalence", "function_match",
                   "rouge_l", "text_rouge_l"):
        assert scores[metric] == 1.0, metric
    assert scores["floor"]["decision"] < 1.0


def test_exports_re_import_identically(store: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.jsonl"
    wb(store, "export", str(first), "--format", "openai")
    other = tmp_path / "other.db"
    wb(other, "import", str(first))
    second = tmp_path / "second.jsonl"
    wb(other, "export", str(second), "--format", "openai")
    a = [json.loads(line) for line in first.read_text().splitlines()]
    b = [json.loads(line) for line in second.read_text().splitlines()]
    assert [r["messages"] for r in a] == [r["messages"] for r in b]
    assert [r.get("outcomes") for r in a] == [r.get("outcomes") for r in b]
    assert all(r["outcomes"]["reward"] in (0, 1) for r in a)


def test_offline_synthesis_accepts_most_candidates(store: Path) -> None:
    wb(store, "check")
    res = wb(store, "synth", "--offline", "--target", "6", "--json")
    assert res["accepted"] == 6
    assert res["accepted"] / res["candidates"] > 0.5, res


@pytest.mark.slow
def test_pipeline_init_and_run_with_defaults(store: Path, tiny_model_dir: Path,  # noqa: F811
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(store.parent)
    wb(store, "split", "--test", "2", "--seed", "1")
    wb(store, "pipeline", "init", "pipe.toml")
    text = (store.parent / "pipe.toml").read_text()
    assert "max_length = 4096" not in text                   # sized from the data at run time
    # the defaults, but a tiny base model and one test conversation: a minute, not an hour
    text = text.replace("[train]    #", f'[train]\nbase_model = "{tiny_model_dir}"\nlora_r = 4\n#')
    # the tiny model's own context (4,096 tokens) is shorter than the airline policy: give the
    # evaluation the context SmolLM2, the default base model, has
    text = text.replace("[eval]    #", "[eval]\nmax_tokens = 8\nn_ctx = 8192\n#", 1)
    text += "\n[eval.selection]\nlimit = 1\n"
    (store.parent / "pipe.toml").write_text(text)
    rep = wb(store, "pipeline", "run", "pipe.toml", "--json")
    assert [(s["stage"], s["status"]) for s in rep["stages"]] == [
        (name, "succeeded") for name in ("import", "check", "normalize", "train", "eval")]
    assert rep["training"] and "decision" in json.dumps(rep["evaluation"])
    report = (store.parent / rep["folder"] / "report.md").read_text()
    assert "decision" in report and "outcome reward" in report
