"""Every benchmark, one after the other, each in its own process (its peak RSS is its own).

    python bench/run_all.py [DATA_DIR] [--only import_bench,checks_scale] [--no-write] [--list]

`make bench` runs this. The quick ones run by default; the long ones (training, the committee on
a local model, curated-vs-direct training) only when named with --only, since on a 2-core CPU they
take from tens of minutes to hours. Each writes its section of BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = ("import_bench", "checks_scale", "tui_bench", "synth_bench", "checks_accuracy", "other_agents",
         "heldout_agents", "throughput_bench")
LONG = ("eval_bench", "train_bench", "train_memory", "committee_bench", "tft_mini")
NO_DATA_DIR = {"tui_bench", "other_agents", "heldout_agents", "throughput_bench"}   # takes no DATA_DIR argument
NO_WRITE_FLAG = {"tui_bench"}                     # writes nothing: no --no-write flag


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", help="the benchmark data folder (default: each bench's)")
    ap.add_argument("--only", help="comma list of benches to run (quick and long alike)")
    ap.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md as it is")
    ap.add_argument("--list", action="store_true", help="list the benches and exit")
    args = ap.parse_args(argv)
    known = QUICK + LONG
    if args.list:
        for name in known:
            print(f"{name}{'' if name in QUICK else ' (long: --only)'}")
        return 0
    chosen = [n.strip() for n in args.only.split(",")] if args.only else list(QUICK)
    unknown = [n for n in chosen if n not in known]
    if unknown:
        print(f"error: unknown bench {', '.join(unknown)} (known: {', '.join(known)})",
              file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        cmd = [sys.executable, str(HERE / f"{name}.py")]
        if args.data and name not in NO_DATA_DIR:
            cmd.append(args.data)
        if args.no_write and name not in NO_WRITE_FLAG:
            cmd.append("--no-write")
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"error: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
