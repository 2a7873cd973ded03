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

import datetime
import difflib
import re
from collections import Counter

try:   # python-dateutil (installed with the project's dependencies) reads most written dates
    from dateutil import parser as date_parser
except ImportError:   # pragma: no cover - then the common formats in DATE_FORMATS
    date_parser = None

from workbench.core import safe_json
from workbench.checks.base import (
    CheckContext,
    TraceView,
    calls_of,
    data_keyed,
    evidence_item,
    flag,
    record_items,
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
VALUES_KEPT = 200      # an argument's most common values kept to name what a user asked for
DEFAULT_SHARE = 0.5    # a value this common for its argument is a default (see argument_defaults)
STRICT_SHARE = 0.85    # an argument is held strictly if its values are found in the conversation
# at least this share as often as those of the best-grounded argument (see argument_strictness)


def norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def spell_numbers(text: str) -> str:
    """Number words as digits: "a table for two at six thirty" -> "... 2 at 6 30"."""
    def sub(m: re.Match) -> str:
        return str(NUMBER_WORDS[m.group(0)])
    return _NUMBER_WORD.sub(sub, text)


# built once: votes and checks spell the numbers of every argument
_NUMBER_WORD = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(
    (w for w in NUMBER_WORDS if w not in ("noon", "midnight")), key=len, reverse=True))
    + r")\b")


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


TENS = {w: 10 * (i + 2) for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split())}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
NUMBER = re.compile(r"^[^\w\s]?\s?-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")
NUMBER_IN_TEXT = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
NUMERIC_DATE = re.compile(r"\b(\d{1,4})[/.-](\d{1,2})(?:[/.-](\d{2,4}))?\b")
WRITTEN_DATE = re.compile(r"^(?=.*\d)(?=.*[a-z/.-]).{4,40}$", re.I)


def number_value(text: str) -> float | None:
    """The number a value stands for ("1,250.00", "$250", "250.0"), else None."""
    t = text.strip()
    if not NUMBER.match(t):
        return None
    try:
        return float(re.sub(r"[^\d.\-]", "", t))
    except ValueError:
        return None


def spelled_numbers(text: str) -> set[int]:
    """Numbers written in words, compound ones too ("twenty-five", "one hundred and fifty",
    "two thousand")."""
    toks = re.findall(r"[a-z]+", text.lower())
    out: set[int] = set()
    total = current = 0
    seen = False
    for tok in [*toks, ""]:
        if tok in NUMBER_WORDS and tok.isalpha() and tok not in ("single", "alone", "myself",
                                                                "couple", "pair", "both",
                                                                "dozen", "noon", "midnight"):
            current += NUMBER_WORDS[tok]
            seen = True
        elif tok in TENS:
            current += TENS[tok]
            seen = True
        elif tok in SCALES and seen:
            current = max(current, 1) * SCALES[tok]
            if SCALES[tok] >= 1000:
                total, current = total + current, 0
        elif tok == "and" and seen:
            continue
        else:
            if seen:
                out.add(total + current)
            total = current = 0
            seen = False
    return out


def decimals_in(text: str) -> set[float]:
    """Every number of the text as a float: digits with thousands separators or decimals,
    and numbers in words."""
    out = {float(x.replace(",", "")) for x in NUMBER_IN_TEXT.findall(text)}
    return out | {float(n) for n in spelled_numbers(text)} | {float(n) for n in numbers_in(text)}


def as_iso_date(value: str) -> str | None:
    """A date written another way ("05/20/2024", "May 20, 2024", "20 May 2024") as
    YYYY-MM-DD (dateutil), else None. A bare number or clock time is no date."""
    v = value.strip()
    if ISO_DATE.match(v):
        return v
    if not WRITTEN_DATE.match(v) or CLOCK.match(v) or number_value(v) is not None:
        return None
    has_month = any(m[:3] in v.lower() for m in MONTHS)
    if not has_month and not NUMERIC_DATE.search(v):
        return None
    if date_parser is not None:
        try:
            return date_parser.parse(v, fuzzy=False, default=_DEFAULT_DAY).date().isoformat()
        except (ValueError, OverflowError, TypeError):
            return None
    for fmt in DATE_FORMATS:   # without dateutil: the common written forms
        try:
            return datetime.datetime.strptime(v, fmt).date().isoformat()
        except ValueError:
            continue
    return None


_DEFAULT_DAY = datetime.datetime(2000, 1, 1)
DATE_FORMATS = ("%m/%d/%Y", "%m/%d/%y", "%Y/%m/%d", "%B %d, %Y", "%b %d, %Y", "%d %B %Y",
                "%d %b %Y", "%B %d %Y", "%m-%d-%Y")


def numeric_dates(text: str) -> set[tuple[int, int]]:
    """(month, day) of dates written in digits ("5/20", "05/20/2024", "2024/05/20",
    "20.05.2024": both readings where the day could be either)."""
    out = set()
    for a, b, c in NUMERIC_DATE.findall(text):
        a, b = int(a), int(b)
        if len(str(a)) == 4:          # year first
            if c and 1 <= b <= 12:
                out.add((b, int(c)))
            continue
        for month, day in ((a, b), (b, a)):
            if 1 <= month <= 12 and 1 <= day <= 31:
                out.add((month, day))
    return out


def date_supported(value: str, text: str) -> bool:
    m = ISO_DATE.match(value)
    if not m:
        return False
    t = text.lower()
    if value in text:
        return True
    if (int(m.group(2)), int(m.group(3))) in numeric_dates(text):
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


def supported(value, context: str, context_norm: str, aliases: dict | None = None) -> bool:
    """Is this argument value found in the context text, in some normalised form, or by a
    name the corpus shows it has (`aliases`: normalised value -> its other names, see
    `value_aliases`)?"""
    if not isinstance(value, str):
        value = str(value)
    if _found(value, context, context_norm):
        return True
    return bool(aliases) and any(f" {a} " in f" {context_norm} "
                                 for a in aliases.get(norm(value), ()))


def _found(value: str, context: str, context_norm: str) -> bool:
    v = value.strip()
    if not v:
        return True
    iso = as_iso_date(v)
    if iso:
        return date_supported(iso, context)
    c = CLOCK.match(v)
    if c:
        h, mnt = int(c.group(1)), int(c.group(2))
        if c.group(3) and c.group(3).lower() == "pm" and h < 12:
            h += 12
        return (h % 12, mnt) in clock_times(context)
    if INT.match(v):
        return int(v) in numbers_in(context) or float(v) in decimals_in(context)
    number = number_value(v)
    if number is not None:
        return number in decimals_in(context)
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


NAMED_AS = re.compile(r"((?:[A-Z][\w'.-]*\s+){0,5}[A-Z][\w'.-]*)\s*\(([A-Za-z0-9]{2,8})\)")
ALIAS_MIN = 2          # conversations that must show a name written with another (see below)
ALIAS_MAX_VALUES = 3   # a name the corpus pairs with more values than this names none of them
ALIAS_SPECIFIC = 0.3   # ... and one whose words are in many more conversations than show the
# pair ("new" of "New York") is an ordinary word, not a name


def value_aliases(ctx: CheckContext) -> dict[str, set[str]]:
    """Values and their other names, as the corpus shows them (normalised, both ways): a
    result that is a dict keyed by data pairs each key with its plain value (a code and the
    city it stands for); a message that writes a name with a short token in brackets after it
    ("Houston (IAH)") pairs the two where ALIAS_MIN conversations do so. A name paired with
    many values (a word every airport's name ends with) names none (cached)."""
    if "grounding.aliases" in ctx.cache:
        return ctx.cache["grounding.aliases"]
    shown: Counter = Counter()       # (name, value) -> conversations writing them together
    keyed: set[tuple[str, str]] = set()
    df: Counter = Counter()          # word -> conversations that have it
    for t in ctx.traces:
        pairs: set[tuple[str, str]] = set()
        df.update({w for m in t.messages if isinstance(m.get("content"), str)
                   for w in norm(m["content"]).split()})
        for m in t.messages:
            if m["role"] == "tool":
                keyed |= _keyed_pairs(m.get("content") or "")
            text = m.get("content") or ""
            if not isinstance(text, str) or "(" not in text:
                continue
            for phrase, token in NAMED_AS.findall(text):
                ws = phrase.split()
                for a in range(len(ws)):       # every run of its words ending at the bracket
                    name = norm(" ".join(ws[a:]))
                    if name and name != norm(token):
                        pairs.add((name, norm(token)))
                name = norm(ws[0])
                if len(ws) > 1 and name:       # and its first word ("Detroit Metropolitan")
                    pairs.add((name, norm(token)))
        shown.update(pairs)
    pairs_ok = {(name, v) for (name, v), n in shown.items() if n >= ALIAS_MIN
                and n >= ALIAS_SPECIFIC * min(df[w] for w in name.split())} | keyed
    per_name: dict[str, set[str]] = {}
    for name, value in pairs_ok:
        per_name.setdefault(name, set()).add(value)
    out: dict[str, set[str]] = {}
    for name, values in per_name.items():
        if len(values) > ALIAS_MAX_VALUES and not any((name, v) in keyed for v in values):
            continue
        for v in values:
            out.setdefault(v, set()).add(name)
            out.setdefault(name, set()).add(v)
    ctx.cache["grounding.aliases"] = out
    return out


def _keyed_pairs(content: str) -> set[tuple[str, str]]:
    """(key, value) of every dict keyed by data whose values are plain strings, in a result."""
    try:
        value = safe_json.loads(content)
    except ValueError:
        return set()
    out: set[tuple[str, str]] = set()
    stack, seen = [value], 0
    while stack and seen < 10_000:
        v = stack.pop()
        seen += 1
        if isinstance(v, dict):
            if data_keyed(v) and all(isinstance(x, str) for x in v.values()):
                out |= {(norm(x), norm(k)) for k, x in v.items() if norm(x) and norm(k)}
            else:
                stack += list(v.values())
        elif isinstance(v, list):
            stack += v
    return out


FREE_TEXT_WORDS = 6       # an argument whose values have this many words or more (median),
FREE_TEXT_DISTINCT = 0.9  # almost all different,
FREE_TEXT_FOUND = 0.2     # and at most this share found verbatim before the call, is free text
FREE_TEXT_MIN = 5         # ... judged on this many calls at least


def free_text_arguments(ctx: CheckContext) -> dict[tuple[str, str], dict]:
    """(tool, argument) -> its statistics, for arguments the corpus shows to be free text the
    assistant writes (a thought, a note): long values, rarely repeated, almost never found in
    the conversation as written. Those are no grounding target: nothing said before the call
    could support them (cached)."""
    if "grounding.free_text" in ctx.cache:
        return ctx.cache["grounding.free_text"]
    lengths: dict[tuple[str, str], list[int]] = {}
    values: dict[tuple[str, str], set[str]] = {}
    found: Counter = Counter()
    for t in ctx.traces:
        for _, name, args, _, cnorm in _service_calls(ctx, t):
            for k, v in args.items():
                if not isinstance(v, str) or not v.strip():
                    continue
                nv = norm(v)
                lengths.setdefault((name, k), []).append(len(nv.split()))
                values.setdefault((name, k), set()).add(nv)
                found[(name, k)] += bool(nv) and f" {nv} " in f" {cnorm} "
    out = {}
    for key, ls in lengths.items():
        n = len(ls)
        if n < FREE_TEXT_MIN:
            continue
        median = sorted(ls)[n // 2]
        distinct, share = len(values[key]) / n, found[key] / n
        if median >= FREE_TEXT_WORDS and distinct >= FREE_TEXT_DISTINCT \
                and share <= FREE_TEXT_FOUND:
            out[key] = {"calls": n, "median_words": median, "distinct": distinct,
                        "found": share}
    ctx.cache["grounding.free_text"] = out
    return out


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
    aliases = value_aliases(ctx)
    free = free_text_arguments(ctx)
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
                if _skip(v) or (name, k) in free:
                    continue
                total[(name, k)] += 1
                hit[(name, k)] += supported(v, context, cnorm, aliases)
    strictness = {key: hit[key] / n for key, n in total.items() if n >= 5}
    # what a flag names as the value the user asked for (see `nearest_candidate`); a re-check
    # is given the same (see `recheck.learned_of`)
    ctx.cache["grounding.values"] = {key: {v for v, _ in c.most_common(VALUES_KEPT)}
                                     for key, c in values.items()}
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
    aliases = value_aliases(ctx)
    for t in ctx.traces:
        for i, name, args, context, cnorm in _service_calls(ctx, t):
            nxt = t.messages[i + 1] if i + 1 < len(t.messages) else None
            if nxt is None or nxt["role"] != "tool":
                continue
            bad = {k for k, _ in _echo_mismatches(args, nxt, None)}
            for k in _echoed(args, nxt):
                if _skip(args[k]) or not supported(args[k], context, cnorm, aliases):
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
            out.append((k, echoed[0]))
    return out


SHOWN_CHARS = 40       # a value quoted in a flag's sentence is cut to this many characters
USUAL, RESULT, ASKED, SAID = "usual", "result", "asked", "said"   # where a candidate is
SHOWN_ARGUMENTS = 3    # a sentence names this many unsupported arguments, then counts the rest
CLOSE_RATIO = 0.75     # a phrase this similar to a value (difflib ratio) is its nearest candidate


def shown(value, most: int = SHOWN_CHARS) -> str:
    """A value as a flag's sentence quotes it: repr-like, text over `most` characters cut."""
    if isinstance(value, str) and len(value) > most:
        value = value[:most - 1].rstrip() + "…"
    return repr(value)


def nearest_candidate(ctx: CheckContext, t: TraceView, i: int, name: str, key: str,
                      value, args: dict | None = None) -> tuple[str, object] | None:
    """What the conversation before call `i` offers for argument `key` instead of `value`,
    and where it is (ASKED, RESULT or SAID): what the user said last that the corpus sends as
    this argument (or names such a value by), not what the call's other arguments (`args`)
    already carry; else the value an earlier result gives for a field of that name; else the
    phrase of the user turns and results closest to the value in writing. None when nothing
    is close."""
    nv = norm(str(value))
    before = t.messages[:i]
    aliases = value_aliases(ctx)
    known: set[str] = set()
    for v in ctx.cache.get("grounding.values", {}).get((name, key), ()):
        known |= {v} | aliases.get(v, set())
    for k, v in (args or {}).items():   # what the other arguments already stand for
        if k != key and isinstance(v, (str, int, float)):
            known -= {norm(str(v))} | aliases.get(norm(str(v)), set())
    known.discard(nv)
    users = [m.get("content") or "" for m in before
             if m["role"] == "user" and isinstance(m.get("content"), str)]
    for text in reversed(users):
        hit = next((p for p in _phrases(text, 4) if norm(p) in known), None)
        if hit:
            return ASKED, hit
    for m in reversed(before):
        if m["role"] != "tool":
            continue
        for r in result_records(m):
            for k, x in record_items(r):
                if k == key and isinstance(x, (str, int, float)) and not isinstance(x, bool) \
                        and norm(str(x)) and norm(str(x)) != nv:
                    return RESULT, x
    results = [str(x) for m in before if m["role"] == "tool" for r in result_records(m)
               for _, x in record_items(r) if isinstance(x, (str, int, float))]
    best, best_ratio, where = None, CLOSE_RATIO, ""
    n = max(1, len(nv.split()))
    for origin, texts in ((SAID, users), (RESULT, results)):
        for text in texts:
            for p in (_phrases(text, n + 1) if origin == SAID else [text]):
                ratio = difflib.SequenceMatcher(None, nv, norm(p)).ratio()
                if ratio > best_ratio and norm(p) != nv:
                    best, best_ratio, where = p, ratio, origin
    return (where, best) if best is not None else None


def _phrases(text: str, most: int) -> list[str]:
    """Runs of up to `most` words of a text, as written (longest first)."""
    ws = re.findall(r"[\w'’.:/@-]+", text)[:400]
    ws = [w.strip(".") for w in ws]
    out = []
    for n in range(min(most, len(ws)), 0, -1):
        out += [" ".join(ws[a:a + n]) for a in range(len(ws) - n + 1)]
    return [p for p in out if norm(p)]


def ungrounded_sentence(name: str, items: list[tuple[str, object, tuple | None]],
                        tail: str) -> str:
    """"the user asked for 'Seattle'; the f call says destination='JFK', which no earlier
    message or result mentions; <tail>." One argument leads with its candidate; several carry
    theirs in brackets. Where no argument has a candidate, `tail` says what to ground it in."""
    if len(items) == 1 and items[0][2] and items[0][2][0] != USUAL:
        k, v, (where, c) = items[0]
        lead = {RESULT: f"an earlier result gives {k} {shown(c)}",
                ASKED: f"the user asked for {shown(c)}", SAID: f"the user said {shown(c)}"}
        return (f"{lead[where]}; the {name} call says {k}={shown(v)}, which no earlier message"
                f" or result mentions{tail}")
    vals = _listed([f"{k}={shown(v)}" + (f" ({_short(near)})" if near else "")
                    for k, v, near in items])
    return f"the {name} call says {vals}, which no earlier message or result mentions{tail}"


def _said(items: list[str]) -> str:
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _listed(items: list[str]) -> str:
    """`_said` of up to SHOWN_ARGUMENTS items, the rest counted."""
    if len(items) > SHOWN_ARGUMENTS:
        keep = SHOWN_ARGUMENTS - 1
        items = items[:keep] + [f"{len(items) - keep} more arguments"]
    return _said(items)


def _short(near: tuple[str, object]) -> str:
    """A candidate in brackets after its argument: "earlier result: 'Fairfield'"."""
    where, c = near
    return {USUAL: "its usual value", RESULT: f"earlier result: {shown(c)}",
            ASKED: f"user asked for {shown(c)}", SAID: f"user said {shown(c)}"}[where]


def run(ctx: CheckContext) -> list[dict]:
    if not ctx.tools:
        return []
    strict = argument_strictness(ctx)
    defaults = argument_defaults(ctx)
    aliases = value_aliases(ctx)
    free = free_text_arguments(ctx)
    # relative to the best-grounded argument: damage elsewhere in a corpus (confirmations
    # replaced, calls swapped) lowers every argument's share alike
    bar = STRICT_SHARE * max(strict.values(), default=1.0)
    fidelity = echo_fidelity(ctx)
    out = []
    for t in ctx.traces:
        for i, name, args, context, cnorm in _service_calls(ctx, t):
            missing_err, missing_warn, why = [], [], []
            for k, v in args.items():
                if _skip(v) or (name, k) in free or supported(v, context, cnorm, aliases):
                    continue
                rate = strict.get((name, k), 0.0)
                usual = defaults.get((name, k)) == norm(str(v))
                held = rate >= bar and not usual
                (missing_err if held else missing_warn).append((k, v, usual))
                why.append(evidence_item("statistics", f"{name}.{k}: {100 * rate:.0f}% of its"
                                         " values in sound calls of this corpus are found in the"
                                         " conversation before the call (held strictly from"
                                         f" {100 * bar:.0f}%)"
                                         + (f"; {v!r} is its usual value" if usual else "")))
            nxt = t.messages[i + 1] if i + 1 < len(t.messages) else None
            echo_pairs = _echo_mismatches(args, nxt, fidelity, name) if (
                nxt is not None and nxt["role"] == "tool") else []
            # a value the user asked for that the result changes (the time the restaurant
            # could offer) is the service's answer, not a wrong call
            echo_pairs = [(k, e) for k, e in echo_pairs
                          if not supported(args[k], context, cnorm, aliases)]
            why += [evidence_item("statistics", f"{name}.{k}: results echo the value it was"
                                  f" called with in {100 * fidelity.get((name, k), 0):.0f}% of"
                                  " the calls of this corpus whose value the conversation"
                                  " supports")
                    for k, _ in echo_pairs]
            if missing_err or echo_pairs:
                parts = []
                echoed = {k for k, _ in echo_pairs}   # its result already says what is right
                results_say = _listed([f"{k}={shown(e)}" for k, e in echo_pairs])
                if missing_err:
                    items = [(k, v, None if k in echoed else
                              nearest_candidate(ctx, t, i, name, k, v, args))
                             for k, v, _ in missing_err]
                    parts.append(ungrounded_sentence(
                        name, items, "" if echo_pairs or any(near for _, _, near in items) else
                        "; it should carry what the user said or a result returned"))
                    if echo_pairs:
                        parts.append(f"its result says {results_say}")
                elif echo_pairs:
                    parts.append(f"the {name} call says "
                                 + _listed([f"{k}={shown(args[k])}" for k, _ in echo_pairs])
                                 + f" but its result says {results_say}; a call and its result"
                                 " should agree")
                keys = sorted({k for k, _, _ in missing_err}) or sorted(k for k, _ in echo_pairs)
                kind = "ungrounded" if missing_err else "echo"
                out.append(flag(t, i, NAME, "error", "; ".join(parts) + ".", why,
                                pattern=f"{kind}:{name}.{','.join(keys)}"))
            elif missing_warn:
                items = [(k, v, (USUAL, "") if usual else
                          nearest_candidate(ctx, t, i, name, k, v, args))
                         for k, v, usual in missing_warn]
                out.append(flag(t, i, NAME, "warning", ungrounded_sentence(
                                    name, items, "; this may be right, as the assistant often"
                                    " infers this argument") + ".", why,
                                pattern=f"inferred:{name}."
                                + ",".join(sorted(k for k, _, _ in missing_warn))))
    return out
