"""Tool-call parsing and the TFT benchmark metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rouge_score.rouge_scorer import RougeScorer

from workbench.core.errors import InputError
from workbench.evaluation.metrics import (
    binary_tool_call,
    constant_floor,
    function_match,
    read_predictions,
    rouge_l,
    score_pair,
    score_rows,
    staged_tool_call,
    tool_call_equivalence,
)
from workbench.conversations.toolcalls import format_tool_call, parse_tool_call, parse_tool_calls

TEST_SET = Path(__file__).parent.parent / "data" / "tft" / "test.jsonl"

REF = '{"name": "FindRestaurants", "parameters": {"city": "Oakland", "cuisine": "Jamaican"}}'
TAGGED_SWAPPED = format_tool_call("FindRestaurants", {"cuisine": "Jamaican", "city": "Oakland"})


def call(name: str, key: str = "parameters", **args: object) -> str:
    return json.dumps({"name": name, key: args})


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "f", "arguments": {"a": 1}}',
        '{"name": "f", "parameters": {"a": 1}}',
        '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>',
        '  <tool_call>{"name": "f", "parameters": {"a": 1}}</tool_call>  ',
        'Sure, let me look.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>',
        'Here you go:\n```json\n{"name": "f", "arguments": {"a": 1}}\n```',
        'I will call {"name": "f", "arguments": {"a": 1}} now.',
        '{"name": "f", "arguments": "{\\"a\\": 1}"}',
        '{"type": "function", "function": {"name": "f", "arguments": "{\\"a\\": 1}"}}',
        '<tool_call>\n{"name": "f", "arguments": {"a": 1}}',  # cut off by max_tokens
    ],
)
def test_parse_accepts_every_shape(text: str) -> None:
    assert parse_tool_call(text) == {"name": "f", "arguments": {"a": 1}}


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   \n",
        "Hello, how can I help?",
        '{"name": "f", "arguments": {"a": 1}',  # truncated JSON
        "<tool_call>\nnot json\n</tool_call>",
        '{"arguments": {"a": 1}}',  # no name
        '{"name": 3, "arguments": {}}',  # name not a string
        '{"name": "", "arguments": {}}',
        '{"name": "f", "arguments": [1, 2]}',  # arguments not an object
        '{"name": "f", "arguments": "[1, 2]"}',
        '{"name": "f", "arguments": "{broken"}',
        '{"result": {"name": "f", "arguments": {}}}',  # a call nested in data is not a call
        "[1, 2, 3]",
    ],
)
def test_parse_rejects_non_calls(text: str | None) -> None:
    assert parse_tool_call(text) is None


def test_parse_call_without_arguments() -> None:
    assert parse_tool_call('{"name": "now"}') == {"name": "now", "arguments": {}}


def test_parse_several_calls() -> None:
    text = (
        "Checking both.\n"
        + format_tool_call("f", {"a": 1})
        + "\n<tool_call>\nbroken\n</tool_call>\n"
        + format_tool_call("g", {"b": [1, {"c": None}]})
    )
    assert parse_tool_calls(text) == [
        {"name": "f", "arguments": {"a": 1}},
        {"name": "g", "arguments": {"b": [1, {"c": None}]}},
    ]
    assert parse_tool_call(text) == {"name": "f", "arguments": {"a": 1}}
    assert parse_tool_calls('[{"name": "f", "arguments": {}}, {"name": "g"}]') == [
        {"name": "f", "arguments": {}},
        {"name": "g", "arguments": {}},
    ]
    assert parse_tool_calls("") == []
    listed = '<tool_call>[{"name": "f", "arguments": {}}, {"name": "g"}]</tool_call>'
    assert [c["name"] for c in parse_tool_calls(listed)] == ["f", "g"]


def test_format_tool_call_is_canonical_and_round_trips() -> None:
    text = format_tool_call("respond_to_user", {"message": "Café at 7?"})
    body = '{"name": "respond_to_user", "arguments": {"message": "Café at 7?"}}'
    assert text == f"<tool_call>\n{body}\n</tool_call>"
    assert parse_tool_call(text) == json.loads(body)


# --- staged_tool_call and friends --------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("", 0.0),
        ("   ", 0.0),
        ('{"name": "FindRestaurants", "parameters": {"city": "Oakland"', 0.0),  # broken JSON
        ("I found nothing.", 0.0),
        (call("ReserveRestaurant", city="Oakland", cuisine="Jamaican"), 0.25),  # other function
        (call("FindRestaurants", city="Oakland"), 0.5),  # argument missing
        (call("FindRestaurants", city="Oakland", cuisine="Jamaican", price_range="cheap"), 0.5),
        (call("FindRestaurants", city="Oakland", food="Jamaican"), 0.5),  # renamed argument
        (call("FindRestaurants", city="Oakland", cuisine="Thai"), 0.75),  # value differs
        (call("FindRestaurants", city="Oakland", cuisine="jamaican"), 0.75),  # case matters
        (call("FindRestaurants", cuisine="Jamaican", city="Oakland"), 1.0),  # key order
        (call("FindRestaurants", "arguments", city="Oakland", cuisine="Jamaican"), 1.0),
        (format_tool_call("FindRestaurants", {"city": "Oakland", "cuisine": "Jamaican"}), 1.0),
        ("Searching.\n" + TAGGED_SWAPPED, 1.0),
        # two calls where one is expected: not "one call each side"
        (format_tool_call("FindRestaurants", {"city": "Oakland", "cuisine": "Jamaican"}) * 2, 0.0),
    ],
)
def test_staged_stages(prediction: str, expected: float) -> None:
    assert staged_tool_call(REF, prediction) == expected
    binary = 1.0 if expected == 1.0 else 0.0
    assert tool_call_equivalence(REF, prediction) == binary
    assert binary_tool_call(REF, prediction) == binary
    assert function_match(REF, prediction) == (1.0 if expected >= 0.5 else 0.0)


@pytest.mark.parametrize(
    ("ref_args", "pred_args", "expected"),
    [
        ({"party_size": "1"}, {"party_size": 1}, 0.75),  # string vs number
        ({"party_size": 1}, {"party_size": 1.0}, 1.0),  # same JSON number
        ({"live": True}, {"live": 1}, 0.75),  # Python's True == 1 must not leak in
        ({"live": True}, {"live": "True"}, 0.75),
        ({"live": None}, {"live": None}, 1.0),
        ({"q": {"a": 1, "b": [1, {"c": 2}]}}, {"q": {"b": [1, {"c": 2}], "a": 1}}, 1.0),  # nested
        ({"q": {"a": 1, "b": [1, {"c": 2}]}}, {"q": {"a": 1, "b": [1, {"c": 3}]}}, 0.75),
        ({"q": {"a": 1}}, {"q": {"a": 1, "z": 0}}, 0.75),  # nested keys are values, not names
        ({"q": [1, 2]}, {"q": [2, 1]}, 0.75),  # list order matters
        ({}, {}, 1.0),
    ],
)
def test_values_compare_as_json(ref_args: dict, pred_args: dict, expected: float) -> None:
    ref = json.dumps({"name": "f", "parameters": ref_args})
    pred = json.dumps({"name": "f", "arguments": pred_args})
    assert staged_tool_call(ref, pred) == expected


def test_unparseable_reference_scores_zero() -> None:
    good = call("f", a=1)
    for ref in ["", "not a call", '{"name": "f", "parameters": ']:
        assert staged_tool_call(ref, good) == 0.0
        assert tool_call_equivalence(ref, good) == 0.0
        assert function_match(ref, good) == 0.0
        assert staged_tool_call(ref, ref) == 0.0  # two broken strings are not an agreement


# --- rouge ------------------------------------------------------------------------------


def test_rouge_l_hand_checked() -> None:
    # LCS of 5 tokens: precision 5/5, recall 5/6 -> F1 = 10/11.
    assert rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(10 / 11)
    assert rouge_l(REF, REF) == 1.0
    assert rouge_l(REF, "") == 0.0


@pytest.mark.parametrize(
    ("answer", "prediction"),
    [
        (REF, call("FindRestaurants", city="Oakland", cuisine="Thai")),
        (REF, format_tool_call("FindRestaurants", {"cuisine": "Jamaican"})),
        ("Running quickly to the stores", "the runner runs to a store"),  # stemming matters
    ],
)
def test_rouge_l_matches_rouge_score(answer: str, prediction: str) -> None:
    direct = RougeScorer(["rougeL"], use_stemmer=True).score(answer, prediction)["rougeL"].fmeasure
    assert rouge_l(answer, prediction) == direct
    assert 0.0 < direct < 1.0


# --- aggregation and input --------------------------------------------------------------


def test_score_pair_keys_and_null_prediction() -> None:
    assert score_pair(REF, None) == {
        "staged_tool_call": 0.0,
        "tool_call_equivalence": 0.0,
        "function_match": 0.0,
        "rouge_l": 0.0,
    }


def test_score_rows() -> None:
    rows = [
        {"answer": REF, "prediction": REF},
        {"answer": REF, "prediction": call("FindRestaurants", city="Oakland", cuisine="Thai")},
        {"answer": REF, "prediction": call("ReserveRestaurant")},
        {"answer": REF, "prediction": None},
    ]
    result = score_rows(iter(rows))
    assert list(result) == [
        "n",
        "decision",
        "staged_tool_call",
        "tool_call_equivalence",
        "function_match",
        "rouge_l",
        "call_turns",
        "text_turns",
        "rows",
    ]   # no text_rouge_l: no reference has text
    assert result["n"] == 4
    assert [r["staged_tool_call"] for r in result["rows"]] == [1.0, 0.75, 0.25, 0.0]
    assert result["staged_tool_call"] == pytest.approx(2.0 / 4)
    assert result["tool_call_equivalence"] == pytest.approx(1 / 4)
    assert result["function_match"] == pytest.approx(2 / 4)
    assert result["rouge_l"] == pytest.approx(sum(r["rouge_l"] for r in result["rows"]) / 4)
    assert list(result["rows"][0]) == [*list(result)[1:6], "text_rouge_l", "reference_decision",
                                       "predicted_decision"]
    assert [r["decision"] for r in result["rows"]] == [1.0, 1.0, 0.0, 0.0]


def test_score_rows_empty() -> None:
    assert score_rows([]) == {"n": 0, "call_turns": 0, "text_turns": 0, "rows": []}


def test_read_predictions(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    path.write_text(
        json.dumps({"answer": REF, "prediction": REF, "question": "q"})
        + "\n\n"
        + json.dumps({"answer": REF, "prediction": None})
        + "\n",
        encoding="utf-8",
    )
    rows = list(read_predictions(path))
    assert [r["prediction"] for r in rows] == [REF, ""]
    assert rows[0]["question"] == "q"


@pytest.mark.parametrize(
    ("bad_line", "field", "fragment"),
    [
        ('{"answer": "a", "prediction": ', None, "invalid JSON"),
        ('["a", "b"]', None, "expected a JSON object"),
        ('{"prediction": "p"}', "answer", "missing"),
        ('{"answer": 3, "prediction": "p"}', "answer", "must be a string"),
        ('{"answer": "a"}', "prediction", "missing"),
        ('{"answer": "a", "prediction": 7}', "prediction", "must be a string or null"),
    ],
)
def test_read_predictions_reports_line(
    tmp_path: Path, bad_line: str, field: str | None, fragment: str
) -> None:
    path = tmp_path / "preds.jsonl"
    good = json.dumps({"answer": REF, "prediction": ""})
    path.write_text(f"{good}\n{good}\n{bad_line}\n{good}\n", encoding="utf-8")
    rows = read_predictions(path)
    assert next(rows)["prediction"] == ""  # lazy: good rows come before the error
    with pytest.raises(InputError) as info:
        list(rows)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    prefix = f"{path}:3: {field}: " if field else f"{path}:3: "
    assert str(err).startswith(prefix) and fragment in str(err)


def test_read_predictions_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        list(read_predictions(tmp_path / "nope.jsonl"))
    assert info.value.line is None
    assert str(info.value).startswith(f"{tmp_path / 'nope.jsonl'}: ")


# --- the real TFT test set --------------------------------------------------------------


def _test_answers() -> list[str]:
    lines = TEST_SET.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["answer"] for line in lines if line.strip()]


def test_tft_answers_score_perfectly_against_themselves() -> None:
    answers = _test_answers()
    assert len(answers) == 34
    result = score_rows({"answer": a, "prediction": a} for a in answers)
    assert result["n"] == 34
    for key in ("staged_tool_call", "tool_call_equivalence", "function_match", "rouge_l"):
        assert result[key] == 1.0
    # The canonical tagged rewrite of an answer is the same call.
    for a in answers:
        parsed = parse_tool_call(a)
        assert parsed is not None
        assert staged_tool_call(a, format_tool_call(parsed["name"], parsed["arguments"])) == 1.0


def test_tft_answers_with_one_value_changed_score_three_quarters() -> None:
    for a in _test_answers():
        obj = json.loads(a)
        key = sorted(obj["parameters"])[0]
        obj["parameters"][key] = str(obj["parameters"][key]) + " (changed)"
        changed = json.dumps(obj)
        scores = score_pair(a, changed)
        assert scores["staged_tool_call"] == 0.75
        assert scores["tool_call_equivalence"] == 0.0
        assert scores["function_match"] == 1.0
        assert 0.0 < scores["rouge_l"] < 1.0


def test_constant_floor_is_the_commonest_call_at_its_commonest_values() -> None:
    reply = lambda text: call("respond_to_user", message=text)  # noqa: E731
    answers = [reply("Anything else?"), reply("Anything else?"), reply("Which city?"),
               call("FindRestaurants", city="Oakland", cuisine="Thai"), "not a call"]
    floor = constant_floor(answers)
    assert floor["function"] == "respond_to_user"
    assert floor["arguments"] == {"message": "Anything else?"}
    # over the 4 call turns ("not a call" is a text turn, outside the call metrics):
    # 1 + 1 + 0.75 (same function and names) + 0.25 (another function)
    assert floor["n"] == 4
    assert floor["staged_tool_call"] == pytest.approx(3.0 / 4)
    assert floor["function_match"] == pytest.approx(3 / 4)
    assert floor["tool_call_equivalence"] == pytest.approx(2 / 4)
    assert score_rows({"answer": a, "prediction": floor["call"]} for a in answers)[
        "staged_tool_call"] == pytest.approx(floor["staged_tool_call"])
    assert constant_floor(["no call here", ""])["function"] is None   # no call to repeat


def test_constant_floor_of_the_tft_test_answers() -> None:
    answers = _test_answers()
    floor = constant_floor(answers)
    names = [json.loads(a)["name"] for a in answers]
    top = max(set(names), key=names.count)
    assert floor["function"] == top
    assert floor["function_match"] == pytest.approx(names.count(top) / len(names))
    assert 0.25 <= floor["staged_tool_call"] < 1.0
