"""--max-length sized from the data (within the memory and the model's context) and windows
that start after a system prompt too long to keep."""

from __future__ import annotations

from types import SimpleNamespace

from workbench.models.chat_template import IGNORE_INDEX
from workbench.training.data import DataOptions, Encoded, examples_for, needed_length, plan
from workbench.training.estimate import training_bytes
from workbench.training.sizing import choose_max_length, describe

# SmolLM2-135M's sizes (its config.json)
SMOL = SimpleNamespace(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                       tie_word_embeddings=True, max_position_embeddings=8192)
GIB = 2**30


def encoded(prompt: int = 50) -> Encoded:
    """A conversation of token ids 0..: the system prompt and tools (`prompt` tokens), then
    user (10), assistant turn (10), user (10), assistant turn (15), user (10), assistant (5);
    a turn's loss starts after its 2-token header, as the template's does."""
    bounds, pos = [], prompt
    for size in (10, 10, 10, 15, 10, 5):
        bounds.append((pos, pos + size))
        pos += size
    starts = tuple(s for s, _ in bounds)
    turns = [(k, s + 2, e) for k, (s, e) in enumerate(bounds, 1) if k % 2 == 0]
    return Encoded(7, list(range(pos)), turns, frozenset(), prompt, starts)


def supervised(examples) -> list[int]:
    return [t for x in examples for t in x.labels if t != IGNORE_INDEX]


def test_a_prompt_longer_than_max_length_trains_the_turns_on_the_latest_messages() -> None:
    enc = encoded(prompt=50)                       # turns end at 70, 95, 110
    whole = examples_for(enc, DataOptions())       # no limit: one sequence
    assert len(whole) == 1 and len(whole[0].input_ids) == 110
    short = examples_for(enc, DataOptions(max_length=40))   # the prompt alone is 50
    assert supervised(short) == supervised(whole)           # every turn, none lost
    for x in short:
        assert len(x.input_ids) <= 40
        assert x.input_ids[0] in enc.starts and x.input_ids[0] >= 50   # after the prompt,
        # at a message's start, and the user's message before the turn is there
    assert short[0].input_ids[:10] == list(range(50, 60))
    p = plan([enc], DataOptions(max_length=40))
    assert p["turns_without_prompt"] == 3 and p["windowed_turns"] == 0
    assert p["turns_past_max_length"] == 0
    assert p["length_keeping_prompt"] == 50 + 25   # prompt + the longest user message + turn
    # with that length every window keeps the prompt
    keep = plan([enc], DataOptions(max_length=p["length_keeping_prompt"]))
    assert keep["turns_without_prompt"] == 0 and keep["turns_past_max_length"] == 0
    kept = examples_for(enc, DataOptions(max_length=75))
    assert all(x.input_ids[:50] == list(range(50)) for x in kept)
    # a turn that does not fit even alone is left out, and said so
    tiny = plan([enc], DataOptions(max_length=12))
    assert tiny["turns_past_max_length"] == 1 and tiny["turns_without_prompt"] == 2


def test_needed_length_is_the_end_of_the_last_supervised_turn() -> None:
    enc = encoded()
    assert needed_length([enc], DataOptions()) == 110
    masked = Encoded(**{**enc.__dict__, "suspect": frozenset({6})})
    assert needed_length([masked], DataOptions()) == 95          # its loss is masked
    assert needed_length([masked], DataOptions(suspect="train")) == 110
    assert needed_length([masked], DataOptions(suspect="drop")) == 0


def test_memory_estimate_matches_what_was_measured() -> None:
    """1.5 GiB live for SmolLM2-135M on a 4,096-token conversation on a CPU, checkpointing on
    (training/memory.py); without checkpointing much more."""
    on = training_bytes(SMOL, 4096, weight_bytes=4, act_bytes=4, checkpointing=True,
                        supervised=0.2)
    assert 1.0 * GIB < on < 2.2 * GIB
    off = training_bytes(SMOL, 4096, weight_bytes=4, act_bytes=4, checkpointing=False,
                         supervised=0.2)
    assert off > 3 * on


def test_max_length_from_the_data_the_memory_or_the_context() -> None:
    enc = encoded()
    kw = {"device": "cpu", "bf16": False, "checkpointing": True}
    s = choose_max_length([enc], DataOptions(), SMOL, available=16 * GIB, **kw)
    assert (s["max_length"], s["limited_by"]) == (110, "data")
    assert "--max-length 110 (from the data: the longest conversation" in describe(s)
    long = Encoded(**{**enc.__dict__, "turns": [(2, 20_000, 30_000)],
                      "input_ids": list(range(30_000))})
    s = choose_max_length([long], DataOptions(), SMOL, available=16 * GIB, **kw)
    assert (s["max_length"], s["limited_by"]) == (8192, "context")
    s = choose_max_length([long], DataOptions(), SMOL, available=2 * GIB, **kw)
    assert s["limited_by"] == "memory" and 512 <= s["max_length"] < 8192
    assert s["max_length"] % 64 == 0 and s["max_length"] == s["memory_tokens"] // 64 * 64
    assert "GiB available on cpu" in describe(s)
    more = choose_max_length([long], DataOptions(), SMOL, available=4 * GIB, **kw)
    assert more["max_length"] > s["max_length"]


def test_the_pipeline_report_says_which_length_training_used() -> None:
    from workbench.pipeline.report import _max_length_of

    s = choose_max_length([encoded()], DataOptions(), SMOL, available=16 * GIB, device="cpu",
                          bf16=False, checkpointing=True)
    assert _max_length_of({"max_length": 110, "sizing": s}) == describe(s)
    assert _max_length_of({"max_length": 2048, "sizing": None}) == "--max-length 2,048 (given)"
    assert _max_length_of(None) is None
