"""Invisible and steering characters never reach a terminal raw: Unicode tag characters
(U+E0000-E007F), the Arabic letter mark (U+061C) and the soft hyphen (U+00AD) are spelled out
like bidi and zero-width characters (`label show`); `export -` on a terminal escapes them in its
JSON (the values read back the same), while a pipe gets the exact bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from db import open_db
from tests.conftest import REPO
from workbench.cli import app
from workbench.traces.importing import import_files
from workbench.core.safe_text import dumps_visible, visible

TAGS = "".join(chr(0xE0000 + ord(c)) for c in "hi")        # "hi" in invisible tag letters
NEW = TAGS + "\u061c\u00ad" + "\U000e007f"
OLD = "\u202e\u200b\u2066\u2069\x9b"                        # bidi, zero-width, isolates, C1 CSI
HIDDEN = "Oak" + NEW + OLD + "land"
RAW = set(NEW + OLD)

runner = CliRunner()


@pytest.fixture
def store(tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_text(json.dumps({"messages": [
        {"role": "user", "content": f"food in {HIDDEN}"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function", "function": {
                "name": "find", "arguments": json.dumps({"city": HIDDEN})}}]}]},
        ensure_ascii=False) + "\n", encoding="utf-8")
    path = tmp_path / "t.db"
    db = open_db(path)
    import_files(db, [src])
    db.conn.close()
    return path


def test_visible_spells_out_the_new_characters_and_json_reads_back_exact():
    shown = visible(HIDDEN)
    assert not RAW & set(shown)
    assert "\\U000e0068\\U000e0069" in shown and "\\u061c" in shown and "\\xad" in shown
    text = dumps_visible({"v": HIDDEN})
    assert not RAW & set(text)
    assert json.loads(text) == {"v": HIDDEN}                 # surrogate pairs for the tags


def test_label_show_escapes_tag_characters(store):
    for args in (["label", "show", "1", "1"], ["label", "show", "1", "0"]):
        r = runner.invoke(app, ["--db", str(store), *args])
        assert r.exit_code == 0, r.output
        assert not RAW & set(r.output), sorted(hex(ord(c)) for c in RAW & set(r.output))
        assert "\\U000e0068" in r.output and "\\u061c" in r.output and "\\xad" in r.output
    r = runner.invoke(app, ["--db", str(store), "label", "show", "1", "1", "--json"])
    assert not RAW & set(r.stdout)                             # JSON escapes, exact value
    assert HIDDEN in json.dumps(json.loads(r.stdout), ensure_ascii=False)


def _export(store, stdout) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench", "--db", str(store), "export",
                             "-"], stdout=stdout, stderr=subprocess.DEVNULL, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def test_export_to_a_terminal_escapes_and_a_pipe_keeps_exact_bytes(store):
    master, slave = os.openpty()
    proc = _export(store, slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:         # EIO: the writer closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = out.decode("utf-8")
    assert not RAW & set(text), sorted(hex(ord(c)) for c in RAW & set(text))
    line = json.loads(text.strip().splitlines()[0])
    assert line["messages"][0]["content"] == f"food in {HIDDEN}"   # the same value, escaped

    piped = subprocess.run([sys.executable, "-m", "workbench", "--db", str(store), "export",
                            "-"], capture_output=True, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert piped.returncode == 0
    assert HIDDEN.encode("utf-8") in piped.stdout                  # exact bytes in a pipe
    assert json.loads(piped.stdout.decode().splitlines()[0]) == line
