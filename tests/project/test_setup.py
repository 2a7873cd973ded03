"""The set-up installs llama.cpp once, from the portable wheel the Makefile builds.

A native build (what pip compiles when anything else pulls llama-cpp-python in first) crashes on
CPUs with AMX; this proves the installed libraries are byte for byte the wheel's.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def _record_hashes(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        rows = csv.reader(io.StringIO(zf.read(record).decode()))
        return {path: digest for path, digest, _ in rows if digest}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_llama_cpp_is_the_portable_wheel() -> None:
    wheels = sorted((ROOT / ".wheels").glob("*/llama_cpp_python-*.whl"))   # .wheels/CPU/
    if not wheels:
        pytest.skip("no .wheels/ here: not installed by the Makefile")
    dist = metadata.distribution("llama_cpp_python")
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    assert direct.get("url", "").endswith(wheels[-1].name), \
        f"llama-cpp-python was not installed from {wheels[-1].name}: {direct}"
    expected = {p: h for p, h in _record_hashes(wheels[-1]).items()
                if p.startswith("llama_cpp/lib/") and ".so" in p}
    assert expected, "the wheel ships no llama.cpp libraries"
    for rel, digest in expected.items():
        installed = Path(dist.locate_file(rel))
        assert installed.is_file(), f"{rel} missing from the venv"
        assert _sha256(installed) == digest, f"{rel} differs from the portable wheel's"
