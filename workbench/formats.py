"""Input formats: detection and streaming parsers that yield canonical traces.

| format | a line (or file) |
|---|---|
| `openai` | `{"messages": [...], "tools": [...]?}`; results are `role: tool` messages |
| `tft`    | `{"context": "<JSON string of {messages, tools?}>"}`; results are user messages holding a JSON list |
| `qa`     | `{"question": "<JSON message list>", "answer": "<JSON {name, parameters}>"}` |
| `task-json` | `job_description.json`: `task_description`, `llm_as_a_judge_instructions`, `tools` |
| `task-text` | `task.txt`: prose task under `# Task`, bullet list under `# Mutations` |
"""

from __future__ import annotations

import os
import re
import stat

import orjson
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from workbench import safe_json
from workbench.errors import InputError
from workbench.messages import MAX_MESSAGE_BYTES, FieldError, normalize_message, normalize_messages
from workbench.safe_json import TooDeep

SPAN_FORMATS = ("langfuse", "langsmith", "otel", "openinference")   # formats_spans
TRACE_FORMATS = ("openai", "tft", "qa") + SPAN_FORMATS
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
        if span_format := _span_format(data):
            return span_format
        raise InputError("a .json file must be a task file with 'task_description' or 'tools'",
                         path=str(path))
    first = next(iter_lines(path, max_line), None)
    if first is None:
        raise InputError("empty file: no traces to import", path=str(path))
    n, text = first
    obj = _loads(text, path, n)
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object per line, got {type(obj).__name__}",
                         path=str(path), line=n)
    if "messages" in obj:
        return "openai"
    if "question" in obj and "answer" in obj:
        return "qa"
    if isinstance(obj.get("context"), str):
        return "tft"
    if span_format := _span_format(obj):
        return span_format
    raise InputError("unknown format: expected 'messages' (OpenAI chat), 'context' (TFT traces)"
                     " or 'question'/'answer' fields", path=str(path), line=n)


def _span_format(obj: Any) -> str | None:
    from workbench.formats_spans import detect
    return detect(obj)


def _tools(value: Any, field: str) -> list | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise FieldError(field, "must be a list of tool objects")
    return value or None


def _parse_openai(obj: dict, max_bytes: int) -> tuple[list[dict], list | None]:
    if isinstance(obj.get("tools"), str):  # the `hf` export: tools as a JSON string
        obj = {**obj, "tools": _json_field(obj, "tools")}
    tools = _tools(obj.get("tools"), "tools")
    meta = obj.get("meta")
    if isinstance(meta, dict) and meta.get("tools") == "task":
        tools = None  # our own export filled in the task's tools; the trace had none
    return normalize_messages(obj.get("messages"), "messages", max_bytes=max_bytes), tools


def _parse_tft(obj: dict, max_bytes: int) -> tuple[list[dict], list | None]:
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
    return msgs, _tools(inner.get("tools") or obj.get("tools"), "tools")


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


def _parse_qa(obj: dict, max_bytes: int) -> tuple[list[dict], list | None]:
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
    return msgs, _tools(obj.get("tools"), "tools")


def meta_choice(meta: dict | None, key: str, allowed: tuple[str, ...]) -> str | None:
    """`meta[key]` when the line has it (None otherwise); a value outside `allowed` raises
    FieldError naming `meta.KEY`."""
    if not meta or meta.get(key) is None:
        return None
    value = meta[key]
    if value not in allowed:
        raise FieldError(f"meta.{key}", f"must be one of {', '.join(allowed)}, not {value!r}")
    return value


PARSERS = {"openai": _parse_openai, "tft": _parse_tft, "qa": _parse_qa}


def iter_records(path: Path, fmt: str, max_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[Record]:
    """Parse a trace file line by line; the first bad line raises InputError."""
    if fmt in SPAN_FORMATS:   # span exports: stitched per trace (workbench.formats_spans)
        from workbench.formats_spans import iter_span_records
        yield from iter_span_records(path, fmt, max_bytes)
        return
    parse = PARSERS[fmt]
    seen = False
    for n, text in iter_lines(path, max_line_bytes(max_bytes)):
        obj = _loads(text, path, n)
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}",
                             path=str(path), line=n)
        try:
            msgs, tools = parse(obj, max_bytes)
        except FieldError as e:
            raise InputError(e.message, path=str(path), line=n, field=e.field) from None
        seen = True
        meta = obj.get("meta")
        yield Record(n, msgs, tools, meta if isinstance(meta, dict) else None)
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
        if not isinstance(data, dict):
            raise InputError("a task file must hold a JSON object", path=str(path))
        for key in ("task_description", "llm_as_a_judge_instructions"):
            if key in data and not isinstance(data[key], str):
                raise InputError("must be a string", path=str(path), field=key)
        try:
            tools = _tools(data.get("tools"), "tools")
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
