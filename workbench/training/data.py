"""Training data: a trace selection -> token sequences with loss masks, and the plan.

One sequence per conversation, loss on every assistant turn (its ``<|im_end|>`` included),
everything else masked (:func:`workbench.chat_template.tokenize_with_labels`).  Because the
template is prefix-stable, the per-turn expansion of the benchmark (one sequence per assistant
turn: the conversation up to that turn, loss on that turn only) supervises exactly the same
tokens with exactly the same left context, so with the loss normalised over supervised tokens
both give the same loss, the default at a fraction of the tokens.

Suspect turns (assistant turns carrying an error flag from the checks) are by default kept as
context and left out of the loss (``suspect="mask"``); ``"drop"`` leaves out every trace that has
one, ``"train"`` trains on them as on any turn.  A turn that does not end within ``max_length``
tokens is left out of the loss (per-turn: its sequence is not made), so both modes still agree;
tokens after the last supervised turn are not kept (they would carry no loss).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlite_utils import Database

from db.queries import EXCLUDED_SQL, TraceFilter
from workbench.chat_template import IGNORE_INDEX, tokenize_with_labels
from workbench.conversation_view import Conversation, conversations

SUSPECT_MODES = ("mask", "drop", "train")


class EmptySelectionError(ValueError):
    """Nothing to train on."""


@dataclass
class DataOptions:
    """What to train on.  ``selection`` narrows traces; by default the test split and traces
    excluded from training are left out (set ``split``/``excluded`` to override)."""

    selection: TraceFilter = field(default_factory=TraceFilter)
    per_turn: bool = False
    suspect: str = "mask"
    max_length: int = 4096

    def __post_init__(self) -> None:
        if self.suspect not in SUSPECT_MODES:
            raise ValueError(f"suspect must be one of {', '.join(SUSPECT_MODES)}")
        if self.max_length < 8:
            raise ValueError("max_length must be at least 8 tokens")

    def describe(self) -> dict:
        sel = {k: v for k, v in asdict(self.selection).items() if v is not None}
        return {"selection": sel, "per_turn": self.per_turn, "suspect": self.suspect,
                "max_length": self.max_length,
                "defaults": "split != test" * (self.selection.split is None)
                + ", not excluded" * (self.selection.excluded is None)}


@dataclass
class Encoded:
    """A tokenized conversation: ids, and (message index, start, end) token span per turn."""

    trace_id: int
    input_ids: list[int]
    turns: list[tuple[int, int, int]]
    suspect: frozenset[int]


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    trace_id: int

    @property
    def supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def load_conversations(db: Database, options: DataOptions) -> list[Conversation]:
    """The selected conversations (the one view: current labels, tools, system prompt, suspect
    turns), leaving out the test split and excluded traces unless the selection asks for them."""
    where = []
    if options.selection.split is None:
        where.append("traces.split != 'test'")
    if options.selection.excluded is None:
        where.append(f"NOT {EXCLUDED_SQL}")
    return conversations(db, options.selection, where=" AND ".join(where) or None, batch=500)


def encode(tokenizer: Any, conv: Conversation) -> Encoded:
    ids, labels = tokenize_with_labels(tokenizer, conv.messages, conv.tools, conv.system)
    runs: list[tuple[int, int]] = []
    i = 0
    while i < len(labels):
        if labels[i] == IGNORE_INDEX:
            i += 1
            continue
        j = i
        while j < len(labels) and labels[j] != IGNORE_INDEX:
            j += 1
        runs.append((i, j))
        i = j
    assistant = [k for k, m in enumerate(conv.messages) if m["role"] == "assistant"]
    if len(runs) != len(assistant):
        raise ValueError(f"trace {conv.trace_id}: {len(assistant)} assistant turns but"
                         f" {len(runs)} target spans")
    turns = [(k, s, e) for k, (s, e) in zip(assistant, runs, strict=True)]
    return Encoded(conv.trace_id, ids, turns, conv.suspect)


def examples_for(enc: Encoded, options: DataOptions) -> list[Example]:
    """The training sequences of one conversation (none when nothing in it is supervised)."""
    if options.suspect == "drop" and enc.suspect:
        return []
    keep = [(k, s, e) for k, s, e in enc.turns
            if e <= options.max_length and (options.suspect == "train" or k not in enc.suspect)]
    if not keep:
        return []
    if options.per_turn:
        out = []
        for _, s, e in keep:
            labels = [IGNORE_INDEX] * s + enc.input_ids[s:e]
            out.append(Example(enc.input_ids[:e], labels, enc.trace_id))
        return out
    end = keep[-1][2]
    labels = [IGNORE_INDEX] * end
    for _, s, e in keep:
        labels[s:e] = enc.input_ids[s:e]
    return [Example(enc.input_ids[:end], labels, enc.trace_id)]


def encode_all(tokenizer: Any, conversations: Sequence[Conversation],
               progress: Callable[[int, int], None] | None = None) -> list[Encoded]:
    out = []
    for n, conv in enumerate(conversations, 1):
        out.append(encode(tokenizer, conv))
        if progress and (n % 50 == 0 or n == len(conversations)):
            progress(n, len(conversations))
    return out


def build_examples(encoded: Sequence[Encoded], options: DataOptions) -> list[Example]:
    examples = [ex for enc in encoded for ex in examples_for(enc, options)]
    if not examples:
        raise EmptySelectionError(
            f"no training data: the selection gives {len(encoded)} conversations and no"
            " supervised assistant turn (check --split/--origin/--status filters, --suspect,"
            " --max-length; the test split and excluded traces are left out by default)")
    return examples


def summarize(examples: Sequence[Example]) -> dict:
    return {"sequences": len(examples), "tokens": sum(len(e.input_ids) for e in examples),
            "supervised_tokens": sum(e.supervised for e in examples)}


def plan(encoded: Sequence[Encoded], options: DataOptions) -> dict:
    """Sizes of one epoch, default and per-turn expansion, on the same selection."""
    from dataclasses import replace

    conv = summarize([ex for enc in encoded
                      for ex in examples_for(enc, replace(options, per_turn=False))])
    turn = summarize([ex for enc in encoded
                      for ex in examples_for(enc, replace(options, per_turn=True))])
    return {**conv, "per_turn": turn}
