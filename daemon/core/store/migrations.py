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
            source           TEXT    NOT NULL DEFAULT 'inbox',  -- inbox | submit | zip (an item of a dropped ZIP)
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
    (
        2,
        "persons",
        """
        -- cluster engine: the persons of each batch (outputs/cluster/<batch>/<folder>/)
        CREATE TABLE cluster_persons (
            id          INTEGER PRIMARY KEY,
            batch       TEXT    NOT NULL,
            seq         INTEGER NOT NULL,           -- person_<seq>: the folder name until renamed
            name        TEXT,                       -- the folder name given by the user
            mean        BLOB    NOT NULL,           -- float32 mean of the member embeddings
            faces       INTEGER NOT NULL DEFAULT 0, -- embeddings averaged into mean
            merged_into INTEGER REFERENCES cluster_persons(id),
            created_at  REAL    NOT NULL,
            updated_at  REAL    NOT NULL
        );
        CREATE UNIQUE INDEX cluster_persons_seq ON cluster_persons(batch, seq);

        -- one row per run (job) of a batch; phase 'distribute' = its plan below is committed
        CREATE TABLE cluster_runs (
            job_id      INTEGER PRIMARY KEY,
            batch       TEXT NOT NULL,
            phase       TEXT NOT NULL CHECK (phase IN ('distribute', 'done')),
            source      TEXT NOT NULL,              -- the folder the photos are taken from
            summary     TEXT NOT NULL DEFAULT '{}', -- JSON counts
            created_at  REAL NOT NULL,
            finished_at REAL
        );
        CREATE INDEX cluster_runs_batch ON cluster_runs(batch);

        -- every photo of a run and where it goes: the distribution journal, written before any
        -- file moves, replayed until every source is gone and every destination exists
        CREATE TABLE cluster_photos (
            id     INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL,
            batch  TEXT    NOT NULL,
            photo  TEXT    NOT NULL,                -- path relative to the dropped unit
            source TEXT    NOT NULL,                -- absolute path it is taken from
            status TEXT    NOT NULL CHECK (status IN ('person', 'unsorted', 'no_faces', 'unreadable', 'missing')),
            dests  TEXT    NOT NULL DEFAULT '[]',   -- JSON: paths relative to the batch folder
            width  INTEGER,
            height INTEGER,
            error  TEXT,
            UNIQUE (job_id, photo)
        );
        CREATE INDEX cluster_photos_batch ON cluster_photos(batch);

        -- every face found; file = the photo's copy in its person's folder
        CREATE TABLE cluster_faces (
            id        INTEGER PRIMARY KEY,
            photo_id  INTEGER NOT NULL REFERENCES cluster_photos(id),
            idx       INTEGER NOT NULL,
            box       TEXT    NOT NULL,             -- JSON [x1, y1, x2, y2], upright pixels
            score     REAL    NOT NULL,
            person_id INTEGER REFERENCES cluster_persons(id),
            file      TEXT,
            thumb     BLOB                          -- JPEG crop; kept for a person's best faces only
        );
        CREATE INDEX cluster_faces_photo ON cluster_faces(photo_id);
        CREATE INDEX cluster_faces_person ON cluster_faces(person_id);
        """,
    ),
    (
        3,
        "indexes for the queue views",
        """
        -- the TUI's and `dropflow jobs --status` windows, tokens today, sort by priority
        CREATE INDEX jobs_status_id ON jobs(status, id);
        CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
        CREATE INDEX jobs_priority ON jobs(priority DESC, id);
        """,
    ),
    (
        4,
        "the dedupe key includes the params",
        """
        -- the same content with other params is other work (`submit --set fps=2` on a processed
        -- video); params is the canonical JSON of the validated params, so equal params are equal text
        DROP INDEX jobs_dedupe;
        CREATE UNIQUE INDEX jobs_dedupe ON jobs(route, batch, content_hash, params) WHERE forced = 0;
        """,
    ),
    (
        5,
        "the claim walks the due jobs in claim order",
        """
        -- jobs_ready led with status: the claim's `status IN ('queued','waiting')` made two ranges
        -- that SQLite read in full and sorted (via jobs_status_id) on every claim, so each claim cost
        -- O(queued). Keyed on the claim's ORDER BY and partial on its status test, the claim reads
        -- the index in order and stops at its LIMIT, whatever the length of the queue.
        DROP INDEX jobs_ready;
        CREATE INDEX jobs_ready ON jobs(priority DESC, id) WHERE status IN ('queued', 'waiting');
        """,
    ),
]
