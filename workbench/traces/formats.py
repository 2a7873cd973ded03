"""Input formats: detection and streaming parsers that yield canonical traces.

Each trace format is a `TraceFormat` in `REGISTRY` with a `detect` function over a file's first
record: the first that claims it wins, so a new format is one entry (see `register`).

| format | a line (or file) |
|---|---|
| `anthropic` | `{"system"?, "messages": [{"role", "content": [text / tool_use / tool_result blocks]}], "tools": [{"name", "input_schema"}]}` |
| `sharegpt` | `{"conversations": [{"from": "human" / "gpt" / "function_call" / "observation", "value"}], "system"?, "tools": "<JSON string>"}` (LLaMA-Factory, axolotl) |
| `openai` | `{"messages": [...], "tools": [...]?}`; results are `role: tool` messages; fine-tuning's `weight`, `developer`, legacy `function_call` / `function` |
| `tft`    | `{"context": "<JSON string of {messages, tools?}>"}`; results are user messages holding a JSON list |
| `qa`     | `{"question": "<JSON message list>", "answer": "<JSON {name, parameters}>"}` |
| `task-json` | `job_description.json`: `task_description`, `llm_as_a_judge_instructions`, `tools`; or a bare JSON list of tools |

A trace file is JSON Lines, or (`.json`) one JSON array of records, as LLaMA-Factory ships
its data; errors name the line where the bad record starts.
| `task-text` | `task.txt`: prose task under `# Task`, bullet list under `# Mutations` |
"""

from __future__ import annotations

import json
import os
import re
import stat

import orjson
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from workbench.traces import outcomes as outcome_fields
from workbench.core import safe_json
from workbench.traces.chat_formats import (Parsed, function_tools, looks_anthropic, looks_sharegpt,
                                    openai_messages, parse_anthropic, parse_sharegpt)
from workbench.core.errors import InputError
from workbench.conversations.messages import MAX_MESSAGE_BYTES, FieldError, normalize_message, normalize_messages
from workbench.core.redaction import REDACTED
from workbench.core.safe_json import TooDeep

SPAN_FORMATS = ("langfuse", "langsmith", "otel", "openinference")   # formats_spans
TASK_FORMATS = ("task-json", "task-text")
SPLITS = ("train", "test", "unassigned")
ORIGINS = ("imported", "synthetic")


@dataclass
class Record:
    line: int
    messages: list[dict]
    tools: list | None
    meta: dict | None = None   # the line's `meta` object (our own export writes split, origin)
    # Outcomes of the conversation by name (a reward, a user's thumbs, an evaluator's score):
    # numbers, booleans or short strings, as the source format carries them.
    outcomes: dict[str, Any] | None = None
    # Every key of the record that is not its conversation (kept and exported back).
    metadata: dict[str, Any] | None = None
    # Per message, the attributes of its format the canonical form has no key for (a training
    # `weight`, a result's `is_error`); None when no message has any.
    extras: list[dict | None] | None = None


@dataclass(frozen=True)
class TraceFormat:
    """A trace format: how to recognise a record of it, how to read one, and which of a
    record's keys are the conversation (the others are its metadata)."""

    name: str
    detect: Callable[[dict], bool]
    parse: Callable[[dict, int], Parsed]
    keys: tuple[str, ...]
    description: str = ""


REGISTRY: list[TraceFormat] = []


def register(fmt: TraceFormat, *, before: str | None = None) -> None:
    """Add a format; `before` puts it ahead of another in detection order."""
    if any(f.name == fmt.name for f in REGISTRY):
        raise ValueError(f"trace format {fmt.name!r} registered twice")
    at = next((i for i, f in enumerate(REGISTRY) if f.name == before), len(REGISTRY))
    REGISTRY.insert(at, fmt)


def get_format(name: str) -> TraceFormat:
    for f in REGISTRY:
        if f.name == name:
            return f
    raise ValueError(f"unknown trace format {name!r} (known: {', '.join(trace_formats())})")


def trace_formats() -> tuple[str, ...]:
    return tuple(f.name for f in REGISTRY)

LINE_FACTOR = 16   # a line (one trace) may hold this many messages of the largest size


def max_line_bytes(max_message_bytes: int = MAX_MESSAGE_BYTES) -> int:
    """The longest line (and task file) read: LINE_FACTOR times the message limit."""
    return max_message_bytes * LINE_FACTOR


def open_regular(path: Path) -> BinaryIO:
    """Open a file for reading only when it is a regular file (after links): a FIFO would
    block forever (while the import holds the write lock), a device never ends. The check is
    made on the opened descriptor (opened non-blocking, so a FIFO does not wait for a writer),
    so a file swapped after an earlier check is caught too."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=str(path)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError("not a regular file (pipes, devices and sockets are not read)",
                             path=str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: Path, max_bytes: int) -> bytes:
    """A whole (task) file, refused when larger than `max_bytes`."""
    with open_regular(path) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"file larger than {max_bytes} bytes", path=str(path))
    return data


def iter_lines(path: Path, max_bytes: int | None = None) -> Iterator[tuple[int, str]]:
    """Non-blank lines with 1-based numbers, decoded strictly as UTF-8, one at a time. A line
    longer than `max_bytes` (default: `max_line_bytes()`) is refused as it is read, so an
    endless line never fills the memory."""
    cap = max_line_bytes() if max_bytes is None else max_bytes
    with open_regular(path) as fh:
        n = 0
        while raw := fh.readline(cap + 1):
            n += 1
            if len(raw) > cap and not raw.endswith(b"\n"):
                raise InputError(f"line longer than {cap} bytes", path=str(path), line=n)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"invalid UTF-8 at byte {e.start} of the line", path=str(path),
                                 line=n) from None
            if text.strip():
                yield n, text


def _loads(text: str, path: Path, line: int, field: str | None = None) -> Any:
    try:
        return safe_json.loads(text, fast=True)
    except TooDeep as e:
        raise InputError(str(e), path=str(path), line=line,
                         field=field or safe_json.deep_path(text, e.limit)) from None
    except orjson.JSONDecodeError as e:
        what = "is not valid JSON" if field else "not valid JSON"
        raise InputError(f"{what} ({e.msg} at column {e.pos + 1})", path=str(path), line=line,
                         field=field) from None


def _task_json(path: Path, max_bytes: int) -> Any:
    try:
        return safe_json.loads(read_capped(path, max_bytes).decode("utf-8"))
    except TooDeep as e:
        raise InputError(str(e), path=str(path)) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a valid JSON task file ({e})", path=str(path)) from None


def detect_format(path: Path, max_line: int | None = None) -> str:
    """Guess a file's format from its name and first record (reading no line longer than
    `max_line` bytes)."""
    max_line = max_line_bytes() if max_line is None else max_line
    if path.suffix.lower() in (".txt", ".md"):
        return "task-text"
    if path.suffix.lower() == ".json":
        data = _task_json(path, max_line)
        if isinstance(data, dict) and ({"task_description", "tools"} & data.keys()):
            return "task-json"
        if isinstance(data, list) and data and all(_looks_tool(t) for t in data):
            return "task-json"   # a bare list of tools
        if span_format := _span_format(data):
            return span_format
        if isinstance(data, list) and data and isinstance(data[0], dict):
            fmt = _detect_record(data[0])
            if fmt is not None:
                return fmt
        raise InputError("a .json file must be a task file (an object with"
                         " 'task_description' or 'tools', or a list of tools such as"
                         ' [{"type": "function", "function": {"name": ..., "parameters": ...}}]),'
                         " a span export or a JSON array of trace records", path=str(path))
    first = next(iter_lines(path, max_line), None)
    if first is None:
        raise InputError("empty file: no traces to import", path=str(path))
    n, text = first
    obj = _loads(text, path, n)
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object per line, got {type(obj).__name__}",
                         path=str(path), line=n)
    fmt = _detect_record(obj) or _span_format(obj)
    if fmt is None:
        raise InputError("unknown format: expected 'messages' (OpenAI chat or Anthropic"
                         " Messages), 'conversations' (ShareGPT), 'context' (TFT traces),"
                         " 'question'/'answer' fields or a span export (Langfuse, LangSmith,"
                         " OpenTelemetry, OpenInference)", path=str(path), line=n)
    return fmt


def _detect_record(obj: dict) -> str | None:
    return next((f.name for f in REGISTRY if f.detect(obj)), None)


def _looks_tool(t: Any) -> bool:
    """An OpenAI tool (`{"type": "function", "function": {...}}`) or a bare function
    definition (`{"name", "parameters"}` / Anthropic's `{"name", "input_schema"}`)."""
    if not isinstance(t, dict):
        return False
    fn = t.get("function") if t.get("type") == "function" else t
    return isinstance(fn, dict) and isinstance(fn.get("name"), str) and (
        "function" in t or "parameters" in fn or "input_schema" in fn)


def _span_format(obj: Any) -> str | None:
    from workbench.traces.spans import detect
    return detect(obj)


def _tools(value: Any, field: str) -> list | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise FieldError(field, "must be a list of tool objects")
    return value or None


def _parse_openai(obj: dict, max_bytes: int) -> Parsed:
    if looks_anthropic(obj):   # a file may mix them: a text-only first line reads as either
        return parse_anthropic(obj, max_bytes)
    if isinstance(obj.get("tools"), str):  # the `hf` export: tools as a JSON string
        obj = {**obj, "tools": _json_field(obj, "tools")}
    tools = _tools(obj.get("tools"), "tools")
    if tools is None and obj.get("functions") is not None:   # legacy function calling
        tools = function_tools(obj["functions"], "functions")
    meta = obj.get("meta")
    if isinstance(meta, dict) and meta.get("tools") == "task":
        tools = None  # our own export filled in the task's tools; the trace had none
    raw, extras = openai_messages(obj.get("messages"))
    return Parsed(normalize_messages(raw, "messages", max_bytes=max_bytes), tools, extras)


def _parse_tft(obj: dict, max_bytes: int) -> Parsed:
    ctx = obj.get("context")
    if not isinstance(ctx, str):
        raise FieldError("context", "must be a JSON string holding {\"messages\": [...]}")
    try:
        inner = safe_json.loads(ctx, fast=True)
    except TooDeep as e:
        raise FieldError("context", str(e)) from None
    except orjson.JSONDecodeError as e:
        raise FieldError("context", f"is not valid JSON ({e})") from None
    if isinstance(inner, list):
        inner = {"messages": inner}
    if not isinstance(inner, dict):
        raise FieldError("context", "must hold a JSON object with 'messages'")
    msgs = normalize_messages(inner.get("messages"), "context.messages",
                              results_as_user_json=True, max_bytes=max_bytes)
    return Parsed(msgs, _tools(inner.get("tools") or obj.get("tools"), "tools"))


def _json_field(obj: dict, key: str) -> Any:
    value = obj.get(key)
    if isinstance(value, str):
        try:
            return safe_json.loads(value)
        except TooDeep as e:
            raise FieldError(key, str(e)) from None
        except ValueError as e:
            raise FieldError(key, f"is not valid JSON ({e})") from None
    return value


def _parse_qa(obj: dict, max_bytes: int) -> Parsed:
    if isinstance(obj.get("tools"), str):
        obj = {**obj, "tools": _json_field(obj, "tools")}
    question = _json_field(obj, "question")
    if isinstance(question, dict):
        question = question.get("messages")
    msgs = normalize_messages(question, "question", results_as_user_json=True,
                              max_bytes=max_bytes)
    raw_answer = obj.get("answer")
    answer = _json_field(obj, "answer") if raw_answer not in (None, "") else None
    if isinstance(answer, dict) and "name" in answer:
        final = {"role": "assistant", "content": None,
                 "tool_calls": [{"id": answer.get("id"), "type": "function",
                                 "function": {"name": answer["name"],
                                              "arguments": answer.get("parameters",
                                                                      answer.get("arguments", {}))}}]}
        msgs.append(normalize_message(final, "answer", max_bytes))
    elif isinstance(raw_answer, str):
        msgs.append(normalize_message({"role": "assistant", "content": raw_answer}, "answer",
                                      max_bytes))
    else:
        raise FieldError("answer", "must be a tool call {name, parameters} or a string")
    return Parsed(msgs, _tools(obj.get("tools"), "tools"))


def meta_choice(meta: dict | None, key: str, allowed: tuple[str, ...]) -> str | None:
    """`meta[key]` when the line has it (None otherwise); a value outside `allowed` raises
    FieldError naming `meta.KEY`."""
    if not meta or meta.get(key) is None:
        return None
    value = meta[key]
    if value not in allowed:
        raise FieldError(f"meta.{key}", f"must be one of {', '.join(allowed)}, not {value!r}")
    return value


for _fmt in (
    TraceFormat("anthropic", looks_anthropic, parse_anthropic, ("messages", "system", "tools"),
                "Anthropic Messages"),
    TraceFormat("sharegpt", looks_sharegpt, parse_sharegpt,
                ("conversations", "system", "tools"), "ShareGPT (LLaMA-Factory, axolotl)"),
    TraceFormat("openai", lambda o: "messages" in o, _parse_openai,
                ("messages", "tools", "functions"), "OpenAI chat / fine-tuning"),
    TraceFormat("qa", lambda o: "question" in o and "answer" in o, _parse_qa,
                ("question", "answer", "tools", "context"), "question/answer pairs"),
    TraceFormat("tft", lambda o: isinstance(o.get("context"), str), _parse_tft,
                ("context", "tools"), "TFT traces"),
):
    register(_fmt)


# What our own export writes under `meta` about the trace's place in the store: not the
# record's metadata (a re-import sets them anew).
EXPORT_META = ("source", "line", "trace_id", "split", "origin", "tools", "message_index")


# A log's request record may carry credentials (`api_key`, an `Authorization` header): their
# values never reach the store (nor, so, an export).
_SECRET_KEY = re.compile(r"(?i)^(x-)?(api[-_]?key|authorization|access[-_]?token|auth[-_]?token"
                         r"|refresh[-_]?token|password|passwd|secret|client[-_]?secret"
                         r"|cookie|set-cookie)$")


def without_secrets(value: Any) -> Any:
    """`value` with the values of credential-named keys (at any depth) redacted."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and _SECRET_KEY.match(k) and v
                else without_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


def record_metadata(obj: dict, keys: Sequence[str]) -> dict | None:
    """Every key of a record that is not its conversation (nor its `outcomes`), less what our
    export writes under `meta` about the store, credentials' values redacted."""
    skip = set(keys) | {"outcomes"}
    out = without_secrets({k: v for k, v in obj.items() if k not in skip})
    meta = out.get("meta")
    if isinstance(meta, dict):
        rest = {k: v for k, v in meta.items() if k not in EXPORT_META}
        if rest:
            out["meta"] = rest
        else:
            del out["meta"]
    return out or None


def iter_objects(path: Path, max_line: int) -> Iterator[tuple[int, Any]]:
    """The records of a trace file with the line each starts on: JSON Lines, or one JSON
    array (`.json`)."""
    if path.suffix.lower() != ".json":
        for n, text in iter_lines(path, max_line):
            yield n, _loads(text, path, n)
        return
    text = read_capped(path, max_line).decode("utf-8", "strict")
    try:
        safe_json.check_depth(text)
    except TooDeep as e:
        raise InputError(str(e), path=str(path)) from None
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text.startswith("[", pos):
        raise InputError("a .json trace file must hold a JSON array of records", path=str(path))
    pos += 1
    line = 1 + text.count("\n", 0, pos)
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            if text[pos] == "\n":
                line += 1
            pos += 1
        if pos >= len(text):
            raise InputError("the JSON array is not closed", path=str(path), line=line)
        if text[pos] == "]":
            return
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e.msg})", path=str(path), line=e.lineno) \
                from None
        yield line, obj
        line += text.count("\n", pos, end)
        pos = end


def iter_records(path: Path, fmt: str, max_bytes: int = MAX_MESSAGE_BYTES,
                 outcomes: Sequence[str] = ()) -> Iterator[Record]:
    """Parse a trace file record by record; the first bad one raises InputError. `outcomes`
    names fields whose values are outcomes (`import --outcome FIELD`)."""
    if fmt in SPAN_FORMATS:   # span exports: stitched per trace (workbench.traces.spans)
        from workbench.traces.spans import iter_span_records
        yield from iter_span_records(path, fmt, max_bytes)
        return
    spec = get_format(fmt)
    seen = False
    for n, obj in iter_objects(path, max_line_bytes(max_bytes)):
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}",
                             path=str(path), line=n)
        try:
            parsed = spec.parse(obj, max_bytes)
            found = outcome_fields.collect(obj, parsed.outcomes, outcomes)
        except FieldError as e:
            raise InputError(e.message, path=str(path), line=n, field=e.field) from None
        seen = True
        meta = obj.get("meta")
        yield Record(n, parsed.messages, parsed.tools, meta if isinstance(meta, dict) else None,
                     outcomes=found, metadata=record_metadata(obj, parsed.keys or spec.keys),
                     extras=parsed.extras)
    if not seen:
        raise InputError("empty file: no traces to import", path=str(path))


@dataclass
class TaskSpec:
    description: str | None = None
    rubric: str | None = None
    mutation_topics: list[str] | None = None
    tools: list[dict] | None = None


def read_task(path: Path, fmt: str, max_bytes: int | None = None) -> TaskSpec:
    """Read a task file (job_description.json or task.txt), at most `max_bytes` long."""
    max_bytes = max_line_bytes() if max_bytes is None else max_bytes
    if fmt == "task-json":
        data = _task_json(path, max_bytes)
        if isinstance(data, list):   # a bare list of tools
            data = {"tools": data}
        if not isinstance(data, dict):
            raise InputError("a task file must hold a JSON object (or a list of tools)",
                             path=str(path))
        for key in ("task_description", "llm_as_a_judge_instructions"):
            if key in data and not isinstance(data[key], str):
                raise InputError("must be a string", path=str(path), field=key)
        try:
            tools = _tools(data.get("tools"), "tools")
            if tools and not all("function" in t for t in tools):
                tools = function_tools(tools, "tools")   # bare definitions, OpenAI's form
        except FieldError as e:
            raise InputError(e.message, path=str(path), field=e.field) from None
        for i, t in enumerate(tools or []):
            fn = t.get("function", t)
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise InputError("a tool needs function.name", path=str(path),
                                 field=f"tools[{i}]")
        return TaskSpec(description=data.get("task_description"),
                        rubric=data.get("llm_as_a_judge_instructions"), tools=tools)
    try:
        text = read_capped(path, max_bytes).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"invalid UTF-8 at byte {e.start}", path=str(path)) from None
    return parse_task_text(text)


def parse_task_text(text: str) -> TaskSpec:
    """`# Task` prose and `# Mutations` bullets; a file without headings is all description."""
    sections: dict[str, list[str]] = {}
    current = "task"
    for line in text.splitlines():
        m = re.match(r"^#+\s*(.+?)\s*$", line)
        if m:
            current = m.group(1).strip().lower()
            continue
        sections.setdefault(current, []).append(line)
    description = "\n".join(sections.get("task", [])).strip() or None
    topics = None
    for key, lines in sections.items():
        if key.startswith("mutation"):
            topics = [re.sub(r"^\s*[-*]\s*", "", ln).strip() for ln in lines
                      if re.match(r"^\s*[-*]\s+\S", ln)]
    return TaskSpec(description=description, mutation_topics=topics)
