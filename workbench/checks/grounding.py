"""Grounding: argument values of service calls must be supported by what came before (user
utterances, earlier results, earlier assistant messages the user answered) and agree with the
result that answers the call.

Values are compared in normalised forms: case and punctuation, clock times ("this evening 4:45",
"4:45 pm" and "16:45"), numbers ("two" and "2"), dates (an ISO date is supported by a date
expression: today, a weekday, a day of the month). How strictly an argument is held is learned
from the corpus: an argument whose values are usually found verbatim in the conversation
(a city, a name, a time) gets an error when unsupported; one that usually is not (a category
the assistant infers, such as a cuisine from "burger") only a warning.
"""

from __future__ import annotations

import re
from collections import Counter

from workbench.checks.base import (
    CheckContext,
    TraceView,
    calls_of,
    evidence_item,
    flag,
    result_records,
)

NAME = "grounding"

NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    " fifteen sixteen seventeen eighteen nineteen twenty".split())}
NUMBER_WORDS.update({"a couple": 2, "couple": 2, "single": 1, "alone": 1, "myself": 1,
                     "just me": 1, "pair": 2, "both": 2, "dozen": 12, "noon": 12,
                     "midnight": 0})
ORDINALS = {w: i + 1 for i, w in enumerate(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth"
    " thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
    .split())}
WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
MONTHS = ("january february march april may june july august september october november"
          " december").split()
RELATIVE_DAYS = ("today", "tonight", "tomorrow", "weekend", "week", "day after", "this evening",
                 "this afternoon", "this morning", "now")
BOOLEAN = {"true", "false", "yes", "no"}
TIME_RE = re.compile(r"\b(\d{1,2})(?:[:.h](\d{2}))?\s*(a\.?m\.?|p\.?m\.?|o'?clock)?\b")
ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::\d{2})?\s*(am|pm)?$", re.I)
INT = re.compile(r"^\d+$")
NAME_HEAD_CHARS = 4    # the first words of a name that stand for it have at least this many letters
DEFAULT_SHARE = 0.5    # a value this common for its argument is a default (see argument_defaults)
STRICT_SHARE = 0.85    # an argument is held strictly if its values are found in the conversation
# at least this share as often as those of the best-grounded argument (see argument_strictness)


def norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def spell_numbers(text: str) -> str:
    """Number words as digits: "a table for two at six thirty" -> "... 2 at 6 30"."""
    def sub(m: re.Match) -> str:
        return str(NUMBER_WORDS[m.group(0)])
    words = sorted((w for w in NUMBER_WORDS if w not in ("noon", "midnight")), key=len,
                   reverse=True)
    return re.sub(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", sub, text)


def clock_times(text: str) -> set[tuple[int, int]]:
    """(hour mod 12, minute) of every time expression in the text."""
    t = spell_numbers(text.lower())
    t = t.replace("noon", "12:00").replace("midnight", "12:00")
    out = set()
    for h, m, suffix in TIME_RE.findall(t):
        h = int(h)
        if h > 24:
            continue
        out.add((h % 12, int(m or 0)))
    for h in re.findall(r"\bhalf past (\d{1,2})\b", t):
        out.add((int(h) % 12, 30))
    for h in re.findall(r"\bquarter past (\d{1,2})\b", t):
        out.add((int(h) % 12, 15))
    for h in re.findall(r"\bquarter to (\d{1,2})\b", t):
        out.add(((int(h) - 1) % 12, 45))
    for h, m in re.findall(r"\b(\d{1,2}) (\d{2})\b", t):
        if int(h) <= 12 and int(m) < 60:
            out.add((int(h) % 12, int(m)))
    return out


def numbers_in(text: str) -> set[int]:
    t = spell_numbers(text.lower())
    out = {int(n) for n in re.findall(r"\b\d+\b", t)}
    for phrase, n in NUMBER_WORDS.items():
        if not phrase.isalpha() or " " in phrase or phrase in ("single", "alone", "myself"):
            if phrase in t:
                out.add(n)
    if re.search(r"\b(just me|myself|alone|only me|by myself)\b", t):
        out.add(1)
    return out


def date_supported(value: str, text: str) -> bool:
    m = ISO_DATE.match(value)
    if not m:
        return False
    t = text.lower()
    if value in text:
        return True
    day = int(m.group(3))
    month = MONTHS[int(m.group(2)) - 1] if 1 <= int(m.group(2)) <= 12 else ""
    days = {int(d) for d in re.findall(r"\b(\d{1,2})(?:st|nd|rd|th)\b", t)}
    days |= {ORDINALS[w] for w in re.findall(r"\b[a-z]+\b", t) if w in ORDINALS}
    days |= {int(d) for d in re.findall(rf"\b{month}\s+(\d{{1,2}})\b", t)} if month else set()
    if day in days:
        return True
    return any(w in t for w in WEEKDAYS) or any(w in t for w in RELATIVE_DAYS) or bool(
        month and month in t)


def supported(value, context: str, context_norm: str) -> bool:
    """Is this argument value found in the context text, in some normalised form?"""
    if not isinstance(value, str):
        value = str(value)
    v = value.strip()
    if not v:
        return True
    if ISO_DATE.match(v):
        return date_supported(v, context)
    c = CLOCK.match(v)
    if c:
        h, mnt = int(c.group(1)), int(c.group(2))
        if c.group(3) and c.group(3).lower() == "pm" and h < 12:
            h += 12
        return (h % 12, mnt) in clock_times(context)
    if INT.match(v):
        return int(v) in numbers_in(context)
    nv = norm(v)
    if not nv:
        return True
    if f" {nv} " in f" {context_norm} ":
        return True
    toks = nv.split()
    ctx_toks = set(context_norm.split())
    # names written differently ("Mimi's Cafe" / "mimis cafe"): most of the tokens are there
    if len(toks) >= 2:
        initials = "".join(tok[0] for tok in toks)
        if any(c.startswith(initials) and len(c) <= len(initials) + 1 for c in ctx_toks):
            return True  # an abbreviation: "SF" or "SFO" for "San Francisco"
        shortened = " ".join(toks[:-1]) + " " + toks[-1][:3]
        if re.search(r"(?:^| )" + re.escape(shortened), context_norm):
            return True  # a shortened name: "San Fran"
    hits = sum(1 for tok in toks if tok in ctx_toks or tok.rstrip("s") in ctx_toks)
    if len(toks) >= 2 and hits / len(toks) >= 0.67:
        return True
    # a name said by its first words ("Kana" for "Kana Sushi", "State Bird" for "State Bird
    # Provisions"), as people shorten names; the words kept must be more than a short word
    return len(toks) >= 2 and any(
        len("".join(toks[:k])) >= NAME_HEAD_CHARS
        and f" {' '.join(toks[:k])} " in f" {context_norm} " for k in range(1, len(toks)))


def _record_text(rec: dict) -> str:
    return " ".join(f"{k} {v}" for k, v in rec.items())


def argument_strictness(ctx: CheckContext) -> dict[tuple[str, str], float]:
    """Per (tool, argument): the share of its values found in the conversation before the call,
    over sound calls (see `_sound`)."""
    return _argument_stats(ctx)[0]


def argument_defaults(ctx: CheckContext) -> dict[tuple[str, str], str]:
    """Per (tool, argument): its usual value where one value is a large share of all (today's
    date, a party of two). The assistant fills such a value without the user saying it, so an
    unsupported default is only a warning."""
    return _argument_stats(ctx)[1]


def _argument_stats(ctx: CheckContext) -> tuple[dict, dict]:
    """Strictness and usual values, from one pass over the sound calls (cached)."""
    if "grounding.arguments" in ctx.cache:
        return ctx.cache["grounding.arguments"]
    hit: Counter = Counter()
    total: Counter = Counter()
    values: dict[tuple[str, str], Counter] = {}
    for t in ctx.traces:
        for i, name, args, context, cnorm in _service_calls(ctx, t):
            declared = ((ctx.tools[name].get("parameters") or {}).get("properties") or {})
            for k, v in args.items():
                if k in declared and not _skip(v):
                    values.setdefault((name, k), Counter())[norm(str(v))] += 1
            if not _sound(ctx, t, i, name, args) or _echo_mismatches(
                    args, t.messages[i + 1], None):
                continue   # a call its own result contradicts is no model of a sound call
            for k, v in args.items():
                if _skip(v):
                    continue
                total[(name, k)] += 1
                hit[(name, k)] += supported(v, context, cnorm)
    strictness = {key: hit[key] / n for key, n in total.items() if n >= 5}
    # usual values from every call of the tool, sound or not: what calls carry is the
    # corpus' values either way, and a small corpus has too few sound calls to tell a usual
    # value (today's date in two calls of three) from a common one (a big city)
    defaults = {}
    for key, c in values.items():
        value, n = c.most_common(1)[0]
        if sum(c.values()) >= 5 and n / sum(c.values()) >= DEFAULT_SHARE:
            defaults[key] = value
    ctx.cache["grounding.arguments"] = strictness, defaults
    return strictness, defaults


def _sound(ctx: CheckContext, t: TraceView, i: int, name: str, args: dict) -> bool:
    """A call otherwise in order: answered by a result, with only declared arguments and all
    required ones. Strictness is learned from these alone, so that a corpus full of damaged
    calls (placed where no call belongs, or sent to the wrong tool) does not teach that
    arguments are often unsupported."""
    params = ctx.tools[name].get("parameters") or {}
    declared = set((params.get("properties") or {}).keys())
    return (i + 1 < len(t.messages) and t.messages[i + 1]["role"] == "tool"
            and set(args) <= declared and set(params.get("required") or ()) <= set(args))


def _skip(v) -> bool:
    return not isinstance(v, (str, int, float)) or str(v).strip().lower() in BOOLEAN


def _service_calls(ctx: CheckContext, t: TraceView):
    """(index, tool, args, context text, normalised context) of each service call."""
    parts: list[str] = []
    for i, m in enumerate(t.messages):
        if m["role"] == "assistant":
            for name, args in calls_of(m):
                if ctx.is_service(name) and isinstance(args, dict) and name in ctx.tools:
                    ctx_text = "\n".join(parts)
                    yield i, name, args, ctx_text, norm(ctx_text)
        if m["role"] == "tool":
            recs = result_records(m)
            parts.append(" ; ".join(_record_text(r) for r in recs) if recs else (m["content"] or ""))
        elif m["role"] == "assistant":
            for name, args in calls_of(m):
                if not ctx.is_service(name) and isinstance(args, dict):
                    parts.extend(str(v) for v in args.values())
            if m.get("content"):
                parts.append(m["content"])
        elif m.get("content"):
            parts.append(m["content"])


def echo_fidelity(ctx: CheckContext) -> dict[tuple[str, str], float]:
    """Per (tool, argument): how often its result echoes the value it was called with. An
    argument the service may change (a proposed other time) is not held to its echo. Learned
    from values the conversation supports only: a call whose arguments were pasted from
    another conversation disagrees with its result because it is damaged, and in a small or
    very noisy corpus such calls would otherwise teach that results often disagree."""
    if "grounding.echo" in ctx.cache:
        return ctx.cache["grounding.echo"]
    same: Counter = Counter()
    total: Counter = Counter()
    for t in ctx.traces:
        for i, name, args, context, cnorm in _service_calls(ctx, t):
            nxt = t.messages[i + 1] if i + 1 < len(t.messages) else None
            if nxt is None or nxt["role"] != "tool":
                continue
            bad = {k for k, _ in _echo_mismatches(args, nxt, None)}
            for k in _echoed(args, nxt):
                if _skip(args[k]) or not supported(args[k], context, cnorm):
                    continue
                total[(name, k)] += 1
                same[(name, k)] += k not in bad
    out = {key: same[key] / n for key, n in total.items() if n >= 5}
    ctx.cache["grounding.echo"] = out
    return out


def _echoed(args: dict, result: dict) -> list[str]:
    recs = result_records(result)
    return [k for k in args if recs and all(k in r for r in recs)]


def _echo_mismatches(args: dict, result: dict, fidelity: dict | None,
                     name: str = "") -> list[tuple[str, str]]:
    """Arguments the answering result echoes with a different value."""
    recs = result_records(result)
    if not recs:
        return []
    out = []
    for k, v in args.items():
        if fidelity is not None and fidelity.get((name, k), 0.0) < 0.8:
            continue
        if not isinstance(v, (str, int, float)):
            continue
        echoed = [r[k] for r in recs if k in r and isinstance(r[k], (str, int, float))]
        if len(echoed) < len(recs) or not echoed:
            continue
        nv = norm(str(v))
        if not any(norm(str(e)) == nv for e in echoed):
            out.append((k, f"{k}={v!r} but the result says {echoed[0]!r}"))
    return out


def run(ctx: CheckContext) -> list[dict]:
    if not ctx.tools:
        return []
    strict = argument_strictness(ctx)
    defaults = argument_defaults(ctx)
    # relative to the best-grounded argument: damage elsewhere in a corpus (confirmations
    # replaced, calls swapped) lowers every argument's share alike
    bar = STRICT_SHARE * max(strict.values(), default=1.0)
    fidelity = echo_fidelity(ctx)
    out = []
    for t in ctx.traces:
        for i, name, args, context, cnorm in _service_calls(ctx, t):
            missing_err, missing_warn, why = [], [], []
            for k, v in args.items():
                if _skip(v) or supported(v, context, cnorm):
                    continue
                rate = strict.get((name, k), 0.0)
                usual = defaults.get((name, k)) == norm(str(v))
                held = rate >= bar and not usual
                (missing_err if held else missing_warn).append(
                    f"{k}={v!r}" + (" (its usual value)" if usual else ""))
                why.append(evidence_item("corpus", f"{name}.{k}: {100 * rate:.0f}% of its values"
                                         " in sound calls of this corpus are found in the"
                                         " conversation before the call"
                                         + (f"; {v!r} is its usual value" if usual else "")
                                         + ("" if held else f" (held strictly from"
                                            f" {100 * bar:.0f}%)")))
            nxt = t.messages[i + 1] if i + 1 < len(t.messages) else None
            echo_pairs = _echo_mismatches(args, nxt, fidelity, name) if (
                nxt is not None and nxt["role"] == "tool") else []
            # a value the user asked for that the result changes (the time the restaurant
            # could offer) is the service's answer, not a wrong call
            echo_pairs = [(k, d) for k, d in echo_pairs
                          if not supported(args[k], context, cnorm)]
            echo = [d for _, d in echo_pairs]
            why += [evidence_item("corpus", f"{name}.{k}: results echo the value it was called"
                                  f" with in {100 * fidelity.get((name, k), 0):.0f}% of the calls"
                                  " of this corpus whose value the conversation supports")
                    for k, _ in echo_pairs]
            if missing_err or echo:
                detail = []
                if missing_err:
                    detail.append("not supported by the conversation before it: "
                                  + ", ".join(missing_err))
                if echo:
                    detail.append("disagrees with its result: " + "; ".join(echo))
                out.append(flag(t, i, NAME, "error", f"{name}: " + "; ".join(detail), why))
            elif missing_warn:
                out.append(flag(t, i, NAME, "warning", f"{name}: possibly unsupported (the"
                                " assistant may have inferred it): " + ", ".join(missing_warn),
                                why))
    return out
