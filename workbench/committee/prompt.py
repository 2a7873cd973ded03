"""What a committee member is asked: the task, the tools, the whole conversation with the
doubtful turn marked, and the answer's JSON schema: one call, or (where the conversation's
assistant answers so) a text reply or several calls at once.

A conversation longer than the member's context (`Endpoint.context`, configured or read from
the server) is cut from the middle: the system prompt, the tools, the doubtful turn and the
messages nearest to it stay, a line says which messages were left out, and the job logs it.

The rest of the conversation is frozen and shown in full, because what follows the doubtful turn
is the evidence: the tool result that came back says which call was made, the user's next words
say what the assistant must have asked. A member answers for that one turn only; it cannot insert
or move turns (the original pipeline's whole-conversation rewrites shifted every later turn).
"""

from __future__ import annotations

import json
from typing import Any

from workbench.checks.schema import declared_arguments
from workbench.conversations.view import Conversation

INSTRUCTIONS = """You review one turn of a conversation between a user and a tool-calling \
assistant. The assistant's turn marked >>> DOUBTFUL <<< may carry a wrong tool call: another \
function, a wrong or missing argument, a value nobody said. Decide which single call the \
assistant should have made at that turn, given everything else in the conversation: what came \
before it, and above all what came after it (the tool result that came back, the user's next \
words), which shows what the call must have been. Keep the current call if it is right. Answer \
with exactly one call to one of the tools."""

TEXT_INSTRUCTIONS = """You review one turn of a conversation between a user and a tool-calling \
assistant. The assistant's turn marked >>> DOUBTFUL <<< may be wrong: a wrong tool call (another \
function, a wrong or missing argument, a value nobody said), a call where a reply to the user \
was due, or a reply where a call was due. Decide what the assistant should have done at that \
turn, given everything else in the conversation: what came before it, and above all what came \
after it (the tool results that came back, the user's next words). Keep the current answer if \
it is right. Answer either with a text reply to the user or with the call (or the calls made \
at once) to the tools."""

ARBITER = """The committee's members disagreed. Their candidate calls are listed below. Pick the \
one the conversation supports best (answer with that call exactly), or the current call."""


def _call_text(call: dict) -> str:
    fn = call.get("function") or call
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    return f"{fn.get('name')}({json.dumps(args, ensure_ascii=False, sort_keys=True)})"


def _answer_text(answer: dict) -> str:
    """A vote or candidate in words: a quoted reply, or its call(s)."""
    if isinstance(answer.get("text"), str):
        return "reply " + json.dumps(answer["text"], ensure_ascii=False)
    if isinstance(answer.get("calls"), list):
        return "; ".join(_call_text(c) for c in answer["calls"])
    return _call_text(answer)


def _line(i: int, m: dict, turn: int) -> str:
    mark = ">>> DOUBTFUL <<< " if i == turn else ""
    if m["role"] == "assistant":
        calls = m.get("tool_calls") or []
        body = "; ".join(_call_text(c) for c in calls) if calls else (m.get("content") or "")
        what = "calls" if calls else "says"
        if calls and m.get("content"):
            body = f"{m['content']} | {body}"
        return f"[{i}] {mark}assistant {what}: {body}"
    if m["role"] == "tool":
        return f"[{i}] tool result: {m.get('content') or ''}"
    return f"[{i}] {m['role']}: {m.get('content') or ''}"


def render_conversation(messages: list[dict], turn: int, kept: set[int] | None = None) -> str:
    """The conversation as numbered lines; the doubtful turn marked and its current call shown.
    With `kept`, only those messages, a line standing for each run of left-out ones."""
    lines: list[str] = []
    gap: list[int] = []
    for i, m in enumerate(messages):
        if kept is not None and i not in kept:
            gap.append(i)
            continue
        if gap:
            lines.append(_gap(gap))
            gap = []
        lines.append(_line(i, m, turn))
    if gap:
        lines.append(_gap(gap))
    return "\n".join(lines)


def _gap(idx: list[int]) -> str:
    span = f"[{idx[0]}]" if len(idx) == 1 else f"[{idx[0]}]-[{idx[-1]}]"
    return f"... {span}: {len(idx)} message(s) left out to fit the context ..."


CHARS_PER_TOKEN = 3   # an estimate on the safe side (English text runs near 4 per token)


def keep_within(sizes: list[int], budget: int, must: set[int], order: list[int]) -> set[int]:
    """Which items to keep: `must` always, then items in `order` while their sizes fit."""
    kept = set(must)
    used = sum(sizes[i] for i in kept)
    for i in order:
        if i in kept:
            continue
        if used + sizes[i] > budget:
            break
        kept.add(i)
        used += sizes[i]
    return kept


def fit_conversation(messages: list[dict], turn: int, budget: int | None) -> set[int] | None:
    """The messages to show a member whose prompt may hold `budget` characters of conversation
    (None: all): the system prompt, the doubtful turn, then the nearest messages to it, nearer
    first, the one after before the one before (what came back is the best evidence)."""
    if budget is None:
        return None
    sizes = [len(_line(i, m, turn)) + 1 for i, m in enumerate(messages)]
    if sum(sizes) <= budget:
        return None
    must = {i for i, m in enumerate(messages) if m["role"] == "system"} | {turn}
    order = []
    for d in range(1, len(messages)):
        order += [i for i in (turn + d, turn - d) if 0 <= i < len(messages)]
    return keep_within(sizes, budget, must, order)


def answers_in_text(conv: Conversation) -> bool:
    """Whether the conversation's assistant answers in text somewhere (a task whose replies go
    through a tool answers with calls only: its members are asked for a call, as before)."""
    return any(m["role"] == "assistant" and not m.get("tool_calls") and m.get("content")
               for m in conv.messages)


def calls_at_once(conv: Conversation) -> bool:
    """Whether the assistant makes several calls in one turn somewhere in the conversation."""
    return any(len(m.get("tool_calls") or []) > 1 for m in conv.messages)


def tool_functions(tools: list[dict] | None) -> list[dict]:
    return [t.get("function") or t for t in tools or []]


# A string in a schema sent to a model is bounded: under a grammar a small model can run one
# on until `max_tokens` cuts the reply off, and a cut-off reply is no JSON at all. A bounded
# string becomes nested grammar rules, and llama.cpp's grammar parser refuses a bound of 1,200
# characters (measured with llama-cpp-python 0.3: the process dies), so none is above 1,000.
STRING_MAX = 1000
VALUE_MAX = 400       # a string argument (a tool schema's own, larger bound is lowered to it)


def bounded(schema: Any, cap: int = VALUE_MAX) -> Any:
    """A copy of a JSON schema with every free string (no enum, const or pattern) at most `cap`
    characters long."""
    if isinstance(schema, list):
        return [bounded(s, cap) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v, cap) for k, v in schema.items()}
    if out.get("type") == "string" and not {"enum", "const", "pattern"} & out.keys():
        bound = out.get("maxLength")
        out["maxLength"] = min(bound, cap) if isinstance(bound, int) else cap
    return out


def call_schema(tools: list[dict] | None) -> dict:
    """The JSON schema of one call to one of the tools: {"name": ..., "arguments": {...}}, the
    arguments under the tool's own parameter schema (declared arguments only, as `check` has
    it), strings bounded."""
    options = []
    for fn in tool_functions(tools):
        args = bounded(declared_arguments(fn))
        if args.get("type", "object") != "object":
            args = {"type": "object"}
        elif "properties" in args:       # declared arguments, also where no type is given
            args.setdefault("additionalProperties", False)
        options.append({"type": "object", "properties": {
            "name": {"const": fn["name"]}, "arguments": args},
            "required": ["name", "arguments"], "additionalProperties": False})
    if not options:
        return {"type": "object", "properties": {"name": {"type": "string", "maxLength": VALUE_MAX},
                                                 "arguments": {"type": "object"}},
                "required": ["name", "arguments"]}
    return options[0] if len(options) == 1 else {"anyOf": options}


MAX_CALLS = 8     # calls in one answer


def answer_schema(tools: list[dict] | None, text: bool = False, several: bool = False) -> dict:
    """The JSON schema of a member's answer: one call (`call_schema`) where the conversation's
    assistant only ever makes one call a turn; else also {"reply": text} and/or
    {"calls": [call, ...]}."""
    one = call_schema(tools)
    if not text and not several:
        return one
    options: list[dict] = [{"type": "object", "properties": {"calls": {
        "type": "array", "items": one, "minItems": 1, "maxItems": MAX_CALLS if several else 1}},
        "required": ["calls"], "additionalProperties": False}]
    if text:
        options.insert(0, {"type": "object", "properties": {"reply": {
            "type": "string", "minLength": 1, "maxLength": STRING_MAX}},
            "required": ["reply"], "additionalProperties": False})
    return {"anyOf": options}


def member_messages(conv: Conversation, turn: int, task: str | None,
                    candidates: list[dict] | None = None, *, text: bool = False,
                    several: bool = False, budget_chars: int | None = None
                    ) -> tuple[list[dict], list[int]]:
    """The chat messages of one request (system + user), for a member or, with `candidates`,
    for the arbiter, and the conversation's messages left out to fit `budget_chars` (the
    member's context in characters, less its answer; None: no limit)."""
    system = TEXT_INSTRUCTIONS if text else INSTRUCTIONS
    if task:
        system += "\n\nThe assistant's task:\n" + task.strip()
    tools = json.dumps(tool_functions(conv.tools), ensure_ascii=False, indent=1)
    if text:
        ask = (f"What should the assistant have done at turn [{turn}]?")
        form = ('\nAnswer as JSON: {"reply": "<text to the user>"} or {"calls": [{"name":'
                ' "<tool>", "arguments": {...}}' + (', ...' if several else '') + ']}.')
    elif several:
        ask = f"Which call or calls should the assistant have made at turn [{turn}]?"
        form = '\nAnswer as JSON: {"calls": [{"name": "<tool>", "arguments": {...}}, ...]}.'
    else:
        ask = f"Which call should the assistant have made at turn [{turn}]?"
        form = '\nAnswer with one call as JSON: {"name": "<tool>", "arguments": {...}}.'
    head = f"Tools:\n{tools}\n\nConversation:\n"
    tail = f"\n\n{ask}"
    if candidates:
        listed = "\n".join(f"- {_answer_text(c)}" for c in candidates)
        tail += f"\n\n{ARBITER}\nCandidates:\n{listed}"
    tail += form
    room = None if budget_chars is None else budget_chars - len(system) - len(head) - len(tail)
    kept = fit_conversation(conv.messages, turn, None if room is None else max(room, 0))
    cut = [] if kept is None else [i for i in range(len(conv.messages)) if i not in kept]
    user = head + render_conversation(conv.messages, turn, kept) + tail
    return [{"role": "system", "content": system}, {"role": "user", "content": user}], cut


def relevance_messages(conv: Conversation, task: str | None) -> list[dict]:
    """Is this conversation on the task? (the relevance judge)"""
    system = ("You decide whether a logged conversation belongs to an assistant's task. Answer"
              ' with JSON: {"on_task": true|false, "reason": "<one sentence>"}.')
    names = ", ".join(fn["name"] for fn in tool_functions(conv.tools)) or "none"
    user = (f"The assistant's task:\n{(task or '').strip() or '(no description)'}\n\n"
            f"Its tools: {names}\n\nConversation:\n"
            f"{render_conversation(conv.messages, -1)}\n\nIs this conversation on the task?")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


RELEVANCE_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"on_task": {"type": "boolean"},
                                     "reason": {"type": "string"}},
    "required": ["on_task", "reason"], "additionalProperties": False}
