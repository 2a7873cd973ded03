"""Untrusted text made safe for a terminal: control characters shown, never sent.

Trace text, model output and file names may hold escape sequences that retitle, clear or
reprogram a terminal, and bidi or zero-width characters that hide what a line says. `visible`
spells each of them out (`\\x1b`, `\\u202e`) and keeps newlines and tabs; JSON output stays exact
and never goes through it."""

from __future__ import annotations

import re

# C0 but \t and \n, DEL, C1, the soft hyphen; the Arabic letter mark and the bidi
# embeddings/overrides/isolates; zero-width characters and the BOM; Unicode tag characters
# (invisible, they can spell out a hidden message)
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u061c\u200b-\u200f\u2028\u2029"
                     "\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]")


def _spell(match: re.Match) -> str:
    n = ord(match.group())
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _json_escape(match: re.Match) -> str:
    """A JSON escape; outside the BMP a UTF-16 surrogate pair, as JSON spells it."""
    n = ord(match.group())
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xd800 + (n >> 10):04x}\\u{0xdc00 + (n & 0x3ff):04x}"


def visible(text: object) -> str:
    """`text` with every control, bidi and zero-width character spelled out."""
    s = "" if text is None else str(text)
    return _UNSAFE.sub(_spell, s)


def visible_json(text: str) -> str:
    """JSON text with the same characters escaped as JSON escapes (`\\u001b`, `\\u202e`): the
    text parses to exactly the same value, and a terminal shows it without obeying it.
    (JSON's own structure is ASCII, so such characters can only sit inside strings.)"""
    return _UNSAFE.sub(_json_escape, text)


def dumps_visible(value: object, **kwargs: object) -> str:
    """`json.dumps(value, ensure_ascii=False, **kwargs)` safe to print (see `visible_json`)."""
    import json

    return visible_json(json.dumps(value, ensure_ascii=False, **kwargs))
