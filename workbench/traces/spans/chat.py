"""Provider message shapes -> the canonical message form (workbench.conversations.messages).

Span exports carry whatever the instrumented client sent: OpenAI chat or Responses items,
Anthropic content blocks, LangChain messages (plain or serialized), OpenTelemetry GenAI
`parts`. Each is turned into OpenAI chat dicts and then validated by `normalize_message`, so
every error names the field it came from.
"""

from __future__ import annotations

from typing import Any

import orjson

from workbench.core import safe_json
from workbench.conversations.messages import FieldError, normalize_message

_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant",
          "model": "assistant", "system": "system", "developer": "system", "tool": "tool",
          "function": "tool"}
_LC_CLASSES = {"HumanMessage": "user", "AIMessage": "assistant", "AIMessageChunk": "assistant",
               "SystemMessage": "system", "ToolMessage": "tool", "FunctionMessage": "tool"}
_TEXT = ("text", "input_text", "output_text")
_SKIP = ("reasoning", "thinking", "redacted_thinking")   # not what the model is trained to say


def maybe_json(value: Any, field: str) -> Any:
    """A JSON text (as exporters often store inputs and attributes) parsed; other text as is."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return safe_json.loads(value)
        except safe_json.TooDeep as e:
            raise FieldError(field, str(e)) from None
        except ValueError:
            return value
    return value


def as_text(value: Any) -> str | None:
    """A tool result or a content value as text: strings as they are, the rest as JSON."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _lc_unwrap(m: dict) -> dict:
    """A serialized LangChain message ({"lc": 1, "id": [..., "HumanMessage"], "kwargs"})."""
    if m.get("lc") and isinstance(m.get("kwargs"), dict) and isinstance(m.get("id"), list) \
            and m["id"]:
        role = _LC_CLASSES.get(str(m["id"][-1]))
        return {**m["kwargs"], "role": role or m["kwargs"].get("type")}
    return m


def _call(raw: dict, field: str) -> dict:
    """A tool call in any of the shapes: OpenAI, LangChain (`args`), Anthropic (`input`), OTel."""
    if "function" in raw:
        return raw
    args = next((raw[k] for k in ("arguments", "args", "input", "parameters") if k in raw), {})
    return {"id": raw.get("call_id") or raw.get("id"), "type": "function",
            "function": {"name": raw.get("name"), "arguments": args}}


def is_tool_definition(value: Any) -> bool:
    return isinstance(value, dict) and (
        isinstance(value.get("function"), dict) and "name" in value["function"]
        or ("name" in value and ("parameters" in value or "input_schema" in value)))


def convert_message(raw: Any, field: str, default_role: str) -> tuple[list[dict], list[dict]]:
    """One source message -> (OpenAI chat dicts, tool definitions found in it). An Anthropic
    user turn of tool_result blocks becomes one tool message per block."""
    if isinstance(raw, str):
        return [{"role": default_role, "content": raw}], []
    if isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) for x in raw):
        return [{"role": raw[0], "content": raw[1]}], []   # LangChain's ("role", "text") tuple
    if not isinstance(raw, dict):
        raise FieldError(field, f"must be a message object, not {type(raw).__name__}")
    m = _lc_unwrap(raw)
    kind = m.get("type")
    if kind == "function_call":                 # OpenAI Responses items
        return [{"role": "assistant", "content": None, "tool_calls": [_call(m, field)],
                 "_merge": True}], []
    if kind == "function_call_output":
        return [{"role": "tool", "tool_call_id": m.get("call_id"),
                 "content": as_text(m.get("output"))}], []
    role_src = m.get("role") or (kind if kind not in (None, "message") else None)
    role = _ROLES.get(role_src, role_src) if isinstance(role_src, str) else default_role
    if role == "tool" and is_tool_definition(m.get("content")) and not m.get("tool_call_id"):
        return [], [m["content"]]   # LangChain handlers log tool definitions as tool messages
    text: list[str] = []
    calls: list[dict] = []
    results: list[dict] = []
    content = m["parts"] if "parts" in m and "content" not in m else m.get("content")
    if isinstance(content, dict):
        content = [content] if "type" in content else as_text(content)
    if isinstance(content, list):
        for j, part in enumerate(content):
            pf = f"{field}.{'parts' if 'parts' in m else 'content'}[{j}]"
            if isinstance(part, str):
                text.append(part)
                continue
            if not isinstance(part, dict):
                raise FieldError(pf, f"must be an object, not {type(part).__name__}")
            ptype = part.get("type")
            if ptype in _TEXT:
                t = part.get("text", part.get("content"))
                if not isinstance(t, str):
                    raise FieldError(f"{pf}.text", "must be a string")
                text.append(t)
            elif ptype in ("tool_use", "tool_call"):
                calls.append(_call(part, pf))
            elif ptype == "tool_result":            # Anthropic
                body = part.get("content")
                if isinstance(body, list):
                    body = "".join(b.get("text", "") for b in body if isinstance(b, dict))
                results.append({"role": "tool", "tool_call_id": part.get("tool_use_id"),
                                "content": as_text(body), "_error": bool(part.get("is_error"))})
            elif ptype == "tool_call_response":     # OpenTelemetry GenAI
                results.append({"role": "tool", "tool_call_id": part.get("id"),
                                "content": as_text(part.get("response", part.get("result")))})
            elif ptype in _SKIP:
                continue
            else:
                raise FieldError(f"{pf}.type", f"content part of type {ptype!r} is not supported"
                                 " (text, tool calls and tool results are)")
    elif content is not None:
        if not isinstance(content, str):
            raise FieldError(f"{field}.content", f"must be text, not {type(content).__name__}")
        text.append(content)
    for key in ("tool_calls",):
        for c in m.get(key) or []:
            calls.append(_call(c, field) if isinstance(c, dict) else c)
    extra = m.get("additional_kwargs")
    if not calls and isinstance(extra, dict):
        calls = [_call(c, field) for c in extra.get("tool_calls") or [] if isinstance(c, dict)]
    if isinstance(m.get("function_call"), dict) and not calls:
        calls = [_call(m["function_call"], field)]
    out: list[dict] = []
    if role == "tool" or (results and not text and not calls):
        if role == "tool" and (text or not results):
            out.append({"role": "tool", "content": "".join(text) if text else None,
                        "tool_call_id": m.get("tool_call_id") or m.get("id"),
                        "name": m.get("name")})
        out.extend(results)
        return out, []
    joined = "".join(text) if text else None
    out.append({"role": role, "content": None if calls and not joined else joined,
                "tool_calls": calls or None,
                "name": None})
    out.extend(results)
    return out, []


def to_messages(raw: Any, field: str, default_role: str, max_bytes: int
                ) -> tuple[list[dict], list[dict]]:
    """A list of source messages -> (canonical messages, tool definitions seen among them).
    Consecutive Responses `function_call` items are one assistant turn."""
    raw = maybe_json(raw, field)
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list):
        raise FieldError(field, f"must be a list of messages, not {type(raw).__name__}")
    if len(raw) == 1 and isinstance(raw[0], list):   # LangChain: one list per prompt
        raw, field = raw[0], f"{field}[0]"
    msgs: list[dict] = []
    tools: list[dict] = []
    for i, item in enumerate(raw):
        converted, found = convert_message(item, f"{field}[{i}]", default_role)
        tools.extend(found)
        for m in converted:
            if m.pop("_merge", False) and msgs and msgs[-1].get("_calls_only"):
                msgs[-1]["tool_calls"].extend(m["tool_calls"])
                continue
            m.pop("_error", None)
            msg = normalize_message(m, f"{field}[{i}]", max_bytes)
            if msg["role"] == "assistant" and msg["tool_calls"] and not msg["content"]:
                msg["_calls_only"] = True
            msgs.append(msg)
    for m in msgs:
        m.pop("_calls_only", None)
    return msgs, tools


def system_message(text: Any, field: str, max_bytes: int) -> list[dict]:
    """A separate system prompt (Anthropic `system`, Responses `instructions`, OTel
    `gen_ai.system_instructions` parts) as a leading system message."""
    text = maybe_json(text, field)
    if text in (None, "", []):
        return []
    if isinstance(text, list):
        text = "".join(p if isinstance(p, str) else str(p.get("text", p.get("content", "")))
                       if isinstance(p, (str, dict)) else "" for p in text)
    if not isinstance(text, str):
        raise FieldError(field, "must be text or a list of text parts")
    return [normalize_message({"role": "system", "content": text}, field, max_bytes)]


def to_tools(raw: Any, field: str) -> list[dict]:
    """Tool definitions in any of the shapes (OpenAI, flat OTel/Responses, Anthropic
    `input_schema`, OpenInference JSON strings) -> OpenAI `{"type": "function", "function"}`."""
    raw = maybe_json(raw, field)
    if raw in (None, {}, []):
        return []
    if not isinstance(raw, list):
        raise FieldError(field, "must be a list of tool definitions")
    out = []
    for i, t in enumerate(raw):
        t = maybe_json(t, f"{field}[{i}]")
        if not isinstance(t, dict):
            raise FieldError(f"{field}[{i}]", "must be a tool definition object")
        fn = t["function"] if isinstance(t.get("function"), dict) else t
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise FieldError(f"{field}[{i}].name", "must be a non-empty string")
        spec = {"name": name}
        if fn.get("description"):
            spec["description"] = fn["description"]
        params = fn.get("parameters", fn.get("input_schema"))
        if params is not None:
            spec["parameters"] = params
        out.append({"type": "function", "function": spec})
    return out


def to_output(raw: Any, field: str, max_bytes: int) -> tuple[list[dict], list[dict]]:
    """What a model call returned, in any of the response shapes -> (assistant messages,
    what the response echoes of its request: the Responses API's tool definitions and its
    `instructions` as a system message, see `split_echo`)."""
    raw = maybe_json(raw, field)
    if raw is None:
        return [], []
    if isinstance(raw, dict):
        if isinstance(raw.get("choices"), list) and raw["choices"]:      # OpenAI chat
            choice = raw["choices"][0]
            if not isinstance(choice, dict):
                raise FieldError(f"{field}.choices[0]", "must be an object")
            return to_messages(choice.get("message", {"role": "assistant",
                                                      "content": choice.get("text")}),
                               f"{field}.choices[0].message", "assistant", max_bytes)
        if isinstance(raw.get("generations"), list):                     # LangChain LLMResult
            gen = raw["generations"]
            gen = gen[0] if gen and isinstance(gen[0], list) else gen
            first = gen[0] if gen else {}
            msg = first.get("message") or {"role": "assistant", "content": first.get("text")}
            return to_messages(msg, f"{field}.generations[0][0]", "assistant", max_bytes)
        if isinstance(raw.get("output"), list):                          # OpenAI Responses
            msgs, _ = to_messages(raw["output"], f"{field}.output", "assistant", max_bytes)
            tools = to_tools(raw.get("tools"), f"{field}.tools")
            return msgs, tools + system_message(raw.get("instructions"),
                                                f"{field}.instructions", max_bytes)
        for key in ("messages", "message", "output"):
            if key in raw and "role" not in raw:
                return to_messages(raw[key], f"{field}.{key}", "assistant", max_bytes)
        if "role" not in raw and "type" not in raw and isinstance(raw.get("text"), str):
            return to_messages(raw["text"], f"{field}.text", "assistant", max_bytes)
    return to_messages(raw, field, "assistant", max_bytes)


def to_input(raw: Any, field: str, max_bytes: int) -> tuple[list[dict], list[dict]]:
    """What a model call was sent -> (messages, tool definitions). A request object
    (`{"messages", "tools", "system"}`, Responses `{"input", "instructions", "tools"}`) or a
    bare message list."""
    raw = maybe_json(raw, field)
    if isinstance(raw, dict) and "role" not in raw:
        key = next((k for k in ("messages", "input", "prompts", "prompt") if k in raw), None)
        if key is None:
            raise FieldError(field, "holds no messages (expected 'messages' or a message list)")
        system = raw.get("system", raw.get("instructions"))
        msgs, found = to_messages(raw[key], f"{field}.{key}", "user", max_bytes)
        tools = to_tools(raw.get("tools") or raw.get("functions") or found, f"{field}.tools")
        return system_message(system, f"{field}.system", max_bytes) + msgs, tools
    msgs, found = to_messages(raw, field, "user", max_bytes)
    return msgs, to_tools(found, field)


def split_echo(echo: list[dict]) -> tuple[list[dict], list[dict]]:
    """`to_output`'s echo as (tool definitions, system messages)."""
    return ([e for e in echo if "function" in e], [e for e in echo if e.get("role") == "system"])


def with_system(inp: list[dict], system: list[dict]) -> list[dict]:
    """The input with an echoed system prompt in front, unless it has one already."""
    return inp if not system or any(m["role"] == "system" for m in inp) else system + inp
