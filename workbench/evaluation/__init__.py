"""Evaluation: per-turn pairs from the store, predicted by a backend, scored like the benchmark.

* **Pairs.** Each selected test conversation (current labels) gives one pair per assistant
  turn: the messages before it as the prompt, :func:`workbench.conversations.messages.turn_answer` of the
  turn (its text and calls) as the reference (34 TFT test conversations -> 359 pairs). The
  system prompt is the conversation's own, else the task description
  (:func:`workbench.conversations.view.system_prompt`); tools are the trace's own, else the
  store's current tool schemas.
* **Order.** Turns of a conversation are predicted in order, so a llama.cpp backend reuses the
  KV cache of the previous turn (its prompt is a token prefix of the next one).
* **Scores.** :func:`workbench.evaluation.metrics.score_turn`: every kind of turn (text, one call,
  several calls at once, text with calls); each mean is over the turns its metric applies to.
  With a judge endpoint also ``llm_as_a_judge`` (1/0) from the task's rubric, the
  conversation's policy and the reference, each judge reply cached by content hash in
  ``job_units`` so a rerun or a resumed job never pays twice. A batch judge (an endpoint
  with ``batch = true``) scores the run's turns after they are all predicted, as one batch.
* **Failures are not scores.** A turn the model gave no reply for (closed port, 500, 429,
  timeout, an invalid reply) is stored with its error and left out of the means; a run whose
  turns mostly failed ends ``failed`` and is never a baseline or a model's score. A turn the
  judge failed on is counted as unjudged, not scored. Error text is redacted
  (:mod:`workbench.core.redaction`) before it is stored.
* **Storage.** A run is an `eval` job and an ``eval_runs`` row; each turn an
  ``eval_results`` row, written per conversation (a killed run keeps what it finished).
* **Report.** Means, the decision confusion matrix (text, or which tools), the worst turns,
  the floor and the change against the previous finished run on the same selection.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from db import evals as store
from db.queries import TraceFilter
from workbench.core import safe_json
from workbench.models.chat_backend import ChatBackend, Completion, create_completion
from workbench.conversations.view import conversations, task_context
from workbench.jobs.context import JobContext, content_key
from workbench.conversations.messages import per_turn_pairs, to_benchmark_question, turn_answer
from workbench.evaluation.metrics import (CALL_METRICS, MALFORMED, TURN_METRICS, constant_floor,
                               decision_confusion, mean_scores, read_turn, score_turn,
                               turn_score)
from workbench.core.redaction import redact, redact_secrets
from workbench.models.replies import ReplyRefused, check_size, parse_completion

JUDGE_UNIT = "judge"
FAILED_SHARE = 0.5   # a run with more than this share of turns without a reply has failed


class EvaluationFailed(Exception):
    """Most turns got no reply: the run says nothing about the model."""


@dataclass
class Pair:
    trace_id: int
    message_idx: int
    prompt: list[dict]
    reference: str
    ref_message: dict
    tools: list[dict] | None
    system: str | None       # the conversation's system prompt (its own, else the task's)


@dataclass
class Selection:
    """Which test traces to evaluate: a filter (default: the test split), optionally only the
    traces of one imported file, optionally the first `limit` conversations."""

    filter: TraceFilter = field(default_factory=lambda: TraceFilter(split="test"))
    file: str | None = None
    limit: int | None = None
    move_to_test: bool = False   # the file's traces stored in another split move to test

    def key(self) -> dict:
        return {"filter": {k: v for k, v in asdict(self.filter).items() if v is not None},
                "file": self.file, "limit": self.limit}


def selection_for(test: str | None, selection: TraceFilter | None = None,
                  limit: int | None = None, move_to_test: bool = False) -> Selection:
    """`--test`: an existing file is a file, anything else a full-text query, both within the
    selection (default: the test split). The selection's `limit` counts conversations."""
    from dataclasses import replace

    flt = selection or TraceFilter(split="test")
    limit = flt.limit if flt.limit is not None else limit
    flt = replace(flt, limit=None)
    if test and Path(test).is_file():
        return Selection(flt, file=str(Path(test).resolve()), limit=limit,
                         move_to_test=move_to_test)
    if test:
        flt = replace(flt, text=" ".join(t for t in (flt.text, test) if t))
    return Selection(flt, limit=limit)


class TestLeak(ValueError):
    """Traces of a test file are stored in another split: they would be trained on."""


def prepare_selection(db: Database, sel: Selection) -> dict | None:
    """Import `sel.file` into the test split (idempotent: stored traces are not added again).

    A trace of the file already stored in another split (train, unassigned) is a leak: the
    model would be tested on what it was trained on. Unless `sel.move_to_test`, that refuses
    the whole import (nothing changes) with the overlapping traces named; with it they move to
    the test split."""
    if sel.file is None:
        return None
    from workbench.traces.importing import import_files, report_dict

    moved: list[int] = []

    def no_leak(db: Database, _reports: list) -> None:
        """Inside the import's completing transaction: refusing here imports nothing."""
        overlap = store.stored_outside_test(db, sel.file)
        if overlap and not sel.move_to_test:
            shown = ", ".join(f"line {line}: trace {tid} ({split})"
                              for line, tid, split in overlap[:10])
            more = f" and {len(overlap) - 10} more" if len(overlap) > 10 else ""
            raise TestLeak(
                f"{sel.file}: {len(overlap)} test traces are already stored in another split"
                f" and would be trained on (a leak): {shown}{more}. Nothing was evaluated or"
                " imported; pass --move-to-test to move them to the test split")
        moved.extend(sorted({tid for _, tid, _ in overlap}))
        if moved:
            store.put_in_test(db, moved)

    (report,) = import_files(db, [sel.file], split="test", before_complete=no_leak)
    return {**report_dict(report), "moved_to_test": moved}


def trace_ids(db: Database, sel: Selection) -> list[int]:
    where, params = sel.filter.where()
    return store.selected_trace_ids(db, where, params, path=sel.file, limit=sel.limit)


def expand_pairs(db: Database, ids: Sequence[int]) -> Iterator[list[Pair]]:
    """Pairs of each trace, a conversation at a time, turns in order."""
    for start in range(0, len(ids), 200):
        chunk = list(ids[start:start + 200])
        for conv in conversations(db, TraceFilter(trace_ids=chunk)):
            yield [Pair(conv.trace_id, i, prompt, turn_answer(ref), ref, conv.tools,
                        conv.system_prompt)
                   for i, prompt, ref in per_turn_pairs(conv.messages)]


def call_label(text: str | None, completion: Completion | None = None) -> str:
    """A reply's decision (`metrics.Turn.decision`: "text", or which tools it calls), or
    "(malformed)" for a call that does not parse: the confusion matrix's labels."""
    label = read_turn(text).decision
    if completion is not None and completion.malformed and not completion.calls:
        return MALFORMED
    return label


# --------------------------------------------------------------------------------------- judge

JUDGE_SYSTEM = (
    "You grade one turn of a tool-calling assistant. Follow the rubric exactly. Answer with a"
    " JSON object {\"verdict\": \"good\" or \"bad\", \"reason\": \"...\"} and nothing else.")
DEFAULT_RUBRIC = (
    "Score 'good' when the prediction makes the reference's decision (a text reply, or calls to"
    " the same functions) and keeps to the policy: calls with arguments of the same meaning, a"
    " text reply that says what the reference says in substance. Else 'bad'.")


class Judge:
    """LLM-as-a-judge through an OpenAI-compatible endpoint; replies cached by content hash."""

    def __init__(self, ctx: JobContext, endpoint: Any, rubric: str | None,
                 client: Any = None) -> None:
        self.ctx, self.endpoint = ctx, endpoint
        self.rubric = rubric or DEFAULT_RUBRIC
        self._client = client
        self._llm: Any = None   # llama.cpp, for a local judge
        self.calls = 0  # endpoint calls made (cache misses)
        self.batch_failed: dict[str, str] = {}   # unit key -> why its batch gave no reply

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.endpoint.client()
        return self._client

    def _reply(self, messages: list[dict]) -> str:
        """The judge's reply text: over HTTP, or in-process for `local` / `local:MODEL`."""
        if getattr(self.endpoint, "is_local", False):
            if self._llm is None:
                from llama_cpp import Llama

                self._llm = Llama(model_path=self.endpoint.gguf, n_ctx=8192, verbose=False)
            resp = self._llm.create_chat_completion(messages=messages, temperature=0.0,
                                                    max_tokens=self.endpoint.max_tokens)
            return resp["choices"][0]["message"].get("content") or ""
        resp = create_completion(self.client, model=self.endpoint.model, temperature=0.0,
                                 max_tokens=self.endpoint.max_tokens, messages=messages)
        return resp.choices[0].message.content or ""

    def prompt(self, conversation: list[dict], reference: str, prediction: str,
               policy: str | None = None) -> str:
        """The rubric, the policy (the conversation's system prompt, given once), the
        conversation before the turn, the reference and the prediction."""
        if conversation and conversation[0]["role"] == "system":
            policy, conversation = conversation[0]["content"], conversation[1:]
        head = f"# Rubric\n{self.rubric}\n\n"
        if policy:
            head += f"# Policy (the assistant's system prompt)\n{policy}\n\n"
        return (f"{head}# Conversation so far\n"
                f"{json.dumps(to_benchmark_question(conversation), ensure_ascii=False)}\n\n"
                f"# Reference\n{reference}\n\n# Prediction\n{prediction}\n")

    def _inputs(self, prompt: str) -> dict:
        inputs = {"base_url": self.endpoint.base_url, "model": self.endpoint.model,
                  "max_tokens": self.endpoint.max_tokens, "system": JUDGE_SYSTEM,
                  "prompt": prompt}
        if getattr(self.endpoint, "gguf", None):   # `local` / `local:MODEL`: the file counts
            inputs["gguf"] = self.endpoint.gguf
        return inputs

    @staticmethod
    def _messages(prompt: str) -> list[dict]:
        return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]

    def score(self, conversation: list[dict], reference: str, prediction: str,
              policy: str | None = None) -> tuple[float, str]:
        prompt = self.prompt(conversation, reference, prediction, policy)
        inputs = self._inputs(prompt)

        def ask() -> dict:
            if getattr(self.endpoint, "batch", False):   # its replies came in a batch
                raise RuntimeError(self.batch_failed.get(content_key(inputs),
                                                         "asked outside a batch"))
            self.ctx.check_cancel()   # a stopped job asks nothing more
            reply = self._reply(self._messages(prompt))
            self.calls += 1
            reply = redact_secrets(reply)   # a reply that echoes a key is not stored with it
            return {"reply": reply, "score": parse_verdict(reply)}

        unit = self.ctx.unit(JUDGE_UNIT, inputs, ask)
        return unit["score"], unit["reply"]

    def judge_ahead(self, asks: list[tuple[list[dict], str, str, str | None]]) -> None:
        """A batch judge (`batch = true`): the judgements not yet stored (conversation,
        reference, prediction, policy) go as one batch; each reply is read as online and stored
        as its unit, and a request without one is remembered for `score` to fail with."""
        from workbench.models.batch_calls import BatchCaller

        todo: dict[str, tuple[dict, dict]] = {}
        for conversation, reference, prediction, policy in asks:
            prompt = self.prompt(conversation, reference, prediction, policy)
            inputs = self._inputs(prompt)
            if not self.ctx.has_unit(JUDGE_UNIT, inputs):
                todo[content_key(inputs)] = (inputs, {
                    "model": self.endpoint.model, "messages": self._messages(prompt),
                    "temperature": 0.0, "max_tokens": self.endpoint.max_tokens})
        if not todo:
            return
        self.ctx.log(f"judge {self.endpoint.name}: {len(todo)} judgements go as a batch")
        out = BatchCaller(self.ctx, self.endpoint).run({k: b for k, (_, b) in todo.items()})
        for key, (inputs, _) in todo.items():
            try:
                if key not in out.replies:
                    raise ReplyRefused(out.errors.get(key, "no reply in its batch"))
                data = json.dumps(out.replies[key]).encode()
                check_size(len(data), self.endpoint.max_reply_bytes)
                reply = redact_secrets(parse_completion(data).content or "")
            except ReplyRefused as e:
                self.batch_failed[key] = f"batch: {e}"
                continue
            self.ctx.save_unit(JUDGE_UNIT, inputs, {"reply": reply, "score": parse_verdict(reply)})
            self.ctx.units_reused -= 1    # read back once by `score`: that is no reuse
            self.calls += 1


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

def error_text(e: BaseException) -> str:
    """One redacted line for a failed call: the exception's type and message."""
    return redact(f"{type(e).__name__}: {e}")


def run_pairs(backend: ChatBackend, pairs: Sequence[Pair], *, max_tokens: int,
              judge: Judge | None = None) -> Iterator[dict]:
    """Predict and score the pairs of one conversation, in order (KV cache reuse), yielding
    each turn's row as soon as it is scored: the caller stores it and may stop between turns.

    A turn without a reply keeps its (redacted) error in `details.error` and is not judged; a
    turn the judge failed on keeps `details.judge_error` and no judge score."""
    for p in pairs:
        try:
            done = backend.complete(p.prompt, p.tools, p.system, max_tokens=max_tokens)
        except Exception as e:  # noqa: BLE001 - a failed turn is kept with its error, not scored
            done = Completion(text="", finish_reason="error", error=error_text(e))
        if done.error:
            done.error = redact(done.error)
        scores = score_turn(p.reference, done.text)
        details = {**done.details(), "reference_function": scores["reference_decision"],
                   "predicted_function": call_label(done.text, done),
                   "decision": scores["decision"], "text_rouge_l": scores["text_rouge_l"],
                   "call_turn": scores["staged_tool_call"] is not None}
        row = {"trace_id": p.trace_id, "message_idx": p.message_idx, "reference": p.reference,
               "prediction": done.text, "rouge_l": scores["rouge_l"], "details": details,
               **{k: scores[k] or 0.0 for k in CALL_METRICS}}   # columns hold 0 off call turns
        if judge is not None and not done.error:
            try:
                row["judge"], details["judge_reply"] = judge.score(p.prompt, p.reference,
                                                                   done.text, p.system)
            except Exception as e:  # noqa: BLE001 - an unjudged turn is counted, not scored
                row["judge"], details["judge_error"] = None, error_text(e)
        yield row


def judge_stored(db: Any, run_id: int, judge: Judge, conversations: list[list[Pair]]) -> None:
    """A batch judge scores the run's stored turns it has not judged, all in one batch (a
    resumed run collects the same batch); a turn whose judgement failed keeps
    `details.judge_error`, not a score."""
    pairs = {(p.trace_id, p.message_idx): p for c in conversations for p in c}
    rows = [r for r in store.results(db, run_id) if r["judge"] is None
            and (r["trace_id"], r["message_idx"]) in pairs
            and not (r["details"] or {}).get("error")
            and not (r["details"] or {}).get("judge_error")]
    asks = [(pairs[k].prompt, r["reference"], r["prediction"], pairs[k].system)
            for r in rows for k in [(r["trace_id"], r["message_idx"])]]
    judge.judge_ahead(asks)
    for row, ask in zip(rows, asks):
        details = dict(row["details"] or {})
        try:
            row["judge"], details["judge_reply"] = judge.score(*ask)
        except Exception as e:  # noqa: BLE001 - an unjudged turn is counted, not scored
            row["judge"], details["judge_error"] = None, error_text(e)
        row["details"] = details
    store.add_results(db, run_id, rows)


def evaluation_body(backend: ChatBackend, sel: Selection, *, max_tokens: int = 256,
                    judge_endpoint: Any = None, judge_client: Any = None, resume: bool = False,
                    model_id: int | None = None) -> Callable[[JobContext], dict]:
    """The job body of an evaluation. `resume` continues this job's own run when it has one,
    else the newest unfinished run of the same model, test selection and judge (cancelled,
    failed or killed): turns it already scored are not predicted again."""
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
            if imported["moved_to_test"]:
                ctx.log(f"moved {len(imported['moved_to_test'])} traces of the file to the test"
                        f" split (--move-to-test): {imported['moved_to_test']}")
        note = getattr(backend, "template_note", None)
        if note:
            ctx.log(note)
        judge = None
        if judge_endpoint is not None:
            judge = Judge(ctx, judge_endpoint, task_context(db).rubric,
                          judge_client)
        conversations = list(expand_pairs(db, ids))
        total = sum(len(c) for c in conversations)
        scored = store.done_turns(db, run_id)   # each turn's row is stored as it is scored
        todo = [[p for p in c if (p.trace_id, p.message_idx) not in scored]
                for c in conversations]
        done = total - sum(len(c) for c in todo)
        ctx.progress(done, total, f"{len(ids)} conversations, {total} turns"
                     + (f", {done} already scored" if done else ""))
        batch_judge = judge if getattr(judge_endpoint, "batch", False) else None
        for pairs in todo:
            # a cancel is seen between model calls: progress raises before the next turn
            for row in run_pairs(backend, pairs, max_tokens=max_tokens,
                                 judge=None if batch_judge else judge):
                store.add_results(db, run_id, [row])
                done += 1
                ctx.progress(done, total, f"{done}/{total} turns")
        if batch_judge is not None:
            judge_stored(db, run_id, batch_judge, conversations)
        rows = store.results(db, run_id)
        metrics = run_metrics(rows)
        if metrics["errors"]:
            ctx.log(f"{metrics['errors']} of {metrics['turns']} turns got no reply: "
                    + error_summary(rows))
        if metrics.get("unjudged"):
            ctx.log(f"{metrics['unjudged']} turns unjudged (the judge failed): "
                    + error_summary(rows, "judge_error"))
        if metrics["errors"] > FAILED_SHARE * metrics["turns"]:
            store.finish_run(db, run_id, metrics, status="failed")
            raise EvaluationFailed(
                f"{metrics['errors']} of {metrics['turns']} turns got no reply from"
                f" {backend.name}, so run {run_id} is marked failed and is not compared with"
                f" other runs ({error_summary(rows)}); fix the endpoint and resume with"
                " --resume (only the failed turns are asked again)")
        store.finish_run(db, run_id, metrics)
        return {"run_id": run_id, "metrics": metrics}

    return job


def _is_error(row: dict) -> bool:
    return bool((row.get("details") or {}).get("error"))


def error_summary(rows: Sequence[dict], key: str = "error", k: int = 3) -> str:
    """The most common error texts with their counts (each cut to 200 characters)."""
    counts = Counter(str((r.get("details") or {}).get(key))[:200] for r in rows
                     if (r.get("details") or {}).get(key))
    return "; ".join(f"{text} ({n} turns)" for text, n in counts.most_common(k))


def row_scores(row: dict) -> dict:
    """A stored turn's scores (`metrics.score_turn`'s keys), None where a metric does not
    apply. Rows stored before turns had kinds were all scored as call turns."""
    d = row.get("details") or {}
    if "decision" not in d:
        return {**{k: row[k] for k in (*CALL_METRICS, "rouge_l")}, "decision": None,
                "text_rouge_l": None}
    call = d.get("call_turn", True)
    return {**{k: row[k] if call else None for k in CALL_METRICS}, "rouge_l": row["rouge_l"],
            "decision": d["decision"], "text_rouge_l": d.get("text_rouge_l")}


def run_metrics(rows: Sequence[dict]) -> dict:
    """Means over the turns that got a reply (`n`), each metric over the turns it applies to
    (`call_turns`, `text_turns`); turns without a reply are `errors`, turns the judge failed on
    `unjudged`: neither is scored."""
    answered = [r for r in rows if not _is_error(r)]
    n = len(answered)
    out: dict[str, Any] = {"n": n, "turns": len(rows), "errors": len(rows) - n,
                           **mean_scores([row_scores(r) for r in answered])}
    judged = [r["judge"] for r in answered if r.get("judge") is not None]
    if judged:
        out["llm_as_a_judge"] = sum(judged) / len(judged)
    d = [r.get("details") or {} for r in rows]
    out["unjudged"] = sum(1 for r in answered if (r.get("details") or {}).get("judge_error"))
    for key in ("prompt_tokens", "evaluated_tokens", "cached_tokens", "completion_tokens"):
        out[key] = sum(x.get(key) or 0 for x in d)
    out["seconds"] = round(sum(x.get("seconds") or 0 for x in d), 3)
    out["malformed"] = sum(1 for x in d if x.get("predicted_function") == MALFORMED)
    return out


# ------------------------------------------------------------------------------------- report

def confusion(rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    """reference decision -> predicted decision -> count (a decision: "text", or which tools
    a turn calls; "(malformed)" for a call that does not parse)."""
    return decision_confusion(
        ((r.get("details") or {}).get("reference_function") or reference_decision(r),
         (r.get("details") or {}).get("predicted_function") or call_label(r["prediction"]))
        for r in rows)


def reference_decision(row: dict) -> str:
    """A stored turn's reference decision (rows stored before turns had kinds lack it)."""
    return (row.get("details") or {}).get("reference_function") or read_turn(
        row["reference"]).decision


def worst_turns(rows: Sequence[dict], k: int = 10) -> list[dict]:
    """The k turns scored worst: a wrong decision first, then the turn's score (staged on a
    call turn, the text's ROUGE-L on a text turn), the judge, ROUGE-L."""
    def badness(pair: tuple[dict, dict]) -> tuple:
        r, s = pair
        return (1.0 if s["decision"] is None else s["decision"], turn_score(s),
                1.0 if r.get("judge") is None else r["judge"], r["rouge_l"], r["trace_id"],
                r["message_idx"])

    scored = sorted(((r, row_scores(r)) for r in rows), key=badness)[:k]
    return [{**{k2: r[k2] for k2 in ("trace_id", "message_idx", "reference", "prediction",
                                     "rouge_l", "judge")},
             **{k2: s[k2] for k2 in ("decision", "staged_tool_call", "text_rouge_l")}}
            for r, s in scored]


def report(db: Database, run_id: int, worst: int = 10) -> dict:
    run = store.get_run(db, run_id)
    if run is None:
        raise ValueError(f"no evaluation run {run_id}")
    rows = store.results(db, run_id)
    metrics = run["metrics"] or run_metrics(rows)
    failed = [r for r in rows if _is_error(r)]
    rows = [r for r in rows if not _is_error(r)]   # the matrix and worst turns: replies only
    prev = store.previous_run(db, run_id)
    delta = None
    if prev is not None and run.get("status") != "failed":
        keys = [*TURN_METRICS, "llm_as_a_judge"]
        delta = {"run_id": prev["id"], "model_ref": prev["model_ref"],
                 "metrics": {k: metrics[k] - prev["metrics"][k] for k in keys
                             if k in metrics and k in (prev["metrics"] or {})}}
    return {"run_id": run_id, "model_ref": run["model_ref"], "selection": run["test_selection"],
            "status": run.get("status"), "judge": run["judge"], "metrics": metrics,
            "errors": [{"trace_id": r["trace_id"], "message_idx": r["message_idx"],
                        "error": r["details"]["error"]} for r in failed[:worst]],
            "error_summary": error_summary(failed),
            "unjudged_summary": error_summary(rows, "judge_error"),
            "confusion": confusion(rows), "worst": worst_turns(rows, worst), "previous": delta,
            "floor": constant_floor([r["reference"] for r in rows])}
