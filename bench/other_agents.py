"""Other agents' logs through the loop: what the workbench makes of agents that are not the
benchmark's, on the public corpora in tests/data (never the restaurant benchmark).

    python bench/other_agents.py [--corpora tau-airline,bfcl-multi-turn] [--no-write]

For each corpus and each of its halves (`tune`: looked at while the code was written; `heldout`:
measured only), in a fresh store: import (time, turns by kind), `check` (error flags on turns and
traces, and where the corpus has outcomes, the share of failed and of successful conversations
flagged), `split --test 10% --by user_id` where the metadata has users, `train --plan` (the
max length the data asks for and the one picked), identical predictions through `export
--format pairs` and `score` (every metric must be 1.0), and `synth --offline --target 20`
(acceptance). Writes the "Other agents" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import ROOT, write_section

DATA = ROOT / "tests" / "data"
METRICS = ("decision", "staged_tool_call", "tool_call_equivalence", "function_match", "rouge_l",
           "text_rouge_l")


def wb(db: Path, *args: str) -> tuple[dict | str, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "workbench", "--db", str(db), *args],
                       capture_output=True, text=True, cwd=db.parent)
    if r.returncode:
        raise RuntimeError(f"workbench {' '.join(args)}: {r.stderr.strip()[-600:]}")
    out = json.loads(r.stdout) if "--json" in args else r.stdout
    return out, time.perf_counter() - t0


def turn_kinds(path: Path) -> dict:
    text = calls = both = parallel = 0
    for line in path.read_text().splitlines():
        for m in json.loads(line)["messages"]:
            if m["role"] != "assistant":
                continue
            n = len(m.get("tool_calls") or [])
            has_text = bool((m.get("content") or "").strip())
            text += has_text and not n
            calls += bool(n) and not has_text
            both += bool(n) and has_text
            parallel += n > 1
    return {"text": text, "calls": calls, "text_and_calls": both, "parallel": parallel}


def measure(corpus: str, half: str, tmp: Path) -> dict:
    src = DATA / corpus / f"{half}.jsonl"
    work = tmp / f"{corpus}-{half}"
    work.mkdir()
    db = work / "w.db"
    row: dict = {"corpus": corpus, "half": half, **turn_kinds(src)}
    _, row["import_s"] = wb(db, "import", str(src))
    stats, _ = wb(db, "stats", "--json")
    row["traces"], row["turns"] = stats["traces"], stats["assistant_turns"]
    out, row["check_s"] = wb(db, "check", "--json")
    errors = [f for f in out["flags"] if f["severity"] == "error"]
    row["error_flags"] = len(errors)
    row["flagged_traces"] = len({(f["source"], f["line"]) for f in errors})
    row["by_outcome"] = out.get("outcomes")
    first = json.loads(src.read_text().splitlines()[0])
    if "user_id" in (first.get("meta") or {}):
        split, _ = wb(db, "split", "--test", "10%", "--by", "user_id", "--json")
        row["split"] = split["splits"]
    after, _ = wb(db, "stats", "--json")
    row["excluded"] = after.get("excluded")
    try:
        plan, row["plan_s"] = wb(db, "train", "--plan", "--json")
        row["plan"] = {k: plan.get(k) for k in ("max_length", "sizing", "turns_without_prompt",
                                                "windowed_turns", "turns_past_max_length")}
    except RuntimeError as e:   # a finding, not a crash: say what train said
        row["plan"] = {"error": str(e).split("error: ", 1)[-1][:200]}
    pairs = work / "pairs.jsonl"
    wb(db, "export", str(pairs), "--format", "pairs")
    ident = work / "ident.jsonl"
    ident.write_text("".join(json.dumps({"answer": json.loads(line)["answer"],
                                         "prediction": json.loads(line)["answer"]}) + "\n"
                             for line in pairs.read_text().splitlines()))
    scores, _ = wb(db, "score", str(ident), "--json")
    row["identical"] = {m: scores.get(m) for m in METRICS}
    row["floor_decision"] = (scores.get("floor") or {}).get("decision")
    try:
        synth, row["synth_s"] = wb(db, "synth", "--offline", "--target", "20", "--json")
        row["synth"] = {k: synth.get(k) for k in ("accepted", "candidates", "rejected")}
    except RuntimeError as e:   # a finding, not a crash: say what synth said
        row["synth"] = {"error": str(e).split("InputError: ", 1)[-1].split(" (left out")[0]}
    return row


def table(rows: list[dict]) -> str:
    out = ["| corpus | half | traces | turns (text / calls / both / parallel) | error flags"
           " (traces; excluded from training) | flagged: failed vs successful | max length"
           " needed (picked) | identical"
           " predictions | synthesis accepted / candidates |",
           "|---|---|---:|---|---|---|---|---|---|"]
    for r in rows:
        ident = "all 1.0" if all(v in (1.0, None) for v in r["identical"].values()) else (
            ", ".join(f"{k} {v}" for k, v in r["identical"].items() if v not in (1.0, None)))
        plan = r["plan"]
        sizing = plan.get("sizing") or {}
        picked = plan.get("max_length")
        needed = sizing.get("needed") if isinstance(sizing, dict) else None
        length = (f"{needed or '?'} ({picked})" if "error" not in plan
                  else plan["error"][:90])
        syn = r["synth"]
        synth = (f"{syn.get('accepted')} / {syn.get('candidates')}" if "error" not in syn
                 else syn["error"])
        out.append(
            f"| {r['corpus']} | {r['half']}{' (tuned on)' if r['half'] == 'tune' else ''}"
            f" | {r['traces']} | {r['turns']} ({r['text']} / {r['calls']} /"
            f" {r['text_and_calls']} / {r['parallel']}) | {r['error_flags']}"
            f" ({r['flagged_traces']}; {r['excluded']} excluded) | {_by_outcome(r['by_outcome'])}"
            f" | {length} | {ident}"
            f" | {synth} |")
    return "\n".join(out)


def _by_outcome(value: object) -> str:
    if not value:
        return "no outcomes"
    rows = value if isinstance(value, list) else [value]
    parts = []
    for v in rows:
        if isinstance(v, dict) and "failed" in v and "successful" in v:
            f, s = v["failed"], v["successful"]
            parts.append(f"{v.get('outcome', '')}: {f.get('flagged')}/{f.get('n')} vs"
                         f" {s.get('flagged')}/{s.get('n')} conversations")
        else:
            parts.append(json.dumps(v)[:80])
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", default="tau-airline,bfcl-multi-turn")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--rows", help="JSON lines of rows measured before, for the corpora not run")
    args = ap.parse_args(argv)
    rows = [json.loads(x) for x in Path(args.rows).read_text().splitlines()
            if x.startswith("{")] if args.rows else []
    with tempfile.TemporaryDirectory() as tmp:
        for corpus in filter(None, args.corpora.split(",")):
            for half in ("tune", "heldout"):
                row = measure(corpus, half, Path(tmp))
                print(json.dumps(row), flush=True)
                rows.append(row)
    body = table(rows) + (
        "\n\nBFCL's conversations were made from its ground-truth calls: after a turn's results the"
        " next user message follows with no assistant reply between. The structure check learns"
        " that order as the agent's protocol where the corpus shows it in a good share of its"
        " conversations (issue #31: checks an analyst can trust on any agent)."
        "\n\n`tune` halves were looked at while the code was written; `heldout` halves were"
        " measured only. Identical predictions: every pair's reference scored against itself"
        " (`export --format pairs`, `score`). Synthesis: `synth --offline --target 20` after"
        " `check`. Max length: what the longest supervised turn needs, and what `train --plan`"
        " picked (capped by the base model's context and the machine's memory).")
    print(body)
    if not args.no_write:
        write_section("Other agents (bench/other_agents.py)", body,
                      how=" by `python bench/other_agents.py`")


if __name__ == "__main__":
    main()
