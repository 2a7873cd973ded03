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
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from workbench.checks.schema import declared_arguments
from workbench.committee.prompt import CHARS_PER_TOKEN
from workbench.models.endpoints import Endpoint
from workbench.core.errors import InputError
from workbench.jobs.context import content_key
from workbench.core.redaction import redact, redact_secrets
from workbench.models.replies import ReplyRefused, check_size, parse_completion, read_async
from workbench.core.safe_text import visible
from workbench.conversations.toolcalls import parse_tool_calls

RETRY_STATUS = {408, 409, 429}   # and every 5xx


class EndpointFailed(Exception):
    """The endpoint kept failing (after its retries), refused the request, or answered with a
    reply that is none (too large, not a completion, broken arguments, no JSON where JSON was
    asked for): no vote, and no cached unit, so a re-run or a resumed job asks again."""


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


_VALIDATORS: dict[str, dict[str, Draft202012Validator]] = {}


def tool_validators(tools: list[dict] | None) -> dict[str, Draft202012Validator]:
    """A validator per tool; arguments a schema does not declare are invalid (as in `check`).
    Made once per tool list (a committee validates every vote against the same few); the
    caller must not change the dict."""
    key = json.dumps(tools or [], sort_keys=True)
    out = _VALIDATORS.get(key)
    if out is None:
        out = {}
        for t in tools or []:
            fn = t.get("function") or t
            out[fn["name"]] = Draft202012Validator(declared_arguments(fn))
        if len(_VALIDATORS) >= 256:
            _VALIDATORS.clear()
        _VALIDATORS[key] = out
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


def validate_answer(value: Any, validators: dict[str, Draft202012Validator], *,
                    text: bool = False, several: bool = False) -> tuple[dict | None, str | None]:
    """(answer, None) for a valid answer: one call {name, arguments}, several calls
    {"calls": [...]} (where `several`), or a text reply {"text": ...} (where `text`); else
    (None, why it is not one)."""
    if isinstance(value, dict) and set(value) & {"reply", "text"} and "name" not in value:
        said = value.get("reply", value.get("text"))
        if not text:
            return None, "a text reply where a call is due"
        if not isinstance(said, str) or not said.strip():
            return None, "an empty reply"
        return {"text": said.strip()}, None
    if isinstance(value, dict) and isinstance(value.get("calls"), list):
        calls = value["calls"]
        if not calls:
            return None, "no call in the reply"
        if len(calls) > 1 and not several:
            return None, f"{len(calls)} calls, not one"
        out = []
        for c in calls:
            call, why = validate_call(c, validators)
            if call is None:
                return None, why
            out.append(call)
        return (out[0] if len(out) == 1 else {"calls": out}), None
    return validate_call(value, validators)


LOCAL_N_CTX = 8192
# how servers say a prompt is over their context (llama.cpp, vLLM, OpenAI)
_CONTEXT_ERROR = re.compile(r"(?i)context (?:window|length) (?:of|is) (\d+)")
POOL_SIZE = 8          # requests in flight per client (connection pool)
_REQUESTED = re.compile(r"(?i)requested (?:tokens \(|)(\d+)")


def context_in_error(message: str) -> int | None:
    """The context size a server's refusal names ("exceed context window of 8192")."""
    m = _CONTEXT_ERROR.search(message)
    return int(m.group(1)) if m else None


class Member:
    """One endpoint, asked for calls with at most `max_concurrency` requests in flight."""

    def __init__(self, endpoint: Endpoint,
                 check: Callable[[], None] | None = None) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.check = check   # called before each request is sent (a job's cancel check)
        self.sem = asyncio.Semaphore(endpoint.max_concurrency)
        self._client = None
        self._llms: list = []           # llama.cpp in-process: one model object per slot,
        self._llm_free: list = []       # each used by one thread at a time
        self._llm_lock = threading.Condition()
        self.context: int | None = endpoint.context or (
            LOCAL_N_CTX if endpoint.is_local else None)
        self._asked_context = endpoint.context is not None or endpoint.is_local
        self.chars_per_token: float = CHARS_PER_TOKEN
        self._context_lock = asyncio.Lock()
        self.batch_failed: dict[str, str] = {}   # request body key -> why its batch gave none
        self._shards: list = []           # clients for requests, each with its own pool
        self._in_flight: list[int] = []
        if not endpoint.is_local:
            # the client library's import (seconds on a loaded CPU) and the clients (their TLS
            # context): made here, not on the event loop while other requests are in flight
            try:
                self._make_clients()
            except InputError:
                pass        # a missing key: each request fails with it (EndpointFailed)

    def _make_clients(self) -> None:
        """One client per `POOL_SIZE` requests in flight: a connection pool walks all of its
        connections on every request sent and every reply closed, so at 64 in flight one
        pool costs about 1 ms of event-loop CPU a request; pools of 8 cost an eighth."""
        shards = max(1, -(-self.endpoint.max_concurrency // POOL_SIZE))
        if shards == 1:
            self._shards = [self.endpoint.async_client()]
        else:
            import httpx2

            ctx = httpx2.create_ssl_context()
            self._shards = [self.endpoint.async_client(ctx) for _ in range(shards)]
        self._in_flight = [0] * len(self._shards)
        self._client = self._shards[0]

    async def context_tokens(self) -> int | None:
        """The member's context in tokens: configured (`context`), llama.cpp in-process's, or
        read once from the server's model list (vLLM's `max_model_len`, a `context_length`);
        None when unknown (a refusal naming it teaches it: `learn_context`)."""
        async with self._context_lock:     # asked once, the other requests wait for it
            if not self._asked_context:
                self._asked_context = True
                await self._server_context()
        return self.context

    async def _server_context(self) -> None:
        try:
            if self._client is None:
                self._make_clients()
            page = await asyncio.wait_for(self._client.models.list(), 5)
            for model in page.data:
                extra = model.model_extra or {}
                meta = extra.get("meta") if isinstance(extra.get("meta"), dict) else {}
                found = (extra.get("max_model_len") or extra.get("context_length")
                         or meta.get("n_ctx"))
                if isinstance(found, int) and found > 0 and (
                        model.id == self.endpoint.model or len(page.data) == 1):
                    self.context = found
        except Exception:  # noqa: BLE001 - servers without a model list: unknown
            pass

    def learn_context(self, error: str, prompt_chars: int = 0) -> bool:
        """Take the context size from a refusal ("Requested tokens (8956) exceed context window
        of 8192"), and where it names the tokens asked for, how many characters a token of this
        prompt took; True when the prompt will now be cut shorter."""
        size = context_in_error(error)
        if size is None:
            return False
        changed = self.context is None or size < self.context
        self.context = size if self.context is None else min(size, self.context)
        asked = _REQUESTED.search(error)
        if asked and prompt_chars and int(asked.group(1)) > 0:
            measured = 0.9 * prompt_chars / int(asked.group(1))
            if measured < self.chars_per_token:
                self.chars_per_token, changed = measured, True
        return changed

    def budget_chars(self) -> int | None:
        """How many characters a prompt may take: the context less the answer's tokens."""
        if self.context is None:
            return None
        return int(max(0, self.context - self.endpoint.max_tokens) * self.chars_per_token)

    async def close(self) -> None:
        for client in self._shards or ([self._client] if self._client is not None else []):
            await client.close()
        for llm in self._llms:
            llm.close()
        self._llms, self._llm_free = [], []

    async def ask(self, messages: list[dict], schema: dict, tools: list[dict] | None,
                  *, parse: str = "call", text: bool = False) -> Answer:
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
                        answer = await self._remote(messages, schema, tools, parse, text)
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

    def request_body(self, messages: list[dict], schema: dict, tools: list[dict] | None,
                     parse: str = "call", text: bool = False) -> dict[str, Any]:
        """The chat completion request for one ask: sent online, or as a batch line."""
        ep = self.endpoint
        kwargs: dict[str, Any] = {"model": ep.model, "messages": messages,
                                  "temperature": ep.temperature, "max_tokens": ep.max_tokens,
                                  **ep.params}
        if ep.mode == "tools" and parse == "call" and tools:
            kwargs["tools"] = list(tools)
            kwargs["tool_choice"] = "auto" if text else "required"
        elif ep.mode == "json_object":   # llama.cpp's server: a schema-constrained grammar
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        else:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": schema}}
        return kwargs

    async def _remote(self, messages: list[dict], schema: dict, tools: list[dict] | None,
                      parse: str, text: bool = False) -> Answer:
        if self.endpoint.batch:     # its replies came in a batch (workbench.committee.batched)
            key = content_key(self.request_body(messages, schema, tools, parse, text))
            raise EndpointFailed(f"{self.name}: "
                                 + self.batch_failed.get(key, "asked outside a batch"))
        if not self._shards:
            self._make_clients()
        kwargs = self.request_body(messages, schema, tools, parse, text)
        shard = self._in_flight.index(min(self._in_flight))    # the least busy pool
        self._in_flight[shard] += 1
        try:
            async with self._shards[shard].chat.completions.with_streaming_response.create(
                    **plain_body(kwargs)) as response:
                data = await read_async(response, self.endpoint.max_reply_bytes)
        except ReplyRefused as e:
            raise EndpointFailed(f"{self.name}: {e}") from None
        finally:
            self._in_flight[shard] -= 1
        return self.answer_from(data, parse, text, "tools" in kwargs)

    def answer_from(self, data: bytes, parse: str, text: bool, sent_tools: bool) -> Answer:
        """A completion body as an Answer, online or from a batch's output (one parser);
        raises EndpointFailed for a reply that is none."""
        try:
            check_size(len(data), self.endpoint.max_reply_bytes)
            reply = parse_completion(data)
        except ReplyRefused as e:
            raise EndpointFailed(f"{self.name}: {e}") from None
        answer = Answer(raw=reply.raw(), tokens_in=reply.tokens_in, tokens_out=reply.tokens_out)
        if reply.calls:
            calls = [{k: c[k] for k in ("name", "arguments")} for c in reply.calls]
            answer.value = calls[0] if len(calls) == 1 else {"calls": calls}
            return answer
        if text and sent_tools and not answer.raw.lstrip().startswith("{"):
            if not answer.raw.strip():
                raise EndpointFailed(f"{self.name}: an empty reply")
            answer.value = {"reply": answer.raw}     # a text answer, in the tools mode
            return answer
        answer.value = self._content(answer.raw, parse)
        return answer

    def _content(self, text: str, parse: str) -> Any:
        """A reply's text as JSON; a reply that is none is a failed request (not cached)."""
        value, reason = _parse_content(text, parse)
        if reason is not None:
            raise EndpointFailed(f"{self.name}: {reason}")
        return value

    def _take_llm(self):
        """A model object no other thread uses (a new one while fewer than the endpoint's
        slots exist): a `Llama` is not thread-safe, so each request holds one to itself."""
        with self._llm_lock:
            # all taken: a request whose task was cancelled may still run in its thread
            self._llm_lock.wait_for(lambda: self._llm_free or len(self._llms)
                                    < self.endpoint.max_concurrency)
            if self._llm_free:
                return self._llm_free.pop()
            from llama_cpp import Llama

            llm = Llama(model_path=self.endpoint.gguf, n_ctx=self.context or LOCAL_N_CTX,
                        n_threads=1, verbose=False)
            self._llms.append(llm)
            return llm

    def _local(self, messages: list[dict], schema: dict) -> Answer:
        llm = self._take_llm()
        try:
            resp = llm.create_chat_completion(
                messages=messages, temperature=self.endpoint.temperature,
                max_tokens=self.endpoint.max_tokens,
                response_format={"type": "json_object", "schema": schema},
                **self.endpoint.params)
        finally:
            with self._llm_lock:
                self._llm_free.append(llm)
                self._llm_lock.notify()
        text = redact_secrets(resp["choices"][0]["message"].get("content") or "")
        usage = resp.get("usage") or {}
        try:
            check_size(len(text.encode()), self.endpoint.max_reply_bytes)
        except ReplyRefused as e:
            raise EndpointFailed(f"{self.name}: {e}") from None
        return Answer(raw=text, value=self._content(text, "json"),
                      tokens_in=usage.get("prompt_tokens", 0),
                      tokens_out=usage.get("completion_tokens", 0))


def plain_body(kwargs: dict) -> dict:
    """`create` arguments whose body goes as it is: our messages, tools and schemas are plain
    JSON already, and the client's typed walk over them (about 1 ms a request, on the event
    loop) is skipped by sending them as `extra_body`, which it merges over the typed fields."""
    return {"model": kwargs["model"], "messages": [],
            "extra_body": {k: v for k, v in kwargs.items() if k != "model"}}


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
