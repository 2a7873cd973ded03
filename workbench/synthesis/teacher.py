"""Teacher synthesis: a teacher LLM writes new conversations from seeds, one topic a request.

Each request gives the teacher the task description, the tool schemas, one to three seed
conversations (current labels, in the OpenAI message format) and one mutation topic, and asks
for `per_request` new conversations with tool results invented consistently with the calls.
The reply is constrained by a JSON schema of a conversation list, made from the task's tools
(each call under its own tool's parameter schema, every string bounded), where the endpoint
supports structured output (`response_format` json_schema, or llama.cpp's schema grammar);
replies are cached as job units (no request is paid twice), and parsed into candidates, which a
reply that is JSON but no conversation becomes too (rejected: `format`); a reply that is no JSON
at all is a failed request, never cached. A request longer than the teacher's context (its
endpoint's `context`, or what its server says) shows fewer examples, the last one cut from the
middle (its system prompt and latest messages kept); the job logs it.
"""

from __future__ import annotations

import json
import random
from typing import Any

from workbench.committee.prompt import STRING_MAX, call_schema, keep_within, tool_functions
from workbench.conversations.view import Conversation
from workbench.conversations.messages import FieldError, normalize_messages, to_openai
from workbench.synthesis.corpus import Topic, n_messages

UNIT = "synthesis.teacher"

INSTRUCTIONS = """You write training data for a small tool-calling assistant. You are given \
the assistant's task, its tools (JSON schemas), example conversations and a topic. Write new, \
realistic conversations in the same OpenAI message format as the examples: user messages, \
assistant messages that call exactly one tool each (or answer in text where the examples do), \
and a "tool" message with the result right after every call of a tool that returns results. \
Invent the tool results so that they agree with the calls (a call that acts on something an \
earlier result found names that same thing), and let later messages use them. Every argument value \
must come from what the user said or from an earlier result. Do not copy the examples: use \
other people, places, names, times and wordings."""

# Bounds in characters (why a string sent to a model is bounded: committee.prompt.bounded).
TEXT_MAX = 600            # a user's or an assistant's message
RESULT_MAX = STRING_MAX   # a tool's result
ID_MAX = 40               # a call's id


def message_schema(tools: list[dict] | None = None, text_replies: bool = True) -> dict:
    """One message of a conversation: a user speaks, an assistant makes one call (arguments as
    an object: no JSON escaped in a string) or, where the seeds do, answers in text, a tool
    answers a call."""
    call = {"type": "object", "properties": {
        "id": {"type": "string", "maxLength": ID_MAX},
        "type": {"type": "string", "enum": ["function"]},
        "function": call_schema(tools)},
        "required": ["id", "type", "function"]}
    variants: list[dict] = [
        {"type": "object", "properties": {"role": {"const": "user"},
                                          "content": {"type": "string", "maxLength": TEXT_MAX}},
         "required": ["role", "content"]},
        {"type": "object", "properties": {"role": {"const": "assistant"},
                                          "tool_calls": {"type": "array", "items": call,
                                                         "minItems": 1, "maxItems": 1}},
         "required": ["role", "tool_calls"]},
        {"type": "object", "properties": {"role": {"const": "tool"},
                                          "tool_call_id": {"type": "string", "maxLength": ID_MAX},
                                          "content": {"type": "string", "maxLength": RESULT_MAX}},
         "required": ["role", "tool_call_id", "content"]}]
    if text_replies:
        variants.insert(2, {"type": "object", "properties": {
            "role": {"const": "assistant"}, "content": {"type": "string", "maxLength": TEXT_MAX}},
            "required": ["role", "content"]})
    return {"anyOf": variants}


def replies_in_text(seeds: list[Conversation]) -> bool:
    """Whether the seeds' assistant ever answers in text rather than with a call (a task whose
    replies go through a tool, like `respond_to_user`, does not)."""
    return any(m["role"] == "assistant" and not m["tool_calls"] for s in seeds for m in s.messages)


def reply_schema(k: int, tools: list[dict] | None = None, text_replies: bool = True) -> dict:
    """The JSON schema of a reply: {"conversations": [{"messages": [...]}, ...]}."""
    return {"type": "object", "properties": {"conversations": {
        "type": "array", "minItems": 1, "maxItems": max(1, k),
        "items": {"type": "object", "properties": {
            "messages": {"type": "array", "minItems": 2,
                         "items": message_schema(tools, text_replies)}},
            "required": ["messages"]}}},
        "required": ["conversations"]}


def choose_seeds(seeds: list[Conversation], topic: Topic, rng: random.Random,
                 at_most: int = 3) -> list[Conversation]:
    """One to three seeds, those that fit the topic's length first."""
    fitting = [s for s in seeds if topic.fits(n_messages(s.messages))]
    rest = [s for s in seeds if s not in fitting]
    rng.shuffle(fitting)
    rng.shuffle(rest)
    return (fitting + rest)[:max(1, min(at_most, len(seeds)))]


def _example(n: int, seed: Conversation, kept: set[int] | None = None) -> str:
    msgs = [to_openai(m, arguments_as_string=False) for i, m in enumerate(seed.messages)
            if kept is None or i in kept]
    left = "" if kept is None else (f" ({len(seed.messages) - len(kept)} messages from its"
                                    " middle left out to fit the context)")
    return f"Example {n + 1}{left}:\n" + json.dumps({"messages": msgs}, ensure_ascii=False)


def fit_examples(seeds: list[Conversation], budget: int | None
                 ) -> tuple[list[Conversation], dict[int, set[int]]]:
    """The seeds to show within `budget` characters (None: all): fewer examples first, then
    the last one cut from the middle, keeping its system prompt and its latest messages.
    Returns the seeds and, per cut seed (its position), the messages kept."""
    if budget is None:
        return seeds, {}
    chosen = list(seeds)
    while len(chosen) > 1 and sum(len(_example(n, s)) for n, s in enumerate(chosen)) > budget:
        chosen.pop()
    first = chosen[0]
    if len(_example(0, first)) <= budget:
        return chosen, {}
    sizes = [len(json.dumps(to_openai(m, arguments_as_string=False), ensure_ascii=False)) + 2
             for m in first.messages]
    must = {i for i, m in enumerate(first.messages) if m["role"] == "system"}
    kept = keep_within(sizes, budget, must, list(range(len(first.messages) - 1, -1, -1)))
    return chosen, {0: kept}


def request_messages(task: str | None, tools: list[dict] | None, seeds: list[Conversation],
                     topic: Topic, k: int, budget_chars: int | None = None,
                     cuts: list | None = None) -> list[dict]:
    """The request; with `budget_chars` (the teacher's context in characters, less its answer)
    the examples are fitted to it (`fit_examples`), what was left out noted in `cuts`."""
    fns = tool_functions(tools)
    head = (f"The assistant's task:\n{(task or '(no description)').strip()}\n\n"
            f"Tools:\n{json.dumps(fns, ensure_ascii=False)}\n\n")
    tail = (f"\n\nTopic: {topic.text}\n\nWrite {k} new conversation{'s' if k > 1 else ''} on"
            ' this topic. Answer with JSON: {"conversations": [{"messages": [...]}, ...]}.')
    room = None if budget_chars is None else max(
        0, budget_chars - len(INSTRUCTIONS) - len(head) - len(tail))
    shown, kept = fit_examples(seeds, room)
    if cuts is not None and (len(shown) < len(seeds) or kept):
        cuts.append({"examples": len(shown), "of": len(seeds),
                     "messages_left_out": {shown[n].trace_id: len(shown[n].messages) - len(k_)
                                           for n, k_ in kept.items()}})
    examples = "\n\n".join(_example(n, s, kept.get(n)) for n, s in enumerate(shown))
    return [{"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": head + examples + tail}]


def parse_reply(value: Any, raw: str, reason: str | None) -> list[tuple[list[dict] | None,
                                                                      Any, str | None]]:
    """A reply as (messages, raw, why it is not a conversation) per conversation in it."""
    if reason is not None or value is None:
        return [(None, raw[:20000], reason or "no reply")]
    convs = value.get("conversations") if isinstance(value, dict) else value
    if isinstance(value, dict) and convs is None and "messages" in value:
        convs = [value]
    if not isinstance(convs, list) or not convs:
        return [(None, value, "no conversations in the reply")]
    out = []
    for n, conv in enumerate(convs):
        msgs = conv.get("messages") if isinstance(conv, dict) else conv
        try:
            out.append((normalize_messages(msgs, f"conversations[{n}].messages"), None, None))
        except FieldError as e:
            out.append((None, conv, f"{e.field}: {e.message}"))
    return out
