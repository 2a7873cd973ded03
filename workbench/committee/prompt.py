"""What a committee member is asked: the task, the tools, the whole conversation with the
doubtful turn marked, and one call as the answer (with its JSON schema).

The rest of the conversation is frozen and shown in full, because what follows the doubtful turn
is the evidence: the tool result that came back says which call was made, the user's next words
say what the assistant must have asked. A member answers for that one turn only; it cannot insert
or move turns (the original pipeline's whole-conversation rewrites shifted every later turn).
"""

from __future__ import annotations

import json
from typing import Any

from workbench.checks.schema import declared_arguments
from workbench.conversation_view import Conversation

INSTRUCTIONS = """You review one turn of a conversation between a user and a tool-calling \
assistant. The assistant's turn marked >>> DOUBTFUL <<< may carry a wrong tool call: another \
function, a wrong or missing argument, a value nobody said. Decide which single call the \
assistant should have made at that turn, given everything else in the conversation: what came \
before it, and above all what came after it (the tool result that came back, the user's next \
words), which shows what the call must have been. Keep the current call if it is right. Answer \
with exactly one call to one of the tools."""

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


def render_conversation(messages: list[dict], turn: int) -> str:
    """The conversation as numbered lines; the doubtful turn marked and its current call shown."""
    lines = []
    for i, m in enumerate(messages):
        mark = ">>> DOUBTFUL <<< " if i == turn else ""
        if m["role"] == "assistant":
            calls = m.get("tool_calls") or []
            body = "; ".join(_call_text(c) for c in calls) if calls else (m.get("content") or "")
            what = "calls" if calls else "says"
            lines.append(f"[{i}] {mark}assistant {what}: {body}")
        elif m["role"] == "tool":
            lines.append(f"[{i}] tool result: {m.get('content') or ''}")
        else:
            lines.append(f"[{i}] {m['role']}: {m.get('content') or ''}")
    return "\n".join(lines)


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


def member_messages(conv: Conversation, turn: int, task: str | None,
                    candidates: list[dict] | None = None) -> list[dict]:
    """The chat messages of one request (system + user), for a member or, with `candidates`,
    for the arbiter."""
    system = INSTRUCTIONS
    if task:
        system += "\n\nThe assistant's task:\n" + task.strip()
    tools = json.dumps(tool_functions(conv.tools), ensure_ascii=False, indent=1)
    user = (f"Tools:\n{tools}\n\nConversation:\n{render_conversation(conv.messages, turn)}\n\n"
            f"Which call should the assistant have made at turn [{turn}]?")
    if candidates:
        listed = "\n".join(f"- {_call_text(c)}" for c in candidates)
        user += f"\n\n{ARBITER}\nCandidates:\n{listed}"
    user += ('\nAnswer with one call as JSON: {"name": "<tool>", "arguments": {...}}.')
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


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
