"""False alarms measured on held-out conversations, for corpora without outcomes (see
`calibration`).

Conversations that no check flagged as an error are held out (at most HELD conversations, at
most a quarter of the corpus). In each, one assistant turn is damaged the way the checks look
for, from the corpus' own data: a service call's argument value replaced by the value the same
argument has in another conversation, or a text reply replaced by a reply of another
conversation. The checks then run on the held-out conversations together with up to REST
others (what they learn, they learn from those), and every error flag on an undamaged turn of
a held-out conversation, or on the conversation as a whole, is a false alarm. Damage that
the checks find (`recall`) says they can see damage of their kind on this corpus at all.

Checks that learn nothing from the corpus give the same verdict to a conversation held out,
so their false alarms here are only those near damage: for them the measure is an upper bound
of precision that only the width of its interval limits. Outcomes, where the corpus has them,
are the stronger reference (`calibration`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sqlite_utils import Database

from db.queries import TraceFilter
from db.traces import assistant_turns_of

MIN_TRACES = 40     # a smaller corpus gives no estimate
HELD = 120          # held-out conversations at most
HELD_SHARE = 0.25   # ... and at most this share of the corpus
REST = 200          # other conversations the checks learn from in the held-out run


def _damage(conv, donors: list, rng: np.random.Generator, kind: int) -> tuple[list, int] | None:
    """The conversation's messages with one assistant turn damaged, and that turn's index."""
    msgs = conv.messages
    if kind == 0:   # a call's argument value, from the same argument elsewhere
        spots = [(i, j, k) for i, m in enumerate(msgs) if m["role"] == "assistant"
                 for j, c in enumerate(m.get("tool_calls") or ())
                 if isinstance(c["function"]["arguments"], dict)
                 for k, v in c["function"]["arguments"].items() if isinstance(v, str) and v]
        for n in rng.permutation(len(spots)):
            i, j, k = spots[n]
            old = msgs[i]["tool_calls"][j]["function"]["arguments"][k]
            name = msgs[i]["tool_calls"][j]["function"]["name"]
            values = sorted({c["function"]["arguments"][k] for d in donors for m in d.messages
                             if m["role"] == "assistant" for c in m.get("tool_calls") or ()
                             if c["function"]["name"] == name
                             and isinstance(c["function"]["arguments"], dict)
                             and isinstance(c["function"]["arguments"].get(k), str)
                             and c["function"]["arguments"][k].lower() != old.lower()})
            if not values:
                continue
            new = [dict(m) for m in msgs]
            calls = [dict(c) for c in new[i]["tool_calls"]]
            calls[j] = {**calls[j], "function": {
                **calls[j]["function"], "arguments": {
                    **calls[j]["function"]["arguments"], k: values[rng.integers(len(values))]}}}
            new[i]["tool_calls"] = calls
            return new, i
        return None
    spots = [i for i, m in enumerate(msgs) if m["role"] == "assistant"
             and not m.get("tool_calls") and (m.get("content") or "").strip()]
    replies = [m["content"] for d in donors for m in d.messages if m["role"] == "assistant"
               and not m.get("tool_calls") and (m.get("content") or "").strip()]
    if not spots or not replies:
        return None
    i = spots[rng.integers(len(spots))]
    new = [dict(m) for m in msgs]
    new[i]["content"] = replies[rng.integers(len(replies))]
    return new, i


def false_alarms(db: Database, ctx, names: list[str], stage) -> dict | None:
    """{(check, level): (false alarms, clean units, corpus units, how, share of the planted
    damage it found)} for the checks among
    `names` that learn from data fast (no model), or None when the corpus is too small."""
    from workbench.checks import CHECKS, MODEL_CHECKS, compute_flags, load_context
    from workbench.checks.base import CheckContext

    names = [n for n in names if n not in MODEL_CHECKS and n in CHECKS]
    ids = list(ctx.traces.ids) if hasattr(ctx.traces, "ids") else [t.id for t in ctx.traces]
    if len(ids) < MIN_TRACES or not names:
        return None
    flagged = stage.traces_with_errors()
    rng = np.random.default_rng(0)
    clean = [i for i in ids if i not in flagged]
    held_n = min(HELD, int(HELD_SHARE * len(ids)), len(clean))
    if held_n < 10:
        return None
    held = sorted(rng.choice(clean, size=held_n, replace=False).tolist())
    others = sorted(set(ids) - set(held))
    rest = sorted(rng.choice(others, size=min(REST, len(others)), replace=False).tolist())
    loaded = load_context(db, TraceFilter(trace_ids=held + rest),
                          message_tools=ctx.message_tools)
    by_id = {t.id: t for t in loaded.traces}
    donors = [by_id[i] for i in rest if i in by_id]
    damaged, planted = [], {}
    for n, tid in enumerate(held):
        conv = by_id[tid]
        got = _damage(conv, donors, rng, n % 2) or _damage(conv, donors, rng, 1 - n % 2)
        msgs, idx = got if got else (conv.messages, None)
        copy = dataclasses.replace(conv, trace_id=-tid, messages=msgs)
        damaged.append(copy)
        if idx is not None:
            planted[copy.id] = idx
    run = CheckContext(traces=donors + damaged, tools=ctx.tools, task=ctx.task,
                       message_tools=ctx.message_tools)
    run.cache["calibration.heldout"] = True
    flags, _ = compute_flags(run, names)
    held_ids = {c.id for c in damaged}
    turns = sum(1 for c in damaged for i, m in enumerate(c.messages)
                if m["role"] == "assistant" and planted.get(c.id) != i)
    false: dict[tuple[str, str], set] = {}
    found: dict[str, set] = {}
    for f in flags:
        if f["severity"] != "error" or f["trace_id"] not in held_ids:
            continue
        if f["message_idx"] is None:
            false.setdefault((f["check"], "trace"), set()).add(f["trace_id"])
        elif planted.get(f["trace_id"]) == f["message_idx"]:
            found.setdefault(f["check"], set()).add(f["trace_id"])
        else:
            false.setdefault((f["check"], "turn"), set()).add((f["trace_id"], f["message_idx"]))
    n_turns = assistant_turns_of(db, ids)
    how = (f"{len(held)} held-out conversations no check flagged, one turn of each damaged"
           f" ({len(planted)} planted), checked with {len(donors)} others")
    out = {}
    for name in names:
        recall = len(found.get(name, ())) / max(1, len(planted))
        out[(name, "turn")] = (len(false.get((name, "turn"), ())), turns, n_turns, how,
                               round(recall, 3))
        out[(name, "trace")] = (len(false.get((name, "trace"), ())), len(held), len(ids), how,
                                None)
    return out
