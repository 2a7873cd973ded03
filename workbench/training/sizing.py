"""`--max-length` from the data: the longest conversation prefix a supervised turn needs, within
the memory this machine has for a training step and the base model's context.

A default tuned on one corpus fails on the next (4,096 tokens is less than the system prompt
of an agent with a long policy). The data says what is needed: the end of each conversation's
last supervised turn; the memory estimate (:func:`workbench.training.estimate.tokens_that_fit`)
and the model's `max_position_embeddings` say what is possible. Below what is needed, the
longest turns are trained in windows (:func:`workbench.training.data.windows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workbench.training.data import DataOptions, Encoded, needed_length

ROUND = 64          # a capped length is rounded down to this


def supervised_share(encoded: Sequence[Encoded]) -> float:
    """The share of tokens that carry loss in the data (the logits the lm head computes)."""
    tokens = sum(len(e.input_ids) for e in encoded)
    loss = sum(end - start for e in encoded for _, start, end in e.turns)
    return min(1.0, max(0.05, loss / tokens)) if tokens else 1.0


def choose_max_length(encoded: Sequence[Encoded], options: DataOptions, config: Any, *,
                      device: str, bf16: bool, checkpointing: bool,
                      available: int) -> dict:
    """The max length to train with and why: `{"max_length", "needed", "memory_tokens",
    "context_tokens", "available_bytes", "device", "limited_by"}`."""
    from workbench.training.estimate import tokens_that_fit

    needed = needed_length(encoded, options)
    context = getattr(config, "max_position_embeddings", None)
    fit = tokens_that_fit(config, available, weight_bytes=2 if bf16 and device == "cuda" else 4,
                          act_bytes=2 if bf16 and device == "cuda" else 4,
                          checkpointing=checkpointing, supervised=supervised_share(encoded))
    limits = {"data": max(needed, 8), "memory": fit}
    if context:
        limits["context"] = int(context)
    limited_by = min(limits, key=lambda k: (limits[k], k != "data"))
    chosen = limits[limited_by]
    if limited_by != "data":
        chosen = max(8, chosen // ROUND * ROUND)
    return {"max_length": chosen, "needed": needed, "memory_tokens": fit,
            "context_tokens": context, "available_bytes": available, "device": device,
            "limited_by": limited_by}


def describe(s: dict) -> str:
    """One line for the plan and the job log."""
    gib = s["available_bytes"] / 2**30
    if s["limited_by"] == "data":
        why = (f"the longest conversation up to its last supervised turn is {s['needed']:,}"
               " tokens")
    elif s["limited_by"] == "memory":
        why = (f"the data needs {s['needed']:,}, the memory here ({gib:.1f} GiB available on"
               f" {s['device']}) allows about {s['memory_tokens']:,} per sequence")
    else:
        why = (f"the data needs {s['needed']:,}, the base model's context is"
               f" {s['context_tokens']:,}")
    return f"--max-length {s['max_length']:,} (from the data: {why})"


def size_for_store(db: Any, base_model: str | None = None) -> dict | None:
    """What `train` with defaults would pick on the store now (None: nothing to train on)."""
    from workbench.models.hf_loading import load_tokenizer, resolve_base_model
    from workbench.training.data import encode_all, load_conversations
    from workbench.training.trainer import TrainConfig, size_max_length

    opts = DataOptions()
    convs = load_conversations(db, opts)
    if not convs:
        return None
    base = resolve_base_model(base_model)
    encoded = encode_all(load_tokenizer(base), convs)
    return size_max_length(encoded, opts, base, TrainConfig(base_model=base_model))
