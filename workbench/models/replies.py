"""A model's reply, read before anything keeps it: bounded, checked, redacted.

A misbehaving server can answer a chat request with 30 MB, with an HTML page, with no choices, or
with a tool call whose arguments are not JSON; a server behind a proxy can echo the API key in a
normal reply. Whatever the committee, the relevance judge, the teacher or an evaluation stores
(votes, job units, predictions, synthesis rows) comes through here first:

- the body is read at most `limit` bytes (an endpoint's `max_reply_bytes`); more is refused as a
  failed request (`ReplyRefused`), never stored, so a re-run asks again;
- a body that is no chat completion (not JSON, no first choice, no message, content that is not
  text, a call without a name or whose arguments are not JSON) is refused the same way;
- every string of the reply is redacted against the configured secrets
  (`workbench.core.redaction.redact_secrets`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from workbench.core.redaction import redact_secrets, redact_value
from workbench.core.safe_text import visible

DEFAULT_MAX_REPLY_BYTES = 1_000_000


class ReplyRefused(Exception):
    """A reply that is not kept: too large, or no chat completion. A failed request."""


@dataclass
class Reply:
    """The first choice of a chat completion, redacted; calls as {id, name, arguments (parsed)}."""

    content: str | None
    calls: list[dict] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str | None = None

    def raw(self) -> str:
        """The reply as stored: its text, or its calls as JSON."""
        if not self.calls:
            return self.content or ""
        calls = [{"name": c["name"], "arguments": c["arguments"]} for c in self.calls]
        out: Any = calls[0] if len(calls) == 1 and not self.content else {
            "content": self.content, "calls": calls}
        return json.dumps(out, ensure_ascii=False)


def excerpt(data: bytes | str, n: int = 200) -> str:
    """The first `n` characters of a body, redacted, control characters spelled out."""
    text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    text = redact_secrets(text[:n * 4])[:n]
    return visible(text).replace("\n", "\\n").replace("\t", "\\t") + ("…" if len(data) > n
                                                                        else "")


def check_size(size: int, limit: int) -> None:
    if size > limit:
        raise ReplyRefused(f"the reply is larger than {limit:,} bytes (the endpoint's"
                           " max_reply_bytes): refused, nothing stored")


def parse_completion(data: bytes) -> Reply:
    """A chat completion body as a `Reply`, or `ReplyRefused` saying what is wrong with it."""
    try:
        body = json.loads(data)
    except ValueError:
        raise ReplyRefused(f"the endpoint returned an invalid reply (not JSON): {excerpt(data)}"
                           ) from None
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) \
            or not isinstance(choices[0].get("message"), dict):
        raise ReplyRefused(f"the endpoint returned an invalid reply (no choice with a message):"
                           f" {excerpt(data)}")
    message = choices[0]["message"]
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise ReplyRefused("the endpoint returned an invalid reply (content is not text)")
    calls = []
    for n, call in enumerate(message.get("tool_calls") or []):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ReplyRefused(f"the endpoint returned an invalid reply (call {n} has no name)")
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                raise ReplyRefused(f"the endpoint returned broken arguments for"
                                   f" {visible(fn['name'])[:60]!r}: {excerpt(args, 120)}"
                                   ) from None
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise ReplyRefused(f"the endpoint returned arguments for {visible(fn['name'])[:60]!r}"
                               " that are not an object")
        calls.append({"id": call.get("id") if isinstance(call.get("id"), str) else None,
                      "name": redact_secrets(fn["name"]), "arguments": redact_value(args)})
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    return Reply(content=None if content is None else redact_secrets(content), calls=calls,
                 tokens_in=count("prompt_tokens"), tokens_out=count("completion_tokens"),
                 finish_reason=choices[0].get("finish_reason"))


async def read_async(response: Any, limit: int) -> bytes:
    """The body of an `openai` streaming response (async), at most `limit` bytes."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit():
        check_size(int(declared), limit)
    parts, size = [], 0
    async for chunk in response.iter_bytes():
        size += len(chunk)
        check_size(size, limit)
        parts.append(chunk)
    return b"".join(parts)
