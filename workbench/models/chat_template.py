"""The project's own ChatML (Qwen/Hermes-style) chat template, and rendering/tokenizing helpers.

One template renders conversations for training and is embedded in the exported GGUF, so it must be
*prefix-stable* (design principle 2): rendering ``messages[:i]`` plus the generation prompt gives
exactly the leading text of rendering the whole conversation.  The template therefore has no
last-turn special cases and no ``<think>`` handling.

JSON serialisation (tools, tool names, tool-call arguments) is
``json.dumps(x, ensure_ascii=False)``: keys in insertion order (not sorted), ``", "`` and ``": "``
separators, non-ASCII kept verbatim.  That is the ``tojson`` filter of transformers and of
llama-cpp-python (llama.cpp's native engine is meant to match it; not tested here).  It is NOT
plain jinja2's built-in ``tojson`` (sorted keys, HTML-escaped ``<>&'``), so :func:`render`
installs the transformers-compatible filter, and :func:`dump_json` is the Python-side equivalent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

Message = Mapping[str, Any]
Tool = Mapping[str, Any]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
GENERATION_PROMPT = f"{IM_START}assistant\n"
IGNORE_INDEX = -100

# Written with {%- -%} everywhere so the output does not depend on trim_blocks/lstrip_blocks, and
# kept to plain features so llama.cpp's native Jinja engine can run it from the GGUF too (no
# macros, no loop.previtem, no filter keyword arguments; dict keys by subscript, which is also
# faster in the sandbox than attribute lookup).
CHAT_TEMPLATE = r"""
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set system_message = messages[0]['content'] -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set system_message = none -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- if system_message is not none or tools -%}
    {{- '<|im_start|>system\n' -}}
    {%- if system_message is not none -%}{{- system_message -}}{%- endif -%}
    {%- if tools -%}
        {%- if system_message -%}{{- '\n\n' -}}{%- endif -%}
        {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
        {%- for tool in tools -%}
            {{- '\n' -}}{{- tool | tojson -}}
        {%- endfor -%}
        {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' -}}
    {%- endif -%}
    {{- '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if message['role'] == 'assistant' -%}
        {{- '<|im_start|>assistant\n' -}}
        {%- if message['content'] is string -%}
            {{- message['content'] -}}
        {%- elif message['content'] -%}
            {{- message['content'] | tojson -}}
        {%- endif -%}
        {%- if message['tool_calls'] -%}
            {%- for tool_call in message['tool_calls'] -%}
                {%- if tool_call['function'] is defined -%}
                    {%- set call = tool_call['function'] -%}
                {%- else -%}
                    {%- set call = tool_call -%}
                {%- endif -%}
                {%- if message['content'] or not loop.first -%}{{- '\n' -}}{%- endif -%}
                {{- '<tool_call>\n{"name": ' -}}{{- call['name'] | tojson -}}{{- ', "arguments": ' -}}
                {%- if call['arguments'] is string -%}
                    {{- call['arguments'] -}}
                {%- else -%}
                    {{- call['arguments'] | tojson -}}
                {%- endif -%}
                {{- '}\n</tool_call>' -}}
            {%- endfor -%}
        {%- endif -%}
        {{- '<|im_end|>\n' -}}
    {%- elif message['role'] == 'tool' -%}
        {%- if loop.first or loop_messages[loop.index0 - 1]['role'] != 'tool' -%}
            {{- '<|im_start|>user' -}}
        {%- endif -%}
        {{- '\n<tool_response>\n' -}}
        {%- if message['content'] is string -%}
            {{- message['content'] -}}
        {%- elif message['content'] -%}
            {{- message['content'] | tojson -}}
        {%- endif -%}
        {{- '\n</tool_response>' -}}
        {%- if loop.last or loop_messages[loop.index0 + 1]['role'] != 'tool' -%}
            {{- '<|im_end|>\n' -}}
        {%- endif -%}
    {%- elif message['role'] == 'user' or message['role'] == 'system' -%}
        {{- '<|im_start|>' + message['role'] + '\n' -}}
        {%- if message['content'] is string -%}
            {{- message['content'] -}}
        {%- elif message['content'] -%}
            {{- message['content'] | tojson -}}
        {%- endif -%}
        {{- '<|im_end|>\n' -}}
    {%- else -%}
        {{- raise_exception('Unknown message role: ' + message['role']) -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
""".strip()


def dump_json(value: Any) -> str:
    """Serialise exactly like the template's ``tojson`` (transformers / llama-cpp-python filter)."""
    return json.dumps(value, ensure_ascii=False)


def format_tool_call(name: str, arguments: Mapping[str, Any] | str) -> str:
    """One ``<tool_call>`` block as the template writes it; a string argument is emitted verbatim
    (it is only a string when the original was unparseable, and re-quoting it would change it)."""
    args = arguments if isinstance(arguments, str) else dump_json(arguments)
    return f'<tool_call>\n{{"name": {dump_json(name)}, "arguments": {args}}}\n</tool_call>'


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """The transformers/llama-cpp-python ``tojson`` filter (same signature, same defaults)."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


@lru_cache(maxsize=1)
def _compiled_template() -> jinja2.Template:
    """Compile once, in a sandbox configured like transformers' chat-template environment."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(CHAT_TEMPLATE)


def _with_system(messages: Sequence[Message], system: str | None) -> list[Message]:
    """Prepend the task description as a system message; two system prompts is a caller bug."""
    msgs = list(messages)
    if system is None:
        return msgs
    if msgs and msgs[0].get("role") == "system":
        raise ValueError("system= given but messages already start with a system message")
    return [{"role": "system", "content": system}, *msgs]


def _render_raw(
    messages: Sequence[Message], tools: Sequence[Tool] | None, add_generation_prompt: bool
) -> str:
    return _compiled_template().render(
        messages=list(messages), tools=list(tools) if tools else None,
        add_generation_prompt=add_generation_prompt,
    )


def render(
    messages: Sequence[Message],
    tools: Sequence[Tool] | None = None,
    system: str | None = None,
    add_generation_prompt: bool = False,
) -> str:
    """Render a conversation with :data:`CHAT_TEMPLATE`, without needing a tokenizer."""
    return _render_raw(_with_system(messages, system), tools, add_generation_prompt)


def _turns(
    messages: Sequence[Message], tools: Sequence[Tool] | None, system: str | None
) -> tuple[str, list[tuple[int, str, int]]]:
    """Full text plus ``(index, prompt, end)`` per assistant turn, each checked to be a prefix.

    Spans come from rendering prefixes rather than searching the text, so user-controlled content
    (which may itself contain ``<|im_start|>assistant``) cannot shift them.
    """
    full_msgs = _with_system(messages, system)
    offset = len(full_msgs) - len(messages)
    full = _render_raw(full_msgs, tools, False)
    turns: list[tuple[int, str, int]] = []
    for j, message in enumerate(full_msgs):
        if message.get("role") != "assistant" or j < offset:
            continue
        prompt = _render_raw(full_msgs[:j], tools, True)
        upto = _render_raw(full_msgs[: j + 1], tools, False)
        end = len(upto) - 1  # keep <|im_end|>, drop its "\n": that belongs to the next prefix
        if not (
            full.startswith(prompt)
            and full.startswith(upto)
            and prompt.endswith(GENERATION_PROMPT)
            and upto.endswith(IM_END + "\n")
            and len(prompt) <= end
        ):
            raise ValueError(f"chat template is not prefix-stable at message {j - offset}")
        turns.append((j - offset, prompt, end))
    return full, turns


def render_with_spans(
    messages: Sequence[Message],
    tools: Sequence[Tool] | None = None,
    system: str | None = None,
) -> tuple[str, list[tuple[int, int, int]]]:
    """Full text and ``(message_index, start, end)`` of each assistant target.

    A target is everything after ``<|im_start|>assistant\\n`` up to and including ``<|im_end|>``;
    ``text[start:end]`` is what the model must generate (it must emit ``<|im_end|>`` to stop).
    """
    full, turns = _turns(messages, tools, system)
    return full, [(i, len(prompt), end) for i, prompt, end in turns]


def per_turn_prompts(
    messages: Sequence[Message],
    tools: Sequence[Tool] | None = None,
    system: str | None = None,
) -> Iterator[tuple[int, str, str]]:
    """Yield ``(message_index, prompt, target)`` per assistant turn: the benchmark's per-turn pairs,
    where ``prompt == render(messages[:i], add_generation_prompt=True)``."""
    full, turns = _turns(messages, tools, system)
    for i, prompt, end in turns:
        yield i, prompt, full[len(prompt) : end]


class BatchTokenizer(Protocol):
    """What :func:`tokenize_with_labels` needs: a HF tokenizer called on a list of strings."""

    def __call__(self, text: list[str], *, add_special_tokens: bool) -> Mapping[str, Any]: ...


def tokenize_with_labels(
    tokenizer: BatchTokenizer,
    messages: Sequence[Message],
    tools: Sequence[Tool] | None = None,
    system: str | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and labels (-100 except assistant targets).

    The text is cut at every target boundary and the pieces are tokenized separately, then
    concatenated.  That makes each target's tokens exactly ``tokenize(target)``: what the model
    generates after a prompt that ends in ``<|im_start|>assistant\\n`` (generation starts a fresh
    token there).  Tokenizing the full text with an offsets mapping could instead merge a token
    across the boundary, giving targets the model never produces at inference.  The cut after
    ``<|im_end|>`` is free (special tokens are split out before BPE); the cut after
    ``assistant\\n`` equals whole-string tokenization unless the target starts with two or more
    whitespace characters (the GPT-2 pre-tokenizer regex then glues the ``\\n`` to them).  Tool
    calls start with ``<tool_call>``; the tests check all real traces.  Special-token strings
    inside message text are not escaped: a HF tokenizer (``split_special_tokens=False``) and
    llama.cpp (parse_special) both turn a literal ``<|im_end|>`` into the special token, so
    training and inference agree (flagging such traces is the importer's job).
    """
    full, spans = render_with_spans(messages, tools, system)
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for _, start, end in spans:
        pieces += [(full[pos:start], False), (full[start:end], True)]
        pos = end
    pieces.append((full[pos:], False))
    pieces = [(text, is_target) for text, is_target in pieces if text]
    encoded = tokenizer([text for text, _ in pieces], add_special_tokens=False)["input_ids"]
    input_ids: list[int] = []
    labels: list[int] = []
    for (_, is_target), ids in zip(pieces, encoded, strict=True):
        input_ids += ids
        labels += ids if is_target else [IGNORE_INDEX] * len(ids)
    return input_ids, labels
