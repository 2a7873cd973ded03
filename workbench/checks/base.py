"""What every check shares: the traces it looks at, the tools, the task, and text helpers."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

from db.flags import default_pattern
from workbench import safe_json
from workbench.conversation_view import Conversation, looks_message_only


def default_threads() -> int:
    """llama.cpp threads when none are asked for: the cores this process may use, less one left
    for the rest of a shared machine (1 on 2 cores, where two busy-waiting threads run many
    times slower than one), at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores - 1))


# The checks see each trace through the one conversation view (current labels, canonical form).
TraceView = Conversation


@dataclass
class CheckContext:
    traces: list[TraceView]
    tools: dict[str, dict]        # name -> the function object {name, description, parameters}
    task: dict | None = None
    message_tools: set[str] | None = None   # configured message-only tools (else inferred)
    cache: dict = field(default_factory=dict)

    @cached_property
    def inferred_message_tools(self) -> set[str]:
        """Tools whose calls get no result: inferred from the data (a call followed by a user
        utterance far more often than by a result), else from the schema and description."""
        if self.message_tools is not None:
            return set(self.message_tools)
        followed: Counter = Counter()
        total: Counter = Counter()
        for t in self.traces:
            msgs = t.messages
            for i, m in enumerate(msgs):
                for c in m.get("tool_calls") or ():
                    name = c["function"]["name"]
                    total[name] += 1
                    if i + 1 < len(msgs) and msgs[i + 1]["role"] == "tool":
                        followed[name] += 1
        out = set()
        names = set(total) | set(self.tools)
        for name in names:
            if total[name] >= 5:
                if followed[name] / total[name] < 0.3:
                    out.add(name)
            elif name in self.tools and looks_message_only(self.tools[name]):
                out.add(name)
        return out

    def is_service(self, name: str) -> bool:
        return name not in self.inferred_message_tools


def calls_of(message: dict) -> list[tuple[str, dict | str]]:
    return [(c["function"]["name"], c["function"]["arguments"])
            for c in message.get("tool_calls") or ()]


EVIDENCE_SOURCES = ("schema", "task", "corpus")


def evidence_item(source: str, text: str) -> dict:
    """One reason for a flag, and where it comes from: the tool schemas, the task description,
    or what was learned from the corpus. An analyst trusts the first two more than the last."""
    if source not in EVIDENCE_SOURCES:
        raise ValueError(f"evidence source must be one of {EVIDENCE_SOURCES}, not {source!r}")
    return {"source": source, "text": text}


def flag(trace: TraceView, idx: int | None, check: str, severity: str, detail: str,
         evidence: list[dict] | None = None, *, pattern: str | None = None) -> dict:
    """One finding. `pattern`: a short stable key for the kind of finding, without this
    trace's values (default: the check and its detail with quoted values and numbers taken
    out); an analyst who marks a flag "not a problem" teaches its check about the pattern."""
    return {"trace_id": trace.id, "message_idx": idx, "check": check, "severity": severity,
            "detail": detail, "evidence": list(evidence or []),
            "pattern": pattern or default_pattern(check, detail)}


def message_text(message: dict) -> str:
    """What a message says to the other side: its content, or a message-only call's text."""
    parts = [message.get("content") or ""]
    for _, args in calls_of(message):
        if isinstance(args, dict):
            parts.extend(str(v) for v in args.values() if isinstance(v, str))
    return " ".join(p for p in parts if p)


def result_records(message: dict) -> list[dict]:
    """A tool result's records (a JSON list of objects, or one object)."""
    try:
        value = safe_json.loads(message.get("content") or "")
    except ValueError:   # not JSON, or nested too deeply (the structure check flags that)
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())
