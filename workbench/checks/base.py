"""What every check shares: the traces it looks at, the tools, the task, and text helpers."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

from db.flags import default_pattern
from workbench.core import safe_json
from workbench.conversations.view import Conversation, looks_message_only


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


EVIDENCE_SOURCES = ("schema", "task", "corpus", "statistics")


def evidence_item(source: str, text: str) -> dict:
    """One reason for a flag, and where it comes from: the tool schemas, the task description,
    or what was learned from the corpus. An analyst trusts the first two more than the last.
    "statistics" holds the numbers behind a flag (shares, scores, thresholds), which the
    flag's one-sentence detail leaves out."""
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
            "pattern": f"{check}: {pattern}" if pattern else default_pattern(check, detail)}


def message_text(message: dict) -> str:
    """What a message says to the other side: its content, or a message-only call's text."""
    parts = [message.get("content") or ""]
    for _, args in calls_of(message):
        if isinstance(args, dict):
            parts.extend(str(v) for v in args.values() if isinstance(v, str))
    return " ".join(p for p in parts if p)


def result_records(message: dict) -> list[dict]:
    """A tool result's records (a JSON list of objects, or one object; a list of lists of
    objects is flattened). A dict keyed by data (see `data_keyed`) is a collection, not a
    record: its records are its values where they are objects, and it has none where they are
    plain values (its keys are data, never field names)."""
    try:
        value = safe_json.loads(message.get("content") or "")
    except ValueError:   # not JSON, or nested too deeply (the structure check flags that)
        return []
    return value_records(value)


def value_records(value) -> list[dict]:
    """The records of a parsed result (see `result_records`)."""
    if isinstance(value, dict):
        if data_keyed(value):
            return [v for v in value.values() if isinstance(v, dict)]
        return [value]
    if isinstance(value, list):
        out = []
        for v in value:
            if isinstance(v, dict):
                out.append(v)
            elif isinstance(v, list):
                out += [x for x in v if isinstance(x, dict)]
        return out
    return []


DATA_KEY_SHARE = 0.8   # a dict is keyed by data if this share of its keys look like data
CODE_KEY = re.compile(r"^[A-Z0-9]+$")


def data_keyed(value: dict) -> bool:
    """Is this dict keyed by data (codes, ids, dates, names) rather than by field names? A
    field name is a word or words joined in some case style ("origin", "flight_number",
    "FlightNumber"); keys that are values look otherwise: with spaces, a leading digit or long
    runs of digits ("2024-05-16", "credit_card_7815826"), or codes (three keys or more, all
    capitals and digits of one length: "SFO", "JFK"). Only a dict of two keys or more whose
    values have one shape (all objects, or all plain values of one type) can be a collection."""
    keys = [k for k in value if isinstance(k, str)]
    if len(keys) < 2:
        return False
    vals = list(value.values())
    shapes = {"object" if isinstance(v, dict) else type(v).__name__ for v in vals}
    if len(shapes) != 1 or "list" in shapes:
        return False
    if len(keys) >= 3 and all(CODE_KEY.match(k) for k in keys) and len(set(map(len, keys))) == 1:
        return True
    def datum(k: str) -> bool:
        return bool(re.search(r"\s|^\d|\d{3,}|[^\w\-]", k))
    return sum(map(datum, keys)) >= DATA_KEY_SHARE * len(keys)


def record_items(record: dict, depth: int = 0):
    """(field, plain value) of a record and of the objects nested in it; the key of a dict
    keyed by data counts as a value of the field holding that dict. What a result says, for
    checks that look for the values a reply or a call takes from it."""
    if depth > 6:
        return
    for k, v in record.items():
        if isinstance(v, dict):
            if data_keyed(v):
                for key, inner in v.items():
                    yield k, key
                    if isinstance(inner, dict):
                        yield from record_items(inner, depth + 1)
                    elif not isinstance(inner, list):
                        yield k, inner
            else:
                yield from record_items(v, depth + 1)
        elif isinstance(v, list):
            for x in v:
                if isinstance(x, dict):
                    yield from record_items(x, depth + 1)
                elif not isinstance(x, list):
                    yield k, x
        else:
            yield k, v


WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())
