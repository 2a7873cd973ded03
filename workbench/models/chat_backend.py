"""Model backends shared by `workbench eval`, `workbench chat` and the app (no Textual here).

A backend turns a conversation (canonical messages, tool schemas, system prompt) into the
assistant's next reply, streaming text pieces to an optional callback:

* :class:`LlamaCppBackend` runs a GGUF in-process with llama.cpp. The prompt is rendered with the
  project template (:mod:`workbench.models.chat_template`) — the one our trained models embed — and
  tokenized with ``special=True``. ``Llama.generate`` keeps the KV cache of the longest common
  token prefix with the previous call, and the template is prefix-stable, so evaluating the
  turns of one conversation in order only evaluates each turn's new tokens. Every call reports
  how many prompt tokens llama.cpp actually evaluated (counted at ``Llama.eval``) and how many it
  already held (``Llama.n_tokens`` after its prefix match). A GGUF whose embedded template is
  not ChatML still gets the project template (it is what workbench models are trained with);
  ``template_note`` says so, so callers can show it.
* :class:`EndpointBackend` calls any OpenAI-compatible endpoint (llama.cpp server, vLLM, hosted
  APIs); tools are passed as tools and a reply's ``tool_calls`` are written back as
  ``<tool_call>`` text, so both backends are scored by the same parser.

:class:`ChatSession` keeps a conversation for the chat REPL/app: user turns, generated replies
with their parsed calls (a malformed call is kept as text and marked), tool results typed by
the user or taken from a trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from workbench.core import safe_json
from workbench.models.chat_template import IM_END, format_tool_call, render
from workbench.conversations.messages import to_openai
from workbench.core.redaction import StreamRedactor, redact_secrets
from workbench.models.replies import DEFAULT_MAX_REPLY_BYTES
from workbench.core.safe_text import visible
from workbench.conversations.toolcalls import ToolCall, parse_tool_calls

OnToken = Callable[[str], None]


@dataclass
class Completion:
    """One generated reply and what it cost."""

    text: str
    calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0        # tokens in the rendered prompt
    evaluated_tokens: int = 0     # prompt tokens the model actually had to evaluate
    cached_tokens: int = 0        # prompt tokens reused from the KV cache
    completion_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str = "stop"   # stop | length | error
    error: str | None = None

    @property
    def malformed(self) -> bool:
        """The reply tries to call a tool but no call parses out of it."""
        return not self.calls and ("<tool_call>" in self.text or self.text.lstrip()[:1] in "{[")\
            and bool(self.text.strip())

    def details(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "evaluated_tokens": self.evaluated_tokens,
                "cached_tokens": self.cached_tokens, "completion_tokens": self.completion_tokens,
                "seconds": round(self.seconds, 4), "finish_reason": self.finish_reason,
                "error": self.error}


class ChatBackend(Protocol):
    name: str

    def complete(self, messages: Sequence[dict], tools: Sequence[dict] | None = None,
                 system: str | None = None, *, max_tokens: int = 256,
                 on_token: OnToken | None = None) -> Completion: ...

    def close(self) -> None: ...


def _system_and_messages(messages: Sequence[dict], system: str | None) -> tuple[list[dict], str | None]:
    msgs = list(messages)
    if system is not None and msgs and msgs[0].get("role") == "system":
        system = None  # the conversation carries its own system prompt
    return msgs, system


MAX_AUTO_CTX = 32768   # the KV cache of a longer context takes gigabytes on a laptop


def model_context(model_path: str) -> int:
    """The context a GGUF model was trained for (what its conversations may fill), at most
    MAX_AUTO_CTX: the default context of chat and evaluation, so a long system prompt fits
    wherever the model can take it. Read from the file's metadata without loading weights."""
    from llama_cpp import Llama

    vocab = Llama(model_path=model_path, vocab_only=True, verbose=False)
    try:
        meta = vocab.metadata or {}
    finally:
        vocab.close()
    trained = meta.get(f"{meta.get('general.architecture', 'llama')}.context_length")
    try:
        return max(512, min(int(trained), MAX_AUTO_CTX))
    except (TypeError, ValueError):
        return 8192   # a GGUF that does not say: llama.cpp's usual size


class LlamaCppBackend:
    """A GGUF run in-process; one conversation at a time shares the KV cache."""

    def __init__(self, model_path: str, *, n_ctx: int | None = None, n_threads: int | None = 2,
                 reuse_cache: bool = True, llama: Any = None) -> None:
        from llama_cpp import Llama

        self.model_path = str(model_path)
        self.name = self.model_path
        if llama is None and n_ctx is None:
            n_ctx = model_context(self.model_path)
        self.llm = llama or Llama(model_path=self.model_path, n_ctx=n_ctx, n_threads=n_threads,
                                  n_threads_batch=n_threads, verbose=False)
        self.reuse_cache = reuse_cache
        meta = self.llm.metadata or {}
        self.add_bos = str(meta.get("tokenizer.ggml.add_bos_token", "false")).lower() == "true"
        embedded = meta.get("tokenizer.chat_template") or ""
        self.template_note = None if "<|im_start|>" in embedded else (
            "the GGUF's embedded chat template is not ChatML; prompts use the project template")
        ids = self.llm.tokenize(IM_END.encode(), add_bos=False, special=True)
        self.stop_ids = {self.llm.token_eos(), *(ids if len(ids) == 1 else [])}
        self.evaluated_total = 0
        self._eval_counts: list[int] = []
        original_eval = self.llm.eval

        def counting_eval(tokens: Sequence[int]) -> None:  # measured where llama.cpp decodes
            self._eval_counts.append(len(tokens))
            original_eval(tokens)

        self.llm.eval = counting_eval

    def prompt_text(self, messages: Sequence[dict], tools: Sequence[dict] | None,
                    system: str | None) -> str:
        msgs, system = _system_and_messages(messages, system)
        return render(msgs, tools, system, add_generation_prompt=True)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=self.add_bos, special=True)

    def complete(self, messages: Sequence[dict], tools: Sequence[dict] | None = None,
                 system: str | None = None, *, max_tokens: int = 256,
                 on_token: OnToken | None = None) -> Completion:
        t0 = time.perf_counter()
        tokens = self.tokenize(self.prompt_text(messages, tools, system))
        out = Completion(text="", prompt_tokens=len(tokens))
        if len(tokens) + max_tokens > self.llm.n_ctx():
            out.finish_reason, out.error = "error", (
                f"prompt of {len(tokens)} tokens + {max_tokens} new does not fit n_ctx="
                f"{self.llm.n_ctx()}")
            return out
        if not self.reuse_cache:
            self.llm.reset()
        self._eval_counts.clear()
        generated: list[int] = []
        pending = b""
        text_parts: list[str] = []
        out.finish_reason = "length"
        for i, token in enumerate(self.llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0,
                                                    min_p=0.0, repeat_penalty=1.0)):
            if i == 0:  # the prompt suffix was evaluated in the first eval call
                out.evaluated_tokens = self._eval_counts[0] if self._eval_counts else 0
                out.cached_tokens = len(tokens) - out.evaluated_tokens
            if token in self.stop_ids:
                out.finish_reason = "stop"
                break
            generated.append(token)
            pending += self.llm.detokenize([token])
            piece = _decode_complete(pending)
            if piece:
                pending = pending[len(piece.encode("utf-8")):]
                text_parts.append(piece)
                if on_token:
                    on_token(piece)
            if len(generated) >= max_tokens:
                break
        if pending:
            piece = pending.decode("utf-8", "replace")
            text_parts.append(piece)
            if on_token:
                on_token(piece)
        out.text = "".join(text_parts)
        out.completion_tokens = len(generated)
        out.calls = parse_tool_calls(out.text)
        out.seconds = time.perf_counter() - t0
        self.evaluated_total += out.evaluated_tokens
        return out

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close:
            close()


def _decode_complete(data: bytes) -> str:
    """The longest prefix of `data` that is whole UTF-8 characters (a token may split one)."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", "replace")


def calls_as_text(tool_calls: Sequence[Any], content: str | None = None) -> str:
    """OpenAI reply tool calls -> the `<tool_call>` text our parser and template use."""
    blocks = [content] if content else []
    for call in tool_calls:
        fn = call["function"] if isinstance(call, dict) else call.function
        name = fn["name"] if isinstance(fn, dict) else fn.name
        raw = fn["arguments"] if isinstance(fn, dict) else fn.arguments
        if isinstance(raw, str):
            try:
                parsed = safe_json.loads(raw) if raw.strip() else {}
                raw = parsed if isinstance(parsed, dict) else raw
            except ValueError:
                pass  # kept verbatim: the parser then reports the call as malformed
        blocks.append(format_tool_call(name, raw))
    return "\n".join(blocks)


def _for_endpoint(message: dict) -> dict:
    """OpenAI form, with `content` always present: many server-side chat templates (llama.cpp
    server's Jinja ones included) read `message.content` even on tool-call turns."""
    out = to_openai(message)
    out.setdefault("content", "")
    return out


class EndpointBackend:
    """Any OpenAI-compatible chat endpoint."""

    def __init__(self, endpoint: Any, client: Any = None) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.client = client or endpoint.client()
        self.template_note = None

    def complete(self, messages: Sequence[dict], tools: Sequence[dict] | None = None,
                 system: str | None = None, *, max_tokens: int | None = None,
                 on_token: OnToken | None = None) -> Completion:
        t0 = time.perf_counter()
        msgs, system = _system_and_messages(messages, system)
        payload = ([{"role": "system", "content": system}] if system is not None else []) + [
            _for_endpoint(m) for m in msgs]
        kwargs: dict[str, Any] = {
            "model": self.endpoint.model, "messages": payload,
            "temperature": self.endpoint.temperature,
            "max_tokens": max_tokens or self.endpoint.max_tokens}
        if tools:
            kwargs["tools"] = list(tools)
        out = Completion(text="")
        if on_token is None:
            resp = create_completion(self.client, max_reply_bytes=getattr(
                self.endpoint, "max_reply_bytes", DEFAULT_MAX_REPLY_BYTES), **kwargs)
            choice = resp.choices[0]
            content, calls = choice.message.content, choice.message.tool_calls or []
            out.finish_reason = choice.finish_reason or "stop"
            usage = getattr(resp, "usage", None)
            if usage is not None:
                out.prompt_tokens = out.evaluated_tokens = getattr(usage, "prompt_tokens", 0) or 0
                out.completion_tokens = getattr(usage, "completion_tokens", 0) or 0
        else:
            content, calls = self._stream(kwargs, on_token, out)
        out.text = redact_secrets(calls_as_text(calls, content) if calls else (content or ""))
        out.calls = parse_tool_calls(out.text)
        out.seconds = time.perf_counter() - t0
        return out

    def _stream(self, kwargs: dict, on_token: OnToken, out: Completion) -> tuple[str, list]:
        try:
            return self._stream_chunks(kwargs, on_token, out)
        except (AttributeError, TypeError, IndexError, KeyError) as e:
            raise InvalidReply(f"the endpoint returned an invalid stream chunk ({e})") from None

    def _stream_chunks(self, kwargs: dict, on_token: OnToken,
                       out: Completion) -> tuple[str, list]:
        parts: list[str] = []
        calls: dict[int, dict] = {}
        shown = StreamRedactor()      # a key echoed in the reply is never shown, even in part
        for chunk in self.client.chat.completions.create(stream=True, **kwargs):
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            delta = choice.delta
            if delta.content:
                parts.append(delta.content)
                if text := shown.feed(delta.content):
                    on_token(text)
            for tc in delta.tool_calls or []:
                slot = calls.setdefault(tc.index or 0, {"function": {"name": "", "arguments": ""}})
                if tc.function is not None:
                    slot["function"]["name"] += tc.function.name or ""
                    slot["function"]["arguments"] += tc.function.arguments or ""
            if choice.finish_reason:
                out.finish_reason = choice.finish_reason
        if rest := shown.flush():
            on_token(rest)
        return "".join(parts), [calls[k] for k in sorted(calls)]

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close:
            close()


class InvalidReply(Exception):
    """A reply that is not an OpenAI chat completion (an HTML page, `{"choices": "nope"}`)."""


def reply_excerpt(data: bytes | str, n: int = 200) -> str:
    """The first `n` bytes of a reply, control characters (newlines too) spelled out."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "replace")
    text = raw[:n].decode("utf-8", "backslashreplace")
    return visible(text).replace("\n", "\\n").replace("\t", "\\t") + (
        "…" if len(raw) > n else "")


def create_completion(client: Any, *, max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
                      **kwargs: Any) -> Any:
    """`client.chat.completions.create(**kwargs)` (not streamed), checked: a reply without a
    first choice holding a message raises :class:`InvalidReply` with the reply's first bytes,
    instead of an AttributeError deep in the caller; so does one over `max_reply_bytes`."""
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    if len(raw.http_response.content) > max_reply_bytes:
        raise InvalidReply(f"the reply is larger than {max_reply_bytes:,} bytes (the endpoint's"
                           " max_reply_bytes): refused, nothing stored")
    try:
        resp = raw.parse()
        choice = resp.choices[0]
        message = choice.message
        content, calls = message.content, message.tool_calls
        if content is not None and not isinstance(content, str):
            raise TypeError("content is not text")
        for call in calls or []:
            if not isinstance(call.function.name, str):
                raise TypeError("a tool call without a name")
    except Exception:  # noqa: BLE001 - any shape we cannot read is the same invalid reply
        raise InvalidReply("the endpoint returned an invalid reply: "
                           + reply_excerpt(raw.http_response.content)) from None
    return resp


def open_backend(model: str | None = None, endpoint: str | None = None, *,
                 n_ctx: int | None = None,
                 n_threads: int | None = 2, timeout: float | None = None,
                 db: Any = None) -> ChatBackend:
    """`--model REF` or `--endpoint NAME` (exactly one), resolved the one way every command
    resolves them (`workbench.models.refs`): a model (a registered name or id with `db`, a GGUF
    path, `local`) runs in-process; an endpoint goes over HTTP unless it is `local` /
    `local:REF`, which runs in-process too. `timeout` overrides the endpoint's."""
    if (model is None) == (endpoint is None):
        raise ValueError("give exactly one of --model (a name, id, GGUF or `local`) or"
                         " --endpoint NAME")
    if model is not None:
        from workbench.models.refs import resolve_model

        return LlamaCppBackend(resolve_model(db, model).path, n_ctx=n_ctx, n_threads=n_threads)
    from workbench.models.endpoints import get_endpoint

    ep = get_endpoint(endpoint, db=db)
    if ep.is_local:
        return LlamaCppBackend(ep.gguf, n_ctx=n_ctx, n_threads=n_threads)
    return EndpointBackend(ep.with_timeout(timeout))


def assistant_message(completion: Completion) -> dict:
    """A generated reply as a canonical assistant message; a malformed call stays as text."""
    if completion.calls:
        calls = [{"id": f"call_{i}", "type": "function",
                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                 for i, c in enumerate(completion.calls)]
        return {"role": "assistant", "content": None, "tool_calls": calls,
                "tool_call_id": None, "name": None}
    return {"role": "assistant", "content": completion.text, "tool_calls": None,
            "tool_call_id": None, "name": None}


@dataclass
class ChatSession:
    """A conversation with one backend: what the chat REPL and the app's chat screen drive."""

    backend: ChatBackend
    tools: list[dict] | None = None
    system: str | None = None
    max_tokens: int = 256
    messages: list[dict] = field(default_factory=list)
    message_tools: frozenset[str] = frozenset()   # tools that speak to the user: no result

    def awaits_result(self, calls: list[dict]) -> list[dict]:
        """The calls (as `{name, arguments}` or message tool calls) that wait for a result."""
        def name(c: dict) -> str:
            return (c.get("function") or c)["name"]
        return [c for c in calls if name(c) not in self.message_tools]

    def add_user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text, "tool_calls": None,
                              "tool_call_id": None, "name": None})

    def add_tool_result(self, content: str, tool_call_id: str | None = None) -> None:
        """A tool result typed by the user or taken from a trace; answers the last open call."""
        if tool_call_id is None:
            for m in reversed(self.messages):
                if m["role"] == "assistant" and m["tool_calls"]:
                    tool_call_id = m["tool_calls"][-1]["id"]
                    break
        self.messages.append({"role": "tool", "content": content, "tool_calls": None,
                              "tool_call_id": tool_call_id, "name": None})

    def add_message(self, message: dict) -> None:
        """Append a canonical message as is (e.g. a trace's reference turn, for replay)."""
        self.messages.append(message)

    def generate(self, on_token: OnToken | None = None, *, append: bool = True) -> Completion:
        done = self.backend.complete(self.messages, self.tools, self.system,
                                     max_tokens=self.max_tokens, on_token=on_token)
        if append:
            self.messages.append(assistant_message(done))
        return done

    def pending_calls(self) -> list[dict]:
        """Calls of the last assistant turn that have no tool result yet."""
        if not self.messages or self.messages[-1]["role"] != "assistant":
            return []
        return list(self.messages[-1]["tool_calls"] or [])
