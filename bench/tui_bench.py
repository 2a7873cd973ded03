"""Benchmark of the trace browser on a large store.

    python bench/tui_bench.py [--n 100000] [--db /tmp/tui_bench.db] [--keep]

Builds a store of N traces by copy-multiplying the sample traces with varied text (through the
store's own TraceWriter, so messages, calls and the FTS index are real), adds flags and proposed
revisions, then measures: time to first rows (query and the real app under Pilot), filter
latency (first page + count, FTS and column filters) and keyset page loads deep in the table.
Prints the numbers and appends them to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import random
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from db import open_db  # noqa: E402
from db.browse import count_traces, page_key, trace_page  # noqa: E402
from db.queries import TraceFilter  # noqa: E402
from db.traces import NewTrace, TraceWriter  # noqa: E402
from db.tx import now, write_tx  # noqa: E402
from bench.report import write_section  # noqa: E402
from workbench.conversations.messages import content_hash  # noqa: E402

CITIES = ["Fairfield", "Oakland", "San Jose", "Berkeley", "Palo Alto", "Napa", "Fremont",
          "Sunnyvale", "Campbell", "Alameda", "Dublin", "Novato"]
WORDS = ["quickly", "tonight", "cheap", "vegan", "sushi", "tacos", "brunch", "patio", "quiet",
         "family", "romantic", "spicy", "outdoor", "late", "early", "kosher"]


def sample_conversations() -> list[list[dict]]:
    """The sample traces in canonical form, read through the real importer."""
    import contextlib

    from db.traces import original_messages
    from workbench.traces.importing import import_files

    db = open_db(":memory:")
    with contextlib.chdir(ROOT):
        import_files(db, ["sample_traces"])
    ids = [r[0] for r in db.execute("SELECT id FROM traces ORDER BY id")]
    return [original_messages(db, i) for i in ids]


def build(path: Path, n: int) -> float:
    t0 = time.perf_counter()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    db = open_db(path)
    base = sample_conversations()
    rng = random.Random(7)
    with write_tx(db):
        imp = db.execute("INSERT INTO imports (source, path, format, sha256, lines, added,"
                         " duplicates, created_at) VALUES ('bench','bench','openai','0',?,?,0,?)",
                         [n, n, now()]).lastrowid
        w = TraceWriter(db, imp)
        for i in range(n):
            msgs = copy.deepcopy(base[i % len(base)])
            for m in msgs:
                if m["role"] == "user" and m["content"] and not m["content"].startswith("["):
                    m["content"] = (f"{m['content']} {rng.choice(WORDS)} in {rng.choice(CITIES)}"
                                    f" ref{i}")
            split = "test" if i % 10 == 0 else "train" if i % 3 else "unassigned"
            origin = "synthetic" if i % 4 == 0 else "imported"
            w.add(NewTrace(msgs, None, content_hash(msgs, [i]), f"bench/part-{i // 10000}.jsonl",
                           f"bench/part-{i // 10000}.jsonl", i + 1, "openai", split, origin))
        w.flush()
        ts = now()
        flags = [(t, 1, "wrong_tool" if t % 2 else "schema_drift", "error", "bench flag", ts)
                 for t in range(1, n + 1, 20)]
        db.conn.executemany("INSERT INTO flags (trace_id, message_idx, check_name, severity,"
                            " detail, created_at) VALUES (?,?,?,?,?,?)", flags)
        revs = [(t, 1, None, "committee", "bench", "proposed", ts) for t in range(1, n + 1, 50)]
        db.conn.executemany("INSERT INTO revisions (trace_id, message_idx, tool_calls, author_kind,"
                            " author_name, status, created_at) VALUES (?,?,?,?,?,?,?)", revs)
    db.execute("ANALYZE")
    db.close()
    return time.perf_counter() - t0


def ms(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def app_first_rows(path: Path) -> float:
    from widgets.trace_table import TraceTable
    from workbench.app import make_app
    from workbench.core.config import Config

    app = make_app(path, Config(analyst="bench"))
    t0 = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        while not (app.screen.query(TraceTable) and app.screen.query_one(TraceTable).row_count):
            await pilot.pause(0.005)
        return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--db", type=Path, default=Path("/tmp/tui_bench.db"))
    ap.add_argument("--reuse", action="store_true", help="reuse an existing bench store")
    ap.add_argument("--no-record", action="store_true", help="don't append to BENCHMARKS.md")
    args = ap.parse_args()
    if args.reuse and args.db.exists():
        built = None
    else:
        built = build(args.db, args.n)
    db = open_db(args.db)
    n = count_traces(db, TraceFilter())
    results: list[tuple[str, float]] = []
    results.append(("first page, no filter (query)", ms(lambda: trace_page(db, TraceFilter()))))
    results.append(("first rows in the app (startup to rows shown)",
                    asyncio.run(app_first_rows(args.db))))
    filters = {
        "FTS common word 'Fairfield'": TraceFilter(text="Fairfield"),
        "FTS rare token 'ref77777'": TraceFilter(text="ref77777"),
        "FTS prefix 'roman*'": TraceFilter(text="roman*"),
        "tool = FindRestaurants": TraceFilter(tool="FindRestaurants"),
        "split = test": TraceFilter(split="test"),
        "check = wrong_tool": TraceFilter(check="wrong_tool"),
        "label = proposed": TraceFilter(status="proposed"),
        "split=train + FTS 'vegan'": TraceFilter(split="train", text="vegan"),
    }
    for name, flt in filters.items():
        results.append((f"filter {name}: first page", ms(lambda: trace_page(db, flt))))
        results.append((f"filter {name}: count", ms(lambda: count_traces(db, flt))))
    for sort, desc in (("id", False), ("turns", True)):
        after, pages, t0 = None, 0, time.perf_counter()
        while pages < 50:
            rows = trace_page(db, TraceFilter(), sort=sort, descending=desc, after=after)
            if not rows:
                break
            after = page_key(rows[-1], sort)
            pages += 1
        per = (time.perf_counter() - t0) * 1000 / max(pages, 1)
        results.append((f"scroll: next page of 200 (sort {sort}{' desc' if desc else ''}),"
                        f" mean over {pages} pages", per))
    deep = trace_page(db, TraceFilter(), after=(n - 300,))
    results.append((f"page near the end, after id {n - 300:,} (keyset)", ms(lambda: trace_page(db, TraceFilter(), after=(n - 300,)))))
    assert deep
    size_mb = args.db.stat().st_size / 1e6
    lines = [f"Store: {size_mb:,.0f} MB" + (f", built in {built:.0f} s" if built else "") + "."
             " Built by copy-multiplying `sample_traces/` with varied text; filter target <= 100 ms."
             " Command: `python bench/tui_bench.py`.", "",
             "| measurement | ms |", "|---|---:|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in results]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_record:
        write_section(f"TUI browser, {n:,} traces", text)

if __name__ == "__main__":
    main()
