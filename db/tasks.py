"""The task (description, judge rubric, mutation topics) and versioned tool schemas."""

from __future__ import annotations

import hashlib
import json

from sqlite_utils import Database

from db.rows import first
from db.tx import now

TASK_FIELDS = ("name", "description", "rubric", "mutation_topics")


def current_task(db: Database) -> dict | None:
    """The newest task row: each change to the task is a new row, so history stays."""
    task = first(db.execute("SELECT * FROM tasks ORDER BY id DESC LIMIT 1"), ("mutation_topics",))
    if task is not None:
        task["mutation_topics"] = task["mutation_topics"] or []
    return task


def update_task(db: Database, *, source: str, name: str | None = None,
                description: str | None = None, rubric: str | None = None,
                mutation_topics: list[str] | None = None) -> bool:
    """Merge the given fields into the current task; returns False when nothing changed."""
    cur = current_task(db) or {"name": "task", "description": None, "rubric": None,
                               "mutation_topics": []}
    new = {"name": name or cur["name"], "description": description or cur["description"],
           "rubric": rubric or cur["rubric"],
           "mutation_topics": mutation_topics or cur["mutation_topics"]}
    if all(new[k] == cur.get(k) for k in TASK_FIELDS):
        return False
    db.execute("INSERT INTO tasks (name, description, rubric, mutation_topics, source, created_at)"
               " VALUES (?,?,?,?,?,?)",
               [new["name"], new["description"], new["rubric"],
                json.dumps(new["mutation_topics"], ensure_ascii=False), source, now()])
    return True


def tool_name(tool: dict) -> str:
    return (tool.get("function") or tool).get("name", "")


def register_tools(db: Database, tools: list[dict], source: str) -> list[tuple[str, int, bool]]:
    """Store each tool schema once per distinct content; a changed schema gets the next version.

    Returns (name, version, is_new) per tool.
    """
    out = []
    for tool in tools:
        canonical = json.dumps(tool, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        name = tool_name(tool)
        row = db.execute("SELECT version FROM tool_schemas WHERE hash = ?", [digest]).fetchone()
        if row:
            out.append((name, row[0], False))
            continue
        version = db.execute("SELECT coalesce(max(version), 0) + 1 FROM tool_schemas WHERE name = ?",
                             [name]).fetchone()[0]
        db.execute("INSERT INTO tool_schemas (name, version, schema, hash, source, created_at)"
                   " VALUES (?,?,?,?,?,?)", [name, version, canonical, digest, source, now()])
        out.append((name, version, True))
    return out


def current_tools(db: Database) -> list[dict]:
    """The newest version of every tool, in the order tools were first registered."""
    rows = db.execute(
        "SELECT schema FROM tool_schemas t WHERE version = ("
        " SELECT max(version) FROM tool_schemas WHERE name = t.name)"
        " ORDER BY (SELECT min(id) FROM tool_schemas WHERE name = t.name)").fetchall()
    return [json.loads(r[0]) for r in rows]
