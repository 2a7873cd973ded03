"""Synthesis from 5 seeds: acceptance, rejections by reason, coverage, distinct values, leaks.

    python bench/synth_bench.py [DATA_DIR] [--no-write] [--target N] [--teacher-requests N]

Two stores, each with the task (job description, mutation topics) and the benchmark's 34 test
conversations (the test split, guarded against leaks):

* scenario 4 (its 5 traces, the low-data scenario);
* 5 traces drawn at random (seed 0) from scenario 1.

`workbench check --only schema,structure,grounding` runs first (seeds are the traces without
suspect turns; coherence needs 20 conversations to learn from), then
`workbench synth --offline --target N` (default 100) and, unless `--teacher-requests 0`, the
local teacher (SmolLM2-135M GGUF in-process, grammar-constrained) on a few requests. Every
stored synthetic trace is compared again with the test split afterwards (exact content and
shingle similarity), independently of the validator's own count. Writes the "Synthesis"
section of BENCHMARKS.md.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from bench.report import write_section  # noqa: E402
from db import open_db  # noqa: E402
from db import synthesis as records  # noqa: E402
from db.queries import TraceFilter  # noqa: E402
from workbench.conversations.view import conversations  # noqa: E402
from workbench.traces.importing import import_files  # noqa: E402
from workbench.jobs.runner import execute, submit  # noqa: E402
from workbench.synthesis.validate import overlap, shingles  # noqa: E402

# seeds are chosen by the per-trace checks: the turn-level coherence check needs a corpus of
# 20 conversations to learn from, and on 5 (plus the test split) it flags sound turns
PER_TRACE = ["schema", "structure", "grounding"]


def default_dir() -> Path:
    shared = ROOT.parent / "shared" / "tft-benchmark"
    return shared if shared.exists() else ROOT / "tests" / "data" / "tft"


def make_store(tmp: Path, name: str, traces: Path, data: Path):
    s1 = next(data.glob("scenario-1-*"))
    db = open_db(tmp / f"{name}.db")
    import_files(db, [str(traces), str(s1 / "job_description.json"), str(s1 / "task.txt"),
                      str(data / "test.jsonl")])
    return db


def leaks(db) -> dict:
    """Stored synthetic traces against the test split, measured apart from the validator."""
    syn = conversations(db, TraceFilter(origin="synthetic"))
    test = conversations(db, TraceFilter(split="test"))
    test_sets = [shingles(t.messages) for t in test]
    test_hashes = {h for (h,) in db.execute("SELECT content_hash FROM traces WHERE split ="
                                            " 'test'")}
    syn_hashes = {h for (h,) in db.execute("SELECT content_hash FROM traces WHERE origin ="
                                           " 'synthetic'")}
    best = max((max((overlap(shingles(s.messages), t) for t in test_sets), default=0.0)
                for s in syn), default=0.0)
    return {"synthetic": len(syn), "identical_to_test": len(syn_hashes & test_hashes),
            "max_test_similarity": round(best, 3)}


def run_job(db, params: dict) -> tuple[dict, float]:
    t0 = time.perf_counter()
    row = execute(db, submit(db, "synth", {}, params))
    if row["status"] != "succeeded":
        raise SystemExit(f"synth failed: {row['error']}")
    res = row["result"]
    res["why"] = [r["reasons"][0]["detail"][:160] for r in records.rows(db, row["id"],
                                                                         "rejected")[:3]]
    return res, time.perf_counter() - t0


def summary(name: str, res: dict, secs: float, leak: dict) -> dict:
    rep = res["report"]
    return {
        "store": name, "method": res["method"], "seeds": res["seeds"],
        "seeds_left_out": res["seeds_left_out"], "accepted": res["accepted"],
        "target": res["target"], "candidates": res["candidates"], "repeats": res["repeats"],
        "acceptance": res["acceptance_rate"], "rejected": res["rejected"], "seconds": round(secs, 1),
        "topics": [(t["topic"].split(":")[0], t["reached"], t["share"], t["target_share"],
                    t.get("bucket_share")) for t in rep["per_topic"]],
        "arguments": [(a["argument"], a["seed_distinct"], a["distinct"], a["new_values"])
                      for a in rep["per_argument"]],
        "tools": [(t["tool"], t["synthetic"], t["share"], t["seed_share"])
                  for t in rep["per_tool"]],
        "leaks": leak, "requests": res.get("requests"), "tokens_out": res.get("tokens_out"),
        "why": res["why"],
    }


def table(rows: list[dict]) -> str:
    out = ["| store | method | seeds | accepted / target | candidates (repeats skipped) |"
           " acceptance | rejected (by first reason) | time |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rej = ", ".join(f"{k} {v}" for k, v in r["rejected"].items()) or "none"
        out.append(f"| {r['store']} | {r['method']} | {r['seeds']} | {r['accepted']} /"
                   f" {r['target']} | {r['candidates']} ({r['repeats']}) | {r['acceptance']:.0%} | {rej} |"
                   f" {r['seconds']} s |")
    return "\n".join(out)


def coverage(r: dict) -> str:
    out = [f"{r['store']}, {r['method']}: topic (accepted, share %, target %, gap)"]
    for topic, n, share, target, _ in r["topics"]:
        out.append(f"- {topic}: {n}, {share} %, {target} %, {share - target:+.1f}")
    out.append("calls per tool (synthetic, share %, seeds' share %): " + "; ".join(
        f"{t} {n}, {share} %, {seed} %" for t, n, share, seed in r["tools"]))
    out.append("distinct argument values (seeds -> synthetic, new):")
    out.append("; ".join(f"{a} {s} -> {d} ({n} new)" for a, s, d, n in r["arguments"]))
    if r["method"] == "teacher":
        out.append(f"{r['requests']} requests, {r['tokens_out']} tokens generated; first"
                   " rejections: " + " | ".join(f"`{w}`" for w in r["why"]))
    lk = r["leaks"]
    out.append(f"test leaks stored: {lk['identical_to_test']} identical, highest shingle overlap"
               f" with a test conversation {lk['max_test_similarity']} (rejected at 0.9)")
    return "\n".join(out)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", type=Path)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--target", type=int, default=100)
    ap.add_argument("--teacher-requests", type=int, default=4)
    parsed = ap.parse_args()
    data = parsed.data or default_dir()
    target, teacher_requests = parsed.target, parsed.teacher_requests
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        s4 = next(data.glob("scenario-4-*")) / "traces.jsonl"
        lines = (next(data.glob("scenario-1-*")) / "traces.jsonl").read_text().splitlines()
        picked = sorted(random.Random(0).sample(range(len(lines)), 5))
        s1 = tmp / "scenario1-5.jsonl"
        s1.write_text("".join(lines[i] + "\n" for i in picked))
        for name, traces in (("scenario 4 (5 traces)", s4),
                             (f"scenario 1, lines {', '.join(str(i + 1) for i in picked)}", s1)):
            db = make_store(tmp, name.split(",")[0].replace(" ", "_"), traces, data)
            check = execute(db, submit(db, "check", {}, {"only": PER_TRACE}))
            print(f"{name}: check {check['status']}, {check['result']['errors']} error flags",
                  file=sys.stderr)
            res, secs = run_job(db, {"offline": True, "target": target})
            rows.append(summary(name, res, secs, leaks(db)))
            print(json.dumps(rows[-1], indent=1), file=sys.stderr)
            if teacher_requests:
                res, secs = run_job(db, {"teacher": "local", "target": teacher_requests,
                                         "per_request": 1, "examples": 1,
                                         "max_requests": teacher_requests, "max_tokens": 1500})
                rows.append(summary(name, res, secs, leaks(db)))
                print(json.dumps(rows[-1], indent=1), file=sys.stderr)
            db.conn.close()
    body = (
        "`python bench/synth_bench.py` (one command; `--target N`, default 100;"
        " `--teacher-requests N`, default 4). Each store: the 5 seed traces, the task and its 4"
        " mutation topics, the 34 test conversations; `workbench check --only schema,structure,grounding`"
        " first (seeds: traces without suspect turns), then `workbench synth --offline --target N` and the local"
        " teacher (SmolLM2-135M Q4 GGUF in-process, grammar-constrained, one seed shown, one"
        " conversation per request). Rejections are counted by their first reason; leaks are"
        " measured again on the stored synthetic traces, apart from the validator.\n\n"
        + table(rows) + "\n\n" + "\n\n".join(coverage(r) for r in rows)
        + "\n\nWhat the offline set does for a model trained on it (seeds alone against seeds"
        " plus the synthetic set) is measured by `bench/tft_mini.py` (TFT mini, scenario 4).\n")
    print(body)
    if not parsed.no_write:
        write_section("Synthesis", body)


if __name__ == "__main__":
    main()
