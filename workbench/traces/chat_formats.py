"""Chat-log formats of providers and trainers, read into the canonical form (workbench.conversations.messages).

* OpenAI chat / fine-tuning JSONL: `weight` (0 or 1) on assistant messages is a per-turn
  training mask; `developer` messages are system messages; the legacy `function_call` /
  `function` role / `functions` are tool calls, results and tools. The role a message was
  written with is kept, so an export gives it back.
* Anthropic Messages: `system` (text or text blocks), `text` / `tool_use` / `tool_result`
  blocks (a result's `is_error` kept), tools with `input_schema`.
* ShareGPT as LLaMA-Factory and axolotl write it: `conversations` of `{from, value}` with
  `human` / `gpt` / `system` / `function_call` / `observation`, `tools` as a JSON string,
  axolotl's per-message `train` flag (a training mask like `weight`), LLaMA-Factory's
  `kto_tag` (an outcome).

What the canonical form has no key for (a weight, `is_error`, the source role) is the
message's `extra`: stored beside it, part of the trace's identity, written back on export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from workbench.core import safe_json
from workbench.conversations.messages import FieldError, normalize_message, normalize_messages

ANTHROPIC_BLOCKS = ("text", "tool_use", "tool_result", "thinking", "redacted_thinking")

SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant",
    "system": "system",
    "function_call": "call",
    "observation": "tool", "tool": "tool",
}


@dataclass
class Parsed:
    """One record read: canonical messages, tools, each message's format attributes (None
    where a message has none; the list is None when no message has any), and the outcomes
    the format itself carries."""

    messages: list[dict]
    tools: list | None
    extras: list[dict | None] | None = None
    outcomes: dict | None = None
    keys: tuple[str, ...] | None = None   # the record's keys read (default: the format's)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _extras(extras: list[dict | None]) -> list[dict | None] | None:
    return extras if any(extras) else None


def function_tools(raw: Any, field: str) -> list | None:
    """A tools list in OpenAI form: bare function definitions (`{name, parameters}`, as
    ShareGPT files and the legacy `functions` have them) are wrapped as `{"type": "function",
    "function": ...}`; Anthropic's `input_schema` becomes `parameters`."""
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = safe_json.loads(raw)
        except safe_json.TooDeep as e:
            raise FieldError(field, str(e)) from None
        except ValueError as e:
            raise FieldError(field, f"is not valid JSON ({e})") from None
    if not isinstance(raw, list):
        raise FieldError(field, f"must be a list of tools, not {_type_name(raw)}")
    out = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise FieldError(f"{field}[{i}]", f"must be a tool object, not {_type_name(t)}")
        if "function" in t or t.get("type") not in (None, "function", "custom"):
            out.append(t)   # already OpenAI's form, or a provider's own tool kept as given
            continue
        if not isinstance(t.get("name"), str) or not t["name"]:
            raise FieldError(f"{field}[{i}].name", "must be a non-empty string")
        fn = {k: v for k, v in t.items() if k not in ("input_schema", "type")}
        if "input_schema" in t:
            fn["parameters"] = t["input_schema"]
        out.append({"type": "function", "function": fn})
    return out or None


# --- OpenAI chat and fine-tuning --------------------------------------------------------

def openai_messages(raw: Any, field: str = "messages") -> tuple[Any, list[dict | None] | None]:
    """OpenAI fine-tuning messages -> messages `normalize_messages` reads, and their extras:
    `weight`, and the role (`developer`, `function`) or legacy `function_call` they had."""
    if not isinstance(raw, list):
        return raw, None
    out: list[Any] = []
    extras: list[dict | None] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            out.append(m)
            extras.append(None)
            continue
        f = f"{field}[{i}]"
        extra: dict[str, Any] = {}
        role = m.get("role")
        if role == "developer":
            m = {**m, "role": "system"}
            extra["role"] = "developer"
        elif role == "function":   # legacy function result: its name says which call
            m = {**m, "role": "tool"}
            extra["role"] = "function"
        if m.get("function_call") is not None:
            if m.get("role") != "assistant":
                raise FieldError(f"{f}.function_call", "only assistant messages carry calls")
            if m.get("tool_calls"):
                raise FieldError(f"{f}.function_call", "a message has tool_calls or the legacy"
                                 " function_call, not both")
            m = {**m, "tool_calls": [{"function": m["function_call"]}]}
            extra["function_call"] = True
        if "weight" in m:
            w = m["weight"]
            if m.get("role") != "assistant":
                raise FieldError(f"{f}.weight", "only assistant messages carry a training weight")
            if isinstance(w, bool) or w not in (0, 1):
                raise FieldError(f"{f}.weight", f"must be 0 (left out of training) or 1, not"
                                 f" {w!r}")
            extra["weight"] = int(w)
        elif "train" in m:   # axolotl's per-message flag, OpenAI messages otherwise
            t = m["train"]
            if not isinstance(t, bool):
                raise FieldError(f"{f}.train", f"must be true or false, not {t!r}")
            if m.get("role") == "assistant":
                extra["weight"] = int(t)
            else:
                extra["train"] = t
        out.append(m)
        extras.append(extra or None)
    return out, _extras(extras)


def to_openai_extra(message: dict, extra: dict | None) -> dict:
    """An exported OpenAI message given back what its source format had (`to_openai` output
    in, the role, legacy call and weight restored)."""
    if not extra:
        return message
    out = dict(message)
    if extra.get("role") in ("developer", "function"):
        out["role"] = extra["role"]
        if extra["role"] == "function":
            out.pop("tool_call_id", None)
    if extra.get("function_call") and len(out.get("tool_calls") or []) == 1:
        fn = out.pop("tool_calls")[0]["function"]
        out["function_call"] = {"name": fn["name"], "arguments": fn["arguments"]}
    if "weight" in extra and out["role"] == "assistant":
        out["weight"] = extra["weight"]
    return out


# --- Anthropic Messages ------------------------------------------------------------------

def looks_anthropic(obj: dict) -> bool:
    """An Anthropic Messages record: `messages` with content blocks of Anthropic's kinds, or a
    top-level `system`, or tools with `input_schema` (and nothing only OpenAI has)."""
    msgs = obj.get("messages")
    if not isinstance(msgs, list):
        return False
    for m in msgs:
        if isinstance(m, dict) and (m.get("role") not in ("user", "assistant")
                                    or "tool_calls" in m or "function_call" in m):
            return False
    if obj.get("system") is not None:
        return True
    tools = obj.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and "input_schema" in t
                                       for t in tools):
        return True
    return any(isinstance(m, dict) and isinstance(m.get("content"), list)
               and any(isinstance(b, dict) and b.get("type") in ANTHROPIC_BLOCKS[1:]
                       for b in m["content"]) for m in msgs)


def _block_text(value: Any, field: str) -> str:
    """A string, or a list of text blocks joined."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise FieldError(field, f"must be a string or a list of text blocks, not"
                                f" {_type_name(value)}")
    parts = []
    for j, b in enumerate(value):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"),
                                                                                 str):
            kind = b.get("type") if isinstance(b, dict) else _type_name(b)
            raise FieldError(f"{field}[{j}]", f"only text blocks are read here, not {kind!r}")
        parts.append(b["text"])
    return "".join(parts)


def parse_anthropic(obj: dict, max_bytes: int) -> Parsed:
    raw = obj.get("messages")
    if not isinstance(raw, list):
        raise FieldError("messages", f"must be a list of messages, not {_type_name(raw)}")
    if not raw:
        raise FieldError("messages", "is empty")
    out: list[dict] = []
    extras: list[dict | None] = []

    def add(msg: dict, field: str, extra: dict | None = None) -> None:
        out.append(normalize_message(msg, field, max_bytes))
        extras.append(extra)

    if obj.get("system") is not None:
        add({"role": "system", "content": _block_text(obj["system"], "system")}, "system")
    for i, m in enumerate(raw):
        f = f"messages[{i}]"
        if not isinstance(m, dict):
            raise FieldError(f, f"must be an object, not {_type_name(m)}")
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise FieldError(f"{f}.role", f"must be user or assistant, not {role!r} (the system"
                                          " prompt is the record's `system`)")
        content = m.get("content")
        if isinstance(content, str):
            add({"role": role, "content": content}, f)
            continue
        if not isinstance(content, list):
            raise FieldError(f"{f}.content", f"must be a string or a list of content blocks,"
                                             f" not {_type_name(content)}")
        texts: list[str] = []
        calls: list[dict] = []
        thinking: list[dict] = []
        for j, b in enumerate(content):
            bf = f"{f}.content[{j}]"
            kind = b.get("type") if isinstance(b, dict) else None
            if kind == "text":
                if not isinstance(b.get("text"), str):
                    raise FieldError(f"{bf}.text", "must be a string")
                texts.append(b["text"])
            elif kind == "tool_use":
                if role != "assistant":
                    raise FieldError(bf, "tool_use blocks belong to assistant messages")
                for key in ("id", "name"):
                    if not isinstance(b.get(key), str) or not b[key]:
                        raise FieldError(f"{bf}.{key}", "must be a non-empty string")
                args = b.get("input", {})
                if not isinstance(args, dict):
                    raise FieldError(f"{bf}.input", f"must be an object, not {_type_name(args)}")
                calls.append({"id": b["id"], "type": "function",
                              "function": {"name": b["name"], "arguments": args}})
            elif kind == "tool_result":
                if role != "user":
                    raise FieldError(bf, "tool_result blocks belong to user messages")
                if not isinstance(b.get("tool_use_id"), str) or not b["tool_use_id"]:
                    raise FieldError(f"{bf}.tool_use_id", "must be a non-empty string")
                is_error = b.get("is_error")
                if is_error is not None and not isinstance(is_error, bool):
                    raise FieldError(f"{bf}.is_error", f"must be true or false, not"
                                                       f" {is_error!r}")
                add({"role": "tool", "tool_call_id": b["tool_use_id"],
                     "content": _block_text(b.get("content", ""), f"{bf}.content")}, bf,
                    {"is_error": True} if is_error else None)
            elif kind in ("thinking", "redacted_thinking"):
                thinking.append(b)   # kept with the message, not trained on
            else:
                raise FieldError(f"{bf}.type", f"unsupported content block {kind!r} (read:"
                                               f" {', '.join(ANTHROPIC_BLOCKS)})")
        if role == "assistant":
            add({"role": "assistant", "content": "".join(texts) if texts else None,
                 "tool_calls": calls or None}, f, {"thinking": thinking} if thinking else None)
        elif texts:
            add({"role": "user", "content": "".join(texts)}, f)
        elif not any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
            raise FieldError(f"{f}.content", "is empty")
    return Parsed(out, function_tools(obj.get("tools"), "tools"), _extras(extras),
                  keys=("messages", "system", "tools"))


# --- ShareGPT (LLaMA-Factory, axolotl) ------------------------------------------------------

def sharegpt_key(obj: dict) -> str | None:
    """The key holding a ShareGPT conversation: `conversations` (axolotl also writes OpenAI
    messages there), or `messages` when its messages have `from`/`value`."""
    for key in ("conversations", "messages"):
        msgs = obj.get(key)
        if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) and (
                "from" in msgs[0] or key == "conversations"):
            return key
    return None


def looks_sharegpt(obj: dict) -> bool:
    return sharegpt_key(obj) is not None


def _call_objects(value: Any, field: str) -> list[dict]:
    """A `function_call` value: JSON `{name, arguments}` or a list of them (parallel calls)."""
    parsed: Any = value
    if isinstance(value, str):
        try:
            parsed = safe_json.loads(value)
        except safe_json.TooDeep as e:
            raise FieldError(field, str(e)) from None
        except ValueError:
            raise FieldError(field, "a function_call must hold JSON {\"name\", \"arguments\"}"
                                    " (or a list of them)") from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls or not all(isinstance(c, dict) and isinstance(c.get("name"), str)
                            for c in calls):
        raise FieldError(field, "a function_call must hold JSON {\"name\", \"arguments\"}"
                                " (or a list of them)")
    return [{"id": c.get("id"), "type": "function",
             "function": {"name": c["name"],
                          "arguments": c.get("arguments", c.get("parameters", {}))}}
            for c in calls]


def parse_sharegpt(obj: dict, max_bytes: int) -> Parsed:
    key = sharegpt_key(obj) or "conversations"
    raw = obj.get(key)
    if not isinstance(raw, list):
        raise FieldError(key, f"must be a list of messages, not {_type_name(raw)}")
    if not raw:
        raise FieldError(key, "is empty")
    if all(isinstance(m, dict) and "role" in m and "from" not in m and "value" not in m
           for m in raw):   # OpenAI messages under `conversations` (axolotl's chat_template)
        msgs, extras_ = openai_messages(raw, key)
        return Parsed(normalize_messages(msgs, key, max_bytes=max_bytes),
                      function_tools(obj.get("tools") or None, "tools"), extras_,
                      keys=(key, "tools"))
    out: list[dict] = []
    extras: list[dict | None] = []

    def add(msg: dict, field: str, extra: dict | None = None) -> None:
        out.append(normalize_message(msg, field, max_bytes))
        extras.append(extra)

    system = obj.get("system")
    if system is not None and system != "":
        if not isinstance(system, str):
            raise FieldError("system", f"must be a string, not {_type_name(system)}")
        add({"role": "system", "content": system}, "system")
    for i, m in enumerate(raw):
        f = f"{key}[{i}]"
        if not isinstance(m, dict):
            raise FieldError(f, f"must be an object, not {_type_name(m)}")
        tag_key = "from" if "from" in m else "role"
        tag = m.get(tag_key)
        role = SHAREGPT_ROLES.get(tag) if isinstance(tag, str) else None
        if role is None:
            raise FieldError(f"{f}.{tag_key}", f"unknown role {tag!r} (expected one of"
                                               f" {', '.join(SHAREGPT_ROLES)})")
        value_key = "value" if "value" in m else "content"
        value = m.get(value_key)
        if role != "call" and value is not None and not isinstance(value, str):
            raise FieldError(f"{f}.{value_key}", f"must be a string, not {_type_name(value)}")
        extra: dict[str, Any] = {}
        if tag != {"user": "human", "assistant": "gpt", "call": "function_call",
                   "tool": "observation", "system": "system"}[role]:
            extra["from"] = tag   # the name this file used, given back on export
        for flag in ("train", "weight"):
            if flag in m:
                v = m[flag]
                if not (isinstance(v, bool) or v in (0, 1)):
                    raise FieldError(f"{f}.{flag}", f"must be true/false (or 0/1), not {v!r}")
                if role in ("assistant", "call"):
                    extra["weight"] = int(v)
                else:
                    extra[flag] = v   # kept for the axolotl export; only assistant turns train
        if "train_detail" in m:
            extra["train_detail"] = m["train_detail"]
        if role == "call":
            add({"role": "assistant", "content": None,
                 "tool_calls": _call_objects(value, f"{f}.{value_key}")}, f, extra or None)
        elif role == "tool":
            prev = out[-1] if out else None
            n = len(prev["tool_calls"] or []) if prev and prev["role"] == "assistant" else 0
            parts = _split_results(value, n) if n > 1 else None
            if parts is None:
                add({"role": "tool", "content": value}, f, extra or None)
            else:   # one observation answering parallel calls: a JSON list, one per call
                for j, part in enumerate(parts):
                    add({"role": "tool", "content": part}, f,
                        {**extra, "joined": len(parts)} if j == 0 else None)
        else:
            add({"role": role, "content": value}, f, extra or None)
    tools = function_tools(obj.get("tools") or None, "tools")
    outcomes = None
    if isinstance(obj.get("kto_tag"), bool):
        outcomes = {"kto_tag": obj["kto_tag"]}
    return Parsed(out, tools, _extras(extras), outcomes, keys=(key, "system", "tools"))


def _split_results(value: Any, n: int) -> list[str] | None:
    if not isinstance(value, str) or not value.lstrip().startswith("["):
        return None
    try:
        parts = safe_json.loads(value)
    except ValueError:
        return None
    if not isinstance(parts, list) or len(parts) != n:
        return None
    return [p if isinstance(p, str) else orjson.dumps(p).decode() for p in parts]
