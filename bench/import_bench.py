"""Import speed and memory: a generated corpus of real traces multiplied with varied text.

    python bench/import_bench.py [DATA_DIR] [--traces 100000]
    python bench/import_bench.py --spans-mib 100      # a span export (OTLP JSON), printed only

DATA_DIR holds TFT-format traces (default: ../shared/tft-benchmark, else the copy in
tests/data/tft). Each size is imported in a fresh process so peak memory is its own.
`--spans-mib N` instead generates OpenTelemetry GenAI span exports of N/4 and N MiB (the
upstream tool-call example of tests/data/spans, one span per line, the spans of neighbouring
traces interleaved as a collector writes them) and measures their import.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import ROOT, default_data_dir, git_rev, write_section  # noqa: E402

WORDS = "please maybe tonight tomorrow around near downtown quiet cheap fancy family outdoor".split()


def make_corpus(data_dir: Path, out: Path, n: int, seed: int = 0) -> int:
    """n traces: real conversations with words varied in each user turn (so none dedupe)."""
    rng = random.Random(seed)
    base = []
    for f in sorted(data_dir.glob("scenario-*/traces.jsonl")):
        base += [json.loads(json.loads(line)["context"]) for line in f.read_text().splitlines() if line.strip()]
    messages = 0
    with open(out, "w") as fh:
        for i in range(n):
            ctx = json.loads(json.dumps(base[i % len(base)]))
            for m in ctx["messages"]:
                if m["role"] == "user" and not m["content"].startswith("["):
                    m["content"] += " " + " ".join(rng.choices(WORDS, k=3)) + f" #{i}"
            messages += len(ctx["messages"])
            fh.write(json.dumps({"context": json.dumps(ctx)}) + "\n")
    return messages


def make_span_export(out: Path, mib: float, seed: int = 0) -> tuple[int, int]:
    """An OTLP JSON span export of about `mib` MiB: the example trace of
    tests/data/spans/otel-genai.jsonl (two model calls, a tool span, a root span) repeated
    with a varied question, one span per line, shuffled within windows of 64 traces.
    Returns (traces, spans)."""
    first = (ROOT / "tests" / "data" / "spans" / "otel-genai.jsonl").read_text().splitlines()[0]
    doc = json.loads(first)
    resource_spans = doc["resourceSpans"][0]
    spans = resource_spans["scopeSpans"][0]["spans"]
    rng = random.Random(seed)
    window: list[str] = []
    traces = written = 0
    with open(out, "w") as fh:
        while fh.tell() < mib * 2**20:
            words = " ".join(rng.choices(WORDS, k=3)) + f" #{traces}"
            for span in spans:
                line = {"resourceSpans": [{**resource_spans, "scopeSpans": [{
                    "scope": resource_spans["scopeSpans"][0]["scope"],
                    "spans": [{**span, "traceId": f"{traces:032x}",
                               "spanId": f"{traces:08x}{span['spanId'][8:]}",
                               "parentSpanId": span["parentSpanId"] and
                               f"{traces:08x}{span['parentSpanId'][8:]}"}]}]}]}
                window.append(json.dumps(line).replace("Weather in Paris?",
                                                       f"Weather in Paris? {words}"))
            traces += 1
            if len(window) >= 64 * len(spans):
                rng.shuffle(window)
                fh.write("\n".join(window) + "\n")
                written += len(window)
                window.clear()
        rng.shuffle(window)
        fh.write("".join(w + "\n" for w in window))
        written += len(window)
    return traces, written


def import_once(corpus: str, db_path: str) -> None:
    """Child process: import and print seconds, peak RSS and what was stored as JSON."""
    from db import open_db
    from db.traces import stats
    from workbench.traces.importing import import_files

    db = open_db(db_path)
    t0 = time.perf_counter()
    import_files(db, [corpus])
    elapsed = time.perf_counter() - t0
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = stats(db)
    print(json.dumps({"seconds": elapsed, "peak_mib": peak_mib, "stored_traces": s["traces"],
                      "stored_messages": s["messages"]}))


def span_bench(mib: float, write: bool = True) -> None:
    """Import span exports of mib/4 and mib MiB, each in a fresh process; print a table and
    write it as the "Import of span exports" section (unless --no-write)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (mib / 4, mib):
            export = Path(tmp) / f"spans-{size:.0f}.jsonl"
            traces, spans = make_span_export(export, size)
            db_path = Path(tmp) / f"spans-{size:.0f}.db"
            out = subprocess.run([sys.executable, __file__, "--child", str(export), str(db_path)],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            row = {"traces": traces, "spans": spans, "file_mib": export.stat().st_size / 2**20,
                   **r, "spans_per_s": spans / r["seconds"],
                   "mib_per_s": export.stat().st_size / 2**20 / r["seconds"],
                   "messages_per_s": r["stored_messages"] / r["seconds"]}
            rows.append(row)
            print(json.dumps(row))
            export.unlink()
            db_path.unlink()
    lines = ["| traces | spans | file MiB | seconds | spans/s | MiB/s | messages stored/s |"
             " peak RSS MiB |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['traces']:,} | {r['spans']:,} | {r['file_mib']:.0f} | {r['seconds']:.1f}"
                     f" | {r['spans_per_s']:,.0f} | {r['mib_per_s']:.1f} |"
                     f" {r['messages_per_s']:,.0f} | {r['peak_mib']:.0f} |")
    lines += ["", f"Peak memory at {mib:.0f} MiB is {rows[1]['peak_mib'] / rows[0]['peak_mib']:.2f}x"
              f" that at {mib / 4:.0f} MiB (4x the data): spans are staged in a temporary SQLite"
              " file and stitched one trace at a time. A generated OTLP JSON export (GenAI spans:"
              " a chat span with input and output messages and tool definitions, tool spans)."
              f" Command: `python bench/import_bench.py --spans-mib {mib:.0f}` (commit {git_rev()})."]
    print("\n".join(lines))
    if write:
        write_section("Import of span exports", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", nargs="?", type=Path,
                    default=default_data_dir() or ROOT / "tests" / "data" / "tft")
    ap.add_argument("--traces", type=int, default=100_000)
    ap.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    ap.add_argument("--spans-mib", type=float, default=None,
                    help="measure a generated OTLP span export of this size instead")
    args = ap.parse_args()
    if args.spans_mib:
        span_bench(args.spans_mib, write=not args.no_write)
        return
    sizes = [args.traces // 4, args.traces]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            corpus = Path(tmp) / f"corpus-{n}.jsonl"
            messages = make_corpus(args.data_dir, corpus, n)
            db_path = Path(tmp) / f"bench-{n}.db"
            out = subprocess.run([sys.executable, __file__, "--child", str(corpus), str(db_path)],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            row = {"traces": n, "messages": messages, "file_mib": corpus.stat().st_size / 2**20,
                   "db_mib": db_path.stat().st_size / 2**20, **r,
                   "messages_per_s": messages / r["seconds"]}
            rows.append(row)
            print(json.dumps(row))
            corpus.unlink()
            db_path.unlink()
    body = ["| traces | messages | file MiB | seconds | messages/s | database MiB | peak RSS MiB |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        body.append(f"| {r['traces']:,} | {r['messages']:,} | {r['file_mib']:.0f} | {r['seconds']:.1f} |"
                    f" {r['messages_per_s']:,.0f} | {r['db_mib']:.0f} | {r['peak_mib']:.0f} |")
    ratio = rows[1]["peak_mib"] / rows[0]["peak_mib"]
    body.append("")
    body.append(f"Goal: at least 50,000 messages/s, memory flat in corpus size. Peak memory at "
                f"{sizes[1]:,} traces is {ratio:.2f}x that at {sizes[0]:,} (4x the data). "
                f"Command: `python bench/import_bench.py` (commit {git_rev()}).")
    if not args.no_write:
        write_section("Import", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        import_once(sys.argv[2], sys.argv[3])
    else:
        main()
