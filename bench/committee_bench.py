"""The committee (`workbench relabel`) measured on the TFT benchmark's scenario 2.

    python bench/committee_bench.py [DATA_DIR] [--no-write] [--parts sim,throughput,resume,local]
        [--local-turns N] [--sim-turns suspect|all] [--seed S]

Set-up, as a user would do it: import the scenario-2 traces with scenario 1's
job_description.json as the task, run the default checks as a `check` job, then `relabel` the
suspect turns. Ground truth is scenario 1's original call at the same turn (the traces align
through their non-tool-result user messages; bench/checks_accuracy.py's alignment is reused).

1. Simulated members on loopback OpenAI-compatible servers (tests/scripted_openai.py). A member
   answers the original call with probability p, else a wrong call (another function, or one
   argument changed), drawn from a seed per (member, turn). Wrong answers are distinct per
   member (they never coincide with each other, the original or the current label), so voting
   predicts the outcome exactly (see `predict`). With correlated errors, each turn is, with
   probability rho, one shared draw for all members with one shared wrong answer. The arbiter
   answers the original with probability p_a, else picks a wrong candidate. Measured against
   the prediction: restore rate on corrupted turns, damage to clean turns, the share of wrong
   decisions that went to review instead of into the data, calls per turn.
2. Throughput: two members whose servers answer after a fixed delay, max_concurrency C each;
   turns per second against the ideal C / delay.
3. Kill and resume: `workbench relabel` in a subprocess, SIGKILLed half-way (the servers answer
   the first half of the requests and hold the rest; the kill comes once the worker stored every
   answer it got), then `workbench jobs resume ID`; the servers count the requests answered
   before the kill that are asked again.
4. Real local members: `--committee local` (SmolLM2-135M GGUF, llama.cpp in-process,
   grammar-constrained) on the suspect turns of a few traces chosen by a fixed rule (traces in
   the order of sha256 of their line number, all their suspect turns, until N turns): restore
   share per corruption type, share of clean turns changed, share of wrong decisions sent to
   review. Several committees in one run: `--local-members 'local;local,local:MODEL'`
   (MODEL: a GGUF path or registered model, e.g. a student from `workbench train`); with
   `--parts local` alone they become their own subsection, the other parts' results stay.

Writes the "## Committee (bench/committee_bench.py)" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from math import comb, sqrt
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from bench.checks_accuracy import default_dir, load, messages_by_trace, user_key  # noqa: E402
from bench.report import write_section as write_bench_section  # noqa: E402
from bench.report import write_subsection  # noqa: E402
from db import committee as cstore  # noqa: E402
from db import open_db  # noqa: E402
from db.flags import suspect_turns  # noqa: E402
from db.revisions import current_messages_for  # noqa: E402
from tests.scripted_openai import ScriptedServer, doubtful_turn, tool_call_reply  # noqa: E402
from workbench.committee.members import tool_validators, validate_call  # noqa: E402
from workbench.committee.prompt import render_conversation  # noqa: E402
from workbench.committee.voting import agreed, candidates, label_call, same_call  # noqa: E402
from workbench.conversations.view import iter_conversations  # noqa: E402
from workbench.jobs.context import JobEvent, Progress  # noqa: E402
from workbench.jobs.runner import execute, submit  # noqa: E402

SERVICES = ("FindRestaurants", "ReserveRestaurant")
TYPES = ("other service tool", "wrong parameters", "service -> respond_to_user",
         "respond_to_user -> service", "unrelated message")
NAMES = ("alpha", "bravo", "charlie", "delta")
USER_LINE = re.compile(r"\[\d+\] user: ")


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def corruption(orig: dict | None, cur: dict | None) -> str:
    """The kind of damage, from the scenario-1 call and the scenario-2 label of a turn."""
    o, c = (orig or {}).get("name"), (cur or {}).get("name")
    if o in SERVICES:
        if c in SERVICES:
            return "wrong parameters" if o == c else "other service tool"
        return "service -> respond_to_user"
    return "respond_to_user -> service" if c in SERVICES else "unrelated message"


# ------------------------------------------------------------------------------ ground truth

@dataclass
class Truth:
    """Scenario 2 after the checks, aligned with scenario 1."""

    base: Path                                        # the checked S2 store (copied per run)
    original: dict = field(default_factory=dict)      # (trace, turn) -> S1 call
    label: dict = field(default_factory=dict)         # (trace, turn) -> S2 call
    kind: dict = field(default_factory=dict)          # (trace, turn) -> clean | a TYPES entry
    suspect: set = field(default_factory=set)
    line: dict = field(default_factory=dict)          # trace -> line in traces.jsonl
    by_text: dict = field(default_factory=dict)       # rendered conversation -> trace
    by_users: dict = field(default_factory=dict)      # its user lines -> trace
    invalid_originals: int = 0
    check_seconds: float = 0.0

    def locate(self, body: dict) -> tuple[int, int] | None:
        """The (trace, turn) a committee request asks about, from its prompt."""
        text = body["messages"][-1]["content"]
        conv = text.split("\nConversation:\n", 1)[1].split(
            "\n\nWhich call should the assistant have made at turn [", 1)[0]
        conv = conv.replace(">>> DOUBTFUL <<< ", "", 1)
        tid = self.by_text.get(conv)
        if tid is None:     # labels changed since (user messages never do)
            tid = self.by_users.get(user_lines(conv))
        return None if tid is None else (tid, doubtful_turn(body))


def user_lines(rendered: str) -> str:
    return "\n".join(x for x in rendered.splitlines() if USER_LINE.match(x))


def prepare(tmp: Path, data: Path) -> Truth:
    db1 = load(tmp, data, "scenario-1")
    db2 = load(tmp, data, "scenario-2")
    t0 = time.perf_counter()
    row = execute(db2, submit(db2, "check", {}, {}))
    if row["status"] != "succeeded":
        raise SystemExit(f"check job {row['status']}: {row['error']}")
    truth = Truth(base=tmp / "scenario-2.db", check_seconds=time.perf_counter() - t0)
    s1 = {user_key(v["messages"]): v["messages"] for v in messages_by_trace(db1).values()}
    s2 = messages_by_trace(db2)
    for t, v in s2.items():
        truth.line[t] = v["line"]
        orig = s1[user_key(v["messages"])]
        for i, (a, b) in enumerate(zip(orig, v["messages"])):
            if b["role"] != "assistant":
                continue
            truth.original[t, i], truth.label[t, i] = label_call(a), label_call(b)
            truth.kind[t, i] = "clean" if a == b else corruption(label_call(a), label_call(b))
    truth.suspect = {(t, i) for t, s in suspect_turns(db2, list(s2)).items() for i in s}
    for batch in iter_conversations(db2):
        for c in batch:
            rendered = render_conversation(c.messages, -1)
            truth.by_text[rendered] = c.trace_id
            truth.by_users[user_lines(rendered)] = c.trace_id
            validators = tool_validators(c.tools)
            truth.invalid_originals += sum(
                validate_call(truth.original[c.trace_id, i], validators)[0] is None
                for i, m in enumerate(c.messages) if m["role"] == "assistant")
    db1.conn.close()
    db2.conn.close()
    return truth


def copy_store(truth: Truth, dst: Path) -> Path:
    src, out = sqlite3.connect(truth.base), sqlite3.connect(dst)
    src.backup(out)
    src.close()
    out.close()
    return dst


# -------------------------------------------------------------------------- simulated members

def draw(*parts) -> float:
    """A uniform number fixed by its parts (random.Random seeds a str through sha512)."""
    return random.Random(":".join(map(str, parts))).random()


def wrong_call(truth: dict, who: str, v: float) -> dict:
    """A schema-valid wrong call that names `who`: distinct per member, never the original or
    a label of the data. Half of them call another function, half change one argument."""
    name, args = truth["name"], dict(truth["arguments"])
    if v < 0.5:
        if name == "respond_to_user":
            return {"name": "FindRestaurants", "arguments": {"cuisine": f"{who} food",
                                                             "city": f"{who}ville"}}
        return {"name": "respond_to_user", "arguments": {
            "message": f"Sorry, {who} cannot help with that."}}
    if name == "respond_to_user":
        args["message"] = f"Is there anything else, {who}?"
    else:
        args["city"] = f"{who}ville"
    return {"name": name, "arguments": args}


def parse_candidates(text: str) -> list[dict]:
    """The candidate calls listed in an arbiter request (`- name({json})` lines)."""
    out = []
    for line in text.split("\nCandidates:\n", 1)[1].splitlines():
        if not line.startswith("- "):
            break
        name, _, rest = line[2:].partition("(")
        out.append({"name": name, "arguments": json.loads(rest[:-1])})
    return out


@dataclass(frozen=True)
class Case:
    name: str
    members: int
    p: float
    arbiter_p: float | None = None
    rho: float = 0.0            # share of turns where the members share one draw and one error
    seed: int = 0

    def member_call(self, k: int, key: tuple[int, int], truth: dict) -> dict:
        if self.rho and draw(self.seed, "together", *key) < self.rho:
            u, who = draw(self.seed, "shared", *key), "shared"
        else:
            u, who = draw(self.seed, "member", k, *key), NAMES[k]
        return truth if u < self.p else wrong_call(truth, who, draw(self.seed, "how", who, *key))

    def arbiter_call(self, key: tuple[int, int], truth: dict, cands: list[dict]) -> dict:
        if draw(self.seed, "arbiter", *key) < self.arbiter_p:
            return truth
        wrong = [c for c in cands if not same_call(c, truth)]
        return wrong[0] if wrong else wrong_call(truth, "arbiter", 0.0)


def predict(case: Case) -> dict:
    """What voting predicts for these accuracies (strict majority; wrong answers distinct).

    Shared draw (probability rho): all members right (p), or all wrong with the same call
    (1 - p), which they agree on: a wrong decision, on corrupted and clean turns alike.
    Independent draws, three members: two or three right (p^3 + 3p^2(1-p)) decide the original;
    otherwise no two votes agree and the turn goes to review.
    Independent draws, two members and an arbiter (right with probability a):
      both right p^2: the original;
      one right 2p(1-p): the arbiter picks the original (a) or a wrong candidate (1-a);
      both wrong (1-p)^2: the candidates are the two wrong calls plus the current label. On a
      clean turn that label is the original: the arbiter picks it (a) or a wrong one (1-a). On
      a corrupted turn the original is no candidate: an arbiter that answers it is not taken,
      the turn goes to review (a); else a wrong candidate is decided (1-a).
      Calls: 2, plus the arbiter when the members disagree (1 - p^2).
    """
    p, rho = case.p, case.rho
    if case.arbiter_p is None:
        right = p ** 3 + comb(3, 2) * p ** 2 * (1 - p) if case.members == 3 else p ** case.members
        ind = {"c_right": right, "c_review": 1 - right, "k_right": right, "k_review": 1 - right,
               "calls": case.members}
    else:
        a = case.arbiter_p
        one, none = 2 * p * (1 - p), (1 - p) ** 2
        ind = {"c_right": p * p + one * a, "c_review": none * a,
               "k_right": p * p + (one + none) * a, "k_review": 0.0, "calls": 3 - p * p}
    shared = {"c_right": p, "c_review": 0.0, "k_right": p, "k_review": 0.0,
              "calls": case.members}
    out = {k: rho * shared[k] + (1 - rho) * ind[k] for k in ind}
    return {"restore": out["c_right"], "c_review": out["c_review"],
            "c_wrong": 1 - out["c_right"] - out["c_review"],
            "damage": 1 - out["k_right"] - out["k_review"], "k_review": out["k_review"],
            "calls": out["calls"]}


def replay(case: Case, truth: Truth, key: tuple[int, int]) -> dict | None:
    """The label voting gives a turn from the same draws, computed here without the committee
    (the committee's own result must equal it on every turn)."""
    orig, label = truth.original[key], truth.label[key]
    votes = [{"call": case.member_call(k, key, orig)} for k in range(case.members)]
    decision = agreed(votes, case.members, "majority")
    if decision is None and case.arbiter_p is not None:
        cands = candidates(votes)
        if not any(same_call(label, c) for c in cands):
            cands.append(label)
        pick = case.arbiter_call(key, orig, cands)
        decision = pick if any(same_call(pick, c) for c in cands) else None
    return label if decision is None else decision


def evaluate(db, truth: Truth, job_id: int, turns: set) -> dict:
    """Outcomes on the given turns, split into corrupted and clean ones."""
    decided = {(t["trace_id"], t["message_idx"]): t for t in cstore.latest_turns(db, job_id)}
    final = current_messages_for(db, sorted({t for t, _ in turns}))
    out = {g: Counter() for g in ("corrupted", "clean")}
    by_type: dict[str, Counter] = {}
    for key in sorted(turns):
        row = decided.get(key)
        if row is None:
            continue
        kind = truth.kind[key]
        c = out["clean" if kind == "clean" else "corrupted"]
        t = by_type.setdefault(kind, Counter())
        original = truth.original[key]
        label = label_call(final[key[0]][key[1]])
        for cnt in (c, t):
            cnt["n"] += 1
            cnt["restored"] += same_call(label, original)
            cnt["function"] += (label or {}).get("name") == (original or {}).get("name")
            cnt["changed"] += not same_call(label, truth.label[key])
            cnt["calls"] += sum(v["raw"] is not None for v in row["votes"])
            cnt["abstained"] += sum(v["call"] is None for v in row["votes"])
            cnt[row["outcome"]] += 1
            if row["outcome"] in ("revised", "confirmed"):
                cnt["right" if same_call(row["call"], original) else "wrong"] += 1
    return {"groups": {g: dict(c) for g, c in out.items()},
            "types": {k: dict(v) for k, v in by_type.items()}}


def share(a: float, b: float) -> float | None:
    return a / b if b else None


def measures(group: dict) -> dict:
    n = group.get("n", 0)
    wrong = group.get("wrong", 0) + group.get("review", 0)
    return {"n": n, "restore": share(group.get("restored", 0), n),
            "function": share(group.get("function", 0), n),
            "changed": share(group.get("changed", 0), n),
            "review": share(group.get("review", 0), n),
            "wrong": share(group.get("wrong", 0), n),
            "wrong_to_review": share(group.get("review", 0), wrong),
            "not_right": wrong, "calls": share(group.get("calls", 0), n)}


def run_sim(truth: Truth, tmp: Path, case: Case, turns_mode: str) -> dict:
    db_path = copy_store(truth, tmp / f"sim-{len(os.listdir(tmp))}.db")

    def member(k: int):
        def reply(body: dict) -> dict:
            key = truth.locate(body)
            if key is None:
                return {"status": 400, "body": "unknown conversation"}
            call = case.member_call(k, key, truth.original[key])
            return tool_call_reply(call["name"], call["arguments"])
        return reply

    def arbiter(body: dict) -> dict:
        key = truth.locate(body)
        if key is None:
            return {"status": 400, "body": "unknown conversation"}
        call = case.arbiter_call(key, truth.original[key],
                                 parse_candidates(body["messages"][-1]["content"]))
        return tool_call_reply(call["name"], call["arguments"])

    servers = [ScriptedServer(member(k)) for k in range(case.members)]
    arb = ScriptedServer(arbiter) if case.arbiter_p is not None else None
    db = open_db(db_path)
    try:
        params = {"committee": [f"{s.url}#{NAMES[k]}" for k, s in enumerate(servers)],
                  "turns": turns_mode, "accept": True}
        if arb:
            params["arbiter"] = f"{arb.url}#arbiter"
        t0 = time.perf_counter()
        row = execute(db, submit(db, "relabel", {}, params))
        wall = time.perf_counter() - t0
        if row["status"] != "succeeded":
            raise SystemExit(f"relabel {case.name}: {row['status']}: {row['error']}")
        requests = sum(s.count for s in servers) + (arb.count if arb else 0)
        suspect = evaluate(db, truth, row["id"], truth.suspect)
        voted = {(t["trace_id"], t["message_idx"]) for t in cstore.latest_turns(db, row["id"])}
        final = current_messages_for(db, sorted({t for t, _ in voted}))
        differ = sum(not same_call(label_call(final[t][i]), replay(case, truth, (t, i)))
                     for t, i in voted)
        every = evaluate(db, truth, row["id"], set(truth.kind)) if turns_mode == "all" else None
    finally:
        db.conn.close()
        for s in [*servers, *([arb] if arb else [])]:
            s.close()
    res = {"case": case.name, "members": case.members, "p": case.p, "arbiter_p": case.arbiter_p,
           "rho": case.rho, "seconds": wall, "voted": row["result"]["voted"],
           "requests": requests, "calls_per_turn_job": row["result"]["calls_per_turn"],
           "differ_from_replay": differ,
           "predicted": predict(case),
           "suspect": {g: measures(v) for g, v in suspect["groups"].items()}}
    if every:
        res["all"] = {g: measures(v) for g, v in every["groups"].items()}
    log(case.name, json.dumps({k: res[k] for k in ("seconds", "voted", "requests",
                                                   "differ_from_replay")}),
        json.dumps(res["suspect"]))
    return res


CASES = (
    Case("2 members + arbiter, independent", 2, 0.9, arbiter_p=0.9),
    Case("2 members + arbiter, correlated (rho 0.5)", 2, 0.9, arbiter_p=0.9, rho=0.5),
    Case("3 members majority, independent", 3, 0.8),
    Case("3 members majority, correlated (rho 0.5)", 3, 0.8, rho=0.5),
)


# -------------------------------------------------------------------------------- throughput

def first_traces(truth: Truth, n_turns: int) -> int:
    """How many traces (by id) hold at least n_turns suspect turns."""
    per = Counter(t for t, _ in truth.suspect)
    total = 0
    for k, tid in enumerate(sorted(truth.line), 1):
        total += per[tid]
        if total >= n_turns:
            return k
    return len(truth.line)


SERVER = """
import sys
from tests.scripted_openai import ScriptedServer, tool_call_reply
reply = {**tool_call_reply("respond_to_user", {"message": "For how many people?"}),
         "delay": float(sys.argv[1])}
server = ScriptedServer(lambda body: reply)
print(server.url, flush=True)
sys.stdin.read()
print(server.count, flush=True)
"""


class ServerProcess:
    """A scripted server in its own process: the measured job shares no interpreter with it."""

    def __init__(self, delay: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(delay)], cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)},
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()

    def close(self) -> int:
        """Stop it; the number of requests it answered."""
        out, _ = self.proc.communicate(timeout=30)
        return int(out.strip() or 0)


def run_throughput(truth: Truth, tmp: Path, n_turns: int, delay: float, conc: int,
                   runs: int) -> dict:
    """`runs` runs (the 2 cores are shared: their median is the figure, every run is shown)."""
    out = [throughput_once(truth, tmp, n_turns, delay, conc) for _ in range(runs)]
    mid = sorted(out, key=lambda r: r["ratio"])[len(out) // 2]
    return {**mid, "runs": out}


def throughput_once(truth: Truth, tmp: Path, n_turns: int, delay: float, conc: int) -> dict:
    """Two members that always agree, each server answering after `delay`, each endpoint with
    max_concurrency `conc`: a turn needs one request at each, in parallel, so the ideal is
    conc / delay turns per second."""
    db_path = copy_store(truth, tmp / f"throughput-{len(os.listdir(tmp))}.db")
    servers = [ServerProcess(delay), ServerProcess(delay)]
    config = tmp / "throughput.toml"
    config.write_text("".join(
        f'[endpoints.{n}]\nbase_url = "{s.url}"\nmodel = "m"\nmax_concurrency = {conc}\n'
        f'retries = 0\ntimeout = 60\n' for n, s in zip(("slow_a", "slow_b"), servers)))
    old = os.environ.get("WORKBENCH_CONFIG")
    os.environ["WORKBENCH_CONFIG"] = str(config)
    stamps: list[tuple[float, int]] = []

    def progress(event: JobEvent) -> None:
        if isinstance(event, Progress) and event.done:
            stamps.append((time.perf_counter(), event.done))

    db = open_db(db_path)
    load = os.getloadavg()[0]
    try:
        limit = first_traces(truth, n_turns)
        t0, c0 = time.perf_counter(), time.process_time()
        row = execute(db, submit(db, "relabel", {"limit": limit},
                                 {"committee": ["slow_a", "slow_b"], "accept": True}),
                      listeners=[progress])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        db.conn.close()
        requests = sum(s.close() for s in servers)
        if old is None:
            os.environ.pop("WORKBENCH_CONFIG")
        else:
            os.environ["WORKBENCH_CONFIG"] = old
    if row["status"] != "succeeded":
        raise SystemExit(f"throughput relabel: {row['status']}: {row['error']}")
    voted = row["result"]["voted"]
    ideal = conc / delay
    (t_first, n_first), (t_last, n_last) = stamps[0], stamps[-1]
    steady = (n_last - n_first) / (t_last - t_first) if t_last > t_first else 0.0
    res = {"traces": limit, "turns": voted, "requests": requests, "delay": delay,
           "max_concurrency": conc, "seconds": wall, "turns_per_s": voted / wall,
           "steady_turns_per_s": steady, "ideal_turns_per_s": ideal,
           "ratio": voted / wall / ideal, "steady_ratio": steady / ideal,
           "first_turn_s": t_first - t0, "load_avg": load, "cpu_s": cpu,
           "cpu_ms_per_turn": 1000 * cpu / max(1, voted)}
    log("throughput", json.dumps(res))
    return res


# ---------------------------------------------------------------------------- kill and resume

def run_resume(truth: Truth, tmp: Path, n_turns: int) -> dict:
    """Member a answers every request; member b holds its requests for the later half of each
    trace's suspect turns. SIGKILL the worker once it has stored every reply it got (the
    earlier turns decided, the later ones with one stored reply of two); resume; count the
    requests answered before the kill that are asked again."""
    db_path = copy_store(truth, tmp / "resume.db")
    limit = first_traces(truth, n_turns)
    lock = threading.Lock()
    hold = threading.Event()
    state = {"killed": False}
    before: list[tuple] = []        # bodies answered before the kill
    held: list[tuple] = []          # asked before the kill, not answered
    after: list[tuple] = []         # asked after the kill

    db = open_db(db_path)
    chosen = set(sorted(truth.line)[:limit])
    turns = sum(1 for t, _ in truth.suspect if t in chosen)
    per: dict[int, list[int]] = {}
    for t, i in sorted(truth.suspect):
        if t in chosen:
            per.setdefault(t, []).append(i)
    later = {(t, i) for t, idx in per.items() for r, i in enumerate(idx) if r >= max(1, len(idx) // 2)}

    def server(k: int):
        def reply(body: dict) -> dict:
            where = truth.locate(body)
            key = (k, json.dumps(body["messages"], sort_keys=True), where)
            with lock:
                if state["killed"]:
                    after.append(key)
                    gate = False
                elif k == 1 and where in later:
                    held.append(key)
                    gate = True
                else:
                    before.append(key)
                    gate = False
            if gate:
                hold.wait(120)
                return {"status": 500, "body": "dropped"}    # the worker is gone by now
            call = truth.original.get(where) or {"name": "respond_to_user",
                                                 "arguments": {"message": "Anything else?"}}
            return {**tool_call_reply(call["name"], call["arguments"]), "delay": 0.02}
        return reply

    with ScriptedServer(server(0)) as a, ScriptedServer(server(1)) as b:
        config = tmp / "resume.toml"     # b's held requests must not take every slot
        config.write_text(f'[endpoints.a]\nbase_url = "{a.url}"\nmodel = "m"\n'
                          f'[endpoints.b]\nbase_url = "{b.url}"\nmodel = "m"\n'
                          f'max_concurrency = {2 * turns}\n')
        env = {**os.environ, "PYTHONPATH": str(ROOT), "WORKBENCH_CONFIG": str(config)}
        base = [sys.executable, "-m", "workbench", "--db", str(db_path)]
        proc = subprocess.Popen([*base, "relabel", "--committee", "a,b", "--accept",
                                 "--limit", str(limit), "--json"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        stored, seen, since = 0, -1, time.monotonic()
        while time.monotonic() < deadline and proc.poll() is None:
            # the kill comes when every answered reply is stored and nothing moved for 1 s
            with lock:
                n = len(before)
            if n != seen:
                seen, since = n, time.monotonic()
            stored = db.execute("SELECT count(*) FROM job_units WHERE kind = 'committee.vote'"
                                ).fetchone()[0]
            if n and stored == n and time.monotonic() - since > 1.0:
                break
            time.sleep(0.05)
        decided_at_kill = db.execute("SELECT count(*) FROM committee_turns").fetchone()[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with lock:
            state["killed"] = True
            n_held = len(held)
        hold.set()
        job_id = db.execute("SELECT max(id) FROM jobs WHERE kind = 'relabel'").fetchone()[0]
        db.conn.close()
        t0 = time.perf_counter()
        r = subprocess.run([*base, "jobs", "resume", str(job_id)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
        resume_s = time.perf_counter() - t0
    db = open_db(db_path)
    row = db.execute("SELECT status, result FROM jobs WHERE id = ?", [job_id]).fetchone()
    decided = {(t["trace_id"], t["message_idx"]) for t in cstore.latest_turns(db)}
    db.conn.close()
    result = json.loads(row[1]) if row[1] else {}
    answered = {(k[0], k[2]) for k in before}          # (member, (trace, turn))
    repeated = sum((k[0], k[2]) in answered for k in after)
    repeated_bodies = sum(k in set(before) for k in after)
    res = {"traces": limit, "turns": turns, "requests_needed": 2 * turns,
           "answered_before_kill": len(before), "stored_at_kill": stored,
           "turns_decided_at_kill": decided_at_kill, "held_at_kill": n_held,
           "asked_after_resume": len(after), "repeated": repeated,
           "repeated_bodies": repeated_bodies,
           "unlocated": sum(k[2] is None for k in [*before, *after]),
           "duplicates_after_resume": len(after) - len(set(after)),
           "distinct_bodies": len(set(before) | set(after)), "status": row[0],
           "resume_rc": r.returncode, "resume_seconds": resume_s,
           "units_reused": (result.get("units") or {}).get("reused"),
           "turns_decided": len(decided)}
    if r.returncode:
        res["resume_stderr"] = r.stderr[-2000:]
    log("resume", json.dumps(res))
    return res


# ------------------------------------------------------------------------------ local members

def local_traces(truth: Truth, n_turns: int) -> list[int]:
    """Traces in the order of sha256 of their line number, until they hold n_turns suspect
    turns (all of each trace's suspect turns are voted on)."""
    per = Counter(t for t, _ in truth.suspect)
    order = sorted(truth.line, key=lambda t: hashlib.sha256(str(truth.line[t]).encode()
                                                            ).hexdigest())
    chosen, total = [], 0
    for tid in order:
        if total >= n_turns:
            break
        if per[tid]:
            chosen.append(tid)
            total += per[tid]
    return chosen


def run_local(truth: Truth, tmp: Path, n_turns: int, members: list[str]) -> dict:
    db_path = copy_store(truth, tmp / "local.db")
    tids = local_traces(truth, n_turns)
    db = open_db(db_path)

    def progress(event: JobEvent) -> None:
        if isinstance(event, Progress):
            log("local", event.message)

    try:
        t0 = time.perf_counter()
        row = execute(db, submit(db, "relabel", {"trace_ids": tids}, {"committee": members,
                                                                 "accept": True}),
                      listeners=[progress])
        wall = time.perf_counter() - t0
        if row["status"] != "succeeded":
            raise SystemExit(f"local relabel: {row['status']}: {row['error']}")
        turns = {k for k in truth.suspect if k[0] in set(tids)}
        ev = evaluate(db, truth, row["id"], turns)
        reasons = Counter()
        for t in cstore.latest_turns(db, row["id"]):
            for v in t["votes"]:
                if v["abstain_reason"]:
                    reasons[v["abstain_reason"].split(":")[0][:40]] += 1
    finally:
        db.conn.close()
    result = row["result"]
    res = {"members": members, "traces": tids, "turns": len(turns), "seconds": wall,
           "calls": result["calls"], "tokens_in": result["tokens_in"],
           "tokens_out": result["tokens_out"], "outcomes": result["outcomes"],
           "groups": {g: measures(v) for g, v in ev["groups"].items()},
           "types": {k: measures(v) for k, v in ev["types"].items()},
           "abstain_reasons": dict(reasons),
           "all_clean_turns": sum(1 for k, kind in truth.kind.items()
                                  if k[0] in set(tids) and kind == "clean")}
    log("local", json.dumps(res))
    return res


# ------------------------------------------------------------------------------------ report

def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", type=Path, default=None)
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    ap.add_argument("--parts", default="sim,throughput,resume,local")
    ap.add_argument("--sim-turns", default="all", choices=["suspect", "all"],
                    help="turns the simulated committees vote on; suspect turns are reported"
                    " either way (all: also every turn, a larger sample of clean turns)")
    ap.add_argument("--local-turns", type=int, default=30,
                    help="suspect turns for the real local members (0: skip)")
    ap.add_argument("--local-members", default="local",
                    help="committees of local members: members joined by ',', committees by"
                    " ';' (e.g. 'local;local,local:runs/student/model-q8_0.gguf')")
    ap.add_argument("--student-note", default="",
                    help="how the student member was trained (written with the results)")
    ap.add_argument("--throughput-turns", type=int, default=400)
    ap.add_argument("--throughput-runs", type=int, default=3)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--resume-turns", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    data = args.data or default_dir()
    results: dict = {"data": str(data), "parts": sorted(parts),
                     "student_note": args.student_note}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = prepare(tmp, data)
        kinds = Counter(truth.kind[k] for k in truth.suspect)
        results["setup"] = {"turns": len(truth.kind), "suspect": len(truth.suspect),
                            "suspect_corrupted": sum(v for k, v in kinds.items() if k != "clean"),
                            "suspect_clean": kinds["clean"], "suspect_types": dict(kinds),
                            "corrupted": sum(k != "clean" for k in truth.kind.values()),
                            "invalid_originals": truth.invalid_originals,
                            "check_seconds": truth.check_seconds}
        log("setup", json.dumps(results["setup"]))
        if "sim" in parts:
            results["sim_turns"] = args.sim_turns
            results["sim"] = [run_sim(truth, tmp, Case(**{**c.__dict__, "seed": args.seed}),
                                      args.sim_turns) for c in CASES]
        if "throughput" in parts:
            results["throughput"] = run_throughput(truth, tmp, args.throughput_turns,
                                                   args.delay, args.concurrency,
                                                   args.throughput_runs)
        if "resume" in parts:
            results["resume"] = run_resume(truth, tmp, args.resume_turns)
        if "local" in parts and args.local_turns > 0:
            results["local"] = [run_local(truth, tmp, args.local_turns, c.split(","))
                                for c in args.local_members.split(";") if c]
    return results


def member_words(member: str) -> str:
    if member == "local":
        return "`local` (SmolLM2-135M-Instruct Q4_1)"
    return f"`{member}` (a student from `workbench train`, see below)"


def local_lines(committees: list[dict]) -> list[str]:
    """The real local committees: a summary row each, then the turns by corruption type."""
    first = committees[0]
    lines = [
        "### Real local members", "",
        "Members run by llama.cpp in-process (one thread, grammar-constrained to the call"
        " schema); a committee of one decides by its valid answer, a committee of two by their"
        " agreement (no arbiter: disagreement goes to review). Turns: all suspect turns of"
        f" {len(first['traces'])} traces taken in the order of sha256 of their line number"
        f" until {first['turns']} >= `--local-turns`. 'Clean turns changed' counts the clean"
        " turns whose label the committee changed, over the clean turns it voted on (suspect"
        " but clean) and over all clean turns of those traces.", "",
        "| committee | calls | s per call | outcomes | corrupted turns restored (function and"
        " arguments) | function of the original | clean turns changed: of those voted on; of"
        " all | wrong decisions sent to review |",
        "|---|---:|---:|---|---:|---:|---|---:|"]
    for loc in committees:
        g = loc["groups"]
        c, kl = g.get("corrupted", {}), g.get("clean", {})
        changed = kl.get("changed")
        n_clean = kl.get("n", 0)
        of_all = (None if not loc.get("all_clean_turns") else
                  (changed or 0) * n_clean / loc["all_clean_turns"])
        lines.append(
            f"| {' + '.join(member_words(m) for m in loc['members'])} | {loc['calls']}"
            f" | {loc['seconds'] / max(1, loc['calls']):.1f}"
            f" | {', '.join(f'{k} {v}' for k, v in loc['outcomes'].items() if v)}"
            f" | {pct(c.get('restore'))} of {c.get('n', 0)} | {pct(c.get('function'))}"
            f" | {pct(changed)} of {n_clean}; {pct(of_all)} of {loc.get('all_clean_turns', '-')}"
            f" (goal < 3%) | {pct(c.get('wrong_to_review'))} |")
    for loc in committees:
        lines += ["", f"`--committee {','.join(loc['members'])}`: {loc['seconds']:.0f} s,"
                  f" {loc['tokens_in']} tokens in, {loc['tokens_out']} out. Abstentions: "
                  + (", ".join(f"{k} {v}" for k, v in loc["abstain_reasons"].items()) or "none")
                  + ".", "",
                  "| turns | n | restored to the original (function and arguments) | function"
                  " of the original | label changed | wrong decisions sent to review |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in (*TYPES, "clean"):
            m = loc["types"].get(name)
            if m:
                lines.append(f"| {name} | {m['n']} |"
                             f" {pct(m['restore'] if name != 'clean' else None)}"
                             f" | {pct(m['function'])} | {pct(m['changed'])}"
                             f" | {pct(m['wrong_to_review'])} |")
        missing = [name for name in TYPES if name not in loc["types"]]
        if missing:
            lines += ["", "No turn of this subset is of type " + ", ".join(missing)
                      + "; a larger `--local-turns` covers more."]
    return lines + [""]


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def se(p: float, n: int) -> float:
    return sqrt(max(p * (1 - p), 0.0) / n) if n else 0.0


def sim_lines(r: dict, scope: str) -> list[str]:
    lines = ["| committee | corrupted turns | restored: measured / predicted | clean turns |"
             " clean changed: measured / predicted | wrong decisions sent to review (corrupted;"
             " clean): measured / predicted | calls per turn: measured / predicted |",
             "|---|---:|---|---:|---|---|---|"]
    for s in r["sim"]:
        c, k, pr = s[scope]["corrupted"], s[scope]["clean"], s["predicted"]
        pc = share(pr["c_review"], pr["c_review"] + pr["c_wrong"])
        pk = share(pr["k_review"], pr["k_review"] + pr["damage"])
        calls = share(c["calls"] * c["n"] + k["calls"] * k["n"], c["n"] + k["n"])
        who = f"{s['case']}: p {s['p']}" + (f", arbiter p {s['arbiter_p']}" if s["arbiter_p"]
                                             else "")
        lines.append(
            f"| {who} | {c['n']} | {pct(c['restore'])} / {pct(pr['restore'])}"
            f" (+-{100 * se(pr['restore'], c['n']):.1f}) | {k['n']}"
            f" | {pct(k['changed'])} / {pct(pr['damage'])} (+-{100 * se(pr['damage'], k['n']):.1f})"
            f" | {pct(c['wrong_to_review'], 0)} / {pct(pc, 0)}; {pct(k['wrong_to_review'], 0)} /"
            f" {pct(pk, 0)} | {calls:.2f} / {pr['calls']:.2f} |")
    return lines


TITLE = "Committee (bench/committee_bench.py)"


def write_local_only(r: dict) -> None:
    """`--parts local` alone: its committees become their own subsection of the Committee
    section (replacing an earlier one of the same members), the other parts' results stay."""
    committees = r["local"]
    members = ";".join(",".join(c["members"]) for c in committees)
    body = local_lines(committees)[1:]   # without the generic title
    if r.get("student_note"):
        body += ["The student: " + r["student_note"], ""]
    write_subsection(TITLE, "Real local members: " + members.replace(";", "; "), "\n".join(body),
                     how=f" by `python bench/committee_bench.py --parts local --local-members"
                         f" '{members}'`, cores shared with other work")


def write_section(r: dict) -> None:
    if set(r["parts"]) == {"local"}:
        write_local_only(r)
        return
    st = r["setup"]
    lines = [
        f"Scenario 2 imported with scenario 1's task, the default checks run as a `check` job"
        f" ({st['check_seconds']:.1f} s): {st['suspect']} suspect turns, {st['suspect_corrupted']}"
        f" of them corrupted and {st['suspect_clean']} clean (of {st['turns']} assistant turns,"
        f" {st['corrupted']} corrupted). Ground truth: scenario 1's call at the same turn"
        " (aligned by the user messages); a label is right when it is the same call as the"
        " original (`workbench.committee.voting.same_call`)."
        + (f" {st['invalid_originals']} originals fail the tool schema." if
           st["invalid_originals"] else ""), ""]
    if "sim" in r:
        lines += [
            "### Simulated members of known accuracy", "",
            "Loopback OpenAI-compatible servers; each member answers the original call with"
            " probability p, else a wrong call (another function or one changed argument,"
            " distinct per member), seeded per (member, turn). Correlated: on half of the turns"
            " (rho 0.5) the members share one draw and one wrong answer. The arbiter answers the"
            " original with its p, else picks a wrong candidate. Predicted: exact voting"
            " arithmetic for those p (`predict` in the script); +- is one binomial standard"
            " error of the measured share at that sample size. 'Wrong decisions sent to review':"
            " of the turns the committee did not get right, the share that went to the review"
            " queue rather than into the data. Goal: within 2 points; calls per suspect turn"
            " <= 2.5 with two members and an arbiter.", "",
            f"On the {st['suspect']} suspect turns:", "", *sim_lines(r, "suspect"), ""]
        if r.get("sim_turns") == "all":
            lines += ["The same runs on every assistant turn (the committee voted on all"
                      f" {st['turns']} turns; more clean turns, smaller error bars):", "",
                      *sim_lines(r, "all"), ""]
        lines += ["Turns where the committee's result differs from the voting rule applied"
                  " offline to the same draws: " + ", ".join(
                      f"{s['differ_from_replay']} of {s['voted']}" for s in r["sim"])
                  + " (one per case). The gaps to the prediction are therefore the draws"
                  " themselves (sampling), not the committee.", ""]
        for scope in ("suspect", "all"):
            gaps = [(abs(x), abs(x) / e if e else 0.0) for s in r["sim"] if scope in s
                    for x, e in ((s[scope]["corrupted"]["restore"] - s["predicted"]["restore"],
                                  se(s["predicted"]["restore"], s[scope]["corrupted"]["n"])),
                                 (s[scope]["clean"]["changed"] - s["predicted"]["damage"],
                                  se(s["predicted"]["damage"], s[scope]["clean"]["n"])))]
            if gaps:
                lines += [f"Largest gap between measured and predicted restore or damage"
                          f" ({'suspect turns' if scope == 'suspect' else 'every turn'}):"
                          f" {100 * max(g for g, _ in gaps):.1f} points; largest in standard"
                          f" errors: {max(z for _, z in gaps):.1f}.", ""]
    if "throughput" in r:
        t = r["throughput"]
        lines += [
            "### Throughput", "",
            f"Two members that always agree, each server answering after {t['delay']} s (in its"
            f" own process), max_concurrency {t['max_concurrency']} per endpoint, on the"
            f" {t['turns']} suspect turns of the first {t['traces']} traces ({t['requests']}"
            f" requests). Ideal: {t['ideal_turns_per_s']:.0f} turns/s (concurrency / delay)."
            f" {len(t['runs'])} runs, the median (by the whole job's share) first.", "",
            "| run | whole job: s | first turn decided after s | turns/s | share of ideal |"
            " steady state (first to last decided turn): turns/s | share of ideal | CPU ms per"
            " turn | load average at start |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, x in [("median", t), *((f"{k}", x) for k, x in enumerate(t["runs"], 1))]:
            lines.append(f"| {name} | {x['seconds']:.1f} | {x['first_turn_s']:.2f} |"
                         f" {x['turns_per_s']:.1f} | {pct(x['ratio'])} |"
                         f" {x['steady_turns_per_s']:.1f} | {pct(x['steady_ratio'])} |"
                         f" {x['cpu_ms_per_turn']:.1f} | {x['load_avg']:.1f} |")
        lines += ["", "Goal >= 90%. The 2 cores are shared with other work; the load average"
                  " says how much of it ran beside the job.", ""]
    if "resume" in r:
        k = r["resume"]
        lines += [
            "### Kill and resume", "",
            f"`workbench relabel --committee a,b` in a subprocess on the {k['turns']} suspect"
            f" turns of the first {k['traces']} traces ({k['requests_needed']} requests). Member"
            " a answered everything; member b held its requests for the later half of each"
            " trace's suspect turns, so the earlier turns were decided (their conversations"
            " changed) and the later ones had one stored reply of two. SIGKILL once the worker"
            f" had stored all {k['stored_at_kill']} replies it got ({k['turns_decided_at_kill']}"
            f" turns decided, {k['held_at_kill']} requests held), then `workbench jobs resume`:"
            f" {k['asked_after_resume']} requests, {k['units_reused']} stored replies reused,"
            f" job {k['status']} with {k['turns_decided']} turns decided.", "",
            f"Requests answered before the kill and asked again (same member, same turn):"
            f" **{k['repeated']}** (goal 0; the same request body asked again:"
            f" {k['repeated_bodies']}).", ""]
    if "local" in r:
        lines += local_lines(r["local"] if isinstance(r["local"], list) else [r["local"]])
        if r.get("student_note"):
            lines += ["The student: " + r["student_note"], ""]
    write_bench_section(TITLE, "\n".join(lines), how=" by `python bench/committee_bench.py` (data: the"
                  " TFT benchmark's scenario 2)")


if __name__ == "__main__":
    res = main(sys.argv[1:])
    print(json.dumps(res, indent=2, default=str))
    if "--no-write" not in sys.argv:
        write_section(res)
