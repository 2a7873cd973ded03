"""Committee throughput against vLLM-style servers on loopback, at several concurrencies.

    python bench/throughput_bench.py [--latency 1.0] [--concurrency 1,8,64] [--rounds 20]
        [--members 2] [--local-turns 0] [--no-write]

Each member is a scripted OpenAI-compatible server in its own process (tests/scripted_openai.py,
a thread per connection) that answers every request after a fixed latency L, as a vLLM server
with free batch slots does; it counts the most requests it held at once. The store: synthetic
traces (one generic tool, four assistant turns each, every other label differing from the
members' answer, so half the turns are revised and half confirmed). `relabel --turns all
--accept` runs in this process with each member's endpoint at max_concurrency C. A turn asks
every member once, in parallel, so the ideal is C / L turns per second; a run has
rounds x C turns, so each concurrency runs the same number of latency rounds.

Measured per concurrency: turns/s over the voting (from the job's first progress to its last
decided turn) and over the whole job (planning and the recheck of revised turns included),
each as a share of C / L; the most requests each server held at once; the job process's CPU ms
per turn. `--local-turns N` also times the built-in `local` member (llama.cpp in-process) on
N calls asked at once, with 1 and 2 slots (`[local] slots`).

Writes the "## Throughput (bench/throughput_bench.py)" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from db import open_db  # noqa: E402
from workbench.traces.importing import import_files  # noqa: E402
from workbench.jobs.context import JobEvent, Progress  # noqa: E402
from workbench.jobs.runner import execute, submit  # noqa: E402

TITLE = "Throughput (bench/throughput_bench.py)"
TURNS_PER_TRACE = 4
TOOL = {"type": "function", "function": {
    "name": "lookup", "description": "Look an item up.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                   "required": ["query"]}}}
ANSWER = {"query": "item"}            # every member answers lookup(ANSWER)

SERVER = """
import json, sys
from tests.scripted_openai import ScriptedServer, tool_call_reply
reply = {**tool_call_reply("lookup", json.loads(sys.argv[2])), "delay": float(sys.argv[1])}
server = ScriptedServer(lambda body: reply)
print(server.url, flush=True)
sys.stdin.read()
print(json.dumps({"requests": server.count, "max_in_flight": server.max_in_flight}), flush=True)
"""


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


class ServerProcess:
    """A scripted server in its own process: the measured job shares no interpreter with it."""

    def __init__(self, latency: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(latency),
                                      json.dumps(ANSWER)], cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)},
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            raise RuntimeError("the scripted server did not start")

    def close(self) -> dict:
        """Stop it: the requests it answered and the most it held at once."""
        out, _ = self.proc.communicate(timeout=30)
        return json.loads(out.strip().splitlines()[-1])


def write_traces(path: Path, turns: int) -> Path:
    """Synthetic traces in the OpenAI format holding `turns` assistant turns; the labels
    alternate between the members' answer and another call."""
    lines = []
    for t in range((turns + TURNS_PER_TRACE - 1) // TURNS_PER_TRACE):
        messages = []
        for k in range(TURNS_PER_TRACE):
            args = ANSWER if k % 2 else {"query": f"other {t}.{k}"}
            messages += [
                {"role": "user", "content": f"Request {t}.{k}: please find item {t * 7 + k}."},
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": f"c{t}_{k}", "type": "function",
                    "function": {"name": "lookup", "arguments": json.dumps(args)}}]},
                {"role": "tool", "tool_call_id": f"c{t}_{k}",
                 "content": json.dumps({"found": f"item {t}.{k}"})}]
        lines.append(json.dumps({"messages": messages, "tools": [TOOL]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def make_store(tmp: Path, turns: int) -> Path:
    db_path = tmp / f"throughput-{turns}.db"
    db = open_db(db_path)
    import_files(db, [write_traces(tmp / f"traces-{turns}.jsonl", turns)])
    db.conn.close()
    return db_path


def rates(voted: int, started: float, stamps: list[float], ended: float, concurrency: int,
          latency: float) -> dict:
    """Turns per second over the voting (its start to the last decided turn) and over the whole
    job, and each as a share of the ideal concurrency / latency."""
    ideal = concurrency / latency
    voting = (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    whole = ended - started
    per_s = voted / voting if voting > 0 else 0.0
    job_per_s = voted / whole if whole > 0 else 0.0
    return {"ideal_turns_per_s": ideal, "voting_s": voting, "job_s": whole,
            "turns_per_s": per_s, "ratio": per_s / ideal,
            "job_turns_per_s": job_per_s, "job_ratio": job_per_s / ideal}


def measure(tmp: Path, concurrency: int, latency: float, turns: int, members: int = 2) -> dict:
    """One `relabel --turns all` of `turns` turns against `members` servers answering after
    `latency`, each endpoint at max_concurrency `concurrency`."""
    db_path = make_store(tmp, turns)
    servers = [ServerProcess(latency) for _ in range(members)]
    names = [f"m{k}" for k in range(members)]
    config = tmp / f"throughput-{concurrency}.toml"
    config.write_text("".join(
        f'[endpoints.{n}]\nbase_url = "{s.url}"\nmodel = "m"\nmax_concurrency = {concurrency}\n'
        f'retries = 0\ntimeout = {max(60, 10 * latency)}\n' for n, s in zip(names, servers)))
    old = os.environ.get("WORKBENCH_CONFIG")
    os.environ["WORKBENCH_CONFIG"] = str(config)
    stamps: list[float] = []     # the voting's start (done 0), then each decided turn

    def progress(event: JobEvent) -> None:
        if isinstance(event, Progress) and event.total:
            stamps.append(time.perf_counter())

    db = open_db(db_path)
    load = os.getloadavg()[0]
    try:
        job = submit(db, "relabel", {}, {"committee": names, "turns": "all", "accept": True})
        t0, c0 = time.perf_counter(), time.process_time()
        row = execute(db, job, listeners=[progress])
        t1, cpu = time.perf_counter(), time.process_time() - c0
    finally:
        db.conn.close()
        counts = [s.close() for s in servers]
        if old is None:
            os.environ.pop("WORKBENCH_CONFIG")
        else:
            os.environ["WORKBENCH_CONFIG"] = old
    if row["status"] != "succeeded":
        raise SystemExit(f"relabel at concurrency {concurrency}: {row['status']}: {row['error']}")
    voted = row["result"]["voted"]
    res = {"concurrency": concurrency, "latency": latency, "members": members, "turns": voted,
           "outcomes": {k: v for k, v in row["result"]["outcomes"].items() if v},
           "requests": sum(c["requests"] for c in counts),
           "max_in_flight": [c["max_in_flight"] for c in counts],
           **rates(voted, t0, stamps, t1, concurrency, latency),
           "cpu_ms_per_turn": 1000 * cpu / max(1, voted), "load_avg": load}
    log(f"concurrency {concurrency}", json.dumps(res))
    return res


# ------------------------------------------------------------------------------ local member

def measure_local(turns: int, slots: int) -> dict:
    """The built-in `local` member with `slots` slots (`[local] slots`), asked for `turns`
    calls at once, as a committee's workers ask it: seconds per call, none failed."""
    import asyncio
    from dataclasses import replace

    from workbench.committee.members import Member
    from workbench.committee.prompt import call_schema
    from workbench.models.endpoints import get_endpoint

    member = Member(replace(get_endpoint("local"), max_concurrency=slots))
    schema = call_schema([TOOL])
    prompts = [[{"role": "user", "content": f"Call lookup to find item {k}. Answer as JSON."}]
               for k in range(turns)]

    async def run() -> tuple[float, list, int]:
        try:       # every slot's model loaded first (not timed)
            await asyncio.gather(*(member.ask(p, schema, [TOOL]) for p in prompts[:slots]))
            t0 = time.perf_counter()
            out = await asyncio.gather(*(member.ask(p, schema, [TOOL]) for p in prompts),
                                       return_exceptions=True)
            return time.perf_counter() - t0, out, len(member._llms)
        finally:
            await member.close()

    load = os.getloadavg()[0]
    seconds, out, models = asyncio.run(run())
    failed = [str(x) for x in out if isinstance(x, BaseException)]
    res = {"turns": turns, "slots": slots, "models": models, "seconds": seconds,
           "s_per_call": seconds / turns, "failed": len(failed), "errors": failed[:3],
           "load_avg": load}
    log(f"local slots {slots}", json.dumps(res))
    return res


# ------------------------------------------------------------------------------------ report

def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def section(r: dict) -> str:
    lines = [
        f"`workbench relabel --turns all --accept` with {r['members']} members, each a scripted"
        " OpenAI-compatible server in its own process on 127.0.0.1 answering every request"
        f" after {r['latency']} s (a thread per connection, as a vLLM server with free batch"
        " slots), each endpoint at `max_concurrency` C. A turn asks every member once, in"
        f" parallel: ideal C / {r['latency']} turns/s. {r['rounds']} latency rounds per run"
        " (C x rounds turns); synthetic traces of one generic tool, half the turns revised and"
        " half confirmed (every vote, turn and revision stored as in a real run). Voting:"
        " from the job's first progress to its last decided turn; whole job: planning and the"
        " recheck of revised traces included.", "",
        "| C | turns | requests | most in flight per server | voting: turns/s | share of"
        " C / L | whole job: turns/s | share | CPU ms per turn | turns/s one free core would"
        " carry | load average at start |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["runs"]:
        lines.append(
            f"| {x['concurrency']} | {x['turns']} | {x['requests']} |"
            f" {', '.join(map(str, x['max_in_flight']))} | {x['turns_per_s']:.1f} |"
            f" {pct(x['ratio'])} | {x['job_turns_per_s']:.1f} | {pct(x['job_ratio'])} |"
            f" {x['cpu_ms_per_turn']:.1f} | {1000 / x['cpu_ms_per_turn']:.0f} |"
            f" {x['load_avg']:.1f} |")
    lines += ["", "Goal: the requests in flight reach C, and >= 90% of C / L at C = 64"
              " (voting). The cores are shared with other work; the load average says how"
              " much ran beside the job, and the CPU the job's process spent per turn (its own"
              " clock, whatever the load) says how many turns/s one free core would carry:"
              " 1000 / CPU ms per turn, derived, not measured.", ""]
    if r.get("local"):
        lines += ["### The built-in `local` member", "",
                  "SmolLM2-135M (Q4_1) in-process, one thread per slot, the calls asked all at"
                  " once; the model loads are not timed.", "",
                  "| `[local] slots` | calls | model objects | s per call | failed | load average"
                  " at start |", "|---:|---:|---:|---:|---:|---:|"]
        for x in r["local"]:
            lines.append(f"| {x['slots']} | {x['turns']} | {x['models']} |"
                         f" {x['s_per_call']:.2f} | {x['failed']} | {x['load_avg']:.1f} |")
        lines += ["", LOCAL_NOTE, ""]
    return "\n".join(lines)


LOCAL_NOTE = ("llama-cpp-python 0.3 decodes one sequence per `Llama` object (its batched"
              " sequences serve embeddings only, and its server answers one request at a time"
              " behind a lock), and the object is not thread-safe. So a slot is a model object"
              " of its own (the weights are shared through mmap; the context is not), used by"
              " one thread at a time: `[local] slots = N` answers N requests at once, which pays"
              " only where N cores are free. Batched parallel decoding of one model (continuous"
              " batching) needs a server: llama.cpp's `llama-server --parallel N` or vLLM, named"
              " as an endpoint with `max_concurrency = N`.")


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=1.0, help="seconds per request")
    ap.add_argument("--concurrency", default="1,8,64", help="comma list of max_concurrency")
    ap.add_argument("--rounds", type=int, default=20, help="latency rounds per run")
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--local-turns", type=int, default=0,
                    help="also time the built-in local member on N calls (0: skip)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    res: dict = {"latency": args.latency, "rounds": args.rounds, "members": args.members}
    with tempfile.TemporaryDirectory() as tmp:
        res["runs"] = [measure(Path(tmp), c, args.latency, c * args.rounds, args.members)
                       for c in levels]
        if args.local_turns:
            res["local"] = [measure_local(args.local_turns, n) for n in (1, 2)]
    return res


if __name__ == "__main__":
    result = main(sys.argv[1:])
    print(json.dumps(result, indent=2))
    if "--no-write" not in sys.argv:
        write_section(TITLE, section(result),
                      how=" by `python bench/throughput_bench.py " + " ".join(
                          a for a in sys.argv[1:] if a != "--no-write") + "`")
