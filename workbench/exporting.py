"""Exporting current labels: OpenAI chat JSONL, per-turn pairs, and a `datasets`-ready file.

| format | a line |
|---|---|
| `openai` | `{"messages": [...], "tools": [...], "meta": {"source", "line", "trace_id"}}` (arguments as JSON strings, as the OpenAI API has them) |
| `pairs`  | `{"question": "<JSON messages before the turn>", "answer": "<JSON {name, parameters}>", "context": null, "meta": {..., "message_index"}}`: the benchmark's question/answer format, one line per assistant turn |
| `hf`     | like `openai` but `tools` is a JSON string, so every line has the same Arrow schema and `datasets.load_dataset("json", data_files=...)` reads it |
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from db.queries import TraceFilter
from db.revisions import current_messages_for
from db.tasks import current_tools
from db.traces import iter_trace_rows
from workbench.messages import per_turn_pairs, to_benchmark_question, to_openai, turn_answer

FORMATS = ("openai", "pairs", "hf")


def export(db: Database, out: str | Path, fmt: str, flt: TraceFilter | None = None,
           *, progress: Callable[[int], None] | None = None) -> dict:
    """Write the selected traces with their current labels; returns counts."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    flt = flt or TraceFilter()
    where, params = flt.where()
    fallback_tools = current_tools(db) or None
    traces = lines = 0
    tmp = Path(str(out) + ".part")
    with open(tmp, "w", encoding="utf-8") as fh:
        for rows in iter_trace_rows(db, where, params):
            msgs = current_messages_for(db, [r["id"] for r in rows])
            for r in rows:
                tools = r["tools"] or fallback_tools
                meta = {"source": r["source"], "line": r["line"], "trace_id": r["id"],
                        "split": r["split"], "origin": r["origin"]}
                if tools and not r["tools"]:
                    meta["tools"] = "task"  # re-import keeps these as the task's, not the trace's
                for obj in _lines(fmt, msgs[r["id"]], tools, meta):
                    fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
                    lines += 1
                traces += 1
            if progress:
                progress(traces)
    tmp.replace(out)  # a failed export never leaves a half-written file under the real name
    return {"traces": traces, "lines": lines, "format": fmt, "path": str(out)}


def _lines(fmt: str, messages: list[dict], tools: list | None, meta: dict):
    if fmt == "pairs":
        for idx, before, turn in per_turn_pairs(messages):
            yield {"question": json.dumps(to_benchmark_question(before), ensure_ascii=False),
                   "answer": turn_answer(turn), "context": None,
                   "meta": {**meta, "message_index": idx}}
        return
    obj = {"messages": [to_openai(m) for m in messages]}
    if tools:
        obj["tools"] = tools if fmt == "openai" else json.dumps(tools, ensure_ascii=False)
    obj["meta"] = meta
    yield obj
