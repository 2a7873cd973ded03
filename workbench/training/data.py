"""Training data: a trace selection -> token sequences with loss masks, and the plan.

One sequence per conversation, loss on every assistant turn (its ``<|im_end|>`` included),
everything else masked (:func:`workbench.models.chat_template.tokenize_with_labels`).  Because the
template is prefix-stable, the per-turn expansion of the benchmark (one sequence per assistant
turn: the conversation up to that turn, loss on that turn only) supervises exactly the same
tokens with exactly the same left context, so with the loss normalised over supervised tokens
both give the same loss, the default at a fraction of the tokens.

Turns the source format left out of training (an OpenAI fine-tuning ``weight: 0``, an axolotl
``train: false``) are kept as context and never in the loss, whatever the options.

Suspect turns (assistant turns carrying an error flag from the checks) are by default kept as
context and left out of the loss (``suspect="mask"``); ``"drop"`` leaves out every trace that has
one, ``"train"`` trains on them as on any turn.  Tokens after the last supervised turn are not
kept (they would carry no loss).

Turns that end past ``max_length`` tokens are trained in *windows*: the system prompt and tools,
then the latest whole messages that fit with the turn (the middle of the conversation left out),
and as many later turns as fit in the same window. The system prompt and tools alone are often a
large part of the budget (about 1,000 tokens for the TFT task, 4,000 for an agent with a long
policy), and the calls that end a conversation (a reservation after the search and the talk
about it) come late: cut instead of windowed, they would never be trained. Where the system
prompt and tools do not fit with a turn and the user's message before it, the window starts
after them: the turn is trained on the latest messages alone, and the plan counts those turns
and names the --max-length that would keep their prompt. Only a turn that does not fit even with
its own message alone is left out. Both modes still supervise the same tokens with the same
context (a turn's window starts at the earliest message that lets it fit, in either mode).

``max_length`` None: sized from the data before the examples are built (`needed_length`, capped
by the memory and the model's context in :mod:`workbench.training.sizing`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlite_utils import Database

from db.queries import EXCLUDED_SQL, TraceFilter
from workbench.models.chat_template import IGNORE_INDEX, IM_START, render, tokenize_with_labels
from workbench.conversations.view import Conversation, conversations, task_context

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
    max_length: int | None = None      # None: from the data (no limit until it is sized)
    outcome_weight: str | None = None  # weight each conversation by this outcome (resampled)

    def __post_init__(self) -> None:
        if self.suspect not in SUSPECT_MODES:
            raise ValueError(f"suspect must be one of {', '.join(SUSPECT_MODES)}")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError("max_length must be at least 8 tokens")

    def describe(self) -> dict:
        sel = {k: v for k, v in asdict(self.selection).items() if v is not None}
        return {"selection": sel, "per_turn": self.per_turn, "suspect": self.suspect,
                "max_length": self.max_length, "outcome_weight": self.outcome_weight,
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
    starts: tuple[int, ...] = ()   # where each message after them begins (window cuts)
    unweighted: frozenset[int] = frozenset()   # turns the source left out (`weight: 0`)
    outcomes: dict | None = None   # the conversation's outcomes by name (rewards, scores)


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
    task = task_context(db)
    convs = conversations(db, options.selection, where=" AND ".join(where) or None, batch=500,
                          task=task)
    # a label that no longer fits the results logged after it ends the conversation there, as
    # in an export: a call turned into text is not trained with orphaned tool results after it
    return [replace(c, messages=c.consistent_messages(task.message_tools)) if c.changed else c
            for c in convs]


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
    prompt = _prompt_tokens(tokenizer, conv)
    return Encoded(conv.trace_id, ids, turns, conv.suspect, prompt,
                   _message_starts(tokenizer, ids, prompt), conv.unweighted, conv.outcomes)


def _message_starts(tokenizer: Any, ids: list[int], prompt: int) -> tuple[int, ...]:
    """Token positions where a message after the system prompt and tools begins (its
    ``<|im_start|>``, a special token of its own). None when the prompt is not exactly the first
    `prompt` tokens (then no turn is windowed)."""
    (start,) = tokenizer([IM_START], add_special_tokens=False)["input_ids"] or [[]]
    if len(start) != 1 or prompt >= len(ids) or ids[prompt] != start[0]:
        return ()
    return tuple(i for i in range(prompt, len(ids)) if ids[i] == start[0])


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


def _kept(enc: Encoded, options: DataOptions) -> list[tuple[int, int]]:
    """The (start, end) token spans of the turns that carry loss under the options."""
    if options.suspect == "drop" and enc.suspect:
        return []
    return [(s, e) for k, s, e in enc.turns if k not in enc.unweighted
            and (options.suspect == "train" or k not in enc.suspect)]


def examples_for(enc: Encoded, options: DataOptions) -> list[Example]:
    """The training sequences of one conversation (none when nothing in it is supervised)."""
    groups = windows(enc, _kept(enc, options), options.max_length)
    if options.per_turn:
        return [_example(enc, cut, head, [turn]) for cut, head, turns in groups
                for turn in turns]
    return [_example(enc, cut, head, turns) for cut, head, turns in groups]


def needed_length(encoded: Sequence[Encoded], options: DataOptions) -> int:
    """The longest conversation prefix a supervised turn needs: the end of each conversation's
    last supervised turn, at most (what no window has to cut)."""
    return max((kept[-1][1] for enc in encoded if (kept := _kept(enc, options))), default=0)


def windows(enc: Encoded, turns: list[tuple[int, int]], limit: int | None
            ) -> list[tuple[int, bool, list[tuple[int, int]]]]:
    """The turns grouped by the context they are trained with: `(0, True, turns)` for those
    that end within `limit` (the whole conversation before them), then `(cut, head, turns)`
    windows: the system prompt and tools when `head`, then the tokens from message start `cut`
    on. A window takes as many turns as fit after the message before its first one (what the
    user said to it), and starts at the earliest message that leaves room for its last. A
    window keeps the system prompt and tools when they fit with its first turn (and its own
    message at least); else it starts after them. A turn that does not fit even with its own
    message alone is left out."""
    if limit is None:
        return [(0, True, list(turns))] if turns else []
    out = [(0, True, [(s, e) for s, e in turns if e <= limit])]
    rest = [(s, e) for s, e in turns if e > limit]
    i = 0
    while i < len(rest):
        before = [b for b in enc.starts if b < rest[i][0]]
        # the least context: the message before the turn (what the user said), else its own;
        # with the system prompt and tools where they fit, else without them
        last, head, room = None, True, 0
        for head, room in ((True, limit - enc.prompt_tokens), (False, limit)):
            last = next((b for b in before[-2:] if rest[i][1] - b <= room), None)
            if last is not None:
                break
        if last is None:
            i += 1                 # not even its own message fits
            continue
        j = i + 1
        while j < len(rest) and rest[j][1] - last <= room:
            j += 1
        end = rest[j - 1][1]
        cut = next(b for b in enc.starts if end - b <= room)
        out.append((cut, head, rest[i:j]))
        i = j
    return [(cut, head, ts) for cut, head, ts in out if ts]


def _example(enc: Encoded, cut: int, head: bool, turns: list[tuple[int, int]]) -> Example:
    """The tokens up to the last turn's end (from `cut` on, after the system prompt and tools
    when `head`, when cut is not 0), loss on `turns`."""
    end = turns[-1][1]
    prefix = enc.input_ids[:enc.prompt_tokens] if cut and head else []
    ids = prefix + enc.input_ids[cut:end]
    shift = len(prefix) - cut
    labels = [IGNORE_INDEX] * len(ids)
    for s, e in turns:
        labels[s + shift:e + shift] = enc.input_ids[s:e]
    return Example(ids, labels, enc.trace_id)


def encode_all(tokenizer: Any, conversations: Sequence[Conversation],
               progress: Callable[[int, int], None] | None = None) -> list[Encoded]:
    out = []
    for n, conv in enumerate(conversations, 1):
        out.append(encode(tokenizer, conv))
        if progress and (n % 50 == 0 or n == len(conversations)):
            progress(n, len(conversations))
    return out


def outcome_copies(encoded: Sequence[Encoded], name: str) -> dict[int, int]:
    """How many times each conversation is trained on when weighted by outcome `name`: its
    value w (a number or a boolean; 0 for a conversation without it) is an expected count,
    floor(w) copies plus one more with probability w - floor(w), drawn with a fixed seed per
    trace. Resampling weights the loss by the outcome in expectation, and keeps each step's
    loss an average over real conversations (a failed conversation at reward 0 is not trained
    on; at reward 2 twice)."""
    import random

    out = {}
    for enc in encoded:
        value = (enc.outcomes or {}).get(name, 0)
        w = float(value) if isinstance(value, (int, float)) and value == value else 0.0
        w = max(w, 0.0)
        whole = int(w)
        extra = random.Random(f"{name}:{enc.trace_id}").random() < w - whole
        out[enc.trace_id] = whole + extra
    return out


def build_examples(encoded: Sequence[Encoded], options: DataOptions) -> list[Example]:
    copies = (outcome_copies(encoded, options.outcome_weight) if options.outcome_weight
              else {})
    examples = [ex for enc in encoded
                for _ in range(copies.get(enc.trace_id, 1))
                for ex in examples_for(enc, options)]
    if not examples:
        raise EmptySelectionError(f"no training data: {why_empty(encoded, options)}")
    return examples


def turn_counts(encoded: Sequence[Encoded], options: DataOptions) -> dict:
    """What the options leave out of the loss, and why."""
    turns = [(enc, k, end) for enc in encoded for k, _, end in enc.turns]
    suspect = [(enc, k) for enc, k, _ in turns if k in enc.suspect]
    limit = options.max_length
    long = sum(1 for _, _, end in turns if limit is not None and end > limit)
    windowed = bare = 0
    keep_prompt = 0        # the --max-length that keeps every bare window's prompt
    for enc in encoded:
        for cut, head, ts in windows(enc, [(s, e) for _, s, e in enc.turns], limit):
            if not cut:
                continue
            if head:
                windowed += len(ts)
                continue
            bare += len(ts)
            for s, e in ts:
                before = [b for b in enc.starts if b < s][-2:]
                keep_prompt = max(keep_prompt, enc.prompt_tokens + e - before[0])
    prompt = [enc.prompt_tokens for enc in encoded]
    return {
        "conversations": len(encoded),
        "assistant_turns": len(turns),
        "suspect_turns": len(suspect),
        "masked_suspect_turns": len(suspect) if options.suspect == "mask" else 0,
        "weight_zero_turns": sum(1 for enc, k, _ in turns if k in enc.unweighted),
        "dropped_conversations": (sum(1 for enc in encoded if enc.suspect)
                                  if options.suspect == "drop" else 0),
        "max_length": limit,
        "windowed_turns": windowed,              # trained after the prompt, history cut
        "turns_without_prompt": bare,            # trained on the latest messages alone
        "length_keeping_prompt": keep_prompt,    # the --max-length that keeps their prompt
        "turns_past_max_length": long - windowed - bare,   # do not fit even so: no loss
        "prompt_tokens": max(prompt, default=0),
        "prompts_past_max_length": sum(1 for p in prompt if limit is not None and p >= limit),
    }


def why_empty(encoded: Sequence[Encoded], options: DataOptions) -> str:
    """Why a selection gives nothing to train on, in the words of the options to change."""
    if not encoded:
        return ("the selection gives no conversation (check --split/--origin/--status filters;"
                " the test split and excluded traces are left out by default)")
    c = turn_counts(encoded, options)
    parts = [f"the selection gives {c['conversations']} conversations with"
             f" {c['assistant_turns']} assistant turns and none is supervised"]
    if c["turns_past_max_length"]:
        parts.append(f"{c['turns_past_max_length']} turns do not fit in --max-length"
                     f" {options.max_length} even with only their own message (the system"
                     f" prompt and tools, {c['prompt_tokens']:,} tokens, left out): raise"
                     " --max-length")
    if options.outcome_weight:
        copies = outcome_copies(encoded, options.outcome_weight)
        if not any(copies.values()):
            parts.append(f"every conversation has outcome {options.outcome_weight!r} at 0 or"
                         " not at all: --outcome-weight leaves them all out")
    if c["masked_suspect_turns"]:
        parts.append(f"{c['masked_suspect_turns']} suspect turns (error flags) are masked:"
                     " --suspect train trains on them")
    if c["weight_zero_turns"]:
        parts.append(f"{c['weight_zero_turns']} turns have weight 0 in their source file (left"
                     " out of training there and here)")
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
    out = {**turn_counts(encoded, options), **conv, "per_turn": turn}
    if options.outcome_weight:
        copies = outcome_copies(encoded, options.outcome_weight)
        out["outcome_weight"] = {
            "outcome": options.outcome_weight,
            "conversations_left_out": sum(1 for n in copies.values() if n == 0),
            "conversations_repeated": sum(1 for n in copies.values() if n > 1),
            "copies": sum(copies.values())}
    return out
