"""One view of a conversation: what every part of the workbench sees of a stored trace.

Checks, normalisation, training, export, evaluation, chat and the screens all read traces
through here, so they agree on the three things that are easy to get subtly different:

* the messages are the *current labels* (originals with each turn's newest accepted revision);
* the tools are the trace's own, else the task's current tool schemas;
* the system prompt is what the model sees: the conversation's own opening system message,
  else the task description (:func:`system_prompt`; nothing is added to a conversation that
  brings its own: two system prompts would be a bug). Chat, replay and evaluation all ask it.

If one of them drifted in one place, training and evaluation prompts would disagree silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlite_utils import Database

from db.flags import flags_for, suspect_turns
from db.browse import get_setting, raw_setting
from db.queries import TraceFilter
from db.revisions import labelled_messages_for
from db.tasks import current_task, current_tools
from db.traces import (answered_calls, commonest_opening_system, excluded_among, extras_for,
                       iter_trace_rows, tool_called)


def looks_message_only(fn: dict) -> bool:
    """A tool that speaks to the user and gets no result, judged from its schema alone (when the
    data cannot tell): it says it returns nothing, or its one parameter is a message."""
    desc = (fn.get("description") or "").lower()
    props = (fn.get("parameters") or {}).get("properties") or {}
    return "no return value" in desc or (len(props) == 1 and "message" in props)


@dataclass(frozen=True)
class TaskContext:
    """What a conversation inherits from the task: its description and tool schemas, and which
    tools are message-only (they speak to the user; no result comes back)."""

    description: str | None
    tools: list[dict] | None
    rubric: str | None = None
    message_tools: frozenset[str] = frozenset()

    def system_for(self, messages: list[dict]) -> str | None:
        """The system prompt to add to these messages (none if they bring one)."""
        if messages and messages[0]["role"] == "system":
            return None
        return self.description


def system_prompt(messages: list[dict], task_system: str | None) -> str | None:
    """The system prompt of a conversation: its own opening system message, else the task's.
    The one rule chat, replay and evaluation share, so none runs under another policy than
    training saw."""
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"]
    return task_system


def new_conversation_system(db: Database, task: TaskContext | None = None) -> str | None:
    """The system prompt a conversation begun in the chat gets: the one the stored
    conversations have most often (:func:`system_prompt` of each, the train split's when it has
    any), so the model is talked to under the policy it was trained with; the task's when no
    conversation is stored."""
    task = task or task_context(db)
    for split in ("train", None):
        where, params = TraceFilter(split=split).where()
        row = commonest_opening_system(db, where, params)
        if row is not None:
            first = [{"role": "system", "content": row[0]}] if row[0] is not None else []
            return system_prompt(first, task.description)
    return task.description


def _message_tools(db: Database, tools: list[dict]) -> frozenset[str]:
    """Configured (`checks.message_tools`), else what the last check run learned from the data
    (`checks.learned`), else read from the stored calls and, where they are too few, the
    schemas."""
    configured = raw_setting(db, "checks.message_tools")
    if configured:
        return frozenset(configured.split())
    learned = (get_setting(db, "checks.learned", None) or {}).get("structure") or {}
    if "message_tools" in learned:
        return frozenset(learned["message_tools"])
    # no check has run: what the stored calls show (a call followed by a user turn, not by a
    # result), the schemas where the data is too thin
    schemas = {fn["name"]: fn for t in tools for fn in [t.get("function") or t]}
    out = set()
    for name, calls, answered in answered_calls(db):
        if calls >= 5 or name not in schemas:
            if answered < 0.3 * calls:
                out.add(name)
        elif looks_message_only(schemas[name]):
            out.add(name)
    out |= {n for n, fn in schemas.items() if looks_message_only(fn)
            and not tool_called(db, n)}
    return frozenset(out)


def task_context(db: Database) -> TaskContext:
    task = current_task(db) or {}
    tools = current_tools(db) or []
    return TaskContext(description=task.get("description") or None, tools=tools or None,
                       rubric=task.get("rubric"), message_tools=_message_tools(db, tools))


@dataclass
class Conversation:
    """A stored trace as every consumer sees it (see the module docstring)."""

    trace_id: int
    messages: list[dict]                 # current labels
    tools: list[dict] | None             # its own, else the task's
    system: str | None                   # the system prompt the model sees (None: in messages)
    suspect: frozenset[int] = frozenset()  # assistant turns with an undecided error flag
    source: str = ""
    line: int = 0
    split: str = "unassigned"
    origin: str = "imported"
    excluded: bool = False               # effective: the analyst's decision, else the checks'
    own_tools: bool = False              # the tools came with the trace (not the task's)
    flags: list[dict] = field(default_factory=list)   # only when asked for (`with_flags`)
    # the original message of each turn whose current label differs from it (for `exportable`)
    changed: dict[int, dict] = field(default_factory=dict)
    metadata: dict | None = None         # the record's keys beyond its conversation
    outcomes: dict | None = None         # rewards, scores, feedback values by name
    extras: dict[int, dict] = field(default_factory=dict)   # message index -> format attributes

    @property
    def unweighted(self) -> frozenset[int]:
        """Assistant turns the source left out of training (`weight: 0`, axolotl `train:
        false`): kept as context, never in the loss."""
        return frozenset(i for i, e in self.extras.items() if e.get("weight") == 0)

    def consistent_messages(self, message_tools: frozenset[str] = frozenset()) -> list[dict]:
        """The messages as an export (and anything that trains on them) must take them: cut
        after a turn whose label no longer fits the tool results logged after it
        (`turns.exportable`)."""
        from workbench.conversations.turns import exportable

        return exportable(self.messages, self.changed, message_tools)

    @property
    def system_prompt(self) -> str | None:
        """Its system prompt: its own opening system message, else the task's."""
        return system_prompt(self.messages, self.system)

    @property
    def id(self) -> int:
        """The trace id (the checks' name for it)."""
        return self.trace_id


def iter_conversations(db: Database, selection: TraceFilter | None = None, *,
                       where: str | None = None, params: list | None = None,
                       with_flags: bool = False, batch: int = 200,
                       task: TaskContext | None = None) -> Iterator[list[Conversation]]:
    """The selected traces as conversations, in id order, a batch at a time (memory stays
    bounded by the batch). `where`/`params` add an SQL condition over `traces`."""
    cond, args = (selection or TraceFilter()).where()
    if where:
        cond, args = f"({cond}) AND ({where})", [*args, *(params or [])]
    task = task or task_context(db)
    for rows in iter_trace_rows(db, cond, args, batch=batch):
        ids = [r["id"] for r in rows]
        labelled = labelled_messages_for(db, ids)
        suspect = suspect_turns(db, ids)
        excluded = excluded_among(db, ids)
        extras = extras_for(db, ids)
        flags: dict[int, list[dict]] = {}
        if with_flags:
            for f in flags_for(db, ids):
                flags.setdefault(f["trace_id"], []).append(f)
        out = []
        for r in rows:
            m, changed = labelled[r["id"]]
            out.append(Conversation(
                trace_id=r["id"], messages=m, tools=r["tools"] or task.tools,
                system=task.system_for(m), suspect=frozenset(suspect.get(r["id"], ())),
                source=r["source"], line=r["line"], split=r["split"], origin=r["origin"],
                excluded=r["id"] in excluded, own_tools=bool(r["tools"]),
                flags=flags.get(r["id"], []), changed=changed, metadata=r.get("metadata"),
                outcomes=r.get("outcomes"), extras=extras.get(r["id"], {})))
        yield out


def conversations(db: Database, selection: TraceFilter | None = None,
                  **kw) -> list[Conversation]:
    """All selected conversations in one list (for corpus-wide work such as the checks)."""
    return [c for batch in iter_conversations(db, selection, **kw) for c in batch]


def conversation(db: Database, trace_id: int, *, with_flags: bool = True) -> Conversation | None:
    """One trace, with its flags (the screens, chat replay)."""
    found = conversations(db, TraceFilter(trace_ids=[trace_id]), with_flags=with_flags)
    return found[0] if found else None
