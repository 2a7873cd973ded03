"""Convert public multi-turn tool-use corpora into the OpenAI chat JSONL of tests/data/<corpus>/.

A stand-alone maintenance script (workbench code never imports it): it reads the upstream files
from a bare git snapshot of the source repository (as `git --git-dir=... show COMMIT:path`), so
the output is reproducible from the commit named in the corpus's ATTRIBUTION.md.

    python bench/corpus_convert.py tau-airline --git-dir /path/to/tau-bench.git --out tests/data/tau-airline
    python bench/corpus_convert.py bfcl-multi-turn --git-dir /path/to/gorilla.git --out tests/data/bfcl-multi-turn

Each output line is `{"messages", "tools", "meta", "reward"?}`; conversations are split into
`tune.jsonl` and `heldout.jsonl` by upstream task id (all trials of one task land on the same
side, so no task is seen on both): by a hash of the id, or where conversations carry a reward,
stratified by the task's mean reward.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path


def git_show(git_dir: str, rev: str, path: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{rev}:{path}"],
                          check=True, capture_output=True).stdout


def git_paths(git_dir: str, rev: str, prefix: str) -> list[str]:
    out = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "-r", "--name-only", rev, prefix],
                         check=True, capture_output=True, text=True).stdout
    return out.split()


def side(task_key: str) -> str:
    """Deterministic ~50/50 split by task id."""
    return "tune" if hashlib.sha256(task_key.encode()).digest()[0] % 2 == 0 else "heldout"


def stratified_sides(rows: list[tuple[str, dict]]) -> dict[str, str]:
    """Tasks sorted by their mean reward (then id) and dealt alternately to tune and heldout, so
    both halves hold tasks of every difficulty (a plain hash split left 0.27 vs 0.56 mean reward)."""
    by_task: dict[str, list[float]] = {}
    for k, r in rows:
        by_task.setdefault(k, []).append(float(r["reward"]))
    order = sorted(by_task, key=lambda k: (sum(by_task[k]) / len(by_task[k]), hashlib.sha256(k.encode()).hexdigest()))
    return {k: ("tune", "heldout")[i % 2] for i, k in enumerate(order)}


def write_split(out: Path, rows: list[tuple[str, dict]], sides: dict[str, str] | None = None) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in ("tune", "heldout"):
        lines = [json.dumps(r, ensure_ascii=False) for k, r in rows
                 if (sides[k] if sides else side(k)) == name]
        (out / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[name] = len(lines)
    return counts


# --- tau-bench (sierra-research/tau-bench): historical_trajectories/*.json ------------------

def tau_tools(git_dir: str, rev: str, domain: str) -> list[dict]:
    """The domain's tool schemas, from each tool class's `get_info()` (the upstream source of
    the schemas the agent was given). The tool modules are loaded from the snapshot in a scratch
    directory under stub packages, so tau-bench's own dependencies are not needed."""
    base = f"tau_bench/envs/{domain}/tools"
    with tempfile.TemporaryDirectory() as tmp:
        for pkg in ("tau_bench", "tau_bench.envs", f"tau_bench.envs.{domain}", f"tau_bench.envs.{domain}.tools"):
            mod = types.ModuleType(pkg)
            mod.__path__ = []
            sys.modules.setdefault(pkg, mod)
        tool_py = Path(tmp, "tool.py")
        tool_py.write_bytes(git_show(git_dir, rev, "tau_bench/envs/tool.py"))
        spec = importlib.util.spec_from_file_location("tau_bench.envs.tool", tool_py)
        m = importlib.util.module_from_spec(spec)
        sys.modules["tau_bench.envs.tool"] = m
        spec.loader.exec_module(m)
        tools = []
        for path in git_paths(git_dir, rev, base + "/"):
            name = Path(path).stem
            if not path.endswith(".py") or name == "__init__":
                continue
            f = Path(tmp, name + ".py")
            f.write_bytes(git_show(git_dir, rev, path))
            spec = importlib.util.spec_from_file_location(f"tau_bench.envs.{domain}.tools.{name}", f)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            for obj in vars(mod).values():
                if isinstance(obj, type) and issubclass(obj, m.Tool) and obj is not m.Tool:
                    tools.append(obj.get_info())
    return sorted(tools, key=lambda t: t["function"]["name"])


def convert_tau(git_dir: str, rev: str, traj_path: str, domain: str, out: Path) -> None:
    tools = tau_tools(git_dir, rev, domain)
    data = json.loads(git_show(git_dir, rev, traj_path))
    rows = []
    for rec in data:
        msgs = []
        for m in rec["traj"]:
            m = dict(m)
            if m["role"] == "assistant" and not m.get("tool_calls"):
                m.pop("tool_calls", None)
            msgs.append(m)
        task = rec.get("info", {}).get("task", {})
        row = {
            "messages": msgs,
            "tools": tools,
            "meta": {"source": "sierra-research/tau-bench", "file": traj_path, "domain": domain,
                     "task_id": rec["task_id"], "trial": rec.get("trial"),
                     "user_id": task.get("user_id")},
            "reward": rec["reward"],
        }
        rows.append((f"{domain}:{rec['task_id']}", row))
    counts = write_split(out, rows, stratified_sides(rows))
    # a raw excerpt of the upstream file for importer tests: the first two records as stored
    (out / "raw_excerpt.json").write_text(json.dumps(data[:2], indent=1, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    print(f"{out}: {counts}")


# --- BFCL multi-turn (ShishirPatil/gorilla, berkeley-function-call-leaderboard) -----------------

BFCL = "berkeley-function-call-leaderboard/bfcl_eval"
BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array"}


def bfcl_schema(node):
    """BFCL's function-doc schema dialect to JSON Schema: `dict`/`float`/`tuple` types renamed,
    `any` dropped (no constraint)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "type" and isinstance(v, str):
                if v == "any":
                    continue
                out[k] = BFCL_TYPES.get(v, v)
            else:
                out[k] = bfcl_schema(v)
        return out
    if isinstance(node, list):
        return [bfcl_schema(v) for v in node]
    return node


def bfcl_backend(git_dir: str, rev: str, tmp: str) -> dict[str, type]:
    """The executable backend classes (BFCL's own simulated file system, trading bot, ...),
    loaded from the snapshot under stub packages so bfcl_eval's dependencies are not needed."""
    src = f"{BFCL}/eval_checker/multi_turn_eval/func_source_code"
    consts = {}
    exec(git_show(git_dir, rev, f"{BFCL}/constants/executable_backend_config.py"), consts)
    prefix = consts["BACKEND_PATH_PREFIX"]
    parts = prefix.split(".")
    for i in range(1, len(parts) + 1):
        mod = types.ModuleType(".".join(parts[:i]))
        mod.__path__ = [tmp] if i == len(parts) else []
        sys.modules.setdefault(".".join(parts[:i]), mod)
    for path in git_paths(git_dir, rev, src + "/"):
        if path.endswith(".py"):
            Path(tmp, Path(path).name).write_bytes(git_show(git_dir, rev, path))
    classes = {}
    for cls, module in consts["CLASS_FILE_PATH_MAPPING"].items():
        if cls.startswith(("WebSearch", "Memory")):
            continue  # not part of the multi-turn suite
        classes[cls] = getattr(importlib.import_module(module), cls)
    return classes, consts["MULTI_TURN_FUNC_DOC_FILE_MAPPING"], consts["STATELESS_CLASSES"]


def bfcl_parse_call(text: str) -> tuple[str, list, dict]:
    """`name(a, k=v)` (a ground-truth call of BFCL, Python syntax, literal arguments)."""
    import ast
    node = ast.parse(text.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain call: {text}")
    args = [ast.literal_eval(a) for a in node.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    return node.func.id, args, kwargs


def bfcl_result(value) -> str:
    """A backend return value as tool-message text (JSON where it serialises, as BFCL does for dicts)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def convert_bfcl(git_dir: str, rev: str, out: Path, category: str = "multi_turn_base") -> None:
    import copy
    import inspect
    import random
    q_path = f"{BFCL}/data/BFCL_v4_{category}.json"
    a_path = f"{BFCL}/data/possible_answer/BFCL_v4_{category}.json"
    questions = [json.loads(x) for x in git_show(git_dir, rev, q_path).decode().splitlines() if x.strip()]
    answers = {a["id"]: a for a in (json.loads(x) for x in git_show(git_dir, rev, a_path).decode().splitlines()
                                    if x.strip())}
    with tempfile.TemporaryDirectory() as tmp:
        classes, doc_files, stateless = bfcl_backend(git_dir, rev, tmp)
        docs = {cls: [json.loads(x) for x in git_show(git_dir, rev, f"{BFCL}/data/multi_turn_func_doc/{f}")
                      .decode().splitlines() if x.strip()]
                for cls, f in doc_files.items() if cls in classes}
        rows, errors = [], 0
        for entry in questions:
            random.seed(0)  # some backends draw random ids; fixed for reproducibility
            excluded = set(entry.get("excluded_function") or [])
            tools = [{"type": "function",
                      "function": {"name": d["name"], "description": d["description"],
                                   "parameters": bfcl_schema(d["parameters"])}}
                     for cls in entry["involved_classes"] for d in docs[cls] if d["name"] not in excluded]
            instances = {}
            for cls in entry["involved_classes"]:
                inst = classes[cls]()
                if cls not in stateless:
                    inst._load_scenario(copy.deepcopy(entry["initial_config"].get(cls, {})), long_context=False)
                instances[cls] = inst
            methods = {name: getattr(inst, name) for inst in instances.values()
                       for name, _ in inspect.getmembers(inst, predicate=inspect.ismethod)
                       if not name.startswith("_")}
            msgs, n_call = [], 0
            for turn, calls in zip(entry["question"], answers[entry["id"]]["ground_truth"]):
                msgs.extend({"role": m["role"], "content": m["content"]} for m in turn)
                if not calls:
                    continue
                tool_calls, results = [], []
                for text in calls:
                    name, args, kwargs = bfcl_parse_call(text)
                    fn = methods[name]
                    bound = inspect.signature(fn).bind(*args, **kwargs)
                    call_id = f"call_{entry['id']}_{n_call}"
                    n_call += 1
                    tool_calls.append({"id": call_id, "type": "function",
                                       "function": {"name": name,
                                                    "arguments": json.dumps(dict(bound.arguments), ensure_ascii=False)}})
                    try:
                        res = bfcl_result(fn(*bound.args, **bound.kwargs))
                    except Exception as e:  # noqa: BLE001 - the backend's own error, kept as its result text
                        errors += 1
                        res = f"Error during execution: {e}"
                    results.append({"role": "tool", "tool_call_id": call_id, "content": res})
                # all ground-truth calls of a user turn in one assistant message, executed in
                # order (as BFCL's executor runs a model's list of calls)
                msgs.append({"role": "assistant", "content": None, "tool_calls": tool_calls})
                msgs.extend(results)
            rows.append((entry["id"], {
                "messages": msgs, "tools": tools,
                "meta": {"source": "ShishirPatil/gorilla", "file": q_path, "answers": a_path,
                         "id": entry["id"], "involved_classes": entry["involved_classes"]},
            }))
    counts = write_split(out, rows)
    (out / "raw_excerpt.jsonl").write_text(
        "\n".join(json.dumps({"question": q, "answer": answers[q["id"]]}, ensure_ascii=False)
                  for q in questions[:2]) + "\n", encoding="utf-8")
    print(f"{out}: {counts}, backend errors kept as results: {errors}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", choices=["tau-airline", "bfcl-multi-turn"])
    ap.add_argument("--git-dir", required=True)
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if a.corpus == "tau-airline":
        convert_tau(a.git_dir, a.rev, "historical_trajectories/gpt-4o-airline.json", "airline", a.out)
    else:
        convert_bfcl(a.git_dir, a.rev, a.out)


if __name__ == "__main__":
    main()
