"""Span exports (Langfuse, LangSmith, OpenTelemetry GenAI, OpenInference): the upstream
examples stitch into the expected conversations with tools and outcomes, a bad line names its
file, line and field and stores nothing, and spans out of order stitch the same."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db import open_db
from db.traces import original_messages, stats
from tests.traces.test_import import snapshot
from workbench.cli import app
from workbench.core.errors import InputError
from workbench.traces.formats import detect_format, iter_records
from workbench.traces.importing import import_files

SPANS = Path(__file__).parent.parent / "data" / "spans"
LANGFUSE = SPANS / "langfuse-openai-agents.trace.json"
LANGSMITH = SPANS / "langsmith-runs.jsonl"
OTEL = SPANS / "otel-genai.jsonl"
PHOENIX = SPANS / "openinference-spans.jsonl"


def records(path: Path) -> list:
    return list(iter_records(path, detect_format(path)))


def shape(messages: list[dict]) -> list[tuple]:
    """Role, text and calls of each message: what a conversation says."""
    return [(m["role"], m["content"],
             [(c["id"], c["function"]["name"], c["function"]["arguments"])
              for c in m["tool_calls"] or []], m["tool_call_id"]) for m in messages]


def tool_names(record) -> list[str]:
    return [t["function"]["name"] for t in record.tools or []]


@pytest.mark.parametrize("path, fmt", [(LANGFUSE, "langfuse"), (LANGSMITH, "langsmith"),
                                       (OTEL, "otel"), (PHOENIX, "openinference")])
def test_each_export_is_detected_from_the_file(path, fmt):
    assert detect_format(path) == fmt


def test_langfuse_trace_with_observations_and_scores():
    [rec] = records(LANGFUSE)
    call = "call_Kud0j0DxWSmLzv9W5m6qVqXn"
    assert shape(rec.messages) == [
        ("system", "You are a helpful agent.", [], None),   # the Responses API's instructions
        ("user", "What's the weather in Tokyo?", [], None),
        ("assistant", None, [(call, "get_weather", {"city": "Tokyo"})], None),
        ("tool", "The weather in Tokyo is sunny.", [], call),
        ("assistant", ("The weather in Tokyo is currently sunny. If you need more details like"
                       " temperature or forecast for the upcoming days, just let me know!"),
         [], None)]
    assert tool_names(rec) == ["get_weather"]
    assert rec.tools[0]["function"]["parameters"]["required"] == ["city"]
    assert rec.outcomes == {"toxicity": 0.8, "hallucination": 0}
    assert rec.meta["source_trace_id"] == "fee618f96dc31e0ca38b2f7b26eb8b29"
    assert rec.meta["name"] == "Agent workflow" and "observations" not in rec.meta


def _langfuse_lines(tmp_path: Path, shuffle: bool) -> Path:
    """The upstream trace as a JSONL export: the trace, then one observation per line, plus
    a second trace whose generation input is a request `{"tools", "messages"}` (the shape of
    Langfuse's own adapter test) and a score line."""
    doc = json.loads(LANGFUSE.read_text())
    trace = {k: v for k, v in doc["trace"].items() if k != "observations"}
    lines = [trace] + doc["observations"]
    tools = [{"type": "function",
              "function": {"name": "get_weather", "description": "Get weather",
                           "parameters": {"type": "object"}}}]
    other = "t-2"
    lines += [{"id": other, "name": "second"},
              {"id": "g1", "traceId": other, "type": "GENERATION",
               "startTime": "2025-01-01T00:00:01Z",
               "input": {"tools": tools,
                         "messages": [{"role": "user", "content": "Weather in NYC?"}]},
               "output": {"role": "assistant", "tool_calls": [
                   {"id": "call_abc", "type": "function",
                    "function": {"name": "get_weather", "arguments": {"location": "NYC"}}}]}},
              {"id": "t1", "traceId": other, "type": "TOOL", "name": "get_weather",
               "startTime": "2025-01-01T00:00:02Z", "input": {"location": "NYC"},
               "output": "cloudy"},
              {"id": "s1", "traceId": other, "name": "user_feedback", "value": 1,
               "dataType": "BOOLEAN"}]
    if shuffle:
        random.Random(3).shuffle(lines)
    out = tmp_path / ("shuffled.jsonl" if shuffle else "langfuse.jsonl")
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out


def test_langfuse_jsonl_lines_request_inputs_and_tool_observations(tmp_path):
    first, second = records(_langfuse_lines(tmp_path, shuffle=False))
    assert shape(first.messages) == shape(records(LANGFUSE)[0].messages)
    assert first.outcomes == {"toxicity": 0.8, "hallucination": 0}   # the trace line's scores
    assert shape(second.messages) == [
        ("user", "Weather in NYC?", [], None),
        ("assistant", None, [("call_abc", "get_weather", {"location": "NYC"})], None),
        ("tool", "cloudy", [], "call_abc")]   # the result from the TOOL observation
    assert tool_names(second) == ["get_weather"] and second.outcomes == {"user_feedback": True}


def test_langfuse_out_of_order_lines_stitch_the_same(tmp_path):
    ordered = records(_langfuse_lines(tmp_path, shuffle=False))
    shuffled = records(_langfuse_lines(tmp_path, shuffle=True))
    key = lambda r: r.meta["source_trace_id"]
    assert sorted(map(key, ordered)) == sorted(map(key, shuffled))
    for a, b in zip(sorted(ordered, key=key), sorted(shuffled, key=key)):
        assert (shape(a.messages), a.tools, a.outcomes) == (shape(b.messages), b.tools, b.outcomes)


def test_langsmith_runs_and_feedback():
    docs, wrapped = records(LANGSMITH)
    assert shape(docs.messages) == [
        ("user", "What's the weather in San Francisco?", [], None),
        ("assistant", None, [("call_1", "get_weather", {"city": "San Francisco"})], None),
        ("tool", '{"temperature": "18°C", "condition": "Sunny"}', [], "call_1"),
        ("assistant", "The weather in San Francisco is 18°C and sunny.", [], None)]
    assert docs.outcomes == {"user_score": 1}
    assert docs.meta["name"] == "weather_agent" and docs.meta["tags"] == ["docs-example"]
    assert shape(wrapped.messages) == [
        ("user", "howdy", [], None), ("assistant", "Howdy! How can I assist you today?", [], None)]
    assert wrapped.outcomes == {"correctness": 0.0}   # feedback naming only its run


def _langsmith_anthropic(tmp_path: Path, order: list[int]) -> Path:
    """An agent on Anthropic's Messages API: two llm runs, a tool run that failed, a chain
    root; the second call's input holds the tool_result block."""
    tr = "a0000000-0000-4000-8000-000000000001"
    tools = [{"name": "lookup", "description": "Look a word up",
              "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}}}]
    ask = {"role": "user", "content": "Define 'ephemeral'."}
    use = {"role": "assistant", "content": [{"type": "text", "text": "Looking it up."},
                                            {"type": "tool_use", "id": "toolu_1", "name": "lookup",
                                             "input": {"word": "ephemeral"}}]}
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                           "content": "lasting a very short time",
                                           "is_error": False}]}
    runs = [
        {"id": tr, "trace_id": tr, "run_type": "chain", "name": "agent",
         "start_time": "2025-02-01T10:00:00Z", "inputs": {}, "outputs": {},
         "feedback_stats": {"thumbs": {"n": 1, "avg": 1.0}}},
        {"id": "r1", "trace_id": tr, "parent_run_id": tr, "run_type": "llm",
         "start_time": "2025-02-01T10:00:01Z",
         "inputs": {"system": "Be brief.", "messages": [ask], "tools": tools},
         "outputs": {"role": "assistant", "content": use["content"]}},
        {"id": "r2", "trace_id": tr, "parent_run_id": tr, "run_type": "tool", "name": "lookup",
         "start_time": "2025-02-01T10:00:02Z", "inputs": {"input": "{'word': 'ephemeral'}"},
         "outputs": {"output": "lasting a very short time"}},
        {"id": "r3", "trace_id": tr, "parent_run_id": tr, "run_type": "llm",
         "start_time": "2025-02-01T10:00:03Z",
         "inputs": {"system": "Be brief.", "messages": [ask, use, result], "tools": tools},
         "outputs": {"role": "assistant", "content": [{"type": "text", "text": "Short-lived."}]}},
    ]
    out = tmp_path / f"ls-{''.join(map(str, order))}.jsonl"
    out.write_text("".join(json.dumps(runs[i]) + "\n" for i in order))
    return out


def test_langsmith_anthropic_inputs_and_out_of_order_runs(tmp_path):
    [rec] = records(_langsmith_anthropic(tmp_path, [0, 1, 2, 3]))
    assert shape(rec.messages) == [
        ("system", "Be brief.", [], None), ("user", "Define 'ephemeral'.", [], None),
        ("assistant", "Looking it up.", [("toolu_1", "lookup", {"word": "ephemeral"})], None),
        ("tool", "lasting a very short time", [], "toolu_1"),
        ("assistant", "Short-lived.", [], None)]
    assert rec.tools == [{"type": "function", "function": {
        "name": "lookup", "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}}]
    assert rec.outcomes == {"thumbs": 1.0}
    [backwards] = records(_langsmith_anthropic(tmp_path, [3, 2, 1, 0]))
    assert shape(backwards.messages) == shape(rec.messages)   # latest by start time, not line
    assert (backwards.tools, backwards.outcomes) == (rec.tools, rec.outcomes)


def test_otel_current_attributes_and_older_events():
    current, events = records(OTEL)
    call = "call_VSPygqKTWdrhaFErNvMV18Yl"
    assert shape(current.messages) == [
        ("user", "Weather in Paris?", [], None),
        ("assistant", None, [(call, "get_weather", {"location": "Paris"})], None),
        ("tool", "rainy, 57°F", [], call),
        ("assistant", "The weather in Paris is currently rainy with a temperature of 57°F.", [],
         None)]
    # the later call has no tool definitions; the trace's earlier call gives them
    assert tool_names(current) == ["get_current_weather"]
    assert current.meta["resource"] == {"service.name": "weather-app"}
    assert shape(events.messages) == [
        ("user", "What's the weather in Paris?", [], None),
        ("assistant", None, [(call, "get_weather", {"location": "Paris"})], None),
        ("tool", "rainy, 57°F", [], call),
        ("assistant", "The weather in Paris is rainy and overcast, with temperatures around 57°F",
         [], None)]
    assert events.outcomes == {"hallucination": 1}


def _otel_line(trace: str, span: str, start: int, attrs: dict, op: str = "chat") -> str:
    kv = [{"key": k, "value": {"stringValue": v}} for k, v in
          {"gen_ai.operation.name": op, **attrs}.items()]
    return json.dumps({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [
        {"scope": {"name": "x"}, "spans": [{"traceId": trace, "spanId": span,
                                            "startTimeUnixNano": str(start),
                                            "attributes": kv}]}]}]}) + "\n"


def test_otel_system_instructions_tool_span_and_out_of_order(tmp_path):
    def part(role, **p):
        return {"role": role, "parts": [p]}
    first = {"gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be exact."}]),
             "gen_ai.input.messages": json.dumps([part("user", type="text", content="2+2?")]),
             "gen_ai.output.messages": json.dumps([part("assistant", type="tool_call", id="c1",
                                                        name="calc", arguments={"expr": "2+2"})]),
             "gen_ai.tool.definitions": json.dumps([{"type": "function", "name": "calc",
                                                     "parameters": {"type": "object"}}])}
    tool = {"gen_ai.tool.call.id": "c1", "gen_ai.tool.name": "calc",
            "gen_ai.tool.call.result": "4"}
    lines = [_otel_line("tt", "s1", 1_000, first), _otel_line("tt", "s2", 2_000, tool,
                                                             op="execute_tool")]
    (tmp_path / "a.jsonl").write_text("".join(lines))
    (tmp_path / "b.jsonl").write_text("".join(reversed(lines)))
    [a] = records(tmp_path / "a.jsonl")
    [b] = records(tmp_path / "b.jsonl")
    assert shape(a.messages) == [("system", "Be exact.", [], None), ("user", "2+2?", [], None),
                                 ("assistant", None, [("c1", "calc", {"expr": "2+2"})], None),
                                 ("tool", "4", [], "c1")]   # from the execute_tool span
    assert (shape(b.messages), b.tools) == (shape(a.messages), a.tools)


def test_openinference_phoenix_spans_and_annotations():
    spec, fixture = records(PHOENIX)
    assert shape(spec.messages)[1:] == [
        ("user", "what is 23 times 87", [], None),
        ("assistant", None, [(None, "multiply", {"a": 23, "b": 87})], None),
        ("tool", "2001", [], None),
        ("assistant", "The product of 23 times 87 is 2001.", [], None)]
    assert spec.messages[0]["role"] == "system" and spec.outcomes == {"correctness": 1}
    # flattened attribute names, llm.tools and a trace annotation
    assert shape(fixture.messages) == [
        ("user", "Weather in Paris?", [], None),
        ("assistant", "Absolutely! Let me check the weather for you.",
         [("1234", "get_weather", {"location": "Paris"})], None),
        ("tool", "rainy, 57°F", [], "1234"),
        ("assistant", "The weather in Paris is currently rainy with a temperature of 57°F.", [],
         None)]
    assert tool_names(fixture) == ["get_weather"]
    assert fixture.outcomes == {"retrieval_quality": 0.92}


def test_openinference_first_line_last_is_the_same(tmp_path):
    lines = PHOENIX.read_text().splitlines()
    out = tmp_path / "rotated.jsonl"
    out.write_text("\n".join(lines[1:] + lines[:1]) + "\n")   # the annotation before its span
    a, b = records(PHOENIX), records(out)
    assert sorted((json.dumps(shape(r.messages)), json.dumps(r.outcomes)) for r in a) == \
        sorted((json.dumps(shape(r.messages)), json.dumps(r.outcomes)) for r in b)


BAD = [
    # (file maker, expected error text)
    (lambda: [{"traceId": "t", "type": "GENERATION", "startTime": "2025-01-01T00:00:00Z",
               "input": [{"role": "wizard", "content": "hi"}], "output": "x"}],
     ":2: input[0].role: unknown role 'wizard'"),
    (lambda: [{"id": "r", "trace_id": "r", "run_type": "llm", "start_time": "yesterday",
               "inputs": {"messages": []}}],
     ":2: start_time: is not a timestamp"),
    (lambda: [{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "s"}]}]}]}],
     ":2: resourceSpans[0].scopeSpans[0].spans[0].traceId: must be a non-empty string"),
    (lambda: [{"context": {"trace_id": "t", "span_id": "s"}, "attributes": {
        "openinference.span.kind": "LLM",
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.tool_calls.0.tool_call.function.arguments": "{}"}}],
     ":2: attributes.llm.input_messages[0].tool_calls: only assistant messages carry tool calls"),
]


@pytest.mark.parametrize("make, expected", BAD)
def test_bad_line_names_file_line_field_and_stores_nothing(db, tmp_path, make, expected):
    good = {"langfuse": LANGFUSE, "langsmith": LANGSMITH, "otel": OTEL, "openinference": PHOENIX}
    bad = make()
    # a good first line of the same format, then the bad one
    first = {"t": json.dumps(json.loads(LANGFUSE.read_text())["trace"] | {"observations": []}),
             "r": LANGSMITH.read_text().splitlines()[0],
             "s": OTEL.read_text().splitlines()[0],
             "c": PHOENIX.read_text().splitlines()[0]}
    kind = next(k for k, v in (("t", "traceId"), ("r", "run_type"), ("s", "resourceSpans"),
                               ("c", "context")) if v in bad[0])
    path = tmp_path / "bad.jsonl"
    path.write_text(first[kind] + "\n" + json.dumps(bad[0]) + "\n")
    assert detect_format(path) in good
    before = snapshot(db)
    with pytest.raises(InputError) as e:
        import_files(db, [path])
    assert str(e.value).startswith(str(path) + expected), str(e.value)
    assert snapshot(db) == before


def test_feedback_for_a_run_not_in_the_file_is_an_error(tmp_path):
    path = tmp_path / "fb.jsonl"
    path.write_text(LANGSMITH.read_text() + json.dumps({"key": "k", "score": 1,
                                                        "run_id": "nowhere"}) + "\n")
    with pytest.raises(InputError, match=r"fb.jsonl:6: names run or span 'nowhere'"):
        records(path)


def test_cli_imports_every_example(db_path):
    runner = CliRunner()
    result = runner.invoke(app, ["--db", str(db_path), "import", "--json", str(LANGFUSE),
                                 str(LANGSMITH), str(OTEL), str(PHOENIX)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(f["format"], f["added"]) for f in report["files"]] == [
        ("langfuse", 1), ("langsmith", 2), ("openinference", 2), ("otel", 2)]
    db = open_db(db_path)
    try:
        assert stats(db)["traces"] == 7
        (tid,) = db.execute("SELECT id FROM traces WHERE format = 'langfuse'").fetchone()
        assert original_messages(db, tid)[0]["content"] == "You are a helpful agent."
        # re-importing adds nothing
        again = runner.invoke(app, ["--db", str(db_path), "import", "--json", str(OTEL)])
        assert json.loads(again.output)["files"][0]["added"] == 0
    finally:
        db.conn.close()


def _span_export(path: Path, traces: int) -> None:
    """OTLP lines, two calls and a tool span per trace, each span its own line, the traces
    interleaved (a collector writes spans as they end)."""
    with open(path, "w") as fh:
        for i in range(0, traces, 2):
            for t in (i, i + 1):
                user = json.dumps([{"role": "user", "parts": [{"type": "text",
                                                               "content": f"question {t}"}]}])
                fh.write(_otel_line(f"{t:032x}", f"a{t}", 1, {"gen_ai.input.messages": user}))
            for t in (i, i + 1):
                out = json.dumps([{"role": "assistant", "parts": [{"type": "text",
                                                                   "content": f"answer {t}"}]}])
                fh.write(_otel_line(f"{t:032x}", f"b{t}", 2, {"gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": f"question {t}"}]}]),
                    "gen_ai.output.messages": out}))


def test_span_import_memory_is_flat(tmp_path):
    peaks = []
    for n in (500, 2000):
        f = tmp_path / f"spans{n}.jsonl"
        _span_export(f, n)
        db = open_db(tmp_path / f"s{n}.db")
        tracemalloc.start()
        import_files(db, [f])
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert stats(db)["traces"] == n
        db.conn.close()
    assert peaks[1] < peaks[0] * 1.5, peaks   # 4x the spans, not 4x the memory


def test_phoenix_dataframe_rows_and_json_documents(tmp_path):
    """Phoenix's spans dataframe written as JSON lines has flat column names
    (`context.trace_id`, `attributes.llm.input_messages`); a .json list of Langfuse traces is
    one document."""
    flat = []
    for line in PHOENIX.read_text().splitlines()[:2]:
        span = json.loads(line)
        row = {"name": span["name"], "parent_id": span["parent_id"],
               "start_time": span["start_time"],
               **{f"context.{k}": v for k, v in span["context"].items()},
               **{f"attributes.{k}": v for k, v in span["attributes"].items()}}
        flat.append(json.dumps(row))
    (tmp_path / "df.jsonl").write_text("\n".join(flat) + "\n")
    [rec] = records(tmp_path / "df.jsonl")
    assert shape(rec.messages) == shape(records(PHOENIX)[0].messages)
    doc = json.loads(LANGFUSE.read_text())
    trace = doc["trace"] | {"observations": doc["observations"]}
    copy = trace | {"id": "copy", "observations": [o | {"traceId": "copy"}
                                                   for o in doc["observations"]]}
    (tmp_path / "traces.json").write_text(json.dumps([trace, copy]))
    assert detect_format(tmp_path / "traces.json") == "langfuse"
    a, b = records(tmp_path / "traces.json")
    assert shape(a.messages) == shape(b.messages) == shape(records(LANGFUSE)[0].messages)
    assert (a.meta["source_trace_id"], b.meta["source_trace_id"]) == (doc["trace"]["id"], "copy")


def test_an_export_without_model_calls_is_an_error(db, tmp_path):
    path = tmp_path / "chains.jsonl"
    path.write_text(json.dumps({"id": "r", "trace_id": "r", "run_type": "chain",
                                "inputs": {"q": "hi"}, "outputs": {"a": "ho"}}) + "\n")
    before = snapshot(db)
    with pytest.raises(InputError, match="chains.jsonl: no LLM calls with messages"):
        import_files(db, [path])
    assert snapshot(db) == before


def test_langsmith_langchain_serialized_messages(tmp_path):
    """A LangChain chat model's run: serialized messages in a list per prompt, tool calls with
    `args`, the answer in `generations`, tools in `extra.invocation_params`."""
    def lc(cls, **kwargs):
        return {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", cls],
                "kwargs": kwargs}
    ask = lc("HumanMessage", content="Add 2 and 3.", type="human")
    call = lc("AIMessage", content="", type="ai", tool_calls=[
        {"name": "add", "args": {"a": 2, "b": 3}, "id": "call_9", "type": "tool_call"}])
    result = lc("ToolMessage", content="5", tool_call_id="call_9", type="tool")
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    run = {"id": "r", "trace_id": "r", "run_type": "llm", "start_time": "2025-03-01T00:00:00Z",
           "inputs": {"messages": [[ask, call, result]]},
           "outputs": {"generations": [[{"text": "5", "type": "ChatGeneration",
                                         "message": lc("AIMessage", content="It is 5.")}]]},
           "extra": {"invocation_params": {"tools": [tool]}}}
    path = tmp_path / "lc.jsonl"
    path.write_text(json.dumps(run) + "\n")
    [rec] = records(path)
    assert shape(rec.messages) == [("user", "Add 2 and 3.", [], None),
                                   ("assistant", None, [("call_9", "add", {"a": 2, "b": 3})],
                                    None),
                                   ("tool", "5", [], "call_9"),
                                   ("assistant", "It is 5.", [], None)]
    assert rec.tools == [tool]


def test_otel_events_as_log_records(tmp_path):
    """The older GenAI events emitted as log records (`resourceLogs`), linked to their span by
    trace and span id; the logs may come before the span."""
    def kv(d):
        return [{"key": k, "value": {"stringValue": v}} for k, v in d.items()]
    logs = {"resourceLogs": [{"resource": {"attributes": []}, "scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1000", "traceId": "ab", "spanId": "s1",
         "eventName": "gen_ai.user.message",
         "body": {"kvlistValue": {"values": kv({"content": "Hello?"})}}},
        {"timeUnixNano": "2000", "traceId": "ab", "spanId": "s1",
         "attributes": kv({"event.name": "gen_ai.choice"}),
         "body": {"kvlistValue": {"values": [
             {"key": "index", "value": {"intValue": "0"}},
             {"key": "message", "value": {"kvlistValue": {"values": kv({"content": "Hi!"})}}}]}}},
    ]}]}]}
    path = tmp_path / "logs.jsonl"
    path.write_text(json.dumps(logs) + "\n" + _otel_line("ab", "s1", 500, {}))
    [rec] = records(path)
    assert shape(rec.messages) == [("user", "Hello?", [], None), ("assistant", "Hi!", [], None)]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replaced(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


@pytest.mark.parametrize("path", [LANGFUSE, LANGSMITH, OTEL, PHOENIX], ids=lambda p: p.stem)
def test_wrong_types_anywhere_give_input_errors_never_crashes(tmp_path, path):
    """Any value of an upstream example replaced by a value of another type either imports or
    is a FILE:LINE error: never an exception from deep inside the reader."""
    rng = random.Random(7)
    docs = ([json.loads(path.read_text())] if path.suffix == ".json"
            else [json.loads(x) for x in path.read_text().splitlines()])
    out = tmp_path / ("mutant.json" if path.suffix == ".json" else "mutant.jsonl")
    for n, doc in enumerate(docs):
        paths = list(_paths(doc))[1:]
        for p in rng.sample(paths, min(60, len(paths))):
            new = rng.choice([None, 7, "x", "{", [], {}, [3], {"a": [1]}, True])
            mutant = _replaced(doc, p, new)
            lines = [*docs[:n], mutant, *docs[n + 1:]]
            out.write_text(json.dumps(mutant) if path.suffix == ".json"
                           else "".join(json.dumps(x) + "\n" for x in lines))
            try:
                records(out)
            except InputError as e:
                assert str(e).startswith(str(out)), (p, new, str(e))
