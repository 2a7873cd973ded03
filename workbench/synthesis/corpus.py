"""What synthesis learns from the store: the seeds, the topics, and the values the tools know.

Everything here comes from the data and the tool schemas: which tools return results (the
checks' inference), which (call, result) pairs exist to borrow a coherent record from, which
values each argument takes, and which fields are mere flags (two values shared with other
fields, or a two-value enum), which are not slots. No word lists.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlite_utils import Database

from db.queries import TraceFilter
from db.tasks import current_task
from workbench.checks.base import CheckContext, calls_of, result_records
from workbench.conversations.view import Conversation, conversations
from workbench.core.errors import InputError

RANGE = re.compile(r"(\d+)\s*(?:-|–|to)\s*(\d+)\s*(?:turns|messages)", re.I)


@dataclass(frozen=True)
class Topic:
    """A mutation topic; `lo`..`hi` messages when its text names a length ("9-13 turns")."""

    text: str
    lo: int | None = None
    hi: int | None = None

    def fits(self, n_messages: int) -> bool:
        return self.lo is not None and self.lo <= n_messages <= self.hi


def parse_topic(text: str) -> Topic:
    m = RANGE.search(text)
    return Topic(text, int(m.group(1)), int(m.group(2))) if m else Topic(text)


def load_topics(db: Database, path: str | None) -> list[Topic]:
    """The topics of a file (one a line, `- ` bullets allowed), else the task's mutations."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"no topics file {path!r}")
        lines = [ln.strip().lstrip("-*").strip() for ln in p.read_text().splitlines()]
        topics = [t for t in lines if t and not t.startswith("#")]
        if not topics:
            raise InputError(f"{path}: no topics (one a line)")
    else:
        topics = list((current_task(db) or {}).get("mutation_topics") or [])
    return [parse_topic(t) for t in topics] or [Topic("any conversation")]


def n_messages(messages: list[dict]) -> int:
    return sum(1 for m in messages if m["role"] != "system")


def select_seeds(db: Database, selection: TraceFilter, query: str | None,
                 include_suspect: bool) -> tuple[list[Conversation], dict]:
    """Seeds: current labels of the selected traces outside the test split, not excluded,
    without suspect turns unless asked, imported ones unless the selection names an origin
    (synthetic conversations are no seeds of more by default). Returns the seeds and how many
    were left out, by why."""
    if selection.origin is None:
        selection = replace(selection, origin="imported")
    if query:
        selection = replace(selection, text=f"{selection.text} {query}" if selection.text
                            else query)
    seeds, skipped = [], {"test": 0, "excluded": 0, "suspect": 0}
    for c in conversations(db, selection):
        if c.split == "test":
            skipped["test"] += 1
        elif c.excluded:
            skipped["excluded"] += 1
        elif c.suspect and not include_suspect:
            skipped["suspect"] += 1
        else:
            seeds.append(c)
    return seeds, skipped


def tool_functions(tools: list[dict] | None) -> dict[str, dict]:
    return {(t.get("function") or t)["name"]: (t.get("function") or t) for t in tools or ()}


def value_text(v) -> str | None:
    """A slot value as text (strings and numbers; never booleans, lists or objects)."""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        return None
    s = str(v).strip()
    return s or None


def leaves(obj, path: str = "", key: str = ""):
    """The scalar values inside an argument or a record, nested objects and lists of objects
    included: (path with list positions, for lining two values up: `passengers.0.name`; key
    without them, for what the field is: `passengers.name`; value)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{path}.{k}" if path else str(k),
                              f"{key}.{k}" if key else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}.{i}" if path else str(i), key)
    elif path:
        yield path, key, obj


def remap(obj, fn):
    """`obj` with each scalar inside it replaced by `fn(scalar)` (the structure kept)."""
    if isinstance(obj, dict):
        return {k: remap(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [remap(v, fn) for v in obj]
    return fn(obj)


def shape(value: str) -> str:
    """The form of a value (digits -> 9, letters -> a): a replacement keeps it ("18:30")."""
    return re.sub(r"[a-zA-Z]+", "a", re.sub(r"\d", "9", value))


@dataclass
class Donor:
    """A service call with the result that answered it: a coherent record set to borrow."""

    trace_id: int
    args: dict
    records: list[dict]


@dataclass
class Knowledge:
    """What the non-test corpus and the schemas tell about values."""

    tools: dict[str, dict]
    message_tools: set[str]
    donors: dict[str, list[Donor]] = field(default_factory=dict)
    pools: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    flag_fields: set[str] = field(default_factory=set)
    request_fields: dict[str, set[str]] = field(default_factory=dict)

    def is_service(self, name: str) -> bool:
        return name not in self.message_tools

    def is_slot(self, key: str, value) -> bool:
        return key not in self.flag_fields and value_text(value) is not None


def learn(corpus: list[Conversation], tools: list[dict] | None) -> Knowledge:
    fns = tool_functions(tools)
    ctx = CheckContext(traces=corpus, tools=fns)
    know = Knowledge(tools=fns, message_tools=set(ctx.inferred_message_tools))
    values: dict[str, set[str]] = defaultdict(set)
    result_fields: dict[str, set[str]] = defaultdict(set)
    pools: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
    for name, fn in fns.items():
        for k, spec in ((fn.get("parameters") or {}).get("properties") or {}).items():
            enum = spec.get("enum") if isinstance(spec, dict) else None
            if enum and len(enum) <= 2:
                know.flag_fields.add(k)
            for v in enum or ():
                if value_text(v):
                    pools[(name, k)][value_text(v)] = None
    for c in corpus:
        msgs = c.messages
        for i, m in enumerate(msgs):
            for name, args in calls_of(m):
                if not isinstance(args, dict) or not know.is_service(name):
                    continue
                for _, k, v in leaves(args):
                    if value_text(v):
                        values[k].add(value_text(v))
                        pools[(name, k)][value_text(v)] = None
                if i in c.suspect or i + 1 >= len(msgs) or msgs[i + 1]["role"] != "tool":
                    continue
                recs = result_records(msgs[i + 1])
                result_fields[name] |= {k for r in recs for _, k, _ in leaves(r)}
                for r in recs:
                    for _, k, v in leaves(r):
                        if value_text(v):
                            values[k].add(value_text(v))
                know.donors.setdefault(name, []).append(Donor(c.trace_id, dict(args), recs))
    # a flag: at most two values, all of which another field takes too ("True"/"False")
    know.flag_fields |= {k for k, vs in values.items() if len(vs) <= 2 and any(
        o != k and vs <= ws for o, ws in values.items())}
    know.pools = {key: list(v) for key, v in pools.items()}
    # what a call asks rather than what the entity is: an argument that no other tool's results
    # carry (a reservation's time, date and party size; a restaurant's city and name are in
    # the search results too)
    for name in result_fields:
        others = set().union(*(f for o, f in result_fields.items() if o != name))
        params = (fns.get(name, {}).get("parameters") or {}).get("properties") or {}
        if others:
            know.request_fields[name] = {k for k in params if k not in others}
    return know


def dumps_records(records: list[dict], like: str) -> str:
    """Records as JSON in the style of the original result (a list, or one object)."""
    value = records[0] if like.lstrip().startswith("{") and len(records) == 1 else records
    return json.dumps(value, ensure_ascii=False)
