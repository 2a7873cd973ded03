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
from workbench.chat_template import IGNORE_INDEX, render, tokenize_with_labels
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
    prompt_tokens: int = 0         # the system prompt and tools alone (before any message)


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
    return Encoded(conv.trace_id, ids, turns, conv.suspect, _prompt_tokens(tokenizer, conv))


_PROMPT_TOKENS: dict[tuple[int, str], int] = {}


def _prompt_tokens(tokenizer: Any, conv: Conversation) -> int:
    """Tokens of the system prompt and tools alone: every turn of the conversation ends past
    them, so a --max-length below this leaves nothing to train on (cached per text)."""
    own = conv.messages[:1] if conv.messages and conv.messages[0]["role"] == "system" else []
    text = render(own, conv.tools, None if own else conv.system)
    key = (id(tokenizer), text)
    if key not in _PROMPT_TOKENS:
        _PROMPT_TOKENS[key] = len(tokenizer([text], add_special_tokens=False)["input_ids"][0])
    return _PROMPT_TOKENS[key]


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
        raise EmptySelectionError(f"no training data: {why_empty(encoded, options)}")
    return examples


def turn_counts(encoded: Sequence[Encoded], options: DataOptions) -> dict:
    """What the options leave out of the loss, and why."""
    turns = [(enc, k, end) for enc in encoded for k, _, end in enc.turns]
    suspect = [(enc, k) for enc, k, _ in turns if k in enc.suspect]
    prompt = [enc.prompt_tokens for enc in encoded]
    return {
        "conversations": len(encoded),
        "assistant_turns": len(turns),
        "suspect_turns": len(suspect),
        "masked_suspect_turns": len(suspect) if options.suspect == "mask" else 0,
        "dropped_conversations": (sum(1 for enc in encoded if enc.suspect)
                                  if options.suspect == "drop" else 0),
        "max_length": options.max_length,
        "turns_past_max_length": sum(1 for _, _, end in turns if end > options.max_length),
        "prompt_tokens": max(prompt, default=0),
        "prompts_past_max_length": sum(1 for p in prompt if p >= options.max_length),
    }


def why_empty(encoded: Sequence[Encoded], options: DataOptions) -> str:
    """Why a selection gives nothing to train on, in the words of the options to change."""
    if not encoded:
        return ("the selection gives no conversation (check --split/--origin/--status filters;"
                " the test split and excluded traces are left out by default)")
    c = turn_counts(encoded, options)
    parts = [f"the selection gives {c['conversations']} conversations with"
             f" {c['assistant_turns']} assistant turns and none is supervised"]
    if c["prompts_past_max_length"]:
        parts.append(f"the system prompt and tools alone are {c['prompt_tokens']:,} tokens, not"
                     f" less than --max-length {options.max_length} in"
                     f" {c['prompts_past_max_length']} conversations: raise --max-length above"
                     f" {c['prompt_tokens']:,}")
    elif c["turns_past_max_length"]:
        parts.append(f"{c['turns_past_max_length']} turns end past --max-length"
                     f" {options.max_length} (the system prompt and tools alone are"
                     f" {c['prompt_tokens']:,} tokens)")
    if c["masked_suspect_turns"]:
        parts.append(f"{c['masked_suspect_turns']} suspect turns (error flags) are masked:"
                     " --suspect train trains on them")
    if c["dropped_conversations"]:
        parts.append(f"{c['dropped_conversations']} conversations with suspect turns are"
                     " dropped (--suspect drop)")
    if not c["assistant_turns"]:
        parts.append("the conversations have no assistant turn")
    return "; ".join(parts)


def summarize(examples: Sequence[Example]) -> dict:
    return {"sequences": len(examples), "tokens": sum(len(e.input_ids) for e in examples),
            "supervised_tokens": sum(e.supervised for e in examples)}


def plan(encoded: Sequence[Encoded], options: DataOptions) -> dict:
    """Sizes of one epoch, default and per-turn expansion, on the same selection, and the turns
    left out of the loss (suspect, past --max-length) with the prompt size that explains it."""
    from dataclasses import replace

    conv = summarize([ex for enc in encoded
                      for ex in examples_for(enc, replace(options, per_turn=False))])
    turn = summarize([ex for enc in encoded
                      for ex in examples_for(enc, replace(options, per_turn=True))])
    return {**turn_counts(encoded, options), **conv, "per_turn": turn}
