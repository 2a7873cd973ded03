"""Storing a batch of judged candidates: accepted ones become traces (origin `synthetic`,
split `train`) and every candidate gets a `synthesis` row (seeds, topic, method, teacher; a
rejected one with its messages and reasons), in one transaction."""

from __future__ import annotations

from sqlite_utils import Database

from db import synthesis as record_store
from db.traces import NewTrace, TraceWriter
from db.tx import now, write_tx
from workbench.synthesis.validate import Candidate


def _import_row(db: Database, job_id: int) -> tuple[int, str]:
    """The provenance of a job's synthetic traces: one `imports` row per job."""
    source = f"synthesis:job-{job_id}"
    row = db.execute("SELECT id FROM imports WHERE path = ?", [source]).fetchone()
    if row:
        return row[0], source
    import_id = db.execute(
        "INSERT INTO imports (source, path, format, split, sha256, lines, added, duplicates,"
        " created_at) VALUES (?,?,?,?,?,0,0,0,?)",
        [source, source, "synthetic", "train", "", now()]).lastrowid
    return import_id, source


def store_batch(db: Database, job_id: int, cands: list[Candidate]) -> list[int]:
    """Write the batch; returns the new trace ids (in the order of the accepted candidates)."""
    ids = []
    with write_tx(db):
        import_id, source = _import_row(db, job_id)
        writer = TraceWriter(db, import_id)
        line = db.execute("SELECT count(*) FROM trace_sources WHERE path = ?",
                          [source]).fetchone()[0]
        for c in cands:
            key = c.key
            if c.accepted:
                line += 1
                tid, new = writer.add(NewTrace(
                    messages=c.messages, tools=c.tools, content_hash=key, source=source,
                    path=source, line=line, format="openai", split="train", origin="synthetic"))
                writer.flush()
                if not new:   # identical to a stored trace: the validator should have seen it
                    c.reject("duplicate", f"identical to trace {tid}")
            if c.accepted:
                ids.append(tid)
                record_store.record(db, job_id=job_id, status="accepted", method=c.method,
                                    seeds=c.seeds, candidate_key=key, topic=c.topic,
                                    teacher=c.teacher, trace_id=tid)
            else:
                record_store.record(db, job_id=job_id, status="rejected", method=c.method,
                                    seeds=c.seeds, candidate_key=key, topic=c.topic,
                                    teacher=c.teacher, reasons=c.reasons,
                                    messages=c.messages if c.messages is not None
                                    else {"raw": c.raw})
        db.execute("UPDATE imports SET lines = ?, added = added + ? WHERE id = ?",
                   [line, writer.added, import_id])
    return ids


