"""Re-check traces whose labels changed, so no flag outlives the call it was about.

A check run stores its flags; a label written afterwards (an accepted normaliser revision, an
analyst's edit, an accepted proposal, an undo) could leave a schema error next to a call that
no longer has it until `workbench check` ran again. `recheck_traces` runs the per-trace checks
(schema, structure, grounding) again on the touched traces and replaces their flags.

Structure and grounding learn from the corpus (which tools are message-only, how often results
answer calls, how strictly each argument is held). Re-checking a few traces must not re-learn
that from those few, so every check run stores what it learned (`LEARNED_KEY` in `settings`) and
a re-check reuses it: a trace re-checked gets the flags the last run would have given its new
labels. The corpus-wide checks (coherence, duplicates, coherence_model) are not re-run here.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlite_utils import Database

from db.browse import get_setting, set_setting
from db.flags import replace_flags
from db.queries import TraceFilter
from workbench.checks import grounding, schema, structure
from workbench.checks.base import CheckContext

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
                         "answered_rate": structure.answered_rate(ctx)}
        elif name == grounding.NAME and ctx.tools:
            strictness, defaults = grounding._argument_stats(ctx)
            out[name] = {"message_tools": sorted(ctx.inferred_message_tools),
                         "strictness": _pairs(strictness), "defaults": _pairs(defaults),
                         "echo": _pairs(grounding.echo_fidelity(ctx))}
        elif name == grounding.NAME:
            out[name] = {"message_tools": sorted(ctx.inferred_message_tools)}
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
    elif name == grounding.NAME and "strictness" in learned:
        ctx.cache["grounding.arguments"] = (_unpairs(learned["strictness"]),
                                            _unpairs(learned["defaults"]))
        ctx.cache["grounding.echo"] = _unpairs(learned["echo"])
    return ctx


def recheck_traces(db: Database, trace_ids: Iterable[int]) -> dict:
    """Run the per-trace checks again on these traces (after a label changed) and replace their
    flags; a flag found again keeps its first time. Only checks that have run on the store are
    re-run. Returns `{"traces", "checks", "flags"}` (flags now stored by those checks)."""
    from workbench.checks import CHECKS, load_context

    ids = sorted(set(trace_ids))
    if not ids:
        return {"traces": 0, "checks": [], "flags": 0}
    learned = get_setting(db, LEARNED_KEY, None)
    if learned is None:
        # a store checked before checks recorded what they learned: learn it once from the
        # whole store, for the checks whose flags it holds
        ran = [r[0] for r in db.execute("SELECT DISTINCT check_name FROM flags")]
        names = [n for n in PER_TRACE_CHECKS if n in ran]
        if not names:
            return {"traces": 0, "checks": [], "flags": 0}
        save_learned(db, load_context(db), names)
        learned = get_setting(db, LEARNED_KEY, {})
    names = [n for n in PER_TRACE_CHECKS if n in learned]
    if not names:
        return {"traces": 0, "checks": [], "flags": 0}
    base = load_context(db, TraceFilter(trace_ids=ids))
    flags = []
    for name in names:
        flags += CHECKS[name].run(_context_for(base, name, learned[name]))
    found = [t.id for t in base.traces]
    n = replace_flags(db, found, names, flags)
    return {"traces": len(found), "checks": names, "flags": n}
