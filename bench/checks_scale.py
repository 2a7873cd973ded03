"""Checks at scale: time and peak memory of `workbench check` (all default checks) on generated
corpora of real traces, at N/4 and N conversations (wall and CPU time, so that the growth
is the checks' own even when other work shares the machine).

    python bench/checks_scale.py [DATA_DIR] [--traces 10000] [--no-write]

The corpus is the import benchmark's (every scenario's traces, user turns varied so none
dedupe). Each size is imported in one process and checked in a fresh one, so the peak memory
reported is the check's own; "most conversations in memory" is what `run_checks` reports as
held at once (its memory is bounded by that, not by the corpus).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.import_bench import make_corpus  # noqa: E402
from bench.report import ROOT, default_data_dir, git_rev, write_section  # noqa: E402


def import_child(corpus: str, db_path: str, task: str) -> None:
    from db import open_db
    from workbench.traces.importing import import_files

    import_files(open_db(db_path), [corpus], task=Path(task))


def check_child(db_path: str) -> None:
    """Run the checks; print seconds, per-check seconds, flags and peak RSS as JSON."""
    from db import open_db
    from workbench.checks import run_checks

    db = open_db(db_path)
    t0, c0 = time.perf_counter(), time.process_time()
    rep = run_checks(db)
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                      "load": os.getloadavg()[0], "timings": rep["timings"],
                      "turns": rep["assistant_turns"], "flags": len(rep["flags"]),
                      "held": rep.get("conversations_held"),
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", nargs="?", type=Path,
                    default=default_data_dir() or ROOT / "tests" / "data" / "tft")
    ap.add_argument("--traces", type=int, default=10_000)
    ap.add_argument("--largest-only", action="store_true",
                    help="check only the N-trace corpus (no N/4 run, no growth ratio)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = ap.parse_args()
    task = next(args.data_dir.glob("scenario-1-*")) / "job_description.json"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in ((args.traces,) if args.largest_only else (args.traces // 4, args.traces)):
            corpus = Path(tmp) / f"corpus-{n}.jsonl"
            make_corpus(args.data_dir, corpus, n)
            db_path = Path(tmp) / f"checks-{n}.db"
            for argv in (["--import", str(corpus), str(db_path), str(task)], ["--check", str(db_path)]):
                out = subprocess.run([sys.executable, __file__, *argv], capture_output=True,
                                     text=True, check=True, cwd=ROOT)
            r = {"traces": n, **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(r)
            print(json.dumps(r), flush=True)
    body = ["| traces | assistant turns | flags | seconds | CPU seconds | load at end | slowest"
            " checks (s) | peak RSS MiB | most conversations in memory |",
            "|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        slow = ", ".join(f"{k} {v:.1f}" for k, v in
                         sorted(r["timings"].items(), key=lambda kv: -kv[1])[:3])
        body.append(f"| {r['traces']:,} | {r['turns']:,} | {r['flags']:,} | {r['seconds']:.1f}"
                    f" | {r['cpu_seconds']:.1f} | {r['load']:.1f} | {slow} | {r['peak_mib']:.0f} | {r['held']:,} |")
    growth = "" if len(rows) < 2 else (
        f"For 4x the conversations: {rows[1]['cpu_seconds'] / rows[0]['cpu_seconds']:.2f}x"
        f" the CPU time ({rows[1]['seconds'] / rows[0]['seconds']:.2f}x the wall time) and"
        f" {rows[1]['peak_mib'] / rows[0]['peak_mib']:.2f}x the peak memory. ")
    body += ["", growth + "CPU time is the"
             " check process's own (user + system), so other work on the machine moves it far"
             " less than the wall time. Every"
             " pass of a check reads the conversations from the store 500 at a time, and the"
             " coherence check learns from interleaved groups of 500 conversations, one group"
             " in memory at a time: memory holds a group and per-corpus counts, not the corpus;"
             " the flags go to a temporary file as each check ends and into the store at the"
             " end."
             f" Command: `python bench/checks_scale.py --traces {args.traces}"
             f"{' --largest-only' if args.largest_only else ''}` (commit"
             f" {git_rev()})."]
    if not args.no_write:
        write_section("Checks at scale", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--import":
        import_child(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 3 and sys.argv[1] == "--check":
        check_child(sys.argv[2])
    else:
        main()
