"""One meaning of each analyst decision, for the detail view, the review queue, bulk actions
and the CLI alike. Nothing here edits an original or deletes a revision.

| decision | what it writes |
|---|---|
| keep | the current label stays; open proposals are rejected; on a turn with an error flag an accepted human revision equal to the current label records the decision (it ends the suspicion); the turn's flags are marked not a problem (`dismiss`) |
| dismiss ("not a problem") | the flags of a turn or of a whole trace (of some checks, or all) leave the store as one action: their check does not raise them there again, and flags of the same check and pattern elsewhere are demoted to warnings (`db.flags.apply_dismissals`); `dismiss_check` does it for every flag of a check in a selection; `undo_dismissal` takes an action back |
| accept (pick) | that proposal becomes the label; the turn's competing proposals are rejected |
| reject | that proposal is rejected |
| edit | a human revision with the new text and calls (validated by `checks.schema.label_problems`; call ids kept or made by `turns.assign_ids`); open proposals are rejected |
| drop | a `review.drop` error flag (training and export leave the turn out); open proposals rejected |
| undo | the label before the current one comes back, as a new revision (the original if none) |
| exclude / include | the analyst's decision on whole traces (training leaves them out / takes them), recorded as one action that `undo_exclusion` reverts |
| split / move | traces put in the train, test or unassigned split (a drawn test share, grouped by a metadata field, or chosen traces), recorded as one action that `undo_split` reverts |

Sampled flags (`workbench review sample`) are judged by the decisions on them: keep or
dismiss says "not a problem", drop, edit or an accepted proposal says "real" (of a trace-level
flag: include / exclude).

Every decision on a turn first checks that the trace exists and that the turn is one of its
assistant turns (`DecisionError` otherwise, before anything is written).

Accepting one proposal always rejects the others for that turn, so two proposals can never be
accepted together with the newest silently winning. Whenever a label changes (accept, edit,
undo) the trace's per-trace checks run again (`recheck_traces`), so no flag outlives the call
it was about. A bulk accept takes only turns with one
open proposal and reports how many it skipped because they had several (they need a person to
pick one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database
from ulid import ULID

from db import browse, revisions, teaching
from db import splits as split_store
from db.browse import reject_open_proposals
from db.flags import flags_where, settle_warnings, turn_has_error
from db.queries import TraceFilter
from db.traces import message_count, message_role, trace_exists, trace_ids
from db.tx import now, write_tx


def _recheck(db: Database, trace_ids) -> None:
    from workbench.checks import recheck_traces

    recheck_traces(db, trace_ids)


def _settle(db: Database, turns) -> None:
    """A turn with no open proposal left loses the warnings that only said one waits for
    review (normalisation's "proposed for review"): they must not outlive the decision."""
    from workbench.curation.normalize import NAME as NORMALIZE

    settle_warnings(db, turns, NORMALIZE)


class DecisionError(ValueError):
    """A decision that cannot be taken (no such proposal, nothing to undo, not a turn)."""


@dataclass
class Outcome:
    """What a decision did, in words an analyst reads, and the counts behind them."""

    message: str
    written: int = 0
    skipped: int = 0
    revision_id: int | None = None
    action: str | None = None          # an exclusion action's id (for undo)


def check_turn(db: Database, trace_id: int, idx: int) -> str:
    """The role of message `idx` of the trace, when it is an assistant turn; else why not."""
    if not trace_exists(db, trace_id):
        raise DecisionError(f"no trace {trace_id}")
    role = message_role(db, trace_id, idx)
    if role is None:
        n = message_count(db, trace_id)
        raise DecisionError(f"trace {trace_id} has no turn {idx} (its messages are 0 to {n - 1})")
    if role != "assistant":
        raise DecisionError(f"turn {idx} of trace {trace_id} is a {role} message; only"
                            " assistant turns carry labels")
    return role


def _proposal(db: Database, revision_id: int) -> dict:
    row = revisions.status_of(db, revision_id)
    if row is None:
        raise DecisionError(f"no revision {revision_id}")
    if row[2] != "proposed":
        raise DecisionError(f"revision {revision_id} is {row[2]}, not proposed")
    return {"trace_id": row[0], "message_idx": row[1]}


def proposals(db: Database, trace_id: int, idx: int) -> list[dict]:
    """The turn's open proposals, oldest first."""
    return [r for r in revisions.history(db, trace_id, idx) if r["status"] == "proposed"]


def keep(db: Database, trace_id: int, idx: int, analyst: str) -> Outcome:
    """The label is right as it is: open proposals are rejected, and every flag on the turn is
    not a problem (`dismiss`: its check learns from it)."""
    with write_tx(db):
        check_turn(db, trace_id, idx)
        rejected = reject_open_proposals(db, trace_id, idx)
        _settle(db, [(trace_id, idx)])
        rid = None
        if turn_has_error(db, trace_id, idx):
            current = revisions.current_messages(db, trace_id)[idx]
            rid = revisions.add_revision(
                db, trace_id, idx, tool_calls=current["tool_calls"], content=current["content"],
                author_kind="human", author_name=analyst, reason="kept as is",
                evidence={"decision": "keep"})
        where, params = flags_where([trace_id], idx)
        taught = teaching.dismiss(db, where, params, analyst)
        teaching.judge(db, "not_a_problem", analyst, [trace_id], message_idx=idx)
    return Outcome(f"trace {trace_id} turn {idx}: kept"
                   + (f", {rejected} proposal(s) rejected" if rejected else "")
                   + _taught_note(taught),
                   written=int(rid is not None) + rejected + taught["dismissed"],
                   revision_id=rid, action=taught["action"])


def _taught_note(taught: dict) -> str:
    if not taught["dismissed"]:
        return ""
    return (f"; {taught['dismissed']} flag(s) marked not a problem"
            + (f", {taught['demoted']} like them elsewhere now warnings" if taught["demoted"]
               else "")
            + f" (action {taught['action']})")


def dismiss(db: Database, trace_id: int, idx: int | None, analyst: str,
            checks: list[str] | None = None) -> Outcome:
    """"Not a problem": the flags of `checks` (default every check's) on message `idx` of the
    trace, or on the whole trace when `idx` is None (a trace-level error no longer excludes
    it). One action; their checks learn from it (see the module docstring)."""
    if not trace_exists(db, trace_id):
        raise DecisionError(f"no trace {trace_id}")
    where, params = flags_where([trace_id], idx, checks, trace_level=idx is None)
    with write_tx(db):
        taught = teaching.dismiss(db, where, params, analyst)
        if taught["dismissed"]:
            if idx is None:
                teaching.judge(db, "not_a_problem", analyst, [trace_id], trace_level=True,
                               checks=checks)
            else:
                teaching.judge(db, "not_a_problem", analyst, [trace_id], message_idx=idx,
                               checks=checks)
    where_txt = "the trace" if idx is None else f"turn {idx}"
    of = f" of {', '.join(checks)}" if checks else ""
    if not taught["dismissed"]:
        raise DecisionError(f"trace {trace_id}: {where_txt} has no flag{of} to mark as not a"
                            " problem")
    return Outcome(f"trace {trace_id} {where_txt}: {taught['dismissed']} flag(s){of} marked not"
                   " a problem" + (f", {taught['demoted']} like them elsewhere now warnings"
                                   if taught["demoted"] else "")
                   + f" (action {taught['action']})",
                   written=taught["dismissed"], action=taught["action"])


def dismiss_check(db: Database, check: str, analyst: str, *,
                  selection: TraceFilter | None = None, ids: list[int] | None = None,
                  severity: str | None = None) -> Outcome:
    """Bulk "not a problem": every flag of `check` (of one severity, if given) on the selected
    traces, as one action (`undo_dismissal` takes it back)."""
    if check == browse.REVIEW_DROP:
        raise DecisionError(f"{check} flags are the analyst's own decisions: undo them instead")
    where, params = flags_where(checks=[check], severity=severity,
                                scope=browse.trace_scope(selection or TraceFilter(), ids))
    taught = teaching.dismiss(db, where, params, analyst)
    if not taught["dismissed"]:
        return Outcome(f"no flag of {check} on the selected traces")
    return Outcome(f"{taught['dismissed']} flag(s) of {check} on {len(taught['traces'])}"
                   " trace(s) marked not a problem" + (f", {taught['demoted']} like them"
                                                       " elsewhere now warnings"
                                                       if taught["demoted"] else "")
                   + f" (action {taught['action']}; `workbench label undo-keep` takes it back)",
                   written=taught["dismissed"], action=taught["action"])


def undo_dismissal(db: Database, analyst: str, action: str | None = None, *,
                   trace_id: int | None = None) -> Outcome:
    """Take back a "not a problem" action (default: the newest that holds, on `trace_id` if
    given): its flags come back, flags it demoted get their severity back, and their traces
    are checked again (the per-trace checks), so what comes back is what the checks find
    now."""
    action = action or teaching.last_action(db, trace_id)
    if action is None:
        return Outcome("no \"not a problem\" decision to undo"
                       + (f" on trace {trace_id}" if trace_id is not None else ""))
    try:
        out = teaching.undo(db, action)
    except ValueError as e:
        raise DecisionError(str(e)) from None
    _recheck(db, out["traces"])
    return Outcome(f"undid action {action}: {out['restored']} flag(s) back on"
                   f" {len(out['traces'])} trace(s)", written=out["restored"], action=action)


def accept(db: Database, revision_id: int, analyst: str) -> Outcome:
    """Accept a proposal and reject the turn's competing ones, in one transaction."""
    with write_tx(db):
        turn = _proposal(db, revision_id)
        revisions.decide(db, revision_id, "accepted")
        rejected = reject_open_proposals(db, turn["trace_id"], turn["message_idx"])
        _settle(db, [(turn["trace_id"], turn["message_idx"])])
        teaching.judge(db, "real", analyst, [turn["trace_id"]], message_idx=turn["message_idx"])
    _recheck(db, [turn["trace_id"]])
    return Outcome(f"revision {revision_id} accepted"
                   + (f", {rejected} competing proposal(s) rejected" if rejected else ""),
                   written=1 + rejected, revision_id=revision_id)


def reject(db: Database, revision_id: int, analyst: str) -> Outcome:
    with write_tx(db):
        turn = _proposal(db, revision_id)
        revisions.decide(db, revision_id, "rejected")
        _settle(db, [(turn["trace_id"], turn["message_idx"])])
    return Outcome(f"revision {revision_id} rejected", written=1, revision_id=revision_id)


def edit(db: Database, trace_id: int, idx: int, analyst: str, *, tool_calls: list | None,
         content: str | None, reason: str = "") -> Outcome:
    """A new label: `content` and `tool_calls` (either may be empty, not both), validated
    against the conversation's tools; calls keep their ids (same tool) or get new ones."""
    from workbench.checks.schema import label_problems
    from workbench.conversations.view import conversation
    from workbench.conversations.turns import assign_ids

    check_turn(db, trace_id, idx)
    conv = conversation(db, trace_id, with_flags=False)
    current = conv.messages[idx]
    content = content if content else None
    problems = label_problems(conv.tools, content, tool_calls)
    if problems:
        raise DecisionError(f"trace {trace_id} turn {idx}: not saved: " + "; ".join(problems))
    calls = assign_ids(tool_calls or [], current["tool_calls"]) or None
    with write_tx(db):
        rid = revisions.add_revision(db, trace_id, idx, tool_calls=calls, content=content,
                                     author_kind="human", author_name=analyst,
                                     reason=reason or "edited", evidence={"decision": "edit"})
        rejected = reject_open_proposals(db, trace_id, idx)
        _settle(db, [(trace_id, idx)])
        teaching.judge(db, "real", analyst, [trace_id], message_idx=idx)
    _recheck(db, [trace_id])
    return Outcome(f"trace {trace_id} turn {idx}: revision {rid} saved"
                   + (f", {rejected} proposal(s) rejected" if rejected else "")
                   + _cut_note(db, conv, idx, content, calls),
                   written=1 + rejected, revision_id=rid)


def _cut_note(db: Database, conv, idx: int, content: str | None, calls: list | None) -> str:
    """Say so when the new label ends the conversation in exports and training (the tool
    results logged after the turn no longer answer its calls: `turns.exportable`)."""
    from db.traces import original_messages
    from workbench.conversations.view import task_context
    from workbench.conversations.turns import exportable

    msgs = list(conv.messages)
    msgs[idx] = {**msgs[idx], "content": content, "tool_calls": calls}
    changed = {**conv.changed, idx: original_messages(db, conv.trace_id)[idx]}
    kept = len(exportable(msgs, changed, task_context(db).message_tools))
    if kept == idx + 1 < len(msgs):
        return (f"; exports now end this conversation after turn {idx} (the {len(msgs) - kept}"
                " message(s) logged after it followed a different turn)")
    return ""


def drop(db: Database, trace_id: int, idx: int, analyst: str) -> Outcome:
    check_turn(db, trace_id, idx)
    browse.drop_turn(db, trace_id, idx, analyst)
    with write_tx(db):
        _settle(db, [(trace_id, idx)])
        teaching.judge(db, "real", analyst, [trace_id], message_idx=idx)
    return Outcome(f"trace {trace_id} turn {idx}: dropped from training", written=1)


def undo(db: Database, trace_id: int, idx: int, analyst: str) -> Outcome:
    check_turn(db, trace_id, idx)
    rid = revisions.undo(db, trace_id, idx, author_kind="human", author_name=analyst)
    if rid is None:
        return Outcome(f"trace {trace_id} turn {idx}: nothing to undo")
    _recheck(db, [trace_id])
    return Outcome(f"trace {trace_id} turn {idx}: undone", written=1, revision_id=rid)


def set_excluded(db: Database, excluded: bool, analyst: str, *,
                 selection: TraceFilter | None = None, ids: list[int] | None = None) -> Outcome:
    """Exclude (or include) whole traces; one action, undone as one (`undo_exclusion`)."""
    action = str(ULID())
    n = browse.set_excluded(db, selection or TraceFilter(), excluded, ids, author_name=analyst,
                            action=action)
    if n:   # the analyst's verdict on sampled trace-level flags of these traces
        teaching.judge_exclusion(db, action, "real" if excluded else "not_a_problem", analyst)
    what = "excluded from" if excluded else "included in"
    return Outcome(f"{n} trace(s) {what} training", written=n, action=action if n else None)


def undo_exclusion(db: Database, analyst: str, action: str | None = None) -> Outcome:
    """Undo an exclude / include action (default: the newest). Traces decided on again since
    keep that later decision."""
    return _undo_action(db, analyst, action, browse.last_exclusion_action,
                        browse.undo_exclusion_action, "exclusion", "restored", "decided since")


def _undo_action(db: Database, analyst: str, action: str | None,
                 last: Callable[[Database], str | None],
                 undo_action: Callable[[Database, str, str], tuple[int, int]],
                 kind: str, back: str, since: str) -> Outcome:
    """Undo an action on whole traces (default: the newest of its `kind`), as `undo_action`
    does it: (restored, skipped) traces."""
    action = action or last(db)
    if action is None:
        return Outcome(f"no {kind} decision to undo")
    restored, skipped = undo_action(db, action, analyst)
    msg = f"undid action {action}: {restored} trace(s) {back}"
    if skipped:
        msg += f", {skipped} left as {since}"
    return Outcome(msg, written=restored, skipped=skipped)


def bulk_decide(db: Database, status: str, analyst: str, *,
                selection: TraceFilter | None = None, ids: list[int] | None = None) -> Outcome:
    """Accept (or reject) the open proposals of the selected traces. Accepting takes only
    turns with exactly one open proposal: a turn with competing proposals is skipped and
    counted, since picking one is the analyst's call."""
    if status not in ("accepted", "rejected"):
        raise DecisionError("a bulk decision is 'accepted' or 'rejected'")
    with write_tx(db):
        turns = browse.open_proposal_turns(db, selection or TraceFilter(), ids)
        competing = [(t, i) for t, i, n in turns if n > 1]
        ts = now()
        written = 0
        changed = set()
        for t, i, n in turns:
            if status == "accepted" and n > 1:
                continue
            written += browse.decide_open_proposals(db, t, i, status, ts)
            _settle(db, [(t, i)])
            changed.add(t)
    if status == "accepted":
        _recheck(db, changed)
    verb = "accepted" if status == "accepted" else "rejected"
    msg = f"{written} proposal(s) {verb}"
    skipped = len(competing) if status == "accepted" else 0
    if skipped:
        msg += (f"; {skipped} turn(s) skipped: they have competing proposals, pick one in"
                " the review queue")
    return Outcome(msg, written=written, skipped=skipped)


def move_to_split(db: Database, split: str, analyst: str, *,
                  selection: TraceFilter | None = None, ids: list[int] | None = None) -> Outcome:
    """Put the selected traces in `split` (train | test | unassigned); one action, undone as
    one (`undo_split`)."""
    chosen = browse.selected_ids(db, selection or TraceFilter(), ids)
    missing = sorted(set(ids or ()) - set(chosen))
    if missing:
        raise DecisionError(f"no trace {', '.join(map(str, missing[:10]))}")
    action, n = split_store.move(db, [(t, split) for t in chosen], author_name=analyst,
                                 reason=f"moved to {split}")
    return Outcome(f"{n} trace(s) moved to the {split} split"
                   + (f" ({len(chosen) - n} there already)" if len(chosen) > n else ""),
                   written=n, skipped=len(chosen) - n, action=action if n else None)


def split_test(db: Database, share: str, analyst: str, *, by: str | None = None, seed: int = 0,
               selection: TraceFilter | None = None) -> Outcome:
    """Draw a test split of `share` (10%, 0.1 or a number of traces) of the selected imported
    traces, whole groups of `by` (a metadata field) at a time; the others go to train. One
    action (`undo_split` takes it back). Synthetic traces are never drawn."""
    from dataclasses import replace

    from workbench.curation.splitting import draw, parse_share

    flt = replace(selection or TraceFilter(), origin="imported")
    where, params = flt.where()
    if by:
        values = split_store.group_values(db, by, where, params)
        if values and all(v is None for v in values.values()):
            raise DecisionError(f"--by {by}: none of the {len(values)} traces has a value of"
                                f" {by!r}")
    else:
        values = {t: None for t in trace_ids(db, where, params)}
    if len(values) < 2:
        raise DecisionError(f"{len(values)} imported trace(s) selected: nothing to split")
    in_test = split_store.ids_in_split(db, "test", where, params)
    target = parse_share(share, len(values))
    d = draw(values, in_test, target, seed)
    if not d.train:
        raise DecisionError(f"every trace would be in test: {by!r} puts the {len(values)}"
                            f" traces in {d.groups} group(s); choose another field or a"
                            " smaller share")
    action, n = split_store.move(db, [(t, "test") for t in sorted(d.test)]
                                 + [(t, "train") for t in sorted(d.train)],
                                 author_name=analyst, reason=f"split --test {share}"
                                 + (f" --by {by}" if by else "") + f" --seed {seed}")
    grouped = f" in {d.groups_test} of {d.groups} groups by {by}" if by else ""
    return Outcome(f"test: {len(d.test)} traces ({len(d.test) / len(values):.1%}){grouped},"
                   f" train: {len(d.train)}; {n} trace(s) moved"
                   + (f" (action {action}; `workbench split --undo` takes it back)" if n else ""),
                   written=n, action=action if n else None)


def undo_split(db: Database, analyst: str, action: str | None = None) -> Outcome:
    """Undo a split or move action (default: the newest); traces moved again since stay."""
    return _undo_action(db, analyst, action, split_store.last_action, split_store.undo_action,
                        "split", "back in their split", "moved since")
