"""The store's jobs: inserting them (deduplicated by route, batch and content) and reading them."""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from dropflow.daemon.core.jobs import (
    STATUSES,
    TERMINAL,
    ActiveInput,
    InsertResult,
    Job,
    NewJob,
    StoreError,
)
from dropflow.daemon.core.store.db import Db

_JSON_COLS = {"input_paths", "params", "outputs", "checkpoint", "usage"}

# one row of `insert_jobs`; a row the dedupe index refuses is skipped, not an error
INSERT_JOB = (
    "INSERT INTO jobs(engine, route, batch, source, input_path, input_paths, content_hash,"
    " forced, provider, params, priority, status, max_attempts, error_kind, error_message,"
    " error_hint, created_at, updated_at, finished_at)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)


def job_from_row(row: Any) -> Job:
    """A `jobs` row as a `Job`, its JSON columns decoded."""
    data = {k: row[k] for k in row.keys()}
    for k in _JSON_COLS:
        data[k] = json.loads(data[k])
    data["forced"] = bool(data["forced"])
    return Job(**data)


class JobsMixin:
    """Insert and read jobs (part of `Store`)."""

    # provided by each database's connection (connection.py, pg.py); declared here for mypy
    db: Db
    if TYPE_CHECKING:

        def transaction(self) -> AbstractAsyncContextManager[Db]: ...

        async def _insert_rows(
            self, db: Db, rows: Sequence[tuple[Any, ...]]
        ) -> builtins.list[int | None]: ...

    # --- inserting --------------------------------------------------------------------------------

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> builtins.list[InsertResult]:
        """Insert a batch in one transaction; a job whose (route, batch, hash, params) exists is not added.

        A handful of statements (or one pipelined round trip) per batch, not per job: intake of ten
        thousand dropped files must not cost ten thousand round trips to the database. The unique
        dedupe index decides what is new, so two daemons offered the same file register it once.
        """
        now = time.time()
        params_json: dict[int, str] = {}  # units of one drop share one params dict: encode it once
        rows = [
            (
                j.engine,
                j.route,
                j.batch,
                j.source,
                j.input_path,
                json.dumps(j.input_paths or [j.input_path]),
                j.content_hash,
                int(j.forced),
                j.provider,
                params_json.get(id(j.params)) or params_json.setdefault(id(j.params), json.dumps(j.params)),
                j.priority,
                j.status,
                j.max_attempts,
                (j.error or {}).get("kind"),
                (j.error or {}).get("message"),
                (j.error or {}).get("hint"),
                now,
                now,
                now if j.status in TERMINAL else None,
            )
            for j in jobs
        ]
        async with self.transaction() as db:
            ids = await self._insert_rows(db, rows)
            missing = {j.content_hash for j, new_id in zip(jobs, ids, strict=True) if new_id is None}
            existing: dict[tuple[str, str, str, str], int] = {}
            hashes = builtins.list(missing)
            for i in range(0, len(hashes), 500):
                chunk = hashes[i : i + 500]
                cur = await db.execute(
                    f"SELECT id, route, batch, content_hash, params FROM jobs WHERE forced = 0"
                    f" AND content_hash IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                existing.update({(r[1], r[2], r[3], r[4]): int(r[0]) for r in await cur.fetchall()})
            out: builtins.list[InsertResult] = []
            events = []
            status_data = {st: json.dumps({"status": st}) for st in STATUSES}
            for j, new_id in zip(jobs, ids, strict=True):
                if new_id is not None:
                    job_id, new = new_id, True
                else:
                    found = existing.get((j.route, j.batch, j.content_hash, params_json[id(j.params)]))
                    if found is None:  # pragma: no cover - the unique index guarantees a row
                        raise StoreError(f"insert of {j.input_path} conflicted with nothing")
                    job_id, new = found, False
                out.append(InsertResult(job_id, new))
                if new:
                    events.append(
                        (
                            job_id,
                            now,
                            "state",
                            f"{j.status}: {j.input_path}",
                            status_data[j.status],
                        )
                    )
            await db.executemany(
                "INSERT INTO events(job_id, at, kind, message, data) VALUES (?, ?, ?, ?, ?)", events
            )
        return out

    # --- reading ----------------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job | None:
        cur = await self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,))
        row = await cur.fetchone()
        return job_from_row(row) if row else None

    async def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        engine: str | None = None,
        batch: str | None = None,
        limit: int | None = None,
        after_id: int | None = None,
        newest_first: bool = False,
    ) -> builtins.list[Job]:
        where: builtins.list[str] = []
        args: builtins.list[Any] = []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args += statuses
        if engine is not None:
            where.append("engine = ?")
            args.append(engine)
        if batch is not None:
            where.append("batch = ?")
            args.append(batch)
        if after_id is not None:
            where.append("id < ?" if newest_first else "id > ?")
            args.append(after_id)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        cur = await self.db.execute(sql, args)
        return [job_from_row(r) for r in await cur.fetchall()]

    async def counts(self) -> dict[str, int]:
        cur = await self.db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        found = {r[0]: r[1] for r in await cur.fetchall()}
        return {s: int(found.get(s, 0)) for s in STATUSES}

    async def active_units(self, paths: Sequence[str]) -> set[str]:
        """Those of `paths` that are the unit of an unfinished job (whose engine may be changing it)."""
        if not paths:
            return set()
        cur = await self.db.execute(
            "SELECT input_path FROM jobs WHERE status IN ('queued','running','waiting','paused')"
            f" AND input_path IN ({','.join('?' * len(paths))})",
            list(paths),
        )
        return {str(r[0]) for r in await cur.fetchall()}

    async def active_inputs(self) -> builtins.list[ActiveInput]:
        """The inputs of jobs that still need their files where they are (not finished), with what
        their units held: the daemon's start tells an untouched input from one edited meanwhile."""
        cur = await self.db.execute(
            "SELECT input_paths, content_hash, created_at FROM jobs"
            " WHERE status IN ('queued','running','waiting','paused','failed') ORDER BY id"
        )
        return [
            ActiveInput(tuple(json.loads(paths)), str(digest), float(created))
            for paths, digest, created in await cur.fetchall()
        ]
