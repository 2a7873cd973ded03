"""Per-turn metrics of the TFT (Training from Traces) benchmark, so our numbers compare to its.

Definitions follow distil labs' documentation of the metric suite the benchmark reports
(distil-labs/distil-cli-skill, `evaluation-metrics.md`) and were checked row by row against
the per-example scores the benchmark published (distil-labs/distil-tft-benchmarking,
`scenario-2-noisy-labels/distil-workspace/*-download.jsonl`, 311 rows, bare-JSON and
`<tool_call>` formats): staged, binary and equivalence agree on every row, ROUGE-L to 1e-9.

Choices where the benchmark is silent, made so a score never rewards a malformed row:

* The answer (reference) must hold exactly one tool call; if it does not, every tool metric
  is 0 (a broken reference row scores like a miss instead of vanishing from the mean).
* The prediction must hold exactly one call too: an empty, unparseable or multi-call reply
  scores 0 (the benchmark's stage one is "one call each side").
* Values compare as JSON, not as Python: `"1" != 1` and `true != 1` (Python says
  `True == 1`), while `1 == 1.0`; key order never matters.
* `tool_call_equivalence` is the benchmark's schema-aware metric (an argument set to its
  schema default equals omitting it). Without tool schemas here it equals `binary_tool_call`.

Every kind of assistant turn (:func:`score_turn`, what `score`, `eval`, the floor and the
pipeline report use): a turn is its text and its calls (:func:`read_turn`). `decision` (every
turn) is 1.0 when the prediction decides as the reference did: a text reply, or calls to the
same multiset of tools. The call metrics apply to call turns: one reference call is scored
exactly as above; several calls made at once are a set, paired by best match, the sum over
the larger count. `text_rouge_l` (turns whose reference has text) is ROUGE-L of the texts.
`rouge_l` stays the benchmark's, on the raw strings, over every turn. A mean is over the turns
its metric applies to, so identical predictions score 1.0 on every metric.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.core import safe_json
from workbench.core.errors import InputError
from workbench.conversations.toolcalls import ToolCall, format_tool_call, parse_tool_calls

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

METRICS = ("staged_tool_call", "tool_call_equivalence", "function_match", "rouge_l")
CALL_METRICS = ("staged_tool_call", "tool_call_equivalence", "function_match")

_scorer: RougeScorer | None = None


def _single_call(text: str | None) -> ToolCall | None:
    calls = parse_tool_calls(text)
    return calls[0] if len(calls) == 1 else None


def staged_tool_call(answer: str, prediction: str) -> float:
    """Partial credit in quarters: parses, right function, right argument names, right values."""
    ref, pred = _single_call(answer), _single_call(prediction)
    if ref is None or pred is None:
        return 0.0
    return _call_staged(ref, pred)


def tool_call_equivalence(answer: str, prediction: str) -> float:
    """1.0 for the same function with equal arguments, else 0.0."""
    return 1.0 if staged_tool_call(answer, prediction) == 1.0 else 0.0


binary_tool_call = tool_call_equivalence


def function_match(answer: str, prediction: str) -> float:
    """1.0 when both sides hold one call to the same function (arguments ignored)."""
    ref, pred = _single_call(answer), _single_call(prediction)
    return 1.0 if ref is not None and pred is not None and ref["name"] == pred["name"] else 0.0


def rouge_l(answer: str, prediction: str) -> float:
    """ROUGE-L F1 on the raw strings, as the benchmark's `rouge` column (JSON syntax included)."""
    global _scorer
    if _scorer is None:  # importing rouge_score pulls in nltk: pay for it only when used
        from rouge_score.rouge_scorer import RougeScorer

        _scorer = RougeScorer(["rougeL"], use_stemmer=True)
    return _scorer.score(answer, prediction)["rougeL"].fmeasure


def score_pair(answer: str, prediction: str | None) -> dict[str, float]:
    """The benchmark's four metrics for one call turn; a None prediction counts as empty."""
    prediction = prediction or ""
    staged = staged_tool_call(answer, prediction)
    return {
        "staged_tool_call": staged,
        "tool_call_equivalence": 1.0 if staged == 1.0 else 0.0,
        "function_match": function_match(answer, prediction),
        "rouge_l": rouge_l(answer, prediction),
    }


# ------------------------------------------------------------------------ every kind of turn

TURN_METRICS = ("decision", *CALL_METRICS, "rouge_l", "text_rouge_l")
TEXT = "text"                     # the decision of a turn without calls
EMPTY = "(empty)"                 # neither text nor a call
MALFORMED = "(malformed)"         # a reply that tries to call but no call parses out of it
_TAGGED = re.compile(r"<tool_call>.*?(?:</tool_call>|(?=<tool_call>)|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Turn:
    """An assistant turn read from its answer string: its text and its calls, in order.
    `malformed`: it tries to call (a `<tool_call>` tag, or it opens with `{`) but no call
    parses out of it."""

    text: str
    calls: tuple[ToolCall, ...]
    malformed: bool = False

    @property
    def decision(self) -> str:
        """What the turn decided: "text", or which tools it calls (names sorted, " + ")."""
        if self.calls:
            return " + ".join(sorted(c["name"] for c in self.calls))
        return MALFORMED if self.malformed else TEXT if self.text else EMPTY

    @property
    def calls_turn(self) -> bool:
        """Scored by the call metrics: it calls, or tries to (a broken call is a miss)."""
        return bool(self.calls) or self.malformed


def read_turn(answer: str | None) -> Turn:
    """The turn an answer string holds (as `messages.turn_answer` writes it): `<tool_call>`
    blocks are its calls and the rest its text; without tags, a string that holds calls (the
    benchmark's bare `{"name", "parameters"}`) is those calls, anything else is text."""
    answer = answer or ""
    calls = parse_tool_calls(answer)
    if "<tool_call>" in answer:
        return Turn(_TAGGED.sub("", answer).strip(), tuple(calls), malformed=not calls)
    if calls:
        return Turn("", tuple(calls))
    return Turn(answer.strip(), (), malformed=answer.lstrip().startswith("{"))


def text_similarity(reference: str, prediction: str) -> float:
    """ROUGE-L F1 of two replies' texts; equal texts score 1.0 even without a word in them."""
    if reference.strip() == prediction.strip():
        return 1.0
    return rouge_l(reference, prediction)


def _call_staged(ref: ToolCall, pred: ToolCall) -> float:
    """The benchmark's stages for two parsed calls."""
    if pred["name"] != ref["name"]:
        return 0.25
    if pred["arguments"].keys() != ref["arguments"].keys():
        return 0.5
    return 1.0 if _json_equal(pred["arguments"], ref["arguments"]) else 0.75


def match_calls(ref: Sequence[ToolCall], pred: Sequence[ToolCall]) -> list[tuple[int, int]]:
    """Pairs (reference index, prediction index) that maximise the summed staged score: calls
    made at once are a set, so their order never matters."""
    if not ref or not pred:
        return []
    from scipy.optimize import linear_sum_assignment

    gain = [[_call_staged(r, p) for p in pred] for r in ref]
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return [(int(i), int(j)) for i, j in zip(rows, cols)]


def call_scores(ref: Turn, pred: Turn) -> dict[str, float]:
    """staged, equivalence and function match of a call turn. One reference call: exactly the
    benchmark (the prediction must be one call). Several: the prediction's calls are paired
    with the reference's by best match, each pair scored as the benchmark scores a call, and
    the sum divided by the larger count (a missing or an extra call scores 0)."""
    if len(ref.calls) == 1:
        if len(pred.calls) != 1:
            return {"staged_tool_call": 0.0, "tool_call_equivalence": 0.0, "function_match": 0.0}
        staged = _call_staged(ref.calls[0], pred.calls[0])
        return {"staged_tool_call": staged, "tool_call_equivalence": float(staged == 1.0),
                "function_match": float(staged >= 0.5)}
    size = max(len(ref.calls), len(pred.calls))
    pairs = [(ref.calls[i], pred.calls[j]) for i, j in match_calls(ref.calls, pred.calls)]
    staged = sum(_call_staged(r, p) for r, p in pairs) / size if size else 0.0
    return {"staged_tool_call": staged, "tool_call_equivalence": float(staged == 1.0),
            "function_match": (sum(1.0 for r, p in pairs if r["name"] == p["name"]) / size
                               if size else 0.0)}


def score_turn(answer: str, prediction: str | None) -> dict[str, Any]:
    """Every metric of one turn, None where it does not apply: the call metrics to a
    reference that calls (or tries to), `text_rouge_l` to a reference with text;
    `decision` and the benchmark's raw-string `rouge_l` to every turn."""
    prediction = prediction or ""
    ref, pred = read_turn(answer), read_turn(prediction)
    calls = call_scores(ref, pred) if ref.calls_turn else dict.fromkeys(CALL_METRICS)
    return {"decision": float(ref.decision == pred.decision and not ref.malformed), **calls,
            "rouge_l": rouge_l(answer, prediction),
            "text_rouge_l": text_similarity(ref.text, pred.text) if ref.text else None,
            "reference_decision": ref.decision, "predicted_decision": pred.decision}


HEADLINE = {"staged_tool_call": "staged", "text_rouge_l": "text", "decision": "decision"}


def headline(scores: dict[str, Any]) -> tuple[str, float]:
    """One number for a turn (replay, worst turns) and its name: staged on a call turn, else
    the text's ROUGE-L, else the decision."""
    for key, name in HEADLINE.items():
        if scores.get(key) is not None:
            return name, scores[key]
    return "decision", 0.0


def turn_score(scores: dict[str, Any]) -> float:
    return headline(scores)[1]


def mean_scores(scored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each metric's mean over the turns it applies to (absent where it applies to none), and
    how many turns that is: `call_turns`, `text_turns`."""
    out: dict[str, Any] = {}
    for key in TURN_METRICS:
        values = [s[key] for s in scored if s.get(key) is not None]
        if values:
            out[key] = sum(values) / len(values)
    out["call_turns"] = sum(1 for s in scored if s.get("staged_tool_call") is not None)
    out["text_turns"] = sum(1 for s in scored if s.get("text_rouge_l") is not None)
    return out


def score_rows(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per-row scores of every kind of turn (input order) and their means (`mean_scores`)."""
    scored = [score_turn(row["answer"], row.get("prediction")) for row in rows]
    return {"n": len(scored), **mean_scores(scored), "rows": scored}


def decision_confusion(pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """reference decision -> predicted decision -> count."""
    matrix: dict[str, Counter] = {}
    for ref, pred in pairs:
        matrix.setdefault(ref, Counter())[pred] += 1
    return {ref: dict(sorted(c.items())) for ref, c in sorted(matrix.items())}


def constant_floor(answers: Sequence[str]) -> dict[str, Any] | None:
    """What a model that learned only what is commonest scores, metric by metric, with the
    definitions of :func:`score_turn` over the same turns:

    * `decision`: the commonest reference decision on every turn;
    * the call metrics: the same call on every call turn, the commonest reference call shape
      (function and argument names), each argument at its commonest value there (where one
      tool dominates, a reply tool on most turns, this sits far above zero);
    * `text_rouge_l`: the commonest reference text on every text turn.

    A mean is worth something only beside it. None for no answers."""
    if not answers:
        return None
    turns = [read_turn(a) for a in answers]
    decisions = Counter(t.decision for t in turns)
    label, count = decisions.most_common(1)[0]
    out: dict[str, Any] = {"turns": len(turns), "decision_label": label,
                           "decision": count / len(turns), "function": None}
    singles = [t.calls[0] for t in turns if len(t.calls) == 1]
    call_turns = [t for t in turns if t.calls_turn]
    if singles:
        shapes = Counter((r["name"], tuple(sorted(r["arguments"]))) for r in singles)
        (name, keys), _ = shapes.most_common(1)[0]
        same = [r["arguments"] for r in singles if r["name"] == name
                and tuple(sorted(r["arguments"])) == keys]
        args = {k: Counter(json.dumps(a[k], sort_keys=True) for a in same).most_common(1)[0][0]
                for k in keys}
        arguments = {k: safe_json.loads(v) for k, v in args.items()}
        call = format_tool_call(name, arguments)
        constant = read_turn(call)
        scores = [call_scores(t, constant) for t in call_turns]
        n = len(scores)
        out.update({"call": call, "function": name, "arguments": arguments, "n": n,
                    **{k: sum(s[k] for s in scores) / n for k in CALL_METRICS}})
    texts = [t.text for t in turns if t.text]
    if texts:
        text = Counter(texts).most_common(1)[0][0]
        out["text"] = text
        out["text_rouge_l"] = sum(text_similarity(t, text) for t in texts) / len(texts)
    return out


def read_predictions(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Rows of a predictions JSONL file (`answer`, `prediction`; null prediction becomes "").

    Lazily yields each row (other fields kept); raises InputError naming the line and field
    of the first malformed row. Blank lines are skipped.
    """
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), path=str(path)) from exc
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"not UTF-8 ({exc.reason})", path=str(path), line=lineno) from exc
            if not text.strip():
                continue
            try:
                row = safe_json.loads(text)
            except ValueError as exc:
                raise InputError(f"invalid JSON: {exc}", path=str(path), line=lineno) from exc
            if not isinstance(row, dict):
                raise InputError("expected a JSON object", path=str(path), line=lineno)
            if not isinstance(row.get("answer"), str):
                problem = "missing" if "answer" not in row else "must be a string"
                raise InputError(problem, path=str(path), line=lineno, field="answer")
            if "prediction" not in row:
                raise InputError("missing", path=str(path), line=lineno, field="prediction")
            if row["prediction"] is None:
                row["prediction"] = ""
            elif not isinstance(row["prediction"], str):
                raise InputError("must be a string or null", path=str(path), line=lineno, field="prediction")
            yield row


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of decoded JSON values that keeps JSON's types apart (bool is not a number)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b
