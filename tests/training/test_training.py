"""Training: data masks and plan, loss normalisation, a tiny model end to end, resume, errors."""

from __future__ import annotations

import dataclasses

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from db import open_db
from db.flags import replace_flags
from db.models import list_models
from workbench.models.chat_template import IGNORE_INDEX, per_turn_prompts, render
from workbench.cli import app
from workbench.models.hf_loading import BaseModelError, resolve_base_model
from workbench.traces.importing import import_files
from workbench.training.data import (
    DataOptions,
    EmptySelectionError,
    build_examples,
    encode_all,
    examples_for,
    load_conversations,
    plan,
)

runner = CliRunner()

TOOLS = [{"type": "function", "function": {
    "name": "FindRestaurants", "description": "Find restaurants",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "cuisine": {"type": "string"}}}}}]


def _conversation(i: int) -> dict:
    city = ["Oakland", "Zürich", "Fairfield", "San Jose", "Napa", "Dublin"][i % 6]
    return {"tools": TOOLS, "messages": [
        {"role": "user", "content": f"I want food in {city} for {i + 2} people"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {
                "name": "FindRestaurants",
                "arguments": json.dumps({"city": city, "cuisine": "Italian"})}}]},
        {"role": "tool", "tool_call_id": f"c{i}", "content": f'[{{"name": "Place {i}"}}]'},
        {"role": "assistant", "content": f"Place {i} in {city} is good."},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "You're welcome!"},
    ]}


def make_db(path: Path, n: int = 6) -> Any:
    src = path.parent / f"{path.stem}-traces.jsonl"
    src.write_text("".join(json.dumps(_conversation(i)) + "\n" for i in range(n)))
    db = open_db(path)
    import_files(db, [src], split="train")
    return db


@pytest.fixture
def train_db(tmp_path: Path) -> Any:
    db = make_db(tmp_path / "train.db")
    yield db
    db.conn.close()


@pytest.fixture(scope="session")
def gguf_tokenizer() -> Any:
    """SmolLM2's tokenizer loaded from the GGUF through the project's one loader."""
    from workbench.models.hf_loading import load_tokenizer

    return load_tokenizer(None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, gguf_tokenizer: Any) -> Path:
    """A random 3.2M-parameter Qwen3 with SmolLM2's tokenizer, saved as a HF directory."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    im_end = gguf_tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         tie_word_embeddings=True, vocab_size=49152, max_position_embeddings=4096,
                         bos_token_id=gguf_tokenizer.bos_token_id, eos_token_id=im_end,
                         pad_token_id=im_end)
    model = Qwen3ForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-qwen3")
    model.save_pretrained(out)
    gguf_tokenizer.save_pretrained(out)
    return out


# ---------------------------------------------------------------- base models and errors

def test_bad_base_model_paths(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="no such file"):
        resolve_base_model(tmp_path / "missing")
    with pytest.raises(BaseModelError, match="not a model directory"):
        resolve_base_model(tmp_path)
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(BaseModelError, match=".gguf"):
        resolve_base_model(tmp_path / "weights.bin")
    assert resolve_base_model(None).is_gguf
    assert resolve_base_model("Qwen/Qwen3-0.6B").source == "Qwen/Qwen3-0.6B"


def test_cli_bad_base_model_and_empty_selection(tmp_path: Path, train_db: Any) -> None:
    db_path = train_db.conn.execute("PRAGMA database_list").fetchone()[2]
    r = runner.invoke(app, ["--db", db_path, "train", "--base-model", str(tmp_path / "nope"),
                            "--plan"])
    assert r.exit_code == 1 and "no such file or directory" in r.output
    r = runner.invoke(app, ["--db", db_path, "train", "--split", "test", "--plan"])
    assert r.exit_code == 1 and "no training data" in r.output
    with pytest.raises(EmptySelectionError):
        build_examples([], DataOptions())


# ---------------------------------------------------------------- data, masks, plan

@pytest.mark.slow
def test_masks_and_per_turn(train_db: Any, gguf_tokenizer: Any) -> None:
    tok = gguf_tokenizer
    convs = load_conversations(train_db, DataOptions())
    assert len(convs) == 6
    enc = encode_all(tok, convs)
    c, e = convs[0], enc[0]
    (ex,) = examples_for(e, DataOptions())
    targets = [t for _, _, t in per_turn_prompts(c.messages, c.tools, c.system)]
    supervised = [i for i in ex.labels if i != IGNORE_INDEX]
    assert supervised == tok("".join(targets), add_special_tokens=False)["input_ids"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert ex.labels[-1] == im_end and ex.input_ids[-1] == im_end  # trailing context trimmed
    assert supervised.count(im_end) == 3
    # per turn: prefix of the conversation, loss on the last turn only
    turns = examples_for(e, DataOptions(per_turn=True))
    assert len(turns) == 3
    for (k, prompt, target), t in zip(per_turn_prompts(c.messages, c.tools, c.system), turns):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        gen = tok(target, add_special_tokens=False)["input_ids"]
        assert t.input_ids == ids + gen
        assert [i for i in t.labels if i != IGNORE_INDEX] == gen
    # suspect turns: masked (kept as context), dropped, or trained on
    replace_flags(train_db, [c.trace_id], ["schema"], [
        {"trace_id": c.trace_id, "message_idx": 1, "check": "schema", "severity": "error",
         "detail": "bad"}])
    e0 = encode_all(tok, load_conversations(train_db, DataOptions())[:1])[0]
    (masked,) = examples_for(e0, DataOptions(suspect="mask"))
    assert masked.input_ids == ex.input_ids
    assert masked.supervised == ex.supervised - len(tok(targets[0], add_special_tokens=False)
                                                    ["input_ids"])
    assert examples_for(e0, DataOptions(suspect="drop")) == []
    assert examples_for(e0, DataOptions(suspect="train"))[0].labels == ex.labels
    assert len(examples_for(e0, DataOptions(suspect="mask", per_turn=True))) == 2
    # max_length: the turns ending past it are trained in windows, the system prompt and tools
    # then the latest messages, from the user's words before the turn at least; none is lost
    first_end = e.turns[0][2]
    limit = first_end + 1
    short = examples_for(e, DataOptions(max_length=limit))
    assert len(short) > 1 and len(short[0].input_ids) == first_end
    assert all(len(x.input_ids) <= limit for x in short)

    def sup(xs: list) -> list[int]:
        return [t for x in xs for t in x.labels if t != IGNORE_INDEX]

    assert sup(short) == sup([ex])                      # every turn, once, the same tokens
    head = e.prompt_tokens
    for x in short[1:]:
        assert x.input_ids[:head] == e.input_ids[:head]           # the tools, always
        window = tok.decode(x.input_ids[head:])
        assert window.startswith("<|im_start|>user\n")   # a whole message, the user's
        assert window in tok.decode(e.input_ids)       # the conversation's latest messages
    per_turn = examples_for(e, DataOptions(max_length=limit, per_turn=True))
    assert sup(per_turn) == sup(short) and len(per_turn) == 3   # same tokens, same context:
    assert all(any(w.input_ids[:len(t.input_ids)] == t.input_ids for w in short)
               for t in per_turn)
    # a limit below the system prompt and tools: the turns are trained on their latest messages
    # alone (none starts with the prompt); one that does not fit even so gets no loss
    bare = examples_for(e, DataOptions(max_length=head + 4))
    assert sup(bare) == sup([ex]) and all(x.input_ids[:head] != e.input_ids[:head]
                                          and len(x.input_ids) <= head + 4 for x in bare)
    assert plan([e], DataOptions(max_length=8))["turns_past_max_length"] >= 1
    p = plan(enc, DataOptions())
    assert p["supervised_tokens"] == p["per_turn"]["supervised_tokens"]
    assert p["per_turn"]["sequences"] == 18 and p["sequences"] == 6
    assert p["per_turn"]["tokens"] > p["tokens"]


@pytest.mark.slow
def test_plan_json(train_db: Any, tiny_model_dir: Path) -> None:
    """The plan counts what is left out of the loss and why, and times one micro-batch here
    for an estimate of the run."""
    db_path = train_db.conn.execute("PRAGMA database_list").fetchone()[2]
    replace_flags(train_db, [1], ["schema"], [{"trace_id": 1, "message_idx": 1,
                                               "check": "schema", "severity": "error",
                                               "detail": "bad"}])
    r = runner.invoke(app, ["--db", db_path, "train", "--base-model", str(tiny_model_dir),
                            "--plan", "--json"])
    assert r.exit_code == 0, r.output
    p = json.loads(r.stdout)
    assert set(p) == {"conversations", "assistant_turns", "suspect_turns", "weight_zero_turns",
                      "masked_suspect_turns", "dropped_conversations", "max_length",
                      "turns_past_max_length", "windowed_turns", "prompt_tokens",
                      "prompts_past_max_length", "turns_without_prompt",
                      "length_keeping_prompt", "sizing",
                      "sequences", "tokens", "supervised_tokens", "per_turn", "estimate"}
    assert set(p["per_turn"]) == {"sequences", "tokens", "supervised_tokens"}
    assert p["sequences"] == 6 and p["per_turn"]["sequences"] == 17
    assert p["supervised_tokens"] == p["per_turn"]["supervised_tokens"] > 0
    assert (p["conversations"], p["assistant_turns"], p["masked_suspect_turns"]) == (6, 18, 1)
    assert p["turns_past_max_length"] == 0 and 50 < p["prompt_tokens"] < 400
    # no --max-length: sized from the data (the longest conversation up to its last
    # supervised turn), within the memory here and the model's context, and said so
    sz = p["sizing"]
    assert sz["limited_by"] == "data" and p["max_length"] == sz["needed"]
    assert sz["needed"] * p["sequences"] >= p["tokens"] > sz["needed"]   # the longest one
    assert sz["context_tokens"] == 4096 and sz["memory_tokens"] > sz["needed"]
    assert p["windowed_turns"] == p["turns_without_prompt"] == 0
    e = p["estimate"]
    assert e["steps"] == 1 and e["tokens"] == p["tokens"] and e["tokens_per_s"] > 0
    assert e["measured"]["tokens"] > 0 and e["seconds"] >= 0 and e["suggest"] is None
    r = runner.invoke(app, ["--db", db_path, "train", "--base-model", str(tiny_model_dir),
                            "--plan"])
    assert r.exit_code == 0 and f"--max-length {p['max_length']} (from the data: the longest" \
        in r.stdout, r.output
    # a --max-length below the system prompt and tools: the turns are trained on their latest
    # messages alone, counted, with the length that would keep the prompt
    short = p["prompt_tokens"] - 1
    r = runner.invoke(app, ["--db", db_path, "train", "--base-model", str(tiny_model_dir),
                            "--plan", "--max-length", str(short), "--json"])
    assert r.exit_code == 0, r.output
    q = json.loads(r.stdout)
    assert q["sizing"] is None and q["max_length"] == short
    assert q["turns_without_prompt"] > 0 and q["length_keeping_prompt"] > p["prompt_tokens"]
    assert q["supervised_tokens"] == p["supervised_tokens"] and q["turns_past_max_length"] == 0
    # a --max-length that cuts some turns: counted, with the prompt size
    r = runner.invoke(app, ["--db", db_path, "train", "--base-model", str(tiny_model_dir),
                            "--plan", "--max-length", str(p["prompt_tokens"] + 80)])
    assert r.exit_code == 0, r.output
    assert f"turns ending past --max-length {p['prompt_tokens'] + 80}: " in r.stdout
    assert "trained in windows" in r.stdout
    assert f"the system prompt and tools alone are {p['prompt_tokens']} tokens" in r.stdout
    assert "1 masked" in r.stdout and "estimated time here: about" in r.stdout


def test_estimate_suggests_a_faster_setting_for_a_long_run() -> None:
    from workbench.training.estimate import estimate

    plan_ = {"sequences": 40, "tokens": 85_000}
    rate = {"tokens_per_s": 60.0, "load_s": 10.0, "tokens": 1024, "seconds": 17.0,
            "device": "cpu"}
    e = estimate(plan_, rate, epochs=1.0, seqs_per_step=8, max_steps=-1)
    assert e["steps"] == 5 and e["seconds"] == round(85_000 / 60 + 10)
    s = e["suggest"]   # 23.8 minutes: a setting of about 10 minutes
    assert s["max_steps"] == 2 and s["sequences"] == 16 and 8 * 60 < s["seconds"] <= 10 * 60
    assert estimate(plan_, rate, epochs=1.0, seqs_per_step=8, max_steps=2)["suggest"] is None
    assert estimate(plan_, {**rate, "tokens_per_s": 600.0}, epochs=3.0, seqs_per_step=8,
                    max_steps=-1)["steps"] == 15


@pytest.mark.slow
def test_hf_tokenizer_from_gguf_matches_llama_cpp(gguf_tokenizer: Any) -> None:
    from llama_cpp import Llama

    from workbench.models.hf_loading import default_base_model

    texts = ["for  2 people", "a   2", "  \n\n 42\t7", render(_conversation(3)["messages"])]
    llm = Llama(model_path=str(default_base_model()), vocab_only=True, verbose=False)
    try:
        expected = [llm.tokenize(t.encode(), add_bos=False, special=True) for t in texts]
    finally:
        llm.close()
    assert gguf_tokenizer(texts, add_special_tokens=False)["input_ids"] == expected


# ---------------------------------------------------------------- loss, training, export

def _assert_same_adapter(a_dir: Path, b_dir: Path) -> None:
    """Two runs ended with the same LoRA weights (the resume tolerance)."""
    from safetensors.torch import load_file

    a = load_file(a_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(b_dir / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


def _tiny_cfg(out: Path, tiny_model_dir: Path, **kw: Any) -> Any:
    from workbench.training.trainer import TrainConfig

    base = dict(base_model=str(tiny_model_dir), output=str(out), max_steps=3, save_steps=2,
                seqs_per_step=2, lr=1e-3, lora_r=4, gguf="none")
    return TrainConfig(**{**base, **kw})


def test_activation_checkpointing_follows_the_setting_without_deprecated_names(
        train_db: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    """`--checkpointing` reaches the Trainer under the installed transformers' own names (the
    old `gradient_checkpointing*` ones warn that they go in v6), and adding LoRA warns of
    nothing either."""
    import warnings

    import torch

    from workbench.models.hf_loading import load_model, load_tokenizer
    from workbench.training.trainer import Hardware, add_lora, build_trainer

    tok = load_tokenizer(tiny_model_dir)
    examples = build_examples(encode_all(tok, load_conversations(train_db, DataOptions())),
                              DataOptions())
    hw = Hardware("cpu", torch.float32, False, False, "sdpa")
    for setting, on in (("on", True), ("off", False), ("auto", True)):
        cfg = _tiny_cfg(tmp_path, tiny_model_dir, checkpointing=setting)
        model = load_model(tiny_model_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            trainer = build_trainer(add_lora(model, cfg), tok, examples, cfg, hw)
        assert trainer.args.gradient_checkpointing is on, setting
        assert getattr(trainer.args, "activation_checkpointing", on) is on, setting


@pytest.mark.slow
def test_loss_normalised_over_supervised_tokens(train_db: Any, tiny_model_dir: Path,
                                                tmp_path: Path) -> None:
    """Default (one sequence per conversation) and per-turn expansion give the same loss, through
    the Trainer's own loss path, padded or padding-free (packed, per-sequence attention)."""
    import torch

    from workbench.models.hf_loading import load_model, load_tokenizer
    from workbench.training.trainer import (
        Hardware, SequenceDataset, add_lora, build_trainer, dataset_loss)

    tok = load_tokenizer(tiny_model_dir)
    enc = encode_all(tok, load_conversations(train_db, DataOptions()))
    default = build_examples(enc, DataOptions())
    per_turn = build_examples(enc, DataOptions(per_turn=True))
    model = add_lora(load_model(tiny_model_dir), _tiny_cfg(tmp_path, tiny_model_dir))
    with torch.no_grad():  # LoRA B starts at zero: give the adapter an effect
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    losses = {}
    cases = [(False, "default", 1), (False, "per_turn", 1), (False, "per_turn", 4),
             (True, "default", 3), (True, "per_turn", 9)]  # padded, and packed padding-free
    trainers = {packed: build_trainer(model, tok, default, _tiny_cfg(tmp_path, tiny_model_dir),
                                      Hardware("cpu", torch.float32, False, packed, "sdpa"))
                for packed in (False, True)}
    for packed, label, micro in cases:
        examples = default if label == "default" else per_turn
        losses[(packed, label, micro)] = dataset_loss(trainers[packed], examples, micro)
    # logits only at the supervised positions (the default) = the library's full-logits loss
    full = dataclasses.replace(_tiny_cfg(tmp_path, tiny_model_dir), supervised_logits=False)
    for packed in (False, True):
        t = build_trainer(model, tok, default, full,
                          Hardware("cpu", torch.float32, False, packed, "sdpa"))
        assert "logits_to_keep" not in t.data_collator([SequenceDataset(default)[0]])
        assert "logits_to_keep" in trainers[packed].data_collator([SequenceDataset(default)[0]])
        losses[(packed, "full logits", 1)] = dataset_loss(t, default, 1)
    ref = losses[(False, "default", 1)]
    assert 5 < ref < 20  # a random model: about ln(49152) = 10.8
    for key, value in losses.items():
        assert abs(value - ref) <= 1e-4, (key, value, ref)


def test_bf16_products_on_cpu_keep_the_loss(train_db: Any, tiny_model_dir: Path,
                                          tmp_path: Path) -> None:
    """bf16 matrix products (autocast, fp32 weights) give the fp32 loss to 1%, and are really
    used: the loss is not bit-identical. `--precision` picks them; auto follows the CPU."""
    import torch

    from workbench.models.hf_loading import load_model, load_tokenizer
    from workbench.training.trainer import (
        Hardware, TrainConfig, add_lora, build_trainer, cpu_computes_bf16, dataset_loss,
        detect_hardware)

    tok = load_tokenizer(tiny_model_dir)
    examples = build_examples(encode_all(tok, load_conversations(train_db, DataOptions())),
                              DataOptions())
    cfg = _tiny_cfg(tmp_path, tiny_model_dir)
    model = add_lora(load_model(tiny_model_dir), cfg)
    losses = {bf16: dataset_loss(build_trainer(model, tok, examples, cfg,
                                               Hardware("cpu", torch.float32, bf16, False, "sdpa")),
                                 examples)
              for bf16 in (False, True)}
    assert losses[True] != losses[False]
    assert abs(losses[True] - losses[False]) <= 0.01 * losses[False], losses
    if not torch.cuda.is_available():
        assert detect_hardware("fp32").bf16 is False and detect_hardware("bf16").bf16 is True
        assert detect_hardware("auto").bf16 is cpu_computes_bf16()
        assert detect_hardware("bf16").dtype == torch.float32     # weights stay fp32 on a CPU
    with pytest.raises(ValueError, match="--precision"):
        TrainConfig(precision="fp16")


@pytest.mark.slow
def test_train_merge_gguf_end_to_end(train_db: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from workbench.models.chat_template import CHAT_TEMPLATE
    from workbench.training.gguf import read_chat_template

    out = tmp_path / "run"
    db_path = train_db.conn.execute("PRAGMA database_list").fetchone()[2]
    r = runner.invoke(app, ["--db", db_path, "train", "--base-model", str(tiny_model_dir),
                            "--output", str(out), "--max-steps", "3", "--save-steps", "2",
                            "--seqs-per-step", "2", "--lr", "1e-3", "--lora-r", "4",
                            "--gguf", "q8_0", "--name", "tiny", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    from db.jobs import get_job

    job = get_job(train_db, result["job_id"])
    assert job["status"] == "succeeded" and job["kind"] == "train"
    assert "registered model tiny" in job["log"]
    m = result["metrics"]
    assert m["steps"] == 3 and m["tokens_seen"] > 0 and m["data_sequences"] == 6
    assert m["tokens_per_s"] > 0 and m["first_loss"] > 0
    gguf = Path(result["gguf"])
    assert gguf.exists() and read_chat_template(gguf) == CHAT_TEMPLATE
    models = list_models(train_db)
    assert [(r["kind"], r["name"]) for r in models] == [("merged", "tiny"), ("gguf", "tiny")]
    assert models[1]["path"] == str(gguf) and models[1]["job_id"] == job["id"]
    assert models[1]["metrics"]["steps"] == 3
    assert models[1]["data_selection"]["plan"]["sequences"] == 6
    # llama.cpp loads it and tokenizes like the HF tokenizer of the merged model
    hf_tok = AutoTokenizer.from_pretrained(result["merged"])
    texts = [render(_conversation(i)["messages"], TOOLS) for i in range(3)]
    texts.append(render(_conversation(1)["messages"][:1], add_generation_prompt=True))
    llm = Llama(model_path=str(gguf), n_ctx=1024, verbose=False)
    try:
        assert [llm.tokenize(t.encode(), add_bos=False, special=True) for t in texts] == \
            hf_tok(texts, add_special_tokens=False)["input_ids"]
        out_text = llm.create_completion(texts[-1], max_tokens=4, temperature=0)
        assert "choices" in out_text
    finally:
        llm.close()


@pytest.mark.slow
def test_resume_after_kill(train_db: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    """A run killed after its step-2 checkpoint resumes there and ends with the same adapter as
    an uninterrupted run."""
    from transformers import TrainerCallback

    from tests.job_support import run_body
    from workbench.training.trainer import train

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 2:
                raise KeyboardInterrupt("killed")

    def run(out: Path, **kw: Any) -> dict:
        cfg = _tiny_cfg(out, tiny_model_dir, max_steps=4, **kw)
        return run_body(train_db, "train", lambda ctx: train(ctx.db, cfg, DataOptions(), ctx=ctx))

    full = run(tmp_path / "full")
    assert full["status"] == "succeeded", full["error"]
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", extra_callbacks=[Kill()])
    again = run(tmp_path / "killed")  # without --resume: refuses to overwrite
    assert again["status"] == "failed" and "--resume" in again["error"]
    resumed = run(tmp_path / "killed", resume=True)
    assert resumed["status"] == "succeeded", resumed["error"]
    assert "resuming from" in resumed["log"] and resumed["result"]["metrics"]["steps"] == 4
    _assert_same_adapter(tmp_path / "full", tmp_path / "killed")


@pytest.mark.slow
def test_out_of_memory_is_a_clear_error(train_db: Any, tiny_model_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import Trainer

    from tests.job_support import run_body
    from workbench.training.trainer import train

    def oom(*a: Any, **k: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "training_step", oom)
    cfg = _tiny_cfg(tmp_path / "oom", tiny_model_dir)
    job = run_body(train_db, "train", lambda ctx: train(ctx.db, cfg, DataOptions(), ctx=ctx))
    assert job["status"] == "failed"
    assert "out of memory" in job["error"] and "--max-length" in job["error"]


@pytest.mark.slow
def test_kill_9_of_a_training_worker_then_jobs_resume(train_db: Any, tiny_model_dir: Path,
                                                     tmp_path: Path) -> None:
    """A detached `job run` worker killed with SIGKILL mid-training: the next open marks the job
    interrupted, and `workbench jobs resume ID` ends it with the adapter of an uninterrupted
    run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from db.jobs import get_job
    from workbench.jobs.runner import execute, start_worker, submit

    params = dict(base_model=str(tiny_model_dir), max_steps=30, save_steps=2, seqs_per_step=2,
                  lr=1e-3, lora_r=4, gguf="none")
    full = execute(train_db, submit(train_db, "train", {},
                                    {**params, "output": str(tmp_path / "full")}))
    assert full["status"] == "succeeded", full["error"]
    db_path = train_db.conn.execute("PRAGMA database_list").fetchone()[2]
    job_id = submit(train_db, "train", {}, {**params, "output": str(tmp_path / "killed")})
    proc = start_worker(db_path, job_id)
    ckpt = tmp_path / "killed" / "checkpoints" / "checkpoint-4"
    deadline = time.monotonic() + 300
    while not (ckpt / "trainer_state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get_job(train_db, job_id)["status"] == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reopened = open_db(db_path)
    assert get_job(reopened, job_id)["status"] == "interrupted"
    reopened.conn.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent.parent)}
    r = subprocess.run([sys.executable, "-m", "workbench", "--db", db_path, "jobs", "resume",
                        str(job_id), "--json"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    row = get_job(train_db, job_id)
    assert row["status"] == "succeeded" and row["attempts"] == 2
    assert "resuming from" in row["log"] and row["result"]["metrics"]["steps"] == 30
    _assert_same_adapter(tmp_path / "full", tmp_path / "killed")


@pytest.mark.slow
def test_train_reports_progress_on_stderr_from_loading_to_merging(
        train_db: Any, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`train` (with --json too: stdout keeps only the result) tells on stderr what it is doing,
    from loading to merging, with step, loss, tokens/s and ETA; without a terminal as lines."""
    from workbench.commands import jobs as job_cmds

    monkeypatch.setattr(job_cmds, "LINE_EVERY_S", 0.0, raising=False)   # every report
    db_path = train_db.conn.execute("PRAGMA database_list").fetchone()[2]
    r = runner.invoke(app, ["--db", db_path, "train", "--base-model", str(tiny_model_dir),
                            "--output", str(tmp_path / "run"), "--max-steps", "3",
                            "--seqs-per-step", "2", "--lora-r", "4", "--gguf", "none", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"]["steps"] == 3
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("train: ")]
    text = "\n".join(lines)
    order = [text.find(w) for w in ("train: loading the tokenizer", "train: tokenizing",
                                    "train: loading /", "train: step 1/3", "train: merging")]
    assert -1 not in order and order == sorted(order), text
    step = [ln for ln in lines if ln.startswith("train: step 3/3")]
    assert step and all(k in step[-1] for k in ("loss ", "tok/s", "ETA ")), text
    assert any("micro-batch 1/2" in ln for ln in lines), text   # before the first step ends
    assert not any(ln.startswith("metrics ") for ln in r.stderr.splitlines())
    job = json.loads(r.stdout)["job_id"]
    from db.jobs import get_job, job_metrics

    assert "metrics " not in get_job(train_db, job)["log"]        # numbers are rows, not text
    metrics = job_metrics(train_db, job)
    assert [m["step"] for m in metrics] == [1, 2, 3] and metrics[0]["tokens_per_s"] > 0


FRAGMENT = r"""
import sys, torch
from workbench.training.memory import return_freed_buffers
if sys.argv[1] == "fixed":
    assert return_freed_buffers()
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
# what a training step does: activation buffers of a few MiB, allocated layer by layer with
# small tensors kept alive between them, then freed
torch.empty(8 << 20, dtype=torch.uint8)   # freeing one mapped 8 MiB buffer raises glibc's threshold
big, small = [], []
for i in range(120):
    big.append(torch.ones((2 + i % 5) << 20, dtype=torch.uint8))
    small.append(torch.ones(4096, dtype=torch.uint8))
before = rss_mib()
big.clear()
print(round(before - rss_mib()))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists() or not __import__("sys").platform
                    .startswith("linux"), reason="glibc on Linux only")
def test_freed_activation_buffers_go_back_to_the_system() -> None:
    """With the heap's default, freed buffers between live small tensors stay resident; training
    fixes the mmap threshold so they are returned (what kept 5.8 GiB for 1.7 GiB of tensors)."""
    import subprocess
    import sys

    freed = {mode: int(subprocess.run([sys.executable, "-c", FRAGMENT, mode], check=True,
                                      capture_output=True, text=True).stdout.split()[-1])
             for mode in ("default", "fixed")}
    allocated = sum((2 + i % 5) for i in range(120))      # MiB
    assert freed["fixed"] >= 0.9 * allocated, freed
    assert freed["default"] < 0.5 * allocated, freed


@pytest.mark.parametrize("max_steps,warmup", [(1, 0), (4, 0), (40, 1), (100, 3)])
def test_the_first_optimizer_step_learns(train_db: Any, tiny_model_dir: Path, tmp_path: Path,
                                         max_steps: int, warmup: int) -> None:
    """Warm-up is the ratio of the steps rounded down: a short run's first step has a learning
    rate (it had 0, rounded up to one warm-up step, so `--max-steps 1` trained nothing)."""
    import torch

    from workbench.models.hf_loading import load_model, load_tokenizer
    from workbench.training.trainer import Hardware, add_lora, build_trainer

    tok = load_tokenizer(tiny_model_dir)
    examples = build_examples(encode_all(tok, load_conversations(train_db, DataOptions())),
                              DataOptions())
    cfg = dataclasses.replace(_tiny_cfg(tmp_path, tiny_model_dir), max_steps=max_steps)
    trainer = build_trainer(add_lora(load_model(tiny_model_dir), cfg), tok, examples, cfg,
                            Hardware("cpu", torch.float32, False, False, "sdpa"))
    assert trainer.args.warmup_steps == warmup
    trainer.create_optimizer_and_scheduler(num_training_steps=max_steps)
    first_lr = trainer.lr_scheduler.get_last_lr()[0]
    assert first_lr > 0 if warmup == 0 else first_lr == 0
