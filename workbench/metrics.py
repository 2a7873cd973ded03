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
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from workbench import safe_json
from workbench.errors import InputError
from workbench.toolcalls import ToolCall, format_tool_call, parse_tool_calls

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

METRICS = ("staged_tool_call", "tool_call_equivalence", "function_match", "rouge_l")

_scorer: RougeScorer | None = None


def _single_call(text: str | None) -> ToolCall | None:
    calls = parse_tool_calls(text)
    return calls[0] if len(calls) == 1 else None


def staged_tool_call(answer: str, prediction: str) -> float:
    """Partial credit in quarters: parses, right function, right argument names, right values."""
    ref, pred = _single_call(answer), _single_call(prediction)
    if ref is None or pred is None:
        return 0.0
    if pred["name"] != ref["name"]:
        return 0.25
    if pred["arguments"].keys() != ref["arguments"].keys():
        return 0.5
    if not _json_equal(pred["arguments"], ref["arguments"]):
        return 0.75
    return 1.0


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
    """All four metrics for one turn; a None prediction counts as empty."""
    prediction = prediction or ""
    staged = staged_tool_call(answer, prediction)
    return {
        "staged_tool_call": staged,
        "tool_call_equivalence": 1.0 if staged == 1.0 else 0.0,
        "function_match": function_match(answer, prediction),
        "rouge_l": rouge_l(answer, prediction),
    }


def score_rows(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per-row scores (input order) and their means; means are 0.0 for no rows."""
    scored = [score_pair(row["answer"], row.get("prediction")) for row in rows]
    n = len(scored)
    result: dict[str, Any] = {"n": n}
    for key in METRICS:
        result[key] = sum(s[key] for s in scored) / n if n else 0.0
    result["rows"] = scored
    return result


def constant_floor(answers: Sequence[str]) -> dict[str, Any] | None:
    """What the same call on every turn scores: the commonest reference call shape (function
    and argument names), each argument at its commonest value there. A model that learned only
    which tool is most frequent scores this, and where one tool dominates (a reply tool on most
    turns) it sits far above zero, so a mean is worth something only beside it. None for no
    parseable reference."""
    refs = [c for a in answers if (c := _single_call(a)) is not None]
    if not refs:
        return None
    shapes = Counter((r["name"], tuple(sorted(r["arguments"]))) for r in refs)
    (name, keys), _ = shapes.most_common(1)[0]
    same = [r["arguments"] for r in refs if r["name"] == name
            and tuple(sorted(r["arguments"])) == keys]
    args = {k: Counter(json.dumps(a[k], sort_keys=True) for a in same).most_common(1)[0][0] for k in keys}
    arguments = {k: safe_json.loads(v) for k, v in args.items()}
    call = format_tool_call(name, arguments)
    n = len(answers)
    staged = [staged_tool_call(a, call) for a in answers]
    return {"call": call, "function": name, "arguments": arguments, "n": n,
            "staged_tool_call": sum(staged) / n,
            "function_match": sum(function_match(a, call) for a in answers) / n,
            "tool_call_equivalence": sum(1.0 for s in staged if s == 1.0) / n}


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
