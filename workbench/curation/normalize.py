"""Schema normalisation: map calls whose tool or argument names are not canonical onto the
canonical tools, as revisions (author kind "normaliser", evidence attached).

The mapping is learned from the data, never from a list of names:
- message-only vs service: whether the call is answered by a result (the corpus tells);
- arguments: the value echoed under a canonical field in the call's own result; else the
  argument name's mapping learned from such echoes across the corpus; else the overlap of its
  values with the values each canonical argument takes; else the value's format;
- tool: the canonical tool of the same kind whose parameters cover the mapped arguments best
  (required ones first), name similarity breaking ties.
- an argument that its own result echoes under its own, non-canonical name is a parameter the
  canonical tool does not have: unless its name or an echo ties it to a canonical parameter, it is
  dropped (recorded in the evidence) rather than mapped onto a look-alike by its value's shape;
- a value outside a canonical parameter's enum (a drifted vocabulary: "cheap" for
  "inexpensive") is translated by how users phrase it: among the canonical calls (and calls whose
  result echoes the field), the enum value whose conversations mention the drifted value's words
  far more often than any other wins; otherwise the call stays ambiguous.
A confident call (every argument decided, the result schema-valid) is rewritten with an accepted
revision; an ambiguous one gets a proposed revision and a warning flag for review.

Re-running is idempotent: the corpus it learns from is the originals with the newest accepted
revision of any author but the normaliser applied (never its own earlier output, which would
change the evidence), and a turn that already holds the same normaliser revision (proposed,
accepted or rejected) gets no new one; a still-proposed one keeps its review flag.

The traces it relabels are checked again (`recheck_traces`: schema, structure, grounding), so
the flags of the drifted calls it rewrote go with them; and, as calls across the corpus now
keep to the schema, coherence decides again which conversations are off-domain by the schema.
"""

from __future__ import annotations

import difflib
import json
import re
from itertools import combinations
from collections import Counter, defaultdict
from dataclasses import replace

from sqlite_utils import Database

from db.flags import replace_flags
from db.queries import TraceFilter
from db.revisions import accepted_not_by, add_revision, changed_since, revisions_by
from db.tx import now, write_tx
from db.revisions import apply_labels
from db.traces import messages_for
from workbench.checks import load_context, recheck_traces
from workbench.checks.base import CheckContext, calls_of, result_records
from workbench.checks.grounding import norm
from workbench.checks.schema import validators

NAME = "normalize"
AUTHOR = "workbench-normalize"


def _shape(v) -> str:
    s = str(v).strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        return "date"
    if re.fullmatch(r"\d{1,2}:\d{2}", s):
        return "time"
    if re.fullmatch(r"\d+", s):
        return "int"
    if s in ("True", "False", "true", "false"):
        return "bool"
    return "text"


def _props(fn: dict) -> dict:
    return (fn.get("parameters") or {}).get("properties") or {}


def _required(fn: dict) -> list:
    return (fn.get("parameters") or {}).get("required") or []


def _sim(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def learn(ctx) -> dict:
    vals = validators(ctx)
    canon_fields = {p for fn in ctx.tools.values() for p in _props(fn)}
    values: dict[str, Counter] = defaultdict(Counter)     # canonical arg -> values
    shapes: dict[str, Counter] = defaultdict(Counter)
    name_votes: dict[str, Counter] = defaultdict(Counter)  # drifted arg -> canonical args
    drifted: list = []
    phrasing: dict[str, list] = defaultdict(list)          # canonical arg -> [(value, words)]
    for t in ctx.traces:
        said: set[str] = set()
        for i, m in enumerate(t.messages):
            if m["role"] == "user":
                said |= set(norm(m.get("content") or "").split())
            for j, (name, args) in enumerate(calls_of(m)):
                if not isinstance(args, dict):
                    continue
                if name in vals and not list(vals[name].iter_errors(args)):
                    for k, v in args.items():
                        values[k][norm(str(v))] += 1
                        shapes[k][_shape(v)] += 1
                        phrasing[k].append((str(v), said))
                    continue
                nxt = t.messages[i + 1] if i + 1 < len(t.messages) else None
                echo, own = {}, set()
                if nxt is not None and nxt["role"] == "tool":
                    recs = result_records(nxt)
                    own = {k for k, v in args.items() if k not in canon_fields and recs and all(
                        k in r and norm(str(r[k])) == norm(str(v)) for r in recs[:1])}
                    for k, v in args.items():
                        if k in own:  # reported under its own name: no canonical echo
                            continue
                        keys = [f for f in canon_fields if recs and all(
                            norm(str(r.get(f, "\0"))) == norm(str(v)) for r in recs[:1])]
                        if len(keys) == 1:
                            echo[k] = keys[0]
                            name_votes[k][keys[0]] += 1
                            values[keys[0]][norm(str(v))] += 1
                            shapes[keys[0]][_shape(v)] += 1
                            phrasing[keys[0]].append((str(v), said))
                drifted.append((t, i, j, name, args, echo, own))
    return {"values": values, "shapes": shapes, "name_votes": name_votes, "drifted": drifted,
            "phrasing": phrasing, "crosswalk": record_crosswalk(ctx)}


LINK_VALUES = 2         # records sharing this many specific values describe the same thing
SPECIFIC_RECORDS = 20   # a value in at most this many distinct records is specific (a phone
                        # number, an address), not a category (a city, a cuisine)


def record_crosswalk(ctx) -> dict[str, Counter]:
    """Values that different vocabularies give the same thing, from tool results: two result
    records that share at least LINK_VALUES specific values (same phone number and address)
    describe the same entity, so where one says price_range "pricey" and the other
    "expensive", those two values are votes for each other. Returns normalised value ->
    Counter of (field, value) seen for the same entities."""
    records: dict[tuple, dict] = {}
    for t in ctx.traces:
        for m in t.messages:
            if m["role"] == "tool":
                for r in result_records(m):
                    flat = {k: norm(str(v)) for k, v in r.items()
                            if isinstance(v, (str, int, float)) and str(v).strip()}
                    records.setdefault(tuple(sorted(flat.items())), flat)
    recs = list(records.values())
    holders: dict[str, list[int]] = defaultdict(list)
    for n, r in enumerate(recs):
        for v in set(r.values()):
            if len(v) >= 4 and not v.replace(" ", "").isdigit():
                holders[v].append(n)
    shared: Counter = Counter()
    for v, ns in holders.items():
        if 2 <= len(ns) <= SPECIFIC_RECORDS:
            shared.update(combinations(ns, 2))   # ns ascending: pairs (a, b) with a < b
    out: dict[str, Counter] = defaultdict(Counter)
    for (a, b), n in shared.items():
        if n < LINK_VALUES:
            continue
        ra, rb = recs[a], recs[b]
        for k, va in ra.items():
            vb = rb.get(k)
            if vb is not None and vb != va:
                out[va][(k, vb)] += 1
                out[vb][(k, va)] += 1
    return out


def translate_value(model: dict, field: str, value, enum: list) -> tuple[str | None, str]:
    """The enum value a drifted value stands for (None: undecided): from records of the same
    entities in both vocabularies, else from how users phrase it."""
    walk = (model.get("crosswalk") or {}).get(norm(str(value)), Counter())
    by_norm = {norm(e): e for e in enum}
    votes = Counter()
    for (k, v), n in walk.items():
        if v in by_norm:
            votes[by_norm[v]] += n
    if votes:
        (best, n), *rest = votes.most_common(2)
        if n >= 2 and (not rest or n >= 2 * rest[0][1]):
            return best, (f"the same entities are {best!r} where results use the canonical"
                          f" vocabulary and {value!r} where they use the drifted one ({n} records)")
    return _translate_by_phrasing(model, field, value, enum)


def _translate_by_phrasing(model: dict, field: str, value, enum: list
                           ) -> tuple[str | None, str]:
    toks = [w for w in norm(str(value)).split() if not w.isdigit()]
    if not toks:
        return None, "nothing to match"
    per = Counter()
    totals = Counter()
    for v, said in model["phrasing"].get(field, ()):
        if v not in enum:
            continue
        totals[v] += 1
        per[v] += all(w in said for w in toks)
    rates = sorted(((per[e] / totals[e], per[e], e) for e in enum if totals[e]), reverse=True)
    if not rates or rates[0][1] < 3:
        return None, f"too few canonical calls whose users say {value!r}"
    best_rate, best_n, best = rates[0]
    second = rates[1][0] if len(rates) > 1 else 0.0
    if best_rate < 2 * second:
        return None, f"users who say {value!r} get several values of {field}"
    return best, (f"users who say {value!r} get {field}={best!r} in {best_n}/{totals[best]}"
                  " canonical calls")


def _arg_candidates(k: str, v, echo: dict, model: dict, fields: list[str]) -> list[tuple]:
    """(score, canonical field, evidence) for one drifted argument, best first."""
    out = []
    nv = norm(str(v))
    votes = model["name_votes"].get(k, Counter())
    total = sum(votes.values())
    for f in fields:
        score, ev = 0.0, []
        if echo.get(k) == f:
            score += 3
            ev.append("echoed in its result")
        if total and votes[f]:
            score += 2 * votes[f] / total
            ev.append(f"name maps to {f} in {votes[f]}/{total} echoed calls")
        vc = model["values"].get(f)
        if vc and nv in vc:
            score += 1
            ev.append("value seen for this field")
        sc = model["shapes"].get(f)
        if sc and sum(sc.values()):
            share = sc[_shape(v)] / sum(sc.values())
            score += share
        s = _sim(k, f)
        score += 0.5 * s
        out.append((round(score, 3), f, ev))
    return sorted(out, key=lambda x: -x[0])


def _strong(ev: list[str]) -> bool:
    return any(e.startswith(("echoed", "name maps")) for e in ev)


def map_call(ctx, model: dict, name: str, args: dict, echo: dict, service: bool,
             own: set | frozenset = frozenset()) -> dict:
    tools = {n: fn for n, fn in ctx.tools.items() if ctx.is_service(n) == service}
    best = None
    for tname, fn in tools.items():
        fields = list(_props(fn))
        cands = {k: _arg_candidates(k, v, echo, model, fields) for k, v in args.items()}
        # echoed by its result under its own name and tied to no canonical field by name or
        # echo: a parameter this tool lacks, not a look-alike of one
        for k in own:
            if k in cands and not any(_strong(c[2]) for c in cands[k]):
                cands[k] = []
        if len(fields) == 1 and len(args) == 1:  # one argument for one parameter: structure
            k = next(iter(args))
            cands[k] = [(3.0, fields[0], ["the only argument of a one-parameter tool"])]
        # greedy assignment, strongest first, one argument per field
        pairs = sorted(((c[0], k, c[1], c[2]) for k, cs in cands.items() for c in cs),
                       key=lambda x: -x[0])
        used_k, used_f, mapping, evidence = set(), set(), {}, {}
        for score, k, f, ev in pairs:
            if k in used_k or f in used_f or score < 0.9:
                continue
            mapping[k], evidence[k] = f, {"field": f, "score": score, "why": ev}
            used_k.add(k)
            used_f.add(f)
        missing = [r for r in _required(fn) if r not in used_f]
        score = sum(e["score"] for e in evidence.values()) - 2 * len(missing) + 0.5 * _sim(
            name, tname)
        margin_ok = all(
            len(cands[k]) < 2 or cands[k][0][0] - cands[k][1][0] >= 0.5 or echo.get(k)
            for k in mapping)
        cand = {"tool": tname, "mapping": mapping, "evidence": evidence, "missing": missing,
                "dropped": sorted(set(args) - set(mapping)), "score": score,
                "margin_ok": margin_ok}
        if best is None or cand["score"] > best["score"]:
            best, second = cand, best
        elif "second" not in locals() or second is None or cand["score"] > second["score"]:
            second = cand
    if best is None:
        return {}
    second = locals().get("second")
    fn = ctx.tools[best["tool"]]
    new_args = {best["mapping"][k]: v for k, v in args.items() if k in best["mapping"]}
    values_ok = True
    for k, f in best["mapping"].items():
        enum = (_props(fn).get(f) or {}).get("enum")
        if enum and args[k] not in enum:
            value, why = translate_value(model, f, args[k], enum)
            best["evidence"][k]["why"] = best["evidence"][k]["why"] + [why]
            if value is None:
                values_ok = False
            else:
                best["evidence"][k]["value"] = value
                new_args[f] = value
    for k in sorted(set(own) & set(best["dropped"])):
        best["evidence"][k] = {"field": None, "score": 0.0,
                               "why": ["its result echoes it under its own name, and no"
                                       f" parameter of {best['tool']} matches it: dropped"]}
    best["arguments"] = new_args
    valid = not list(validators(ctx)[best["tool"]].iter_errors(new_args))
    best["confident"] = (not best["missing"] and best["margin_ok"] and values_ok and valid and (
        second is None or best["score"] - second["score"] >= 1.0))
    return best


def _revision_key(content, tool_calls) -> str:
    return json.dumps([content, tool_calls or None], sort_keys=True, ensure_ascii=False)


def _chunks(ids: list[int], size: int = 500):
    for k in range(0, len(ids), size):
        yield ids[k:k + size]


def _learning_context(db: Database, flt: TraceFilter | None) -> CheckContext:
    """The selected traces as the normaliser must see them: originals with the newest accepted
    revision by anyone but the normaliser applied (human and committee labels count; the
    normaliser's own earlier output does not, so a re-run learns the same mapping)."""
    ctx = load_context(db, flt)
    ids = [t.id for t in ctx.traces]
    labels: dict[int, dict[int, dict]] = defaultdict(dict)
    originals: dict[int, list[dict]] = {}
    for part in _chunks(ids):
        originals.update(messages_for(db, part))
        for tid, idx, content, calls in accepted_not_by(db, part, "normaliser"):
            labels[tid][idx] = {"content": content, "tool_calls": calls}   # the newest wins
    traces = [replace(t, messages=apply_labels(originals[t.id], labels[t.id]))
              for t in ctx.traces]
    return CheckContext(traces=traces, tools=ctx.tools, task=ctx.task,
                        message_tools=ctx.message_tools)


def _own_revisions(db: Database, ids: list[int]) -> dict[tuple, dict[str, set]]:
    """(trace, turn) -> {revision key: statuses} of the normaliser's earlier revisions."""
    out: dict[tuple, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for part in _chunks(ids):
        for tid, idx, content, calls, status in revisions_by(db, part, "normaliser"):
            out[(tid, idx)][_revision_key(content, calls)].add(status)
    return out


def normalize(db: Database, flt: TraceFilter | None = None) -> dict:
    read_at = now()      # a turn whose label changes after this is left as it is then
    ctx = _learning_context(db, flt)
    if not ctx.tools:
        raise ValueError("no canonical tools: import a task file with tools first")
    model = learn(ctx)
    mapping_counts: dict[tuple, Counter] = defaultdict(Counter)
    confident_counts: Counter = Counter()
    revisions = accepted = proposed = unchanged = changed = 0
    warn_flags = []
    pending = defaultdict(dict)  # (trace id, msg) -> {call j: new call}
    by_id = {}
    for t, i, j, name, args, echo, own in model["drifted"]:
        m = map_call(ctx, model, name, args, echo, ctx.is_service(name), own)
        if not m:
            continue
        new_args = m["arguments"]
        mapping_counts[(name, m["tool"])][tuple(sorted(m["mapping"].items()))] += 1
        confident_counts[(name, m["tool"])] += m["confident"]
        pending[(t.id, i)][j] = (m, new_args, name, args)
        by_id[t.id] = t
    relabelled: set[int] = set()   # traces whose current label changed in this run
    with write_tx(db):
        earlier = _own_revisions(db, sorted(by_id))
        for (tid, i), per_call in pending.items():
            t = by_id[tid]
            if changed_since(db, tid, i, read_at):     # the analyst decided meanwhile
                changed += 1
                continue
            msg = t.messages[i]
            calls = [dict(c, function=dict(c["function"])) for c in msg["tool_calls"]]
            confident = True
            evidence = []
            for j, (m, new_args, name, args) in per_call.items():
                calls[j]["function"] = {"name": m["tool"], "arguments": new_args}
                confident &= m["confident"]
                evidence.append({"from": {"name": name, "arguments": args}, "to": m["tool"],
                                 "arguments": m["evidence"], "dropped": m["dropped"],
                                 "missing": m["missing"], "confident": m["confident"]})
            status = "accepted" if confident else "proposed"
            same = earlier.get((t.id, i), {}).get(_revision_key(msg["content"], calls))
            if same:
                # written by an earlier run: nothing new; a pending proposal keeps its flag
                unchanged += 1
                if same != {"proposed"}:
                    continue
            else:
                add_revision(db, t.id, i, tool_calls=calls, content=msg["content"],
                             author_kind="normaliser", author_name=AUTHOR, status=status,
                             reason="map onto the canonical tool schema", evidence=evidence)
                revisions += 1
                if confident:
                    accepted += 1
                    relabelled.add(t.id)
                else:
                    proposed += 1
            if not confident or same:
                ev = evidence[0]
                warn_flags.append({"trace_id": t.id, "message_idx": i, "check": NAME,
                                   "severity": "warning",
                                   "detail": f"ambiguous mapping of {ev['from']['name']} onto"
                                   f" {ev['to']} (missing {ev['missing']}, dropped"
                                   f" {ev['dropped']}): proposed for review"})
        replace_flags(db, [t.id for t in ctx.traces], [NAME], warn_flags)
        # the old schema errors of the calls just rewritten must not outlive them
        rechecked = recheck_traces(db, relabelled, corpus_changed=True)
    summary = []
    for (src, dst), maps in sorted(mapping_counts.items(), key=lambda x: -sum(x[1].values())):
        n = sum(maps.values())
        top, top_n = maps.most_common(1)[0]
        summary.append({"from": src, "to": dst, "calls": n,
                        "confidence": round(confident_counts[(src, dst)] / n, 3),
                        "arguments": dict(top), "argument_variants": len(maps)})
    return {"revisions": revisions, "accepted": accepted, "proposed": proposed,
            "unchanged": unchanged, "changed_meanwhile": changed,
            "rechecked": rechecked["traces"], "mapping_summary": summary}
