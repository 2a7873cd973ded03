"""Schema as an ordered list of migrations, applied on every open (never edit a released one)."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATIONS = Migrations("workbench")


def _execute_script(db: Database, script: str) -> None:
    """Run statements one by one: `executescript` would COMMIT and break the migration's atomicity."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement in migration: {statement!r}")


@MIGRATIONS()
def m001_initial(db: Database) -> None:
    _execute_script(
        db,
        """
        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            description TEXT,
            rubric TEXT,
            mutation_topics TEXT,          -- JSON list of strings
            source TEXT,
            created_at TEXT NOT NULL
        );
        CREATE TABLE tool_schemas (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            schema TEXT NOT NULL,          -- JSON of the OpenAI function tool
            hash TEXT NOT NULL UNIQUE,
            source TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (name, version)
        );
        CREATE TABLE imports (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,          -- the path as the user gave it
            path TEXT NOT NULL,            -- resolved absolute path
            format TEXT NOT NULL,
            split TEXT,
            sha256 TEXT NOT NULL,
            lines INTEGER NOT NULL,
            added INTEGER NOT NULL,
            duplicates INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE traces (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            line INTEGER NOT NULL,
            format TEXT NOT NULL,
            origin TEXT NOT NULL CHECK (origin IN ('imported', 'synthetic')),
            split TEXT NOT NULL CHECK (split IN ('train', 'test', 'unassigned')),
            content_hash TEXT NOT NULL UNIQUE,
            tools TEXT,                    -- JSON list of tools declared with the trace, or NULL
            n_messages INTEGER NOT NULL,
            n_assistant INTEGER NOT NULL,
            n_tool_calls INTEGER NOT NULL,
            tools_used TEXT NOT NULL,      -- space-separated distinct called function names
            excluded INTEGER,              -- the analyst's decision: 1 out, 0 in; NULL: flags decide
            import_id INTEGER REFERENCES imports(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX traces_split ON traces(split, id);
        CREATE INDEX traces_origin ON traces(origin, id);
        -- Every place a trace was seen (a trace identical to a stored one is not stored twice).
        CREATE TABLE trace_sources (
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            import_id INTEGER NOT NULL REFERENCES imports(id),
            source TEXT NOT NULL,
            path TEXT NOT NULL,
            line INTEGER NOT NULL,
            PRIMARY KEY (path, line, trace_id)
        ) WITHOUT ROWID;
        CREATE INDEX trace_sources_trace ON trace_sources(trace_id);
        -- Original messages: never modified (enforced by triggers below).
        CREATE TABLE messages (
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            idx INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
            content TEXT,
            tool_calls TEXT,               -- JSON list, arguments parsed where they parse
            tool_call_id TEXT,
            name TEXT,
            UNIQUE (trace_id, idx)
        );
        CREATE TABLE tool_calls (
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            message_idx INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            call_id TEXT,
            name TEXT NOT NULL,
            arguments TEXT,                -- canonical JSON object, NULL when unparseable
            arguments_raw TEXT,            -- the raw string when it did not parse as an object
            UNIQUE (trace_id, message_idx, idx)
        );
        CREATE INDEX tool_calls_name ON tool_calls(name, trace_id);
        CREATE TRIGGER messages_immutable_update BEFORE UPDATE ON messages
            BEGIN SELECT RAISE(ABORT, 'original messages are immutable; write a revision'); END;
        CREATE TRIGGER tool_calls_immutable_update BEFORE UPDATE ON tool_calls
            BEGIN SELECT RAISE(ABORT, 'original tool calls are immutable; write a revision'); END;
        CREATE TABLE revisions (
            id INTEGER PRIMARY KEY,
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            message_idx INTEGER NOT NULL,
            content TEXT,
            tool_calls TEXT,               -- JSON list, same shape as messages.tool_calls
            author_kind TEXT NOT NULL
                CHECK (author_kind IN ('human', 'committee', 'normaliser', 'synthesis')),
            author_name TEXT NOT NULL,
            reason TEXT,
            evidence TEXT,                 -- JSON
            status TEXT NOT NULL CHECK (status IN ('proposed', 'accepted', 'rejected')),
            supersedes INTEGER REFERENCES revisions(id),
            created_at TEXT NOT NULL,
            decided_at TEXT
        );
        CREATE INDEX revisions_turn ON revisions(trace_id, message_idx, id);
        CREATE INDEX revisions_status ON revisions(status, trace_id);
        CREATE TABLE flags (
            id INTEGER PRIMARY KEY,
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            message_idx INTEGER,           -- NULL: a flag on the whole trace
            check_name TEXT NOT NULL,
            severity TEXT NOT NULL CHECK (severity IN ('error', 'warning')),
            detail TEXT NOT NULL,
            job_id INTEGER REFERENCES jobs(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX flags_trace ON flags(trace_id, message_idx);
        CREATE INDEX flags_check ON flags(check_name, severity, trace_id);
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
            params TEXT,                   -- JSON
            done INTEGER NOT NULL DEFAULT 0,
            total INTEGER,
            message TEXT,
            log TEXT NOT NULL DEFAULT '',
            result TEXT,                   -- JSON
            error TEXT,
            pid INTEGER,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            heartbeat_at TEXT
        );
        CREATE INDEX jobs_status ON jobs(status, id);
        -- Idempotent units of work keyed by content hash: a resumed job never repeats one.
        CREATE TABLE job_units (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            result TEXT,                   -- JSON
            job_id INTEGER REFERENCES jobs(id),
            created_at TEXT NOT NULL,
            PRIMARY KEY (kind, key)
        ) WITHOUT ROWID;
        CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,            -- merged | gguf | adapter | endpoint
            path TEXT,
            base_model TEXT,
            job_id INTEGER REFERENCES jobs(id),
            data_selection TEXT,           -- JSON
            config TEXT,                   -- JSON
            metrics TEXT,                  -- JSON
            created_at TEXT NOT NULL
        );
        CREATE TABLE eval_runs (
            id INTEGER PRIMARY KEY,
            model_id INTEGER REFERENCES models(id),
            model_ref TEXT NOT NULL,       -- GGUF path or endpoint name
            test_selection TEXT,           -- JSON
            judge TEXT,
            metrics TEXT,                  -- JSON
            job_id INTEGER REFERENCES jobs(id),
            created_at TEXT NOT NULL
        );
        CREATE TABLE eval_results (
            run_id INTEGER NOT NULL REFERENCES eval_runs(id),
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            message_idx INTEGER NOT NULL,
            reference TEXT NOT NULL,
            prediction TEXT NOT NULL,
            staged_tool_call REAL NOT NULL,
            tool_call_equivalence REAL NOT NULL,
            function_match REAL NOT NULL,
            rouge_l REAL NOT NULL,
            judge REAL,
            details TEXT,                  -- JSON
            PRIMARY KEY (run_id, trace_id, message_idx)
        ) WITHOUT ROWID;
        -- Full-text search over message text and tool-call arguments (originals and revisions).
        CREATE VIRTUAL TABLE search USING fts5(
            text, trace_id UNINDEXED, message_idx UNINDEXED, tokenize = 'unicode61'
        );
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
        """
    )


@MIGRATIONS()
def m002_browse_indexes(db: Database) -> None:
    """Indexes the trace browser needs at 100k traces: paging sorted by turns, and full-text
    matches mapped to traces without reading each matching row's text (FTS5 keeps the
    UNINDEXED trace_id beside the text in its `search_content` shadow table; a covering index
    makes rowid -> trace_id an index-only lookup)."""
    _execute_script(
        db,
        """
        CREATE INDEX traces_turns ON traces(n_assistant, id);
        CREATE INDEX search_content_trace ON search_content(id, c1);
        """
    )


_JOB_CHILDREN = ("flags", "models", "eval_runs")


@MIGRATIONS()
def m003_jobs_runtime(db: Database) -> None:
    """Jobs that outlive their process: the `interrupted` status (a worker that died), the
    selection apart from the parameters, the worker's host, folder and log file, and a parent
    (a pipeline's stages). SQLite can't change a CHECK constraint, so the table is rebuilt under
    a new name and renamed back; the other tables' `REFERENCES jobs` then name the new table."""
    # Dropping a table that rows point at would break their foreign keys (and foreign keys
    # can't be switched off inside the migration's transaction): set those pointers aside.
    for table in _JOB_CHILDREN:
        db.execute(f"CREATE TABLE m003_keep_{table} AS SELECT rowid AS rid, job_id FROM {table}"
                   " WHERE job_id IS NOT NULL")
        db.execute(f"UPDATE {table} SET job_id = NULL WHERE job_id IS NOT NULL")
    db.execute("CREATE TABLE m003_keep_units AS SELECT kind, key, job_id FROM job_units"
               " WHERE job_id IS NOT NULL")
    db.execute("UPDATE job_units SET job_id = NULL WHERE job_id IS NOT NULL")
    _execute_script(
        db,
        """
        CREATE TABLE jobs_m003 (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
            selection TEXT,                -- JSON TraceFilter
            params TEXT,                   -- JSON of the kind's Params
            done INTEGER NOT NULL DEFAULT 0,
            total INTEGER,
            message TEXT,
            log TEXT NOT NULL DEFAULT '',
            result TEXT,                   -- JSON
            error TEXT,
            pid INTEGER,
            host TEXT,
            cwd TEXT,
            log_path TEXT,
            parent_id INTEGER REFERENCES jobs(id),
            attempts INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            heartbeat_at TEXT
        );
        INSERT INTO jobs_m003 (id, kind, status, params, done, total, message, log, result,
                               error, pid, cancel_requested, created_at, started_at,
                               finished_at, heartbeat_at)
            SELECT id, kind, status, params, done, total, message, log, result, error, pid,
                   cancel_requested, created_at, started_at, finished_at, heartbeat_at
            FROM jobs;
        DROP TABLE jobs;
        ALTER TABLE jobs_m003 RENAME TO jobs;
        CREATE INDEX jobs_status ON jobs(status, id);
        CREATE INDEX jobs_kind ON jobs(kind, id);
        """
    )
    for table in _JOB_CHILDREN:  # point the rows back at their (copied) jobs
        db.execute(f"UPDATE {table} SET job_id = (SELECT job_id FROM m003_keep_{table} k"
                   f" WHERE k.rid = {table}.rowid) WHERE rowid IN (SELECT rid FROM"
                   f" m003_keep_{table})")
        db.execute(f"DROP TABLE m003_keep_{table}")
    db.execute("UPDATE job_units SET job_id = (SELECT k.job_id FROM m003_keep_units k WHERE"
               " k.kind = job_units.kind AND k.key = job_units.key) WHERE (kind, key) IN"
               " (SELECT kind, key FROM m003_keep_units)")
    db.execute("DROP TABLE m003_keep_units")


@MIGRATIONS()
def m004_committee(db: Database) -> None:
    """The committee's record: every vote a member (or the arbiter) cast on a turn, with its raw
    reply, and what the committee decided for the turn. Kept forever: the analyst's review and
    the agreement statistics read them, and a re-run finds its votes in `job_units`."""
    _execute_script(
        db,
        """
        CREATE TABLE committee_turns (
            id INTEGER PRIMARY KEY,
            job_id INTEGER REFERENCES jobs(id),
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            message_idx INTEGER NOT NULL,
            outcome TEXT NOT NULL CHECK (outcome IN
                ('revised', 'confirmed', 'review', 'human', 'failed')),
            decided_by TEXT,               -- 'majority', 'unanimous', 'arbiter' or NULL
            call TEXT,                     -- JSON {name, arguments} decided, if any
            revision_id INTEGER REFERENCES revisions(id),
            detail TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX committee_turns_turn ON committee_turns(trace_id, message_idx, id);
        CREATE TABLE votes (
            id INTEGER PRIMARY KEY,
            turn_id INTEGER NOT NULL REFERENCES committee_turns(id),
            job_id INTEGER REFERENCES jobs(id),
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            message_idx INTEGER NOT NULL,
            member TEXT NOT NULL,          -- endpoint name
            role TEXT NOT NULL CHECK (role IN ('member', 'arbiter')),
            model TEXT,
            raw TEXT,                      -- the reply as it came (JSON of the message)
            call TEXT,                     -- JSON {name, arguments}; NULL: abstained
            abstain_reason TEXT,
            latency_s REAL,
            tokens_in INTEGER,
            tokens_out INTEGER,
            cost REAL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX votes_turn ON votes(trace_id, message_idx, id);
        CREATE INDEX votes_job ON votes(job_id);
        CREATE INDEX votes_of_turn ON votes(turn_id);
        """
    )


@MIGRATIONS()
def m005_exclusion_decisions(db: Database) -> None:
    """The analyst's exclusion decisions as a history (like labels): every change of
    `traces.excluded` is a row holding the value before it, grouped by the action that made it,
    so any action can be undone without touching decisions made since."""
    _execute_script(
        db,
        """
        CREATE TABLE exclusion_decisions (
            id INTEGER PRIMARY KEY,
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            excluded INTEGER,              -- the decision: 1 out, 0 in, NULL: the checks decide
            previous INTEGER,              -- traces.excluded before it
            action TEXT NOT NULL,          -- one id per exclude / include / undo action
            author_name TEXT NOT NULL,
            reason TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX exclusion_decisions_trace ON exclusion_decisions(trace_id, id);
        CREATE INDEX exclusion_decisions_action ON exclusion_decisions(action);
        """
    )


@MIGRATIONS()
def m006_eval_run_status(db: Database) -> None:
    """An evaluation run ends `succeeded` or `failed` (most turns got no reply): a failed run is
    never compared or listed as a model's score. NULL: not finished (resumable)."""
    db.execute("ALTER TABLE eval_runs ADD COLUMN status TEXT"
               " CHECK (status IN ('succeeded', 'failed'))")
    db.execute("UPDATE eval_runs SET status = 'succeeded' WHERE metrics IS NOT NULL")


@MIGRATIONS()
def m007_pending_imports(db: Database) -> None:
    """Imports commit in batches under a `pending` imports row whose traces no query shows
    until it is `complete` (db.imports); pid, host and heartbeat tell a killed import, whose
    rows are then deleted by trace (import_id) and search row (c1 = trace id)."""
    _execute_script(
        db,
        """
        ALTER TABLE imports ADD COLUMN status TEXT NOT NULL DEFAULT 'complete';
        ALTER TABLE imports ADD COLUMN pid INTEGER;
        ALTER TABLE imports ADD COLUMN host TEXT;
        ALTER TABLE imports ADD COLUMN heartbeat_at TEXT;
        CREATE INDEX imports_status ON imports(status);
        CREATE INDEX traces_import ON traces(import_id);
        CREATE INDEX search_content_c1 ON search_content(c1);
        """
    )


@MIGRATIONS()
def m008_synthesis(db: Database) -> None:
    """Synthesis: every candidate conversation a synthesis job made, accepted (linked to the
    synthetic trace it became) or rejected (kept with its messages and reasons for the analyst),
    with its seeds, topic, method and teacher. Nothing unvalidated becomes a trace."""
    _execute_script(
        db,
        """
        CREATE TABLE synthesis (
            id INTEGER PRIMARY KEY,
            job_id INTEGER REFERENCES jobs(id),
            trace_id INTEGER REFERENCES traces(id),   -- the synthetic trace; NULL: rejected
            status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected')),
            method TEXT NOT NULL CHECK (method IN ('offline', 'teacher')),
            teacher TEXT,                  -- endpoint name and model; NULL offline
            topic TEXT,
            seeds TEXT NOT NULL,           -- JSON list of seed trace ids
            reasons TEXT,                  -- JSON list of {"reason", "detail"}; NULL: accepted
            messages TEXT,                 -- JSON of a rejected candidate (accepted: the trace)
            candidate_key TEXT NOT NULL,   -- content hash of the candidate
            created_at TEXT NOT NULL
        );
        CREATE INDEX synthesis_job ON synthesis(job_id, id);
        CREATE INDEX synthesis_trace ON synthesis(trace_id);
        CREATE INDEX synthesis_key ON synthesis(candidate_key, job_id);
        """
    )


@MIGRATIONS()
def m009_pipeline_runs(db: Database) -> None:
    """`workbench pipeline run`: each run (a `pipeline` job) with the fingerprint of the store's
    data it found and left, and each of its stages with the content hash of its inputs and the
    job that ran it, so a re-run skips unchanged stages and resumes a stopped one. (m009: main's
    m008 is the synthesis migration.)"""
    _execute_script(
        db,
        """
        CREATE TABLE pipeline_runs (
            job_id INTEGER PRIMARY KEY REFERENCES jobs(id),   -- the `pipeline` job
            file TEXT NOT NULL,            -- the pipeline file, resolved
            data_key TEXT,                 -- what the stages' fingerprints hash of the data
            state TEXT,                    -- JSON: the data's fingerprint after the last stage
            created_at TEXT NOT NULL,
            updated_at TEXT
        );
        CREATE TABLE pipeline_stages (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES jobs(id),      -- the `pipeline` job
            stage TEXT NOT NULL,
            fingerprint TEXT NOT NULL,     -- content hash of the stage's inputs
            job_id INTEGER REFERENCES jobs(id),               -- the job that ran it (or ran it before)
            action TEXT NOT NULL,          -- ran | forced | skipped | resumed | unavailable
            created_at TEXT NOT NULL
        );
        CREATE INDEX pipeline_stages_fp ON pipeline_stages(stage, fingerprint, id);
        CREATE INDEX pipeline_stages_run ON pipeline_stages(run_id, id);
        """
    )


@MIGRATIONS()
def m010_eval_results_by_trace(db: Database) -> None:
    """The traces table shows each test trace's score in the newest finished evaluation: an
    index from trace to its results."""
    db.execute("CREATE INDEX eval_results_trace ON eval_results(trace_id, run_id)")


@MIGRATIONS()
def m011_flag_evidence(db: Database) -> None:
    """Each flag says why: a JSON list of {source: schema | task | corpus, text}, so an analyst
    can trust or dismiss it. NULL on flags stored before (their detail says what it can)."""
    db.execute("ALTER TABLE flags ADD COLUMN evidence TEXT")


@MIGRATIONS()
def m018_job_metrics(db: Database) -> None:
    """A job's per-step metrics (training's loss, learning rate, speed) as rows, not as text
    in its log: the app draws the curve from them. Logs of earlier runs keep their lines."""
    _execute_script(db,
        """
        CREATE TABLE job_metrics (
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            step INTEGER NOT NULL,
            data TEXT NOT NULL,            -- JSON object of the step's numbers
            PRIMARY KEY (job_id, step)
        ) WITHOUT ROWID;
        """
    )


@MIGRATIONS()
def m019_job_claims(db: Database) -> None:
    """Units of work (a turn, a trace) a running job has claimed, so that a second job over
    the same ones skips them instead of paying for the same model calls twice. A claim ends
    with its job (finished, or found dead by the next open)."""
    _execute_script(db,
        """
        CREATE TABLE job_claims (
            scope TEXT NOT NULL,           -- what kind of unit: relabel.turn, ...
            key TEXT NOT NULL,             -- the unit: 'TRACE:TURN', ...
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            created_at TEXT NOT NULL,
            PRIMARY KEY (scope, key)
        ) WITHOUT ROWID;
        CREATE INDEX job_claims_job ON job_claims(job_id);
        """
    )


@MIGRATIONS()
def m017_split_decisions(db: Database) -> None:
    """Moves between splits as a history (like exclusions): every change of `traces.split` by
    `workbench split` or the app is a row holding the split before it, grouped by the action
    that made it, so an action can be undone without touching moves made since."""
    _execute_script(
        db,
        """
        CREATE TABLE split_decisions (
            id INTEGER PRIMARY KEY,
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            split TEXT NOT NULL,           -- the split it was moved to
            previous TEXT NOT NULL,        -- traces.split before it
            action TEXT NOT NULL,          -- one id per split / move / undo action
            author_name TEXT NOT NULL,
            reason TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX split_decisions_trace ON split_decisions(trace_id, id);
        CREATE INDEX split_decisions_action ON split_decisions(action);
        """
    )


@MIGRATIONS()
def m012_metadata_outcomes(db: Database) -> None:
    """Metadata and outcomes are data (issue #29): each trace keeps every key of its record
    that is not its messages (`metadata`, a JSON object, exported back) and its outcomes by name
    (`outcomes`, a JSON object of rewards, scores, feedback values), both read with SQLite's
    JSON functions by the selection (`--meta`, `--outcome`); each message keeps the attributes
    of its format that the canonical form has no key for (`extra`, a JSON object: an OpenAI
    fine-tuning `weight`, an Anthropic `is_error`, the role it was written with)."""
    _execute_script(
        db,
        """
        ALTER TABLE traces ADD COLUMN metadata TEXT;
        ALTER TABLE traces ADD COLUMN outcomes TEXT;
        ALTER TABLE messages ADD COLUMN extra TEXT;
        """
    )


@MIGRATIONS()
def m020_flag_patterns_and_dismissals(db: Database) -> None:
    """The analyst teaches the checks (issue #31). Each flag has a `pattern`: the kind of
    finding it is, without its trace's values (`db.flags.default_pattern` unless the check gave
    one). A flag marked "not a problem" is a row of `flag_dismissals` (with a copy of the flag,
    so an undo brings it back): its check does not raise it again on that turn, and other flags
    of the same check and pattern are demoted to warnings (`demoted_from` keeps what the check
    raised). `flag_samples` holds random draws of a check's flags and the analyst's verdict on
    each, from which the check's precision is estimated."""
    from db.flags import default_pattern

    _execute_script(
        db,
        """
        ALTER TABLE flags ADD COLUMN pattern TEXT;
        ALTER TABLE flags ADD COLUMN demoted_from TEXT;  -- severity before analysts' dismissals
        CREATE INDEX flags_pattern ON flags(check_name, pattern);
        CREATE TABLE flag_dismissals (
            id INTEGER PRIMARY KEY,
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            message_idx INTEGER,           -- NULL: a flag on the whole trace
            check_name TEXT NOT NULL,
            pattern TEXT NOT NULL,
            severity TEXT NOT NULL,        -- as its check raised it
            detail TEXT NOT NULL,
            evidence TEXT,
            flag_created_at TEXT,          -- the flag's first time (restored by an undo)
            action TEXT NOT NULL,          -- one id per decision (a bulk keep is one)
            author_name TEXT NOT NULL,
            created_at TEXT NOT NULL,
            undone_at TEXT                 -- NULL while it holds
        );
        CREATE INDEX flag_dismissals_pattern ON flag_dismissals(check_name, pattern);
        CREATE INDEX flag_dismissals_trace ON flag_dismissals(trace_id, message_idx);
        CREATE INDEX flag_dismissals_action ON flag_dismissals(action);
        CREATE TABLE flag_samples (
            id INTEGER PRIMARY KEY,
            sample TEXT NOT NULL,          -- one id per draw
            check_name TEXT NOT NULL,
            trace_id INTEGER NOT NULL REFERENCES traces(id),
            message_idx INTEGER,
            pattern TEXT NOT NULL,
            severity TEXT NOT NULL,
            detail TEXT NOT NULL,
            drawn_at TEXT NOT NULL,
            verdict TEXT CHECK (verdict IN ('real', 'not_a_problem')),   -- NULL: not judged
            judged_at TEXT,
            author_name TEXT
        );
        CREATE INDEX flag_samples_check ON flag_samples(check_name, verdict);
        CREATE INDEX flag_samples_trace ON flag_samples(trace_id, message_idx);
        """
    )
    db.conn.create_function("workbench_pattern", 2, default_pattern, deterministic=True)
    db.execute("UPDATE flags SET pattern = workbench_pattern(check_name, detail)")


@MIGRATIONS()
def m021_model_batches(db: Database) -> None:
    """Model calls sent as an OpenAI Batch job (an endpoint with `batch = true`): the batch's
    ids are stored with the job before it is waited for, so a killed or stopped job, resumed,
    collects the same batch instead of paying for a new one; each request's outcome is kept
    (`ok`, or `failed` with why), for the job's report and the one retry a failure gets."""
    _execute_script(db,
        """
        CREATE TABLE model_batches (
            id INTEGER PRIMARY KEY,
            job_id INTEGER REFERENCES jobs(id),
            endpoint TEXT NOT NULL,        -- the endpoint's name in the config
            base_url TEXT NOT NULL,
            input_file_id TEXT NOT NULL,   -- the uploaded JSONL of requests
            batch_id TEXT,                 -- NULL until the provider made the batch
            status TEXT NOT NULL,          -- uploaded, validating, in_progress, ..., completed
            requests INTEGER NOT NULL,
            output_file_id TEXT,
            error_file_id TEXT,
            detail TEXT,                   -- why a batch failed, expired or was cancelled
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX model_batches_job ON model_batches(job_id, endpoint);
        CREATE TABLE model_batch_requests (
            batch INTEGER NOT NULL REFERENCES model_batches(id),
            custom_id TEXT NOT NULL,       -- the request's unit key
            status TEXT NOT NULL,          -- pending, ok, failed
            error TEXT,
            PRIMARY KEY (batch, custom_id)
        ) WITHOUT ROWID;
        """
    )
