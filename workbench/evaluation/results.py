"""What the evaluation results screen shows, without Textual: the runs per model, one run's
report with per-tool scores, and two runs compared turn by turn.

The report itself is `workbench.evaluation.report` (the same as `workbench eval` prints); this
adds what a screen needs beside it. Turns without a reply are left out everywhere, as in the
report: a failure is not a score.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlite_utils import Database

from db import evals as store
from db.models import list_models
from workbench.evaluation import _is_error, reference_decision, report, row_scores
from workbench.evaluation.metrics import TURN_METRICS, mean_scores, turn_score

SHORT = {"decision": "decision", "staged_tool_call": "staged",
         "tool_call_equivalence": "equivalence", "function_match": "function",
         "rouge_l": "rouge_l", "text_rouge_l": "text", "llm_as_a_judge": "judge"}


def runs_per_model(db: Database, limit: int = 200) -> list[dict]:
    """The newest `limit` runs, grouped by model (registered name, else the reference the run
    was given), newest run first within a model."""
    names = {m["id"]: m["name"] for m in list_models(db)}
    out = []
    for r in store.runs(db, limit):
        model = names.get(r["model_id"]) if r["model_id"] is not None else None
        out.append({"id": r["id"], "model_id": r["model_id"], "model": model or r["model_ref"],
                    "model_ref": r["model_ref"], "status": r.get("status") or "unfinished",
                    "metrics": r["metrics"] or {}, "judge": r["judge"],
                    "test_selection": r["test_selection"]})
    out.sort(key=lambda r: (r["model"] or "", -r["id"]))
    return out


def per_tool(rows: Sequence[dict]) -> list[dict]:
    """Mean scores per reference decision (the tool(s) the turn should have called, or
    "text"); a metric that applies to none of a group's turns is None."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if not _is_error(r):
            groups[reference_decision(r)].append(row_scores(r))
    return [{"tool": tool, "n": len(g), **dict.fromkeys(TURN_METRICS), **mean_scores(g)}
            for tool, g in sorted(groups.items())]


def compare(db: Database, run_id: int, baseline_id: int) -> dict:
    """Turn by turn, `run_id` against `baseline_id` on the turns both answered: which turns'
    score (staged on a call turn, the text's ROUGE-L on a text turn) went up (better) or down
    (worse), worst change first."""
    def answered(rid: int) -> dict[tuple[int, int], dict]:
        return {(r["trace_id"], r["message_idx"]): r for r in store.results(db, rid)
                if not _is_error(r)}

    run, base = answered(run_id), answered(baseline_id)
    better, worse, same = [], [], 0
    for key in sorted(run.keys() & base.keys()):
        now, before = turn_score(row_scores(run[key])), turn_score(row_scores(base[key]))
        if now == before:
            same += 1
            continue
        item = {"trace_id": key[0], "message_idx": key[1], "before": before, "after": now,
                "reference": run[key]["reference"], "prediction": run[key]["prediction"],
                "baseline_prediction": base[key]["prediction"]}
        (better if now > before else worse).append(item)
    better.sort(key=lambda t: t["before"] - t["after"])
    worse.sort(key=lambda t: t["after"] - t["before"])
    return {"run_id": run_id, "baseline_id": baseline_id, "better": better, "worse": worse,
            "same": same, "only_run": len(run.keys() - base.keys()),
            "only_baseline": len(base.keys() - run.keys())}


def run_view(db: Database, run_id: int, baseline_id: int | None = None,
             worst: int = 20) -> tuple[dict, dict | None]:
    """One run's report with its per-tool scores, and its comparison with `baseline_id` (by
    default the previous finished run on the same selection; None when there is none)."""
    rep = report(db, run_id, worst=worst)
    rep["per_tool"] = per_tool(store.results(db, run_id))
    if baseline_id is None:
        prev = store.previous_run(db, run_id)
        baseline_id = prev["id"] if prev else None
    if baseline_id is None or baseline_id == run_id:
        return rep, None
    return rep, compare(db, run_id, baseline_id)
