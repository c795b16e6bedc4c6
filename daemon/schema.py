"""The database schema: every DDL statement lives here, as numbered migrations.

A migration runs inside the same `BEGIN IMMEDIATE` transaction that records it in
`schema_migrations`, so a crash leaves either both or neither. Append new migrations; never edit
one that has shipped.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "jobs, events, daemons, settings",
        """
        CREATE TABLE jobs (
            id               INTEGER PRIMARY KEY,
            engine           TEXT    NOT NULL,
            route            TEXT    NOT NULL,
            batch            TEXT    NOT NULL DEFAULT '',   -- dataset / cluster batch the job belongs to
            source           TEXT    NOT NULL DEFAULT 'inbox',  -- inbox | submit
            input_path       TEXT    NOT NULL,
            input_paths      TEXT    NOT NULL DEFAULT '[]', -- JSON: every file of the unit (primary first)
            content_hash     TEXT    NOT NULL,
            forced           INTEGER NOT NULL DEFAULT 0,    -- submitted with --force: exempt from dedupe
            provider         TEXT,
            params           TEXT    NOT NULL DEFAULT '{}',
            priority         INTEGER NOT NULL DEFAULT 0,
            status           TEXT    NOT NULL DEFAULT 'queued'
                             CHECK (status IN ('queued','running','waiting','paused','succeeded','failed','cancelled')),
            control          TEXT    CHECK (control IN ('cancel','pause')),  -- a request the runner must act on
            attempts         INTEGER NOT NULL DEFAULT 0,
            max_attempts     INTEGER NOT NULL DEFAULT 5,
            next_attempt_at  REAL,
            lease_owner      TEXT,
            lease_expires_at REAL,
            progress         REAL    NOT NULL DEFAULT 0,
            progress_message TEXT    NOT NULL DEFAULT '',
            outputs          TEXT    NOT NULL DEFAULT '[]',
            error_kind       TEXT,
            error_message    TEXT,
            error_hint       TEXT,
            remote_task_id   TEXT,
            checkpoint       TEXT    NOT NULL DEFAULT '{}', -- engine state that survives a restart
            usage            TEXT    NOT NULL DEFAULT '{}',
            tokens_in        INTEGER NOT NULL DEFAULT 0,
            tokens_out       INTEGER NOT NULL DEFAULT 0,
            archived_path    TEXT,
            created_at       REAL    NOT NULL,
            updated_at       REAL    NOT NULL,
            started_at       REAL,
            finished_at      REAL
        );
        -- the same content dropped on the same route (and batch) twice is one job
        CREATE UNIQUE INDEX jobs_dedupe ON jobs(route, batch, content_hash) WHERE forced = 0;
        CREATE INDEX jobs_ready ON jobs(status, priority DESC, id) WHERE status IN ('queued', 'waiting');
        CREATE INDEX jobs_owner ON jobs(lease_owner) WHERE lease_owner IS NOT NULL;
        CREATE INDEX jobs_input ON jobs(input_path);
        CREATE INDEX jobs_engine_status ON jobs(engine, status);
        CREATE INDEX jobs_batch ON jobs(engine, batch);

        CREATE TABLE events (
            id      INTEGER PRIMARY KEY,
            job_id  INTEGER,
            at      REAL NOT NULL,
            kind    TEXT NOT NULL,          -- state | error | note | command | progress
            message TEXT NOT NULL,
            data    TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX events_job ON events(job_id, id);

        CREATE TABLE daemons (
            owner        TEXT PRIMARY KEY,
            host         TEXT NOT NULL,
            pid          INTEGER NOT NULL,
            version      TEXT NOT NULL,
            started_at   REAL NOT NULL,
            heartbeat_at REAL NOT NULL,
            stopped_at   REAL
        );

        CREATE TABLE settings (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """,
    ),
]
