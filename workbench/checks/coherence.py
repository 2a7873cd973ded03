"""Coherence and off-domain content, learned from the task, the tool schemas and the corpus.

- Trace level: a conversation from another product. Its service calls carry arguments that no
  tool declares and its results carry fields that no tool knows, or (without calls) its words
  are foreign to the task description and the tool schemas.
- Turn level: a message that does not fit its place (pasted from another conversation or
  another domain). Values the tools know (cities, names, times, numbers) are first replaced by
  slot words, so messages compare by what they do. Each message-only turn is then placed in
  two views learned from the corpus: retrieval (the turns around the most similar messages
  elsewhere should look like the turns around this one) and response models (ridge maps,
  cross-fitted by conversation, from a message to the turn after and before it and from a user
  turn to its reply). A logistic model learns from the corpus itself which placements are
  real: every message is also moved into another conversation, and a turn is flagged when it
  fits no better than most moved messages. No labels and no word lists are involved: a
  message from a domain the corpus' users never talk about fits no context, and is found so.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter

import numpy as np
from nltk.stem.porter import PorterStemmer

from workbench.checks.base import (
    CheckContext,
    calls_of,
    evidence_item,
    flag,
    message_text,
    record_items,
    result_records,
    words,
)
from workbench.checks.grounding import clock_times, norm, shown, supported, value_aliases

NAME = "coherence"
K = 10                 # neighbours in the retrieval view
SWAP_QUANTILE = 0.3    # flag a message that fits no better than 70% of the messages moved in
SWAP_QUANTILE_SMALL = 0.5   # ... in a corpus of a few conversations (see swap_quantile)
SMALL_CORPUS = 200     # conversations from which SWAP_QUANTILE holds
UNCOVERED_MIN = 3      # a reply with this many words that neither the task nor the on-task corpus
UNCOVERED_SHARE = 0.4  # uses, making this share of its content words, is from elsewhere
CONTENT_MIN_WORDS = 8   # a conversation without service calls is judged by its words if it
CONTENT_FOREIGN_SHARE = 0.5   # has this many, and is off-domain when this share is foreign
RIDGE_L2 = 3.0         # ridge penalty of the response models
FOLDS = 5              # cross-fitting folds (by conversation)
MAX_VOCAB = 2000       # words kept for the vectors (the most widespread)
MIN_TRACES = 20        # fewer conversations are too few to learn what fits where
CHUNK_TRACES = 500     # conversations learned from together (see _swap_scores)
HELD_SHARE = 0.85      # a slot is held in replies if its values named there are found in the rest
# of their conversation at least this share as often as those of the best-kept slot
HELD_MIN = 5           # ... and it is named in at least this many replies
TIME_SLOT = "slottime"   # clock times named in a reply, held like a slot
RARE_VALUE_SHARE = 0.05   # a value in at most this share of the conversations names one of them
REPORTED_MIN = 0.5     # replies after a tool's results are held to name one of its values if
# most do (and as often as after the best-reported tool's, see HELD_SHARE)
BOOLEAN = {"true", "false", "yes", "no"}
STOP = set("""a an the and or but if of to in on at for with by from is are was were be been am
i you he she it we they me my your our their this that these those there here what which who
whom how when where why do does did have has had will would can could should shall may might
not no yes ok okay so please thanks thank just also too very all any some one as up out about
""".split())


def _known_fields(ctx: CheckContext) -> set[str]:
    out: set[str] = set()
    for fn in ctx.tools.values():
        out.update(((fn.get("parameters") or {}).get("properties") or {}).keys())
    return out


def _declared(ctx: CheckContext, name: str) -> set[str]:
    fn = ctx.tools.get(name) or {}
    return set(((fn.get("parameters") or {}).get("properties") or {}).keys())


def _service_args(ctx: CheckContext, t) -> list[tuple[str, str]]:
    """(tool, argument name) of every service call of the trace."""
    return [(n, k) for m in t.messages for n, a in calls_of(m)
            if ctx.is_service(n) and isinstance(a, dict) for k in a]


def _answered_results(ctx: CheckContext, t) -> list[tuple[str, dict, dict]]:
    """(tool, arguments, result record) of each service call that a result answers."""
    out = []
    for i, m in enumerate(t.messages[1:], 1):
        if m["role"] == "tool":
            for n, a in calls_of(t.messages[i - 1]):
                if ctx.is_service(n) and isinstance(a, dict):
                    out += [(n, a, r) for r in result_records(m)]
    return out


MIN_CORE = 10   # on-task conversations needed before result fields speak for a domain


def result_fields(ctx: CheckContext) -> tuple[set[str], int]:
    """The result fields of the task and how many traces they were learned from. The schema
    first: a result field is known when results of calls that use only the arguments their
    tool declares carry it, in traces whose service calls keep to the schema (the on-task
    core). Foreign traces, however many, teach nothing here, because their calls use
    arguments the task's tools do not declare (cached)."""
    if "coherence.result_fields" in ctx.cache:
        return ctx.cache["coherence.result_fields"]
    seen: Counter = Counter()   # field -> core traces whose sound results carry it
    core = 0
    for t in ctx.traces:
        args = _service_args(ctx, t)
        if not args or sum(k not in _declared(ctx, n) for n, k in args) / len(args) > 0.2:
            continue
        fields = {k for n, a, r in _answered_results(ctx, t) if a and set(a) <= _declared(ctx, n)
                  for k in r}
        core += bool(fields)
        seen.update(fields)
    need = max(2, 0.05 * core)
    ctx.cache["coherence.result_fields"] = (_known_fields(ctx) | {
        k for k, n in seen.items() if n >= need}, core)
    return ctx.cache["coherence.result_fields"]


def trace_level(ctx: CheckContext) -> list[dict]:
    return list(off_domain_traces(ctx).values())


def _own_declared(t, name: str) -> set[str]:
    """Arguments the trace's own tool list declares for `name` (logs that carry the tools
    their agent had): a tool the trace was given is part of its task."""
    if not getattr(t, "own_tools", False):
        return set()
    for tool in t.tools or ():
        fn = tool.get("function") or tool
        if fn.get("name") == name:
            return set(((fn.get("parameters") or {}).get("properties") or {}).keys())
    return set()


def _sound(ctx: CheckContext, t, name: str, args: dict) -> bool:
    """A call to a tool of the task (or of the trace's own tools) with only arguments that
    tool declares: its result is a result of the task, whatever its fields look like (a dict
    keyed by data values, a rarely used service's records)."""
    declared = _declared(ctx, name) | _own_declared(t, name)
    return (name in ctx.tools or bool(declared)) and set(args) <= declared


CORE_WORD_TRACES = 2   # a word of at least this many on-task conversations is the task's


def core_vocabulary(ctx: CheckContext) -> set[str]:
    """Stems of the words (user turns, replies, results) of at least CORE_WORD_TRACES
    conversations whose service calls are all sound (`_sound`), with the task's own words:
    what the task talks about, learned without any off-domain verdict (cached)."""
    if "coherence.core_vocab" in ctx.cache:
        return ctx.cache["coherence.core_vocab"]
    df: Counter = Counter()
    for t in ctx.traces:
        calls = [(n, a) for m in t.messages for n, a in calls_of(m)
                 if ctx.is_service(n) and isinstance(a, dict)]
        if not calls or not all(_sound(ctx, t, n, a) for n, a in calls):
            continue
        df.update({_stem(w) for m in t.messages if m["role"] in ("user", "assistant", "tool")
                   for w in content_words(message_text(m) if m["role"] == "assistant"
                                          else m.get("content") or "")})
    out = task_words(ctx) | {w for w, c in df.items() if c >= CORE_WORD_TRACES}
    ctx.cache["coherence.core_vocab"] = out
    return out


SIGNAL_SHARE = 0.5   # a signal speaks for another domain when over this share is foreign
WORDS_SHARE = 0.3    # ... for words (a conversation's own names and places are foreign too:
# on-task conversations of the benchmark stay under 0.27, foreign ones above 0.33; tuned on
# TFT scenario 5 and checked on the tau-bench airline tune logs, under 0.08)


def _trace_level(ctx: CheckContext) -> list[dict]:
    """Conversations from another product, by three independent signals: the arguments their
    service calls send (held to what the task's tools, or the trace's own, declare), the fields
    their results carry (held to those the on-task core returns, see `result_fields`; results
    of sound calls always count as the task's), and their words (held to the task's and those
    of conversations whose calls are sound, see `core_vocabulary`). Two signals or more make
    an error (the conversation leaves training); arguments or fields alone a warning. What is
    on-domain is decided by the tools, not by the majority: a rarely used service of the task
    is the task's."""
    if not ctx.tools:
        return []
    fields_known, core = result_fields(ctx)
    known_args = _known_fields(ctx)
    vocab = core_vocabulary(ctx)
    out = []
    for t in ctx.traces:
        args = _service_args(ctx, t)
        if not args:
            continue
        # an argument another tool of the task declares is a damaged call, not another domain
        foreign_args = [(n, k) for n, k in args
                        if k not in known_args and k not in _own_declared(t, n)]
        # with too few on-task conversations to know what results carry, fields do not count
        fields, foreign_fields = [], []
        if core >= MIN_CORE:
            for i, m in enumerate(t.messages[1:], 1):
                if m["role"] != "tool":
                    continue
                asked = [(n, a) for n, a in calls_of(t.messages[i - 1])
                         if ctx.is_service(n) and isinstance(a, dict)]
                sound = bool(asked) and all(_sound(ctx, t, n, a) for n, a in asked)
                ks = [k for r in result_records(m) for k in r]
                fields += ks
                if not sound:
                    foreign_fields += [k for k in ks if k not in fields_known]
        ws = [w for m in t.messages if m["role"] in ("user", "assistant")
              for w in content_words(message_text(m) if m["role"] == "assistant"
                                     else m.get("content") or "")]
        foreign_words = [w for w in ws if _stem(w) not in vocab]
        signals = {
            "arguments": len(foreign_args) > SIGNAL_SHARE * len(args),
            "fields": bool(fields) and len(foreign_fields) > SIGNAL_SHARE * len(fields),
            "words": (len(ws) >= CONTENT_MIN_WORDS
                      and len(foreign_words) > WORDS_SHARE * len(ws)),
        }
        held = [k for k, v in signals.items() if v]
        if not held or held == ["words"]:
            continue   # words alone (a conversation of its own names and places) say nothing
        why = []
        if foreign_args:
            uniq_args = sorted({k for _, k in foreign_args})
            tools = sorted({n for n, _ in foreign_args})
            why.append(evidence_item(
                "schema", f"no tool of the task declares argument"
                f"{'s' if len(uniq_args) > 1 else ''} {', '.join(uniq_args[:5])}, yet its calls"
                f" to {', '.join(tools)} send {'them' if len(uniq_args) > 1 else 'it'}"
                f" ({len(foreign_args)} of the {len(args)} arguments of its service calls)"))
        misplaced: dict[str, list[str]] = {}
        for n, k in args:
            if k in known_args and k not in _declared(ctx, n) and k not in misplaced.get(n, []):
                misplaced.setdefault(n, []).append(k)
        for n, ks in sorted(misplaced.items()):
            why.append(evidence_item("schema", f"{n} does not declare argument"
                                     f"{'s' if len(ks) > 1 else ''} {', '.join(ks[:5])}"))
        if foreign_fields:
            uniq = sorted(set(foreign_fields))
            why.append(evidence_item("corpus", f"results carry fields that no tool declares and"
                                     f" no result of the {core} on-task conversations has:"
                                     f" {', '.join(uniq[:5])}"
                                     f" ({len(foreign_fields)} of {len(fields)} fields)"))
        if signals["words"]:
            sample = [w for w, _ in Counter(foreign_words).most_common(5)]
            why.append(evidence_item("task", f"{len(foreign_words)} of its {len(ws)} content"
                                     f" words ({', '.join(sample)}) are in neither the task"
                                     " description, the tool schemas, nor conversations whose"
                                     " calls keep to them"))
        sample = sorted({k for _, k in foreign_args} | set(foreign_fields))[:5]
        several = len(held) >= 2
        why.append(evidence_item("corpus", f"signals of another domain: {', '.join(held)}"
                                 f" ({len(held)} of 3; an exclusion needs two)"))
        detail = f"{OFF_BY_SCHEMA} no tool of the task has ({', '.join(sample)})"
        if not several:
            detail = "possibly " + detail
        out.append(flag(t, None, NAME, "error" if several else "warning", detail, why))
    return out


OFF_BY_SCHEMA = "off-domain conversation: its calls and results use fields"


def schema_verdicts(ctx: CheckContext) -> tuple[set[int], list[dict]]:
    """The conversations of `ctx` that make service calls, and the off-domain flags the schema
    rule gives them (what a re-check after a relabelling decides again; `ctx` knows the
    corpus' result fields, see `result_fields`)."""
    with_calls = {t.id for t in ctx.traces if _service_args(ctx, t)}
    return with_calls, [f for f in _trace_level(ctx) if f["trace_id"] in with_calls]


_PORTER = PorterStemmer()
CONTENT_WORD = re.compile(r"[a-z]+")
COMMON_REPLY_SHARE = 0.1   # a word in the replies of this share of the on-task conversations is
# part of how the assistant speaks (greetings, confirmations), not news from elsewhere


def content_words(text: str) -> list[str]:
    """Words that carry content: letters only, not a stop word, three letters or more."""
    return [w for w in CONTENT_WORD.findall(text.lower()) if w not in STOP and len(w) > 2]


@functools.lru_cache(maxsize=65536)
def _stem(w: str) -> str:
    """Porter stem (nltk, which rouge-score already brings): "reserving" is "reservation"'s."""
    return _PORTER.stem(w)


def task_words(ctx: CheckContext) -> set[str]:
    """What the task is about, from its description and the tool schemas (names split at
    capitals and underscores, descriptions, parameter names, enum values)."""
    parts = [((ctx.task or {}).get("description") or "")]
    for name, fn in ctx.tools.items():
        parts += [re.sub(r"(?<=[a-z])(?=[A-Z])|_", " ", name), fn.get("description") or ""]
        for pname, prop in ((fn.get("parameters") or {}).get("properties") or {}).items():
            parts += [pname.replace("_", " "), str(prop.get("description") or ""),
                      " ".join(map(str, prop.get("enum") or ()))]
    return {_stem(w) for w in content_words(" ".join(parts))}


def off_domain_traces(ctx: CheckContext) -> dict[int, dict]:
    """trace id -> its off-domain flag (cached; see `trace_level`): by the schema first, then,
    for conversations without service calls, by their words."""
    if "coherence.off_domain" not in ctx.cache:
        ctx.cache["coherence.off_domain"] = {**_off_by_schema(ctx), **{
            f["trace_id"]: f for f in _content_level(ctx)}}
    return ctx.cache["coherence.off_domain"]


def _off_by_schema(ctx: CheckContext) -> dict[int, dict]:
    if "coherence.off_schema" not in ctx.cache:
        ctx.cache["coherence.off_schema"] = {f["trace_id"]: f for f in _trace_level(ctx)}
    return ctx.cache["coherence.off_schema"]


def off_domain_ids(ctx: CheckContext) -> set[int]:
    """Conversations judged off-domain (errors only: a single signal's warning keeps the
    conversation, and its turns, in the checks)."""
    return {i for i, f in off_domain_traces(ctx).items() if f["severity"] == "error"}


def _content_level(ctx: CheckContext) -> list[dict]:
    """Conversations without any service call whose words are mostly foreign to the task: not
    in its description or tool schemas, nor used by the on-task core of the corpus (which
    conversations like them, however many, are not part of; see `corpus_words`)."""
    known = task_words(ctx) | corpus_words(ctx)[0]
    _, n_core = corpus_words(ctx)
    out = []
    for t in ctx.traces:
        if _service_args(ctx, t) or any(m["role"] == "tool" for m in t.messages):
            continue
        ws = [w for m in t.messages if m["role"] in ("user", "assistant")
              for w in content_words(message_text(m) if m["role"] == "assistant"
                                     else m.get("content") or "")]
        foreign = [w for w in ws if _stem(w) not in known]
        if len(ws) < CONTENT_MIN_WORDS or len(foreign) < CONTENT_FOREIGN_SHARE * len(ws):
            continue
        sample = [w for w, _ in Counter(foreign).most_common(6)]
        out.append(flag(t, None, NAME, "error",
                        "off-domain conversation: most of its words are foreign to the task"
                        f" ({', '.join(sample)})",
                        [evidence_item("task", f"{len(foreign)} of its {len(ws)} content words"
                                       f" ({', '.join(sample)}) are in neither the task"
                                       " description, the tool schemas, nor the"
                                       f" {n_core} on-task conversations of the corpus; it"
                                       " makes no service call")]))
    return out


def _context_words(t) -> set[str]:
    """Words of what the user said and the results returned in one conversation (what
    the assistant's replies are about; corruption of replies does not touch them)."""
    return {_stem(w) for m in t.messages if m["role"] in ("user", "tool")
            for w in content_words(m.get("content") or "")}


def corpus_words(ctx: CheckContext) -> tuple[set[str], int]:
    """Words the on-task conversations use: values their sound service calls send or get back,
    words said by users or returned by results in any of them (those are not the assistant's
    labels, where damage lands, and a small corpus has few conversations to repeat a word),
    or found in the replies of as many of them as COMMON_REPLY_SHARE of the whole corpus
    (replies are where damage lands: a word must be common to count). Learned from the core
    only: conversations with a service call that keeps to its tool's schema and is answered,
    and that the schema does not call off-domain; so a corpus carrying much foreign traffic
    does not teach its words (cached). Returns the words and how many conversations they were
    learned from."""
    if "coherence.corpus_words" in ctx.cache:
        return ctx.cache["coherence.corpus_words"]
    off = {i for i, f in _off_by_schema(ctx).items() if f["severity"] == "error"}
    said: Counter = Counter()
    replied: Counter = Counter()
    values: set[str] = set()   # what the task's tools are called with or return
    n = 0
    for t in ctx.traces:
        sound = [(name, args, rec) for name, args, rec in _answered_results(ctx, t)
                 if args and set(args) <= _declared(ctx, name)]
        if t.id in off or not sound:
            continue   # the core: conversations whose service calls keep to the schema
        n += 1
        said.update(_context_words(t))
        values.update(_stem(w) for _, args, rec in sound
                      for v in [*args.values(), *rec.values()]
                      if isinstance(v, str) for w in content_words(v))
        replied.update({_stem(w) for m in t.messages if m["role"] == "assistant"
                        and not any(ctx.is_service(c) for c, _ in calls_of(m))
                        for w in content_words(message_text(m))})
    need = max(2, COMMON_REPLY_SHARE * len(ctx.traces))
    out = values | set(said) | {
        w for w, c in replied.items() if c >= need}
    ctx.cache["coherence.corpus_words"] = out, n
    return out, n


def uncovered_words(ctx: CheckContext, u: dict) -> tuple[list[str], int]:
    """The content words of a reply that neither the task (description, schemas), nor its own
    conversation's user turns and results, nor the on-task corpus use; and how many content
    words it has."""
    if "coherence.task_words" not in ctx.cache:
        ctx.cache["coherence.task_words"] = task_words(ctx)
    known = ctx.cache["coherence.task_words"] | corpus_words(ctx)[0]
    key = ("coherence.context_words", u["trace"].id)
    if key not in ctx.cache:
        ctx.cache[key] = _context_words(u["trace"])
    ws = content_words(u["text"])
    return [w for w in ws if _stem(w) not in known and _stem(w) not in ctx.cache[key]], len(ws)


def _idf_vocab(docs: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Smoothed idf of every word and the vocabulary: the MAX_VOCAB words found in the most
    documents, among those in at least two."""
    df: Counter = Counter()
    for d in docs:
        df.update(set(words(d)))
    n = len(docs)
    common = [w for w, c in df.most_common(MAX_VOCAB) if c >= 2]
    vocab = {w: j for j, w in enumerate(common)}
    idf = {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}
    return idf, vocab


def _vectorize(texts: list[str], idf: dict[str, float], vocab: dict[str, int]) -> np.ndarray:
    mat = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for row, text in enumerate(texts):
        for w, c in Counter(words(text)).items():
            j = vocab.get(w)
            if j is not None:
                mat[row, j] = (1 + math.log(c)) * idf[w]
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    norms[norms == 0] = 1
    return mat / norms


def _context_text(m: dict) -> str:
    if m["role"] == "tool":
        return " ".join(f"{k}" for r in result_records(m)[:1] for k in r) or "result"
    return message_text(m)


TOKEN = re.compile(r"[a-z0-9]+")
CLOCK_TIME = re.compile(
    r"\b\d{1,2}(?::\d{2})?\s*(?:a\.?m\.?|p\.?m\.?)(?![a-z])|\b\d{1,2}:\d{2}\b", re.I)
MAX_SLOT_WORDS = 6


def slot_lexicon(ctx: CheckContext) -> dict[tuple[str, ...], str]:
    """Values the service tools are called with or return (a city, a restaurant's name, a
    cuisine), as word tuples -> the argument or field that holds them most often. Replacing
    them by their slot makes "a table at Aster in Fairfield" and "a table at Tanpopo in
    Oakland" the same sentence, so messages are compared by what they do, not by the values
    of one conversation."""
    counts: dict[tuple[str, ...], Counter] = {}
    for t in ctx.traces:
        for m in t.messages:
            pairs: list = []
            for name, args in calls_of(m):
                if ctx.is_service(name) and isinstance(args, dict):
                    pairs += args.items()
            if m["role"] == "tool":
                for r in result_records(m):
                    pairs += record_items(r)
            for k, v in pairs:
                if not isinstance(v, str):
                    continue
                toks = tuple(TOKEN.findall(v.lower()))[:MAX_SLOT_WORDS + 1]
                if (not toks or len(toks) > MAX_SLOT_WORDS or len("".join(toks)) < 3
                        or all(x.isdigit() for x in toks)
                        or (len(toks) == 1 and (toks[0] in STOP or toks[0] in BOOLEAN))):
                    continue
                counts.setdefault(toks, Counter())[k] += 1
    return {v: "slot" + re.sub(r"[^a-z0-9]", "", c.most_common(1)[0][0].lower())
            for v, c in counts.items()}


def delexicalise(text: str, lexicon: dict[tuple[str, ...], str]) -> str:
    """The text with known values, clock times and numbers replaced by slot words (longest
    match first)."""
    toks = TOKEN.findall(CLOCK_TIME.sub(" slottime ", text).lower())
    out, i = [], 0
    while i < len(toks):
        for n in range(min(MAX_SLOT_WORDS, len(toks) - i), 0, -1):
            slot = lexicon.get(tuple(toks[i:i + n]))
            if slot:
                out.append(slot)
                i += n
                break
        else:
            out.append("slotnum" if toks[i].isdigit() else toks[i])
            i += 1
    return " ".join(out)


def _units(ctx: CheckContext, traces: list) -> list[dict]:
    """Every message-only assistant turn with its surroundings: the turn before and after,
    the user turn it answers, and the words of the rest of its conversation."""
    units = []
    for t in traces:
        msgs = t.messages
        texts = [message_text(m) if m["role"] != "tool" else (m["content"] or "") for m in msgs]
        msg_words = [set(words(x)) for x in texts]
        in_messages: Counter = Counter()   # word -> how many messages of the trace hold it
        for ws in msg_words:
            in_messages.update(ws)
        before: set[str] = set()
        for i, m in enumerate(msgs):
            if m["role"] == "assistant" and texts[i].strip() and not any(
                    ctx.is_service(n) for n, _ in calls_of(m)):
                prev = next((msgs[j] for j in range(i - 1, -1, -1)
                             if msgs[j]["role"] != "system"), None)
                nxt = msgs[i + 1] if i + 1 < len(msgs) else None
                units.append({
                    "trace": t, "idx": i, "text": texts[i], "pos": i / max(1, len(msgs) - 1),
                    "prev": _context_text(prev) if prev else "<start>",
                    "next": _context_text(nxt) if nxt else "<end>",
                    "user_before": next((msgs[j]["content"] or "" for j in range(i - 1, -1, -1)
                                         if msgs[j]["role"] == "user"), "<start>"),
                    # a word is elsewhere in the conversation if another message holds it
                    "elsewhere": lambda w, own=msg_words[i], c=in_messages: c[w] > (w in own),
                    "before": set(before)})
            before |= msg_words[i]
    return units


def _knn(X: np.ndarray, trace_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The K rows most like each row, from other conversations, and their (clipped) weights."""
    tops, weights = [], []
    for start in range(0, len(X), 512):
        block = slice(start, min(len(X), start + 512))
        sim = X[block] @ X.T
        sim[trace_of[block][:, None] == trace_of[None, :]] = -1
        top = np.argpartition(-sim, K, axis=1)[:, :K]
        tops.append(top)
        weights.append(np.clip(np.take_along_axis(sim, top, 1), 0, None) + 1e-6)
    return np.vstack(tops), np.vstack(weights)


def _cross_fitted_ridge(X: np.ndarray, Y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Ridge predictions of Y from X, each row by a model fitted without its fold (its own
    conversation is never in the model that judges it). Solved in float64 on the small
    (vocabulary-sized) matrices only."""
    G, C = (X.T @ X).astype(np.float64), (X.T @ Y).astype(np.float64)
    reg = RIDGE_L2 * np.eye(X.shape[1])
    out = np.zeros(Y.shape, dtype=np.float32)
    for f in np.unique(folds):
        rows = folds == f
        Xf = X[rows]
        W = np.linalg.solve(G - (Xf.T @ Xf).astype(np.float64) + reg,
                            C - (Xf.T @ Y[rows]).astype(np.float64))
        out[rows] = Xf @ W.astype(np.float32)
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)


class _Placement:
    """How well each message fits each place. Two views, both learned from the corpus:
    retrieval (the turns around the K most similar messages elsewhere should resemble the
    turns around this one) and response models (ridge maps from a message to the turn after
    and before it, and from a user turn to the reply; cross-fitted by conversation)."""

    def __init__(self, units: list[dict], lexicon: dict):
        self.units = units
        keys = ("text", "prev", "next", "user_before")
        docs = {k: [delexicalise(u[k], lexicon) for u in units] for k in keys}
        idf, vocab = _idf_vocab([x for k in keys for x in docs[k]])
        self.R, self.P, self.N, self.U = (_vectorize(docs[k], idf, vocab) for k in keys)
        self.trace_of = np.array([u["trace"].id for u in units])
        self.rtop, self.rw = _knn(self.R, self.trace_of)
        self.utop, self.uw = _knn(self.U, self.trace_of)
        folds = np.unique(self.trace_of, return_inverse=True)[1] % FOLDS
        self.Nc, self.Pc = self.N - self.N.mean(0), self.P - self.P.mean(0)
        self.Rc = self.R - self.R.mean(0)
        both = _cross_fitted_ridge(self.R, np.hstack([self.Nc, self.Pc]), folds)
        self.next_of, self.prev_of = both[:, :self.N.shape[1]], both[:, self.N.shape[1]:]
        self.reply_to = _cross_fitted_ridge(self.U, self.Rc, folds)
        self.text_words = [[x for x in words(u["text"]) if x not in STOP] for u in units]
        self.pos = np.array([u["pos"] for u in units])

    def features(self, text_of: np.ndarray) -> np.ndarray:
        """Row i: message text_of[i] placed at unit i's position."""
        R, P, N = self.R, self.P, self.N
        rows = []
        for i, j in enumerate(text_of):
            nb, w = self.rtop[j], self.rw[j]
            prev_fit = float((w * (P[nb] @ P[i])).sum() / w.sum())
            next_fit = float((w * (N[nb] @ N[i])).sum() / w.sum())
            answers = R[self.utop[i]] @ R[j]
            reply_fit = float((self.uw[i] * answers).sum() / self.uw[i].sum())
            ws = self.text_words[j]
            elsewhere = self.units[i]["elsewhere"]
            unsup = float(np.mean([not elsewhere(x) for x in ws])) if ws else 0.0
            # where in their conversations the most similar messages stand, against here
            pos_gap = abs(self.pos[i] - float((w * self.pos[nb]).sum() / w.sum()))
            rows.append([prev_fit, next_fit, reply_fit, float(answers.max()), unsup, pos_gap])
        model = np.c_[_cos(self.next_of[text_of], self.Nc), _cos(self.prev_of[text_of], self.Pc),
                      _cos(self.reply_to, self.Rc[text_of])]
        return np.c_[np.array(rows), model]


FEATURES = ("prev_fit", "next_fit", "reply_fit", "best_reply", "unsupported_words",
            "position_gap", "next_model", "prev_model", "reply_model")


def logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, l2: float = 1e-2,
             steps: int = 30):
    """A (weighted) L2 logistic regression on standardised features, by Newton steps; returns
    the predict function. Shared by the coherence checks' label-free calibrations."""
    w = np.ones(len(y)) if w is None else w
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Z = np.hstack([(X - mu) / sd, np.ones((len(X), 1))])
    b = np.zeros(Z.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(Z @ b, -30, 30)))
        grad = Z.T @ (w * (p - y)) + l2 * b
        hess = (Z * (w * p * (1 - p))[:, None]).T @ Z + l2 * np.eye(len(b))
        b -= np.linalg.solve(hess, grad)
    return lambda X2: 1 / (1 + np.exp(-np.clip(
        np.hstack([(X2 - mu) / sd, np.ones((len(X2), 1))]) @ b, -30, 30)))


def swap_scores(ctx: CheckContext) -> list[dict]:
    """Each message-only turn with `p_moved`: how much it looks like a message moved in from
    another conversation. Learned on the corpus itself: every message is also placed at the
    position of a message from another conversation, a logistic model learns to tell moved
    from in-place messages, and the threshold is the score that SWAP_QUANTILE of the moved
    messages reach, so it needs no labels and follows the corpus."""
    if "coherence.swap" not in ctx.cache:
        ctx.cache["coherence.swap"] = _swap_scores(ctx)
    return ctx.cache["coherence.swap"]


def _swap_scores(ctx: CheckContext) -> list[dict]:
    """All turns' scores, the groups' one after the other."""
    out: list[dict] = []
    for scored in swap_groups(ctx):
        for u in scored:   # index into the list returned, whatever the group
            u["moved_from"] += len(out)
        out += scored
    return out


def swap_groups(ctx: CheckContext):
    """Each group's scored turns (`moved_from` indexes its own group). A large corpus is
    learned from in groups of about CHUNK_TRACES conversations (every n-th conversation, so
    each group is a sample of the whole): the cost of retrieval grows with the square of a
    group's size, not of the corpus', and only one group's conversations need be in memory."""
    lexicon = slot_lexicon(ctx)
    groups = max(1, math.ceil(len(ctx.traces) / CHUNK_TRACES))
    for g in range(groups):
        yield _score_units(_units(ctx, ctx.traces[g::groups]), lexicon)


def _scored_units(ctx: CheckContext):
    """Every scored turn. On a list of traces (all in memory anyway) the scores are kept for
    the model check; on stored traces (`run_checks`) one group is scored and let go at a time,
    so memory holds one group's conversations, not the corpus'."""
    if "coherence.swap" in ctx.cache or isinstance(ctx.traces, list):
        yield from swap_scores(ctx)
        return
    for units in swap_groups(ctx):
        yield from units
        del units


def _plain_units(ctx: CheckContext):
    """The turns `_scored_units` yields, without their scores (for statistics that need only
    the turn and its conversation): on stored traces, one group's units at a time, without
    paying for the placement model."""
    if "coherence.swap" in ctx.cache or isinstance(ctx.traces, list):
        yield from swap_scores(ctx)
        return
    groups = max(1, math.ceil(len(ctx.traces) / CHUNK_TRACES))
    for g in range(groups):
        units = _units(ctx, ctx.traces[g::groups])
        if len(units) >= 2 * K + 1 and len({u["trace"].id for u in units}) >= max(FOLDS,
                                                                               MIN_TRACES):
            yield from units
        del units


def group_size(ctx: CheckContext) -> int:
    """Conversations each placement model learns from (see swap_groups)."""
    n = len(ctx.traces)
    return math.ceil(n / max(1, math.ceil(n / CHUNK_TRACES))) if n else 0


def swap_quantile(n_traces: int) -> float:
    """The share of moved messages that must fit worse than a flagged one. A small corpus
    teaches a noisier placement model, whose low scores are less telling: its threshold rises
    from SWAP_QUANTILE (at SMALL_CORPUS conversations and more) to SWAP_QUANTILE_SMALL (at a
    handful), so its flags stay as precise."""
    short = max(0.0, 1 - n_traces / SMALL_CORPUS)
    return SWAP_QUANTILE + (SWAP_QUANTILE_SMALL - SWAP_QUANTILE) * short


def _score_units(units: list[dict], lexicon: dict) -> list[dict]:
    if len(units) < 2 * K + 1 or len({u["trace"].id for u in units}) < max(FOLDS, MIN_TRACES):
        return []
    place = _Placement(units, lexicon)
    m = len(units)
    trace_of = place.trace_of
    perm = np.random.default_rng(0).permutation(m)
    perm = np.where(trace_of[perm] == trace_of, np.roll(perm, 1), perm)
    real = place.features(np.arange(m))
    moved = place.features(perm)
    quantile = swap_quantile(len(set(trace_of.tolist())))
    predict = logistic(np.vstack([real, moved]), np.r_[np.zeros(m), np.ones(m)])
    p_moved = predict(moved)
    threshold = float(np.quantile(p_moved, quantile))
    # Learn again from the core: messages the first model finds in place, and moves between
    # them. In a noisy corpus the "in place" side of the first model holds every damaged
    # message too; left out, the second model tells moved from placed more sharply.
    core = predict(real) < threshold
    pair = core & core[perm]
    if pair.sum() >= 2 * K:
        predict = logistic(np.vstack([real[core], moved[pair]]),
                           np.r_[np.zeros(int(core.sum())), np.ones(int(pair.sum()))])
        p_moved = predict(moved)
        threshold = float(np.quantile(p_moved[pair], quantile))
    resp_df: Counter = Counter()
    for u in units:
        resp_df.update(set(words(u["text"])))
    rare = max(3, 0.005 * m)
    for i, (u, p, f) in enumerate(zip(units, predict(real), real)):
        u["p_moved"], u["threshold"] = float(p), threshold
        u.update(zip(FEATURES, map(float, f)))
        # what this turn would score holding unit perm[i]'s message (for other calibrations)
        u["moved_from"], u["p_moved_if_moved"] = int(perm[i]), float(p_moved[i])
        specific = [w for w in words(u["text"]) if w not in STOP and len(w) > 2
                    and resp_df[w] <= rare]
        u["foreign"] = sorted({w for w in specific if w not in u["before"]
                               and not u["elsewhere"](w)})
    return units


def named_values(text: str, lexicon: dict) -> list[tuple[str, str]]:
    """(value as written, slot) of every value the tools know (see `slot_lexicon`) and every
    clock time that a reply names (longest match first)."""
    out = [(x.rstrip("."), TIME_SLOT) for x in CLOCK_TIME.findall(text)]
    toks = TOKEN.findall(CLOCK_TIME.sub(" ", text).lower())
    i = 0
    while i < len(toks):
        for n in range(min(MAX_SLOT_WORDS, len(toks) - i), 0, -1):
            slot = lexicon.get(tuple(toks[i:i + n]))
            if slot:
                out.append((" ".join(toks[i:i + n]), slot))
                i += n
                break
        else:
            i += 1
    return out


def unechoed_values(ctx: CheckContext) -> tuple[dict[tuple[int, int], list], dict[str, float]]:
    """Replies that name values their conversation never has elsewhere (a reply moved in from
    another conversation carries that conversation's restaurant, city and time), and per slot
    the share of its values named in replies that the rest of the conversation has. A slot is
    held when that share is close to the best-kept slot's (relative, as damage lowers every
    slot alike): a cuisine offered as an example ("Chinese, Italian, or something else?") is
    not held, a restaurant's name or a city is. Learned from the corpus, cached."""
    if "coherence.unechoed" in ctx.cache:
        return ctx.cache["coherence.unechoed"]
    lexicon = slot_lexicon(ctx)
    aliases = value_aliases(ctx)
    prose = prose_values(ctx)
    off = off_domain_ids(ctx)
    found: Counter = Counter()
    named: Counter = Counter()
    missing: dict[tuple[int, int], list] = {}
    texts: dict[int, tuple[str, str]] = {}
    for u in _plain_units(ctx):
        t = u["trace"]
        if t.id in off:
            continue
        if t.id not in texts:
            texts.clear()     # a trace's turns come together: keep one conversation's text
            text = _conversation_text_of(ctx, t)
            texts[t.id] = (text, norm(text))
        text, tnorm = texts[t.id]
        seen = set()
        vocab = task_vocabulary(ctx, t)
        for value, slot in named_values(u["text"], lexicon):
            if (value, slot) in seen:
                continue
            seen.add((value, slot))
            ok = (bool(clock_times(value) & clock_times(text)) if slot == TIME_SLOT
                  else supported(value, text, tnorm, aliases))
            named[slot] += 1
            found[slot] += ok
            # a value of the task's own vocabulary (an enum of its tools, a term of the policy)
            # is offered as a choice, and a word the corpus mostly uses in prose is no value
            # named: neither is taken from another conversation (both still count in the
            # slot's share, which says how replies name values, choices and words included)
            if not ok and slot != TIME_SLOT and (norm(value) in vocab
                                                 or tuple(value.split()) in prose):
                continue
            if not ok:
                missing.setdefault((t.id, u["idx"]), []).append((value, slot))
    share = {s: found[s] / n for s, n in named.items() if n >= HELD_MIN}
    ctx.cache["coherence.unechoed"] = missing, share
    return missing, share


def task_vocabulary(ctx: CheckContext, t) -> _Vocabulary:
    """Values the task itself offers (normalised): the enum values of its tools' parameters
    and the word runs of this conversation's system prompt (the policy), up to a few words
    long. A reply naming one of them ("economy or business?") names a choice the task gives,
    not a value from elsewhere."""
    if "coherence.enums" not in ctx.cache:
        enums: set[str] = set()
        for fn in ctx.tools.values():
            stack = [fn.get("parameters") or {}]
            while stack:
                node = stack.pop()
                if isinstance(node, dict):
                    enums |= {norm(str(v)) for v in node.get("enum") or () if norm(str(v))}
                    stack += list(node.values())
                elif isinstance(node, list):
                    stack += node
        ctx.cache["coherence.enums"] = enums
    policy = getattr(t, "system_prompt", None) or next(
        (m.get("content") or "" for m in t.messages if m["role"] == "system"), "")
    last = ctx.cache.get("coherence.policy")   # one prompt kept: a trace's turns come together
    if last is None or last[0] != policy:
        last = ctx.cache["coherence.policy"] = (policy, f" {norm(policy or '')} ")
    return _Vocabulary(ctx.cache["coherence.enums"], last[1])


class _Vocabulary:
    """`value in vocabulary`: an enum value, or a word run of the policy."""

    def __init__(self, enums: set[str], policy_norm: str):
        self.enums, self.policy = enums, policy_norm

    def __contains__(self, value: str) -> bool:
        return bool(value) and (value in self.enums or f" {value} " in self.policy)


PROSE_MIN = 5        # a value named in this many conversations' messages at least, and
PROSE_OWN = 0.5      # a value of the conversation in fewer than this share of them, is a word
# of ordinary prose there ("business days"), not the value being named


def prose_values(ctx: CheckContext) -> set[tuple[str, ...]]:
    """Values the tools know that the corpus' messages mostly use as ordinary words: named in
    the user turns and replies of many conversations, yet in most of them no call or result
    of that conversation carries the value (cached). Learned from the corpus."""
    if "coherence.prose" in ctx.cache:
        return ctx.cache["coherence.prose"]
    lexicon = slot_lexicon_cached(ctx)
    aliases = value_aliases(ctx)
    per, _, _ = own_values(ctx)
    said: Counter = Counter()
    own: Counter = Counter()
    for t in ctx.traces:
        named = {tuple(v.split()) for m in t.messages if m["role"] in ("user", "assistant")
                 for v, s in named_values(message_text(m), lexicon) if s != TIME_SLOT}
        said.update(named)
        mine = per.get(t.id, set())
        own.update(v for v in named if v in mine or any(
            tuple(a.split()) in mine for a in aliases.get(" ".join(v), ())))
    ctx.cache["coherence.prose"] = {v for v, n in said.items()
                                    if n >= PROSE_MIN and own[v] < PROSE_OWN * n}
    return ctx.cache["coherence.prose"]


def unreported_results(ctx: CheckContext) -> tuple[dict, dict, dict]:
    """Replies right after a result that name none of its values, with the kind of result
    (its fields); per kind, the share of replies right after such results that do name one;
    and the tool whose calls such results answer.
    Where most replies report what a tool found ("I found 3 restaurants; Aster is in
    Fairfield"), one that names nothing of the result is from elsewhere ("Your booking is
    complete" after a search). Learned from the corpus per tool (a booking's confirmation
    often names nothing), cached."""
    if "coherence.unreported" in ctx.cache:
        return ctx.cache["coherence.unreported"]
    lexicon = slot_lexicon(ctx)
    aliases = value_aliases(ctx)
    off = off_domain_ids(ctx)
    named: Counter = Counter()
    total: Counter = Counter()
    callers: dict[frozenset, Counter] = {}
    silent: dict[tuple[int, int], frozenset] = {}
    for u in _plain_units(ctx):
        t, i = u["trace"], u["idx"]
        if t.id in off or i < 1 or t.messages[i - 1]["role"] != "tool":
            continue
        recs = result_records(t.messages[i - 1])
        if not recs:
            continue
        # results are told apart by their fields (a search's, a booking's), not by the call
        # before them, which may be the damaged turn
        kind = frozenset(k for r in recs for k in r)
        callers.setdefault(kind, Counter()).update(
            n for n, _ in calls_of(t.messages[i - 2]) if ctx.is_service(n))
        text = "\n".join(" ".join(str(v) for _, v in record_items(r)) for r in recs)
        tnorm = norm(text)
        vocab = task_vocabulary(ctx, t)
        says = any(bool(clock_times(v) & clock_times(text)) if s == TIME_SLOT
                   else supported(v, text, tnorm, aliases) or norm(v) in vocab
                   for v, s in named_values(u["text"], lexicon))
        total[kind] += 1
        named[kind] += says
        if not says:
            silent[(t.id, i)] = kind
    tool_of = {k: (c.most_common(1)[0][0] if c else "service") for k, c in callers.items()}
    share = {k: named[k] / c for k, c in total.items() if c >= HELD_MIN}
    ctx.cache["coherence.unreported"] = silent, share, tool_of
    return silent, share, tool_of


def own_values(ctx: CheckContext) -> tuple[dict[int, set], Counter, int]:
    """Per conversation, the values its service calls send and its results return (as word
    tuples, see `slot_lexicon`); in how many conversations each value is; and how many
    conversations there are (cached)."""
    if "coherence.own_values" in ctx.cache:
        return ctx.cache["coherence.own_values"]
    per: dict[int, set] = {}
    df: Counter = Counter()
    for t in ctx.traces:
        vals = set()
        for m in t.messages:
            pairs = [v for n, a in calls_of(m) if ctx.is_service(n) and isinstance(a, dict)
                     for v in a.values()]
            if m["role"] == "tool":
                pairs += [v for r in result_records(m) for _, v in record_items(r)]
            vals |= {tuple(TOKEN.findall(v.lower())) for v in pairs if isinstance(v, str)}
        per[t.id] = vals
        df.update(vals)
    ctx.cache["coherence.own_values"] = per, df, len(per)
    return ctx.cache["coherence.own_values"]


def names_own_value(ctx: CheckContext, u: dict) -> str | None:
    """A value the reply names that its own conversation's calls or results have and few
    other conversations do (a restaurant's name): a message moved in from elsewhere would
    name it only by chance, so the reply is in place whatever its placement score."""
    per, df, n = own_values(ctx)
    mine = per.get(u["trace"].id, set())
    for value, slot in named_values(u["text"], slot_lexicon_cached(ctx)):
        key = tuple(value.split())
        if slot != TIME_SLOT and key in mine and df[key] <= max(1.0, RARE_VALUE_SHARE * n):
            return value
    return None


def slot_lexicon_cached(ctx: CheckContext) -> dict:
    if "coherence.lexicon" not in ctx.cache:
        ctx.cache["coherence.lexicon"] = slot_lexicon(ctx)
    return ctx.cache["coherence.lexicon"]


def _conversation_text_of(ctx: CheckContext, t) -> str:
    """What a conversation says besides its replies: user turns, results and the arguments of
    its service calls (what a reply naming a restaurant, a city or a time should echo)."""
    parts = []
    for m in t.messages:
        if m["role"] in ("user", "tool"):
            parts.append(m.get("content") or "")
        elif m["role"] == "assistant":
            parts += [str(v) for n, a in calls_of(m) if ctx.is_service(n) and isinstance(a, dict)
                      for v in a.values()]
    return "\n".join(parts)


def _slot_name(ctx: CheckContext, slot: str) -> str:
    """The argument or result field a slot word stands for ("slotrestaurantname" ->
    "restaurant_name")."""
    if slot == TIME_SLOT:
        return "time"
    names = {"slot" + re.sub(r"[^a-z0-9]", "", k.lower()): k for k in result_fields(ctx)[0]}
    return names.get(slot, slot.removeprefix("slot"))


def _result_gives(message: dict) -> str:
    """A result's first two named values, as a flag's sentence says what a reply could report:
    "city 'Fairfield' and name 'Aster'"."""
    out = []
    for r in result_records(message):
        for k, v in record_items(r):
            if isinstance(v, str) and v.strip() and not any(k == f for f, _ in out):
                out.append((k, v))
            if len(out) == 2:
                return " and ".join(f"{k} {shown(v)}" for k, v in out)
    return " and ".join(f"{k} {shown(v)}" for k, v in out)


def _about(ctx: CheckContext, t, slots: list[str]) -> str:
    """What the conversation says for the slots a reply names wrongly, one value each, from its
    user turns, results and calls: "city 'pleasanton'" (empty when it says none)."""
    first: dict[str, str] = {}
    for value, slot in named_values(_conversation_text_of(ctx, t), slot_lexicon_cached(ctx)):
        first.setdefault(slot, value)
    return " and ".join(f"{_slot_name(ctx, s)} {shown(first[s])}"
                        for s in dict.fromkeys(slots) if s in first)


def _user_before(t, idx: int) -> str:
    """The last user turn before a message (what the message should answer)."""
    for m in reversed(t.messages[:idx]):
        if m["role"] == "user" and isinstance(m.get("content"), str) and m["content"].strip():
            return " ".join(m["content"].split())
    return ""


def turn_level(ctx: CheckContext) -> list[dict]:
    """Replies that do not fit their place (the corpus' placement model), or that talk of
    what neither the task nor the on-task corpus ever does (the task's words first). Turns of
    an off-domain conversation are left to its trace flag."""
    out = []
    off = off_domain_ids(ctx)
    _, n_core = corpus_words(ctx)
    unechoed, kept = unechoed_values(ctx)
    bar = HELD_SHARE * max(kept.values(), default=1.0)
    silent, reported, tool_of = unreported_results(ctx)
    report_bar = max(REPORTED_MIN, HELD_SHARE * max(reported.values(), default=1.0))
    for u in _scored_units(ctx):
        if u["trace"].id in off:
            continue
        uncovered, n_words = uncovered_words(ctx, u)
        moved = u["p_moved"] >= u["threshold"] and not names_own_value(ctx, u)
        foreign = len(uncovered) >= UNCOVERED_MIN and len(uncovered) >= UNCOVERED_SHARE * n_words
        alien = [(v, s) for v, s in unechoed.get((u["trace"].id, u["idx"]), [])
                 if kept.get(s, 0.0) >= bar]
        kind = silent.get((u["trace"].id, u["idx"]))
        unreported = kind is not None and reported.get(kind, 0.0) >= report_bar
        if not (moved or foreign or alien or unreported):
            continue
        reasons, why, kinds = [], [], []
        if unreported:
            gives = _result_gives(u["trace"].messages[u["idx"] - 1])
            reasons.append(f"names nothing of the {tool_of[kind]} result it follows"
                           + (f", which gives {gives}" if gives else
                              ", where replies here report what the result says"))
            kinds.append(f"unreported:{tool_of[kind]}")
            why.append(evidence_item(
                "statistics", f"replies right after a {tool_of[kind]} result name one of its"
                f" values (a name, a place, a time) in {100 * reported[kind]:.0f}% of the cases"
                " in this corpus"))
        if alien:
            # values the tools know before clock times, which many replies name in passing
            shown_alien = sorted(alien, key=lambda a: a[1] == TIME_SLOT)[:2]
            names = " and ".join(f"{_slot_name(ctx, s)} {shown(v)}" for v, s in shown_alien)
            about = _about(ctx, u["trace"], [s for _, s in shown_alien])
            reasons.append(f"names {names}, "
                           + (f"but the conversation is about {about}" if about else
                              "which the rest of this conversation never does, where a reply"
                              " should name what its user or results said"))
            kinds.append("alien:" + ",".join(sorted({_slot_name(ctx, s) for _, s in alien})))
            why.append(evidence_item(
                "statistics", "; ".join(
                    f"{_slot_name(ctx, s)} values named in replies of this corpus are found"
                    f" elsewhere in their conversation {100 * kept[s]:.0f}% of the time"
                    for s in dict.fromkeys(s for _, s in alien))))
        if moved:
            # alone, it says what the turns around it are about; after other reasons, no more
            before = "" if reasons else _user_before(u["trace"], u["idx"])
            reasons.append("reads like a message from another conversation"
                           + (f", after the user said {shown(before, 60)}" if before else
                              "" if reasons else ": the turns around it are unlike those"
                              " around similar messages in the corpus"))
            kinds.append("moved")
            why.append(evidence_item(
                "statistics", f"placed here, it scores {u['p_moved']:.2f} on a model learned"
                f" from {group_size(ctx)} conversations of this corpus; messages moved between"
                f" conversations score {u['threshold']:.2f} or more most of the time; the turn"
                f" after it is like what follows such messages {u['next_model']:.2f}, the user"
                " turn before it like what such messages answer"
                f" {u['reply_model']:.2f} (cosine, 1 = alike)"))
        if foreign:
            reasons.append("talks of what neither the task nor this corpus does ("
                           + ", ".join(uncovered[:5]) + ")")
            kinds.append("foreign-words")
            why.append(evidence_item(
                "task", f"{len(uncovered)} of its {n_words} content words"
                f" ({', '.join(uncovered[:5])}) are in neither the task description, the tool"
                f" schemas, this conversation's user turns and results, nor the {n_core}"
                " on-task conversations of the corpus"))
        elif u["foreign"]:
            why.append(evidence_item("corpus", "words no other message of this conversation"
                                     " has and few replies of the corpus use: "
                                     + ", ".join(u["foreign"][:5])))
        out.append(flag(u["trace"], u["idx"], NAME, "error",
                        "this reply " + "; it ".join(reasons) + ".", why,
                        pattern="+".join(kinds)))
    return out


def run(ctx: CheckContext) -> list[dict]:
    return trace_level(ctx) + turn_level(ctx)
