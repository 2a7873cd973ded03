"""Re-check traces whose labels changed, so no flag outlives the call it was about.

A check run stores its flags; a label written afterwards (an accepted normaliser revision, an
analyst's edit, an accepted proposal, an undo) could leave a schema error next to a call that
no longer has it until `workbench check` ran again. `recheck_traces` runs the per-trace checks
(schema, structure, grounding) again on the touched traces and replaces their flags.

Structure and grounding learn from the corpus (which tools are message-only, how often results
answer calls, how strictly each argument is held). Re-checking a few traces must not re-learn
that from those few, so every check run stores what it learned (`LEARNED_KEY` in `settings`) and
a re-check reuses it: a trace re-checked gets the flags the last run would have given its new
labels. Of the corpus-wide checks, coherence's schema verdict on a whole conversation is
decided again (an off-domain flag raised for arguments the task's tools do not declare must go
once the normaliser has mapped them onto the task's, or the conversation stays out of training);
its turn-level flags, duplicates and coherence_model are not re-run here.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlite_utils import Database

from db.browse import get_setting, set_setting
from db.flags import checks_stored, flags_of_traces, replace_flags
from db.queries import TraceFilter
from workbench.checks import coherence, grounding, schema, structure
from workbench.checks.base import CheckContext
from workbench.checks.calibration import apply_used, used_severities

PER_TRACE_CHECKS = (schema.NAME, structure.NAME, grounding.NAME)
LEARNED_KEY = "checks.learned"   # {check name: what its last run learned from the corpus}


def _pairs(d: dict) -> list:
    return [[tool, arg, v] for (tool, arg), v in sorted(d.items())]


def _unpairs(rows: list) -> dict:
    return {(tool, arg): v for tool, arg, v in rows}


def learned_of(ctx: CheckContext, names: Iterable[str]) -> dict:
    """What the per-trace checks among `names` learned from `ctx` (after they ran on it)."""
    out: dict[str, dict] = {}
    for name in names:
        if name == schema.NAME:
            out[name] = {}
        elif name == structure.NAME:
            out[name] = {"message_tools": sorted(ctx.inferred_message_tools),
                         "answered_rate": structure.answered_rate(ctx),
                         "protocol": _pairs(structure.protocol(ctx))}
        elif name == grounding.NAME and ctx.tools:
            strictness, defaults = grounding._argument_stats(ctx)
            out[name] = {"message_tools": sorted(ctx.inferred_message_tools),
                         "strictness": _pairs(strictness), "defaults": _pairs(defaults),
                         "echo": _pairs(grounding.echo_fidelity(ctx)),
                         "free_text": _pairs(grounding.free_text_arguments(ctx)),
                         "values": _pairs({k: sorted(v) for k, v in
                                           ctx.cache.get("grounding.values", {}).items()}),
                         "aliases": {v: sorted(a) for v, a in
                                     sorted(grounding.value_aliases(ctx).items())}}
        elif name == grounding.NAME:
            out[name] = {"message_tools": sorted(ctx.inferred_message_tools)}
        elif name == coherence.NAME and "coherence.result_fields" in ctx.cache:
            fields, core = ctx.cache["coherence.result_fields"]
            out[name] = {"message_tools": sorted(ctx.inferred_message_tools),
                         "result_fields": sorted(fields), "core": core}
    return out


def save_learned(db: Database, ctx: CheckContext, names: Iterable[str]) -> None:
    """Record what this run's per-trace checks learned (called by `run_checks`)."""
    learned = learned_of(ctx, names)
    if learned:
        set_setting(db, LEARNED_KEY, {**get_setting(db, LEARNED_KEY, {}), **learned})


def _context_for(base: CheckContext, name: str, learned: dict) -> CheckContext:
    """A context over `base`'s traces that knows what `name` learned from the corpus."""
    ctx = CheckContext(traces=base.traces, tools=base.tools, task=base.task,
                       message_tools=base.message_tools)   # configured ones win, as in a run
    if ctx.message_tools is None and "message_tools" in learned:
        ctx.message_tools = set(learned["message_tools"])
    if name == structure.NAME:
        ctx.cache["structure.answered_rate"] = learned["answered_rate"]
        if "protocol" in learned:   # stores checked before the protocol was learned lack it
            ctx.cache["structure.protocol"] = _unpairs(learned["protocol"])
    elif name == coherence.NAME:
        ctx.cache["coherence.result_fields"] = (set(learned["result_fields"]), learned["core"])
    elif name == grounding.NAME and "strictness" in learned:
        ctx.cache["grounding.arguments"] = (_unpairs(learned["strictness"]),
                                            _unpairs(learned["defaults"]))
        ctx.cache["grounding.echo"] = _unpairs(learned["echo"])
        if "free_text" in learned:
            ctx.cache["grounding.free_text"] = _unpairs(learned["free_text"])
            ctx.cache["grounding.aliases"] = {v: set(a) for v, a in learned["aliases"].items()}
        if "values" in learned:   # stores checked before flags named candidates lack it
            ctx.cache["grounding.values"] = {k: set(v) for k, v in
                                             _unpairs(learned["values"]).items()}
    return ctx


def recheck_traces(db: Database, trace_ids: Iterable[int], corpus_changed: bool = False) -> dict:
    """Run the per-trace checks again on these traces (after a label changed) and replace their
    flags; a flag found again keeps its first time. Only checks that have run on the store are
    re-run. With `corpus_changed` (the normaliser rewrote calls across the corpus), what
    coherence learned of the task's results is learned again from the whole store first, and
    every conversation's schema verdict is decided again: conversations whose calls now keep
    to the schema teach their results' fields. Returns `{"traces", "checks", "flags"}`."""
    from workbench.checks import CHECKS, load_context

    ids = sorted(set(trace_ids))
    if not ids:
        return {"traces": 0, "checks": [], "flags": 0}
    learned = get_setting(db, LEARNED_KEY, None)
    if learned is None:
        # a store checked before checks recorded what they learned: learn it once from the
        # whole store, for the checks whose flags it holds
        ran = checks_stored(db)
        names = [n for n in PER_TRACE_CHECKS if n in ran]
        if not names:
            return {"traces": 0, "checks": [], "flags": 0}
        save_learned(db, load_context(db), names)
        learned = get_setting(db, LEARNED_KEY, {})
    names = [n for n in PER_TRACE_CHECKS if n in learned]
    if not names:
        return {"traces": 0, "checks": [], "flags": 0}
    whole = None
    if corpus_changed and coherence.NAME in learned:
        whole = load_context(db)     # read once: the relabelled traces are a slice of it
        wanted = set(ids)
        base = CheckContext(traces=[t for t in whole.traces if t.id in wanted],
                            tools=whole.tools, task=whole.task,
                            message_tools=whole.message_tools)
    else:
        base = load_context(db, TraceFilter(trace_ids=ids))
    flags = []
    for name in names:
        flags += CHECKS[name].run(_context_for(base, name, learned[name]))
    found = [t.id for t in base.traces]
    used = used_severities(db)
    n = replace_flags(db, found, names, apply_used(flags, used))
    if coherence.NAME in learned:
        if whole is not None:
            base = whole
            coherence.result_fields(base)        # learned into base.cache, then recorded
            save_learned(db, base, [coherence.NAME])
            learned = get_setting(db, LEARNED_KEY, {})
        n += _recheck_off_domain(db, base, learned[coherence.NAME])
        names = [*names, coherence.NAME]
    return {"traces": len(found), "checks": names, "flags": n}


def _recheck_off_domain(db: Database, base: CheckContext, learned: dict) -> int:
    """Decide again whether each conversation with service calls is off-domain by the schema
    (its calls' arguments, its results' fields against those the last run learned), keeping
    coherence's other flags on it as they are. Returns the coherence flags now stored there."""
    with_calls, fresh = coherence.schema_verdicts(_context_for(base, coherence.NAME, learned))
    if not with_calls:
        return 0
    ids = sorted(with_calls)
    # stored flags are what replace_flags takes: no copy needed
    kept = [f for f in flags_of_traces(db, ids, [coherence.NAME])
            if f["message_idx"] is not None or not f["detail"].startswith(coherence.OFF_BY_SCHEMA)]
    return replace_flags(db, ids, [coherence.NAME], kept + apply_used(fresh, used_severities(db)))
