"""Storing judged candidates: every candidate gets a `synthesis` row (seeds, topic, method,
teacher; a rejected one with its reasons) a batch per transaction; accepted ones wait there,
pending, and become traces (origin `synthetic`, split `train`) only when the job succeeds, in
one transaction. A stopped job (Ctrl-C, cancel, kill) leaves no trace; a resumed one keeps its
pending candidates and goes on from them."""

from __future__ import annotations

from sqlite_utils import Database

from db import synthesis as record_store
from db.traces import NewTrace, TraceWriter
from db.imports import add_to_import, job_import, lines_of
from db.tx import write_tx
from workbench.synthesis.validate import Candidate


def _import_row(db: Database, job_id: int) -> tuple[int, str]:
    """The provenance of a job's synthetic traces: one `imports` row per job."""
    source = f"synthesis:job-{job_id}"
    return job_import(db, source, format="synthetic", split="train"), source


def store_batch(db: Database, job_id: int, cands: list[Candidate]) -> int:
    """Record a judged batch: rejected candidates with their reasons, accepted ones as
    pending (kept in the record, no trace yet). Returns how many were accepted."""
    accepted = 0
    with write_tx(db):
        for c in cands:
            if c.accepted:
                accepted += 1
                record_store.record(db, job_id=job_id, status="accepted", method=c.method,
                                    seeds=c.seeds, candidate_key=c.key, topic=c.topic,
                                    teacher=c.teacher,
                                    messages={"messages": c.messages, "tools": c.tools})
            else:
                record_store.record(db, job_id=job_id, status="rejected", method=c.method,
                                    seeds=c.seeds, candidate_key=c.key, topic=c.topic,
                                    teacher=c.teacher, reasons=c.reasons,
                                    messages=c.messages if c.messages is not None
                                    else {"raw": c.raw})
    return accepted


def keep_pending(db: Database, job_id: int, limit: int | None = None) -> dict:
    """The job succeeded: its pending candidates (the first `limit`) become synthetic traces,
    all in one transaction; one identical to a stored trace meanwhile is rejected as a
    duplicate, those past `limit` (another run of the same job kept its share meanwhile) as
    surplus. Returns {"stored": [trace ids], "duplicates": n, "surplus": n}."""
    ids, dups = [], 0
    with write_tx(db):
        rows = record_store.pending(db, job_id)
        surplus = rows[limit:] if limit is not None else []
        rows = rows[:limit] if limit is not None else rows
        for r in surplus:
            record_store.mark_rejected(db, r["id"], "surplus", "the target was reached by"
                                       " another run of the same job meanwhile")
        if not rows:
            return {"stored": [], "duplicates": 0, "surplus": len(surplus)}
        import_id, source = _import_row(db, job_id)
        writer = TraceWriter(db, import_id)
        line = lines_of(db, source)
        for r in rows:
            line += 1
            tid, new = writer.add(NewTrace(
                messages=r["messages"], tools=r["tools"], content_hash=r["candidate_key"],
                source=source, path=source, line=line, format="openai", split="train",
                origin="synthetic"))
            writer.flush()
            if new:
                ids.append(tid)
                record_store.mark_stored(db, r["id"], tid)
            else:
                dups += 1
                record_store.mark_rejected(db, r["id"], "duplicate", f"identical to trace {tid}")
        add_to_import(db, import_id, line, writer.added)
    return {"stored": ids, "duplicates": dups, "surplus": len(surplus)}
