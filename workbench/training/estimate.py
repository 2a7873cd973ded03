"""How long a training run would take here: `train --plan` times one micro-batch.

Training speed depends on the machine, what else runs on it, the base model and the sequence
length, so no constant fits (BENCHMARKS.md has 179 tokens/s for SmolLM2-135M on 2 quiet cores;
a busy machine gives half that). The plan loads the base model with the LoRA as training
would, runs one short warm-up and then one timed forward/backward pass on a typical sequence
(the median training sequence, at most `MEASURE_TOKENS` tokens), and extrapolates linearly in
tokens. Optimizer steps, merging and GGUF conversion are not counted (small next to the
forward/backward passes of a CPU run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from workbench.training.data import Example

MEASURE_TOKENS = 1024      # the timed micro-batch is at most this long
LONG_RUN_S = 15 * 60       # above this, the plan suggests a faster setting
TARGET_S = 10 * 60         # ... that takes about this long


def measure_rate(base: Any, examples: Sequence[Example], lora_r: int = 16,
                 precision: str = "auto") -> dict:
    """Tokens per second of a LoRA forward/backward pass here: `{"tokens_per_s", "tokens",
    "seconds", "device", "load_s"}`."""
    import torch

    from workbench.models.hf_loading import load_model
    from workbench.training.trainer import TrainConfig, add_lora, autocast, detect_hardware

    hw = detect_hardware(precision)
    t0 = time.perf_counter()
    model = load_model(base, dtype=hw.dtype, attn_implementation=hw.attn)
    model = add_lora(model, TrainConfig(lora_r=lora_r))
    model.to(hw.device)
    model.train()
    load_s = time.perf_counter() - t0
    typical = sorted(examples, key=lambda e: len(e.input_ids))[len(examples) // 2]
    n = min(len(typical.input_ids), MEASURE_TOKENS)

    def step(ids: list[int]) -> float:
        t = torch.tensor([ids], device=hw.device)
        start = time.perf_counter()
        with autocast(hw):
            loss = model(input_ids=t, labels=t).loss
        loss.backward()
        if hw.device == "cuda":
            torch.cuda.synchronize()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step(typical.input_ids[:min(n, 32)])          # warm-up: first-call overheads
    seconds = step(typical.input_ids[:n])
    return {"tokens_per_s": round(n / seconds, 1), "tokens": n, "seconds": round(seconds, 2),
            "device": hw.device, "bf16": hw.bf16, "load_s": round(load_s, 1)}


def estimate(plan: dict, rate: dict, *, epochs: float, seqs_per_step: int,
             max_steps: int) -> dict:
    """Steps, tokens and seconds of the run, and a faster setting when it is long."""
    sequences, tokens = plan["sequences"], plan["tokens"]
    per_seq = tokens / max(sequences, 1)
    steps_per_epoch = math.ceil(sequences / seqs_per_step)
    if max_steps > 0:   # overrides epochs: the Trainer runs exactly this many steps
        steps = max_steps
        trained = max_steps * seqs_per_step * per_seq
    else:
        steps = math.ceil(steps_per_epoch * epochs)
        trained = tokens * epochs
    seconds = trained / rate["tokens_per_s"] + rate["load_s"]
    out = {"steps": steps, "tokens": int(trained), "seconds": round(seconds),
           "tokens_per_s": rate["tokens_per_s"], "measured": rate, "suggest": None}
    if seconds > LONG_RUN_S:
        fit = max(1, int(TARGET_S * rate["tokens_per_s"] / (seqs_per_step * per_seq)))
        out["suggest"] = {"max_steps": fit,
                          "seconds": round(fit * seqs_per_step * per_seq / rate["tokens_per_s"]
                                           + rate["load_s"]),
                          "sequences": fit * seqs_per_step}
    return out


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


# --------------------------------------------------------------------------- memory per token

MEMORY_SHARE = 0.7          # of the available memory a run may plan to use (the rest: the
                            # allocator's slack, the optimizer, the data, other processes)


def parameter_count(config: Any) -> int:
    """A decoder's parameters from its config (embeddings, attention with grouped KV, gated
    MLP): what the weights take, without loading them."""
    h, layers = config.hidden_size, config.num_hidden_layers
    heads = getattr(config, "num_attention_heads", 1) or 1
    kv = getattr(config, "num_key_value_heads", None) or heads
    inter = getattr(config, "intermediate_size", None) or 4 * h
    vocab = config.vocab_size
    attn = 2 * h * h + 2 * h * (h * kv // heads)
    embed = vocab * h * (1 if getattr(config, "tie_word_embeddings", True) else 2)
    return embed + layers * (attn + 3 * h * inter)


def training_bytes(config: Any, tokens: int, *, weight_bytes: int, act_bytes: int,
                   checkpointing: bool, supervised: float) -> int:
    """Memory a LoRA step on one sequence of `tokens` takes: the weights, each layer's input
    kept for the backward pass, one layer's activations (all of them without checkpointing),
    and the logits of the supervised share of positions (the lm head sees only those, in
    fp32, with their gradient). Close to what was measured: 1.5 GiB for SmolLM2-135M on a
    4,096-token conversation on a CPU with checkpointing."""
    h, layers = config.hidden_size, config.num_hidden_layers
    inter = getattr(config, "intermediate_size", None) or 4 * h
    layer = 2 * (6 * h + 4 * inter) * act_bytes          # per token, autograd's saved tensors
    kept = layers * h * act_bytes + layer if checkpointing else layers * layer
    logits = supervised * config.vocab_size * 4 * 3
    return int(parameter_count(config) * weight_bytes + tokens * (kept + logits))


def tokens_that_fit(config: Any, available: int, **kw: Any) -> int:
    """The longest sequence whose step fits in `MEMORY_SHARE` of `available` bytes."""
    budget = available * MEMORY_SHARE
    fixed = training_bytes(config, 0, **kw)
    per_token = training_bytes(config, 1_000_000, **kw) / 1_000_000 - fixed / 1_000_000
    return max(0, int((budget - fixed) / per_token)) if per_token > 0 else 0
