"""The pipeline's report: data before and after curation, training, evaluation against the
floor and the direct baseline, as JSON and Markdown."""

from __future__ import annotations


from pathlib import Path
from typing import Any

from sqlite_utils import Database

from db import jobs as jobstore
from db import pipeline as pstore
from workbench.pipeline.baseline import RAW_DEFINITION
from workbench.pipeline.config import PipelineConfig

METRIC_KEYS = ("decision", "staged_tool_call", "tool_call_equivalence", "function_match",
               "rouge_l", "text_rouge_l", "llm_as_a_judge")   # as `workbench eval` reports


def _eval_summary(db: Database, row: dict | None) -> dict | None:
    from workbench.evaluation import report

    if row is None or not (row.get("result") or {}).get("run_id"):
        return None
    rep = report(db, row["result"]["run_id"], worst=0)
    m = rep["metrics"]
    floor = rep.get("floor")
    return {"job_id": row["id"], "run_id": rep["run_id"], "model": rep["model_ref"],
            "turns": m.get("n"), "errors": m.get("errors", 0),
            "call_turns": m.get("call_turns"), "text_turns": m.get("text_turns"),
            "confusion": rep["confusion"],
            "metrics": {k: m[k] for k in METRIC_KEYS if k in m},
            "floor": floor and {k: floor.get(k) for k in ("function", "arguments",
                                                          "decision_label", "text")}
            | {k: floor[k] for k in METRIC_KEYS if k in floor}}


def _delta(a: dict, b: dict) -> dict:
    return {k: round(a[k] - b[k], 6) for k in a if k in b}


def _train_summary(row: dict | None) -> dict | None:
    if row is None or not row.get("result"):
        return None
    r, m = row["result"], row["result"].get("metrics") or {}
    return {"job_id": row["id"], "model": r.get("name"), "model_ids": r.get("model_ids"),
            "gguf": r.get("gguf"), "steps": m.get("steps"), "first_loss": m.get("first_loss"),
            "last_loss": m.get("last_loss"), "tokens_per_s": m.get("tokens_per_s"),
            "runtime_s": m.get("runtime_s"), "sequences": m.get("data_sequences"),
            "tokens_seen": m.get("tokens_seen"), "max_length": _max_length_of(r.get("plan"))}


def _max_length_of(plan: dict | None) -> str | None:
    """The sequence length a training run used, and why (sized from the data, or given)."""
    if not plan or not plan.get("max_length"):
        return None
    if plan.get("sizing"):
        from workbench.training.sizing import describe

        return describe(plan["sizing"])
    return f"--max-length {plan['max_length']:,} (given)"


def build_report(db: Database, run_id: int, cfg: PipelineConfig, folder: Path) -> dict:
    stages = []
    rows: dict[str, dict] = {}
    for s in pstore.stages_of(db, run_id):
        job = jobstore.get_job(db, s["job_id"]) if s["job_id"] else None
        if job is not None:
            rows[s["stage"]] = job
        stages.append({"stage": s["stage"], "action": s["action"], "job_id": s["job_id"],
                       "status": job["status"] if job else None})
    evaluation = _eval_summary(db, rows.get("eval"))
    if evaluation is not None:
        for prev in pstore.previous_stage_result(db, run_id, "eval"):
            prev_run = (prev["result"] or {}).get("run_id")
            if prev_run and prev_run != evaluation["run_id"]:
                before = _eval_summary(db, {"id": prev["job_id"], "result": prev["result"]})
                if before is not None:
                    evaluation["previous"] = {"pipeline_job": prev["run_id"], **before,
                                              "delta": _delta(evaluation["metrics"],
                                                              before["metrics"])}
                break
    baseline = None
    if cfg.baseline == "direct":
        direct_eval = _eval_summary(db, rows.get("direct-eval"))
        baseline = {"kind": "direct", "definition": RAW_DEFINITION,
                    "training": _train_summary(rows.get("direct-train")),
                    "evaluation": direct_eval,
                    "delta": (_delta(evaluation["metrics"], direct_eval["metrics"])
                              if evaluation and direct_eval else None)}
    return {"pipeline_job": run_id, "file": str(cfg.path), "folder": str(folder),
            "stages": stages, "data": pstore.data_counts(db),
            "training": _train_summary(rows.get("train")), "evaluation": evaluation,
            "baseline": baseline}


DATA_ROWS = (("traces", "traces (not test)"), ("turns", "assistant turns"),
             ("suspect_turns", "suspect turns (masked in training)"),
             ("excluded", "excluded traces"), ("relabelled", "relabelled turns"),
             ("synthetic", "synthetic traces"))


def _md(text: Any) -> str:
    """Untrusted text in a Markdown table cell: control characters spelled out, no pipes."""
    from workbench.core.safe_text import visible

    return visible(text).replace("|", "\\|").replace("\n", " ")


def _num(v: Any, fmt: str = "{:.4f}") -> str:
    if v is None:
        return "-"
    return fmt.format(v) if isinstance(v, float) else str(v)


def report_markdown(rep: dict) -> str:
    out = [f"# Pipeline run {rep['pipeline_job']}", "", f"File: `{_md(rep['file'])}`", "",
           "## Stages", "", "| stage | action | job | status |", "|---|---|---|---|"]
    for s in rep["stages"]:
        out.append(f"| {s['stage']} | {s['action']} | {_num(s['job_id'])} |"
                   f" {s['status'] or '-'} |")
    d = rep["data"]
    out += ["", "## Data", "", "Before curation: the traces as imported; after: what training"
            " reads (not the test split, not excluded).", "",
            "| | before | after |", "|---|---|---|"]
    for key, label in DATA_ROWS:
        out.append(f"| {label} | {_num(d['raw'][key])} | {_num(d['curated'][key])} |")
    for name, o in (d.get("outcomes") or {}).items():
        out.append(f"| outcome {_md(name)}: mean (traces) | {_num(o['raw']['mean'])}"
                   f" ({o['raw']['traces']}) | {_num(o['curated']['mean'])}"
                   f" ({o['curated']['traces']}) |")
    if d["relabelled_by"]:
        out.append("")
        out.append("Relabelled by: " + ", ".join(f"{k} {v}" for k, v in
                                                  d["relabelled_by"].items()))
    out.append("")
    out.append(f"Test split: {d['test']['traces']} traces, {d['test']['turns']} assistant turns.")
    t = rep["training"]
    if t:
        out += ["", "## Training", "", f"Model `{_md(t['model'])}` (job {t['job_id']}):"
                f" {_num(t['steps'])} steps, {_num(t['tokens_seen'])} tokens trained (data:"
                f" {_num(t['sequences'])} sequences), loss"
                f" {_num(t['first_loss'])} -> {_num(t['last_loss'])},"
                f" {_num(t['tokens_per_s'], '{:.1f}')} tokens/s,"
                f" {_num(t['runtime_s'], '{:.1f}')} s."]
        if t.get("max_length"):
            out.append(f"Sequence length: {_md(t['max_length'])}.")
    e = rep["evaluation"]
    if e:
        b = rep.get("baseline") or {}
        be = b.get("evaluation")
        prev = e.get("previous")
        out += ["", "## Evaluation", "", f"Run {e['run_id']} of `{_md(e['model'])}`:"
                f" {_num(e['turns'])} turns scored" + (f", {e['errors']} without a reply"
                                                       if e["errors"] else "")
                + (f" ({_num(e.get('call_turns'))} call turns, {_num(e.get('text_turns'))}"
                   " with text)" if e.get("call_turns") is not None else "") + "."
                + " `decision` is every turn's choice (text, or which tools); the call"
                " metrics are over call turns, `text_rouge_l` over turns with text."]
        if prev:
            out.append(f"Change against the previous pipeline run ({prev['pipeline_job']},"
                       f" evaluation run {prev['run_id']}).")
        head = ["metric", "curated"]
        if prev:
            head.append("change vs previous run")
        if be:
            head += ["direct", "curated - direct"]
        out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k, v in e["metrics"].items():
            cells = [k, _num(v)]
            if prev:
                cells.append(_num(prev["delta"].get(k), "{:+.4f}"))
            if be:
                cells += [_num(be["metrics"].get(k)), _num((b["delta"] or {}).get(k),
                                                           "{:+.4f}")]
            out.append("| " + " | ".join(cells) + " |")
        f = e.get("floor") or {}
        if f.get("decision_label") is not None:
            out += ["", f"The commonest decision on every turn (`{_md(f['decision_label'])}`)"
                    f" would score decision {_num(f.get('decision'))}."]
        if f.get("function") is not None:
            out += ["", f"The same call on every call turn (`{_md(f['function'])}` with the"
                    " commonest arguments) would score staged"
                    f" {_num(f['staged_tool_call'])}, function match"
                    f" {_num(f['function_match'])}: a model below that has not learned when"
                    " to call which tool."]
        if f.get("text_rouge_l") is not None:
            out += ["", "The commonest reference text on every text turn would score"
                    f" text_rouge_l {_num(f['text_rouge_l'])}."]
        if e.get("confusion"):
            out += ["", "Decisions (rows: the reference turn's, columns: the model's):", ""]
            cols = sorted({p for row in e["confusion"].values() for p in row})
            out += ["| reference | " + " | ".join(_md(c) for c in cols) + " |",
                    "|---|" + "---|" * len(cols)]
            for ref, row in e["confusion"].items():
                out.append(f"| {_md(ref)} | " + " | ".join(str(row.get(c, "")) for c in cols)
                           + " |")
    b = rep.get("baseline")
    if b:
        bt = b["training"]
        out += ["", "## Direct baseline", "", b["definition"]]
        if bt:
            out += ["", f"Model `{_md(bt['model'])}` (job {bt['job_id']}): {_num(bt['steps'])}"
                    f" steps, {_num(bt['tokens_seen'])} tokens trained (data: {_num(bt['sequences'])}"
                    f" sequences), loss {_num(bt['first_loss'])}"
                    f" -> {_num(bt['last_loss'])}, {_num(bt['tokens_per_s'], '{:.1f}')}"
                    " tokens/s."]
    return "\n".join(out) + "\n"
