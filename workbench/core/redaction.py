"""Secrets out of error text and model replies, before they are stored (jobs.error, the job log,
eval results, votes, job units, synthesis rows) or shown.

A server may echo the request's Authorization header in an error body, and the `openai` client
puts that body into its exception message; a proxy may print a URL with credentials. `redact`
replaces every key we know (the values of the environment variables that configured endpoints
name in `api_key_env`, and every key an endpoint used in this process) and anything shaped like
a bearer token, an `sk-...` key, an `api_key=...` value or URL credentials. A model's reply is
data, not an error: `redact_secrets` replaces only the keys themselves there (a tool argument
named `password` keeps its value), in every string of a parsed reply with `redact_value`.
"""

from __future__ import annotations

import os
import re

from workbench.core.config import config_path, read_config_file

REDACTED = "[redacted]"
MIN_KEY_CHARS = 4   # shorter "keys" (e.g. llama.cpp's "none") would redact ordinary words

_used: set[str] = set()
_config_cache: tuple[str, float, tuple[str, ...]] | None = None

_PATTERNS = [
    # Authorization: Bearer xxx / Basic xxx (and the header's value in any quoting)
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"), rf"\1\2{REDACTED}"),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\b|basic\b)[^\s\"',}]+"),
     rf"\1{REDACTED}"),
    # OpenAI-style keys
    (re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"), f"sk-{REDACTED}"),
    # api_key=..., "api-key": "...", access_token=..., password=..., secret=...
    (re.compile(r"(?i)\b((?:x-)?api[-_]?key|access[-_]?token|auth[-_]?token|password|secret)"
                r"([\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]+"), rf"\1\2{REDACTED}"),
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@:]+:[^/\s@]*@"), rf"\1{REDACTED}@"),
]


def remember(key: str | None) -> None:
    """Note a key this process sends, so any text that echoes it is redacted."""
    if key and len(key) >= MIN_KEY_CHARS:
        _used.add(key)


def _configured_keys() -> tuple[str, ...]:
    """Values of the variables that configured endpoints name (cached per config file state)."""
    global _config_cache
    path = config_path()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = -1.0
    if _config_cache is None or _config_cache[:2] != (str(path), mtime):
        names: list[str] = []
        try:
            for spec in (read_config_file(path).get("endpoints") or {}).values():
                if isinstance(spec, dict) and isinstance(spec.get("api_key_env"), str):
                    names.append(spec["api_key_env"])
        except Exception:  # noqa: BLE001 - a broken config is reported elsewhere; redact anyway
            pass
        _config_cache = (str(path), mtime, tuple(names))
    return _config_cache[2]


def known_keys() -> list[str]:
    """Every key value we know of, longest first (a key containing another is replaced whole)."""
    keys = set(_used)
    for name in _configured_keys():
        value = os.environ.get(name)
        if value and len(value) >= MIN_KEY_CHARS:
            keys.add(value)
    return sorted(keys, key=len, reverse=True)


def redact(text: object) -> str:
    """`text` with every known key and anything that looks like a credential replaced."""
    s = "" if text is None else str(text)
    for key in known_keys():
        s = s.replace(key, REDACTED)
    for pattern, repl in _PATTERNS:
        s = pattern.sub(repl, s)
    return s


def redact_secrets(text: str) -> str:
    """`text` with every known key replaced (and nothing else: for model replies)."""
    for key in known_keys():
        if key in text:
            text = text.replace(key, REDACTED)
    return text


def redact_value(value: object) -> object:
    """A JSON value with `redact_secrets` applied to every string in it (keys too)."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {redact_secrets(k) if isinstance(k, str) else k: redact_value(v)
                for k, v in value.items()}
    return value


class StreamRedactor:
    """Redacts a reply shown as it streams: holds back the last (longest key - 1) characters,
    so a key split across chunks is never shown in part. `feed` returns what may be shown now,
    `flush` the rest at the end."""

    def __init__(self) -> None:
        self.keys = known_keys()
        self.hold = max((len(k) for k in self.keys), default=1) - 1
        self.pending = ""

    def feed(self, chunk: str) -> str:
        if not self.keys:
            return chunk
        self.pending = redact_secrets(self.pending + chunk)
        cut = max(0, len(self.pending) - self.hold)
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def flush(self) -> str:
        out, self.pending = redact_secrets(self.pending), ""
        return out
