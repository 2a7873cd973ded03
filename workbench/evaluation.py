"""Evaluation: per-turn pairs from the store, predicted by a backend, scored like the benchmark.

* **Pairs.** Each selected test conversation (current labels) gives one pair per assistant
  turn: the messages before it as the prompt, :func:`workbench.messages.turn_answer` of the
  turn as the reference (34 TFT test conversations -> 359 pairs). The system prompt is the
  task description; tools are the trace's own, else the store's current tool schemas.
* **Order.** Turns of a conversation are predicted in order, so a llama.cpp backend reuses the
  KV cache of the previous turn (its prompt is a token prefix of the next one).
* **Scores.** :func:`workbench.metrics.score_pair`; with a judge endpoint also
  ``llm_as_a_judge`` (1/0) from the task's rubric, each judge reply cached by content hash in
  ``job_units`` so a rerun or a resumed job never pays twice.
* **Storage.** A run is a job (``run_job``) and an ``eval_runs`` row; each turn an
  ``eval_results`` row, written per conversation (a killed run keeps what it finished).
* **Report.** Means, a function-name confusion matrix, the worst turns and the change against
  the previous finished run on the same selection.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from db import evals as store
from db.queries import TraceFilter
from workbench import safe_json
from workbench.chat_backend import ChatBackend, Completion
from workbench.conversation_view import conversations, task_context
from workbench.jobs import JobContext, run_job
from workbench.messages import per_turn_pairs, to_benchmark_question, turn_answer
from workbench.metrics import METRICS, score_pair
from workbench.toolcalls import parse_tool_calls

JUDGE_UNIT = "judge"
NO_CALL, MALFORMED, MULTIPLE, TEXT = "(no call)", "(malformed)", "(several)", "(text)"


@dataclass
class Pair:
    trace_id: int
    message_idx: int
    prompt: list[dict]
    reference: str
    ref_message: dict
    tools: list[dict] | None
    system: str | None


@dataclass
class Selection:
    """Which test traces to evaluate: a filter (default: the test split), optionally only the
    traces of one imported file, optionally the first `limit` conversations."""

    filter: TraceFilter = field(default_factory=lambda: TraceFilter(split="test"))
    file: str | None = None
    limit: int | None = None

    def key(self) -> dict:
        return {"filter": {k: v for k, v in asdict(self.filter).items() if v is not None},
                "file": self.file, "limit": self.limit}


def selection_for(test: str | None, selection: TraceFilter | None = None,
                  limit: int | None = None) -> Selection:
    """`--test`: an existing file is a file, anything else a full-text query, both within the
    selection (default: the test split). The selection's `limit` counts conversations."""
    from dataclasses import replace

    flt = selection or TraceFilter(split="test")
    limit = flt.limit if flt.limit is not None else limit
    flt = replace(flt, limit=None)
    if test and Path(test).is_file():
        return Selection(flt, file=str(Path(test).resolve()), limit=limit)
    if test:
        flt = replace(flt, text=" ".join(t for t in (flt.text, test) if t))
    return Selection(flt, limit=limit)


def prepare_selection(db: Database, sel: Selection) -> dict | None:
    """Import `sel.file` into the test split (idempotent: stored traces are not added again)."""
    if sel.file is None:
        return None
    from workbench.importing import import_files, report_dict

    (report,) = import_files(db, [sel.file], split="test")
    return report_dict(report)


def trace_ids(db: Database, sel: Selection) -> list[int]:
    where, params = sel.filter.where()
    sql = f"SELECT id FROM traces WHERE {where}"
    if sel.file is not None:
        sql += " AND id IN (SELECT trace_id FROM trace_sources WHERE path = ?)"
        params = [*params, sel.file]
    sql += " ORDER BY id"
    if sel.limit is not None:
        sql += " LIMIT ?"
        params = [*params, sel.limit]
    return [r[0] for r in db.execute(sql, params).fetchall()]


def expand_pairs(db: Database, ids: Sequence[int]) -> Iterator[list[Pair]]:
    """Pairs of each trace, a conversation at a time, turns in order."""
    for start in range(0, len(ids), 200):
        chunk = list(ids[start:start + 200])
        for conv in conversations(db, TraceFilter(trace_ids=chunk)):
            yield [Pair(conv.trace_id, i, prompt, turn_answer(ref), ref, conv.tools, conv.system)
                   for i, prompt, ref in per_turn_pairs(conv.messages)]


def call_label(text: str | None, completion: Completion | None = None) -> str:
    """The function name a reply calls, or what kind of non-call it is (confusion matrix)."""
    calls = parse_tool_calls(text)
    if len(calls) == 1:
        return calls[0]["name"]
    if calls:
        return MULTIPLE
    if completion is not None and completion.malformed:
        return MALFORMED
    return NO_CALL


def reference_label(message: dict) -> str:
    calls = message.get("tool_calls") or []
    if len(calls) == 1:
        return calls[0]["function"]["name"]
    return MULTIPLE if calls else TEXT


# --------------------------------------------------------------------------------------- judge

JUDGE_SYSTEM = (
    "You grade one turn of a tool-calling assistant. Follow the rubric exactly. Answer with a"
    " JSON object {\"verdict\": \"good\" or \"bad\", \"reason\": \"...\"} and nothing else.")


class Judge:
    """LLM-as-a-judge through an OpenAI-compatible endpoint; replies cached by content hash."""

    def __init__(self, ctx: JobContext, endpoint: Any, rubric: str | None,
                 client: Any = None) -> None:
        self.ctx, self.endpoint = ctx, endpoint
        self.rubric = rubric or ("Score 'good' when the prediction calls the same function as"
                                 " the reference with arguments of the same meaning, else 'bad'.")
        self._client = client
        self.calls = 0  # endpoint calls made (cache misses)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.endpoint.client()
        return self._client

    def prompt(self, conversation: list[dict], reference: str, prediction: str) -> str:
        return (f"# Rubric\n{self.rubric}\n\n# Conversation so far\n"
                f"{json.dumps(to_benchmark_question(conversation), ensure_ascii=False)}\n\n"
                f"# Reference\n{reference}\n\n# Prediction\n{prediction}\n")

    def score(self, conversation: list[dict], reference: str, prediction: str) -> tuple[float, str]:
        prompt = self.prompt(conversation, reference, prediction)
        inputs = {"base_url": self.endpoint.base_url, "model": self.endpoint.model,
                  "max_tokens": self.endpoint.max_tokens, "system": JUDGE_SYSTEM,
                  "prompt": prompt}

        def ask() -> dict:
            resp = self.client.chat.completions.create(
                model=self.endpoint.model, temperature=0.0, max_tokens=self.endpoint.max_tokens,
                messages=[{"role": "system", "content": JUDGE_SYSTEM},
                          {"role": "user", "content": prompt}])
            self.calls += 1
            reply = resp.choices[0].message.content or ""
            return {"reply": reply, "score": parse_verdict(reply)}

        unit = self.ctx.unit(JUDGE_UNIT, inputs, ask)
        return unit["score"], unit["reply"]


def parse_verdict(reply: str) -> float:
    """1.0 for good, 0.0 for bad or anything unclear (a judge must not reward noise)."""
    for obj in re.findall(r"\{.*?\}", reply, re.S):
        try:
            value = safe_json.loads(obj)
        except ValueError:
            continue
        if isinstance(value, dict):
            v = value.get("verdict", value.get("score"))
            if isinstance(v, str):
                return 1.0 if v.strip().lower() == "good" else 0.0
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return 1.0 if v >= 1 else 0.0
    words = re.findall(r"\b(good|bad)\b", reply.lower())
    return 1.0 if words and words[-1] == "good" else 0.0


# ---------------------------------------------------------------------------------------- run

def run_pairs(backend: ChatBackend, pairs: Sequence[Pair], *, max_tokens: int,
              judge: Judge | None = None) -> list[dict]:
    """Predict and score the pairs of one conversation, in order (KV cache reuse)."""
    rows = []
    for p in pairs:
        try:
            done = backend.complete(p.prompt, p.tools, p.system, max_tokens=max_tokens)
        except Exception as e:  # noqa: BLE001 - a failed turn is a scored miss, kept with its error
            done = Completion(text="", finish_reason="error", error=f"{type(e).__name__}: {e}")
        scores = score_pair(p.reference, done.text)
        details = {**done.details(), "reference_function": reference_label(p.ref_message),
                   "predicted_function": call_label(done.text, done)}
        row = {"trace_id": p.trace_id, "message_idx": p.message_idx, "reference": p.reference,
               "prediction": done.text, **scores, "details": details}
        if judge is not None:
            row["judge"], details["judge_reply"] = judge.score(p.prompt, p.reference, done.text)
        rows.append(row)
    return rows


def evaluate(db: Database, backend: ChatBackend, sel: Selection | None = None, *,
             max_tokens: int = 256, judge_endpoint: Any = None, judge_client: Any = None,
             listeners: list[Callable[[str, Any], None]] | None = None,
             resume: bool = False, model_id: int | None = None) -> dict:
    """Run an evaluation with a backend object as a job; returns the final job row (result:
    run id and metrics). The stored `eval` job kind runs the same body."""
    sel = sel or Selection()
    params = {"model": backend.name, "selection": sel.key(), "max_tokens": max_tokens,
              "judge": getattr(judge_endpoint, "name", None)}
    body = evaluation_body(backend, sel, max_tokens=max_tokens, judge_endpoint=judge_endpoint,
                           judge_client=judge_client, resume=resume, model_id=model_id)
    return run_job(db, "eval", body, params=params, listeners=listeners)


def evaluation_body(backend: ChatBackend, sel: Selection, *, max_tokens: int = 256,
                    judge_endpoint: Any = None, judge_client: Any = None, resume: bool = False,
                    model_id: int | None = None) -> Callable[[JobContext], dict]:
    """The job body of an evaluation. `resume` continues this job's own run when it has one,
    else the newest unfinished run of the same model, test selection and judge (cancelled,
    failed or killed): conversations it already scored are not predicted again."""
    judge_name = getattr(judge_endpoint, "name", None)

    def job(ctx: JobContext) -> dict:
        db = ctx.db
        imported = prepare_selection(db, sel)
        ids = trace_ids(db, sel)
        earlier = None
        if resume:
            earlier = (store.run_of_job(db, ctx.job_id)
                       or store.unfinished_run(db, backend.name, sel.key(), judge_name))
            if earlier is None:
                raise ValueError("nothing to resume: no unfinished evaluation run of"
                                 f" {backend.name} on this test selection")
        if earlier is not None:
            run_id = earlier["id"]
            ctx.log(f"resuming evaluation run {run_id}")
        else:
            if not ids:
                raise ValueError("no test traces match (import some with --split test, or"
                                 " pass --test FILE)")
            run_id = store.create_run(db, backend.name, model_id=model_id,
                                      test_selection=sel.key(), judge=judge_name,
                                      job_id=ctx.job_id)
        if imported:
            ctx.log(f"imported {imported['source']}: {imported['added']} new,"
                    f" {imported['duplicates']} already stored")
        note = getattr(backend, "template_note", None)
        if note:
            ctx.log(note)
        judge = None
        if judge_endpoint is not None:
            judge = Judge(ctx, judge_endpoint, task_context(db).rubric,
                          judge_client)
        conversations = list(expand_pairs(db, ids))
        total = sum(len(c) for c in conversations)
        scored = store.done_turns(db, run_id)   # a conversation's rows are stored together
        todo = [c for c in conversations
                if not all((p.trace_id, p.message_idx) in scored for p in c)]
        done = total - sum(len(c) for c in todo)
        ctx.progress(done, total, f"{len(ids)} conversations, {total} turns"
                     + (f", {done} already scored" if done else ""))
        for pairs in todo:
            rows = run_pairs(backend, pairs, max_tokens=max_tokens, judge=judge)
            store.add_results(db, run_id, rows)
            done += len(rows)
            ctx.progress(done, total, f"{done}/{total} turns")
        metrics = run_metrics(store.results(db, run_id))
        store.finish_run(db, run_id, metrics)
        return {"run_id": run_id, "metrics": metrics}

    return job


def run_metrics(rows: Sequence[dict]) -> dict:
    n = len(rows)
    out: dict[str, Any] = {"n": n}
    for key in METRICS:
        out[key] = sum(r[key] for r in rows) / n if n else 0.0
    judged = [r["judge"] for r in rows if r.get("judge") is not None]
    if judged:
        out["llm_as_a_judge"] = sum(judged) / len(judged)
    d = [r.get("details") or {} for r in rows]
    for key in ("prompt_tokens", "evaluated_tokens", "cached_tokens", "completion_tokens"):
        out[key] = sum(x.get(key) or 0 for x in d)
    out["seconds"] = round(sum(x.get("seconds") or 0 for x in d), 3)
    out["errors"] = sum(1 for x in d if x.get("error"))
    out["malformed"] = sum(1 for x in d if x.get("predicted_function") == MALFORMED)
    return out


# ------------------------------------------------------------------------------------- report

def confusion(rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    """reference function -> predicted function (or a non-call label) -> count."""
    matrix: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        d = r.get("details") or {}
        ref = d.get("reference_function") or _label_from_answer(r["reference"])
        pred = d.get("predicted_function") or call_label(r["prediction"])
        matrix[ref][pred] += 1
    return {ref: dict(sorted(c.items())) for ref, c in sorted(matrix.items())}


def _label_from_answer(answer: str) -> str:
    calls = parse_tool_calls(answer)
    return calls[0]["name"] if len(calls) == 1 else (MULTIPLE if calls else TEXT)


def worst_turns(rows: Sequence[dict], k: int = 10) -> list[dict]:
    def badness(r: dict) -> tuple:
        return (r["staged_tool_call"], 1.0 if r.get("judge") is None else r["judge"],
                r["rouge_l"], r["trace_id"], r["message_idx"])

    return [{k2: r[k2] for k2 in ("trace_id", "message_idx", "reference", "prediction",
                                  "staged_tool_call", "rouge_l", "judge")}
            for r in sorted(rows, key=badness)[:k]]


def report(db: Database, run_id: int, worst: int = 10) -> dict:
    run = store.get_run(db, run_id)
    if run is None:
        raise ValueError(f"no evaluation run {run_id}")
    rows = store.results(db, run_id)
    metrics = run["metrics"] or run_metrics(rows)
    prev = store.previous_run(db, run_id)
    delta = None
    if prev is not None:
        keys = [*METRICS, "llm_as_a_judge"]
        delta = {"run_id": prev["id"], "model_ref": prev["model_ref"],
                 "metrics": {k: metrics[k] - prev["metrics"][k] for k in keys
                             if k in metrics and k in (prev["metrics"] or {})}}
    return {"run_id": run_id, "model_ref": run["model_ref"], "selection": run["test_selection"],
            "judge": run["judge"], "metrics": metrics, "confusion": confusion(rows),
            "worst": worst_turns(rows, worst), "previous": delta}
