"""Asking one endpoint for one call: bounded concurrency, retries with backoff, a reply parsed
and validated against the tool schema (an invalid reply is an abstention with its reason).

Remote endpoints go through `openai`'s async client, so OpenAI, vLLM, llama.cpp's server,
Ollama and hosted APIs all work; built-in local ones (`local`, `local:MODEL`) run llama.cpp
in-process, their output constrained by a grammar made from the call's JSON schema.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from workbench.checks.schema import declared_arguments
from workbench.endpoints import Endpoint
from workbench.redaction import redact
from workbench.safe_text import visible
from workbench.toolcalls import parse_tool_calls

RETRY_STATUS = {408, 409, 429}   # and every 5xx


class EndpointFailed(Exception):
    """The endpoint kept failing (after its retries) or refused the request: no vote, and no
    cached unit, so a resumed job asks again."""


@dataclass
class Answer:
    """One reply: the parsed value (or why there is none) and what it cost."""

    raw: str
    value: Any = None                 # parsed JSON (a call {name, arguments}, or a verdict)
    abstain_reason: str | None = None
    latency_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0

    def as_dict(self) -> dict:
        return {"raw": self.raw, "value": self.value, "abstain_reason": self.abstain_reason,
                "latency_s": round(self.latency_s, 4), "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out}


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None)


def _retriable(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, asyncio.TimeoutError)):
        return True
    status = _status(exc)
    return status is not None and (status in RETRY_STATUS or status >= 500)


def _describe(exc: BaseException) -> str:
    status = _status(exc)
    text = f"HTTP {status}" if status else type(exc).__name__
    msg = str(getattr(exc, "message", "") or exc)
    return visible(redact(f"{text}: {msg}"))[:300]


def tool_validators(tools: list[dict] | None) -> dict[str, Draft202012Validator]:
    """A validator per tool; arguments a schema does not declare are invalid (as in `check`)."""
    out = {}
    for t in tools or []:
        fn = t.get("function") or t
        out[fn["name"]] = Draft202012Validator(declared_arguments(fn))
    return out


def validate_call(value: Any, validators: dict[str, Draft202012Validator]) -> tuple[dict | None, str | None]:
    """(call, None) for a valid call, else (None, why it is not one)."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None, "no call in the reply"
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None, "arguments are not JSON"
    if not isinstance(args, dict):
        return None, "arguments are not an object"
    name = value["name"]
    if validators and name not in validators:
        return None, f"unknown tool {visible(name)[:60]!r}"
    if name in validators:
        errors = sorted(validators[name].iter_errors(args), key=lambda e: list(e.absolute_path))
        if errors:
            return None, visible(f"schema: {errors[0].message}")[:200]
    return {"name": name, "arguments": args}, None


class Member:
    """One endpoint, asked for calls with at most `max_concurrency` requests in flight."""

    def __init__(self, endpoint: Endpoint,
                 check: Callable[[], None] | None = None) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.check = check   # called before each request is sent (a job's cancel check)
        self.sem = asyncio.Semaphore(endpoint.max_concurrency)
        self._client = None
        self._llm = None
        self._llm_lock = threading.Lock()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._llm is not None:
            self._llm.close()

    async def ask(self, messages: list[dict], schema: dict, tools: list[dict] | None,
                  *, parse: str = "call") -> Answer:
        """One request, retried on 429 / 5xx / timeouts / connection errors with backoff.
        Raises EndpointFailed when it keeps failing."""
        attempts = self.endpoint.retries + 1
        for attempt in range(attempts):
            async with self.sem:
                if self.check is not None:   # a job stopped meanwhile sends nothing more
                    self.check()
                t0 = time.perf_counter()
                try:
                    if self.endpoint.is_local:
                        answer = await asyncio.to_thread(self._local, messages, schema)
                    else:
                        answer = await self._remote(messages, schema, tools, parse)
                except EndpointFailed:
                    raise
                except Exception as e:  # noqa: BLE001 - classified below
                    if attempt + 1 < attempts and _retriable(e):
                        delay = min(8.0, 0.25 * 2 ** attempt) * (0.5 + random.random())
                        await asyncio.sleep(delay)
                        continue
                    raise EndpointFailed(f"{self.name}: {_describe(e)}"
                                         + (f" (after {attempt + 1} tries)" if attempt else "")
                                         ) from None
                answer.latency_s = time.perf_counter() - t0
                return answer
        raise EndpointFailed(f"{self.name}: no reply")  # pragma: no cover - loop returns/raises

    async def _remote(self, messages: list[dict], schema: dict, tools: list[dict] | None,
                      parse: str) -> Answer:
        ep = self.endpoint
        if self._client is None:
            self._client = ep.async_client()
        kwargs: dict[str, Any] = {"model": ep.model, "messages": messages,
                                  "temperature": ep.temperature, "max_tokens": ep.max_tokens,
                                  **ep.params}
        if ep.mode == "tools" and parse == "call" and tools:
            kwargs["tools"] = list(tools)
            kwargs["tool_choice"] = "required"
        elif ep.mode == "json_object":   # llama.cpp's server: a schema-constrained grammar
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        else:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": schema}}
        raw = await self._client.chat.completions.with_raw_response.create(**kwargs)
        try:
            resp = raw.parse()
            message = resp.choices[0].message
        except (AttributeError, IndexError, TypeError, KeyError, ValueError):
            text = redact(raw.http_response.text)
            return Answer(raw=text[:2000], abstain_reason="the endpoint returned an invalid"
                          f" reply: {visible(text[:200])}")
        usage = getattr(resp, "usage", None)
        answer = Answer(raw="", tokens_in=getattr(usage, "prompt_tokens", 0) or 0,
                        tokens_out=getattr(usage, "completion_tokens", 0) or 0)
        calls = message.tool_calls or []
        if calls:
            fn = calls[0].function
            answer.raw = json.dumps({"name": fn.name, "arguments": fn.arguments},
                                    ensure_ascii=False)
            answer.value = {"name": fn.name, "arguments": fn.arguments}
            if len(calls) > 1:
                answer.value, answer.abstain_reason = None, f"{len(calls)} calls, not one"
            return answer
        answer.raw = message.content or ""
        answer.value, answer.abstain_reason = _parse_content(answer.raw, parse)
        return answer

    def _local(self, messages: list[dict], schema: dict) -> Answer:
        with self._llm_lock:       # llama.cpp in-process: one request at a time
            if self._llm is None:
                from llama_cpp import Llama

                self._llm = Llama(model_path=self.endpoint.gguf, n_ctx=8192, n_threads=1,
                                  verbose=False)
            resp = self._llm.create_chat_completion(
                messages=messages, temperature=self.endpoint.temperature,
                max_tokens=self.endpoint.max_tokens,
                response_format={"type": "json_object", "schema": schema},
                **self.endpoint.params)
        text = resp["choices"][0]["message"].get("content") or ""
        usage = resp.get("usage") or {}
        value, reason = _parse_content(text, "json")
        return Answer(raw=text, value=value, abstain_reason=reason,
                      tokens_in=usage.get("prompt_tokens", 0),
                      tokens_out=usage.get("completion_tokens", 0))


def _parse_content(text: str, parse: str) -> tuple[Any, str | None]:
    """A reply's text as JSON (a call may also come as `<tool_call>` text)."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`")
        stripped = stripped.partition("\n")[2] if "\n" in stripped else stripped
    try:
        return json.loads(stripped), None
    except ValueError:
        pass
    if parse == "call":
        calls = parse_tool_calls(text)
        if len(calls) == 1:
            return {"name": calls[0]["name"], "arguments": calls[0]["arguments"]}, None
    return None, "the reply is not JSON" + (f": {visible(text[:80])!r}" if text else " (empty)")
