"""The job store: one SQLite database (WAL, busy_timeout), reached through aiosqlite.

The daemon is the main writer. The CLI and the TUI change jobs only through the short
`BEGIN IMMEDIATE` transactions of the request methods (`cancel`, `pause`, `retry`, ...): a job
that is not running changes state at once; a running one gets a `control` flag that its runner
picks up within a scheduler tick. So edits go in whether or not the daemon is up.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from dropflow.daemon.core.jobs import (
    STATUSES,
    TERMINAL,
    Event,
    InsertResult,
    Job,
    NewJob,
    StoreError,
)
from dropflow.daemon.core.store.migrations import MIGRATIONS

if TYPE_CHECKING:
    from dropflow.daemon.core.config import Config

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000  # how long a write waits for another process's write lock


_JSON_COLS = {"input_paths", "params", "outputs", "checkpoint", "usage"}


def _job(row: aiosqlite.Row) -> Job:
    data = {k: row[k] for k in row.keys()}
    for k in _JSON_COLS:
        data[k] = json.loads(data[k])
    data["forced"] = bool(data["forced"])
    return Job(**data)


def owner_id() -> str:
    """This process's lease owner name: host, pid and a start stamp (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000) % 10**9}"


def owner_alive(owner: str) -> bool:
    """False only when the owner ran on this host and its pid is gone; other hosts wait for expiry."""
    try:
        host, pid_s, _ = owner.split(":", 2)
        pid = int(pid_s)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        # One connection is shared by every task of the process: without this lock a second
        # task's BEGIN would land inside the first one's transaction.
        self._write_lock = asyncio.Lock()

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path, *, readonly: bool = False) -> AsyncIterator[Store]:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The database holds prompts, paths and provider replies: owner-only from the first byte.
        old = os.umask(0o077)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        finally:
            os.umask(old)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await _enable_wal(db)
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            store = cls(db, path)
            if not readonly:
                await store.migrate()
            for suffix in ("", "-wal", "-shm"):
                try:  # a few microseconds, once per open: not worth a thread hop
                    os.chmod(str(path) + suffix, 0o600)
                except FileNotFoundError:
                    pass
            yield store
        finally:
            await db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """`BEGIN IMMEDIATE`: take the write lock up front so a claim can't be raced.

        Not re-entrant: methods called inside one use the bare statements, never `transaction()`.
        """
        async with self._write_lock:
            try:
                await self._begin_immediate()
                yield self.db
            except BaseException:
                # A cancelled await does not cancel the statement: aiosqlite's thread still runs
                # it (even the BEGIN). rollback() is queued behind it and is a no-op when no
                # transaction is open; shielded, so a second cancel cannot leave one dangling.
                await asyncio.shield(self.db.rollback())
                raise
            else:
                await self.db.execute("COMMIT")

    async def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE, waiting out the refusals that busy_timeout does not cover.

        Another task's read on this shared connection may be between its execute and its fetch:
        its open statement holds a read transaction. SQLite then refuses BEGIN at once instead of
        waiting, because waiting could deadlock: SQLITE_BUSY_SNAPSHOT when another process (TUI,
        CLI) committed since that read began, SQLITE_BUSY while another process holds the write
        lock. The read finishes within a hop or two, so try again, for up to busy_timeout in all.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.002
        while True:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT")
                if not busy or time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)

    async def migrate(self) -> builtins.list[int]:
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        applied: builtins.list[int] = []
        for version, name, ddl in MIGRATIONS:
            async with self.transaction() as db:
                cur = await db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,))
                if await cur.fetchone():
                    continue
                for stmt in _statements(ddl):
                    await db.execute(stmt)
                await db.execute(
                    "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
                applied.append(version)
        return applied

    async def schema_version(self) -> int:
        cur = await self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "did anything change?" poll."""
        cur = await self.db.execute("PRAGMA data_version")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    # --- inserting --------------------------------------------------------------------------------

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> builtins.list[InsertResult]:
        """Insert a batch in one transaction; a job whose (route, batch, hash) exists is not added.

        A handful of statements per batch, not per job: intake of ten thousand dropped files
        must not cost ten thousand round trips to the database thread.
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
            cur = await db.execute("SELECT COALESCE(MAX(id), 0) FROM jobs")
            before = int((await cur.fetchone() or (0,))[0])
            await db.executemany(
                "INSERT INTO jobs(engine, route, batch, source, input_path, input_paths, content_hash,"
                " forced, provider, params, priority, status, max_attempts, error_kind, error_message,"
                " error_hint, created_at, updated_at, finished_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                rows,
            )
            cur = await db.execute(
                "SELECT id, route, batch, content_hash, input_path, forced FROM jobs WHERE id > ? ORDER BY id",
                (before,),
            )
            created: dict[tuple[str, str, str, str], int] = {}
            forced_ids: builtins.list[int] = []
            for r in await cur.fetchall():
                if r[5]:
                    forced_ids.append(int(r[0]))
                else:
                    created[(r[1], r[2], r[3], r[4])] = int(r[0])
            missing = {
                j.content_hash
                for j in jobs
                if not j.forced and (j.route, j.batch, j.content_hash, j.input_path) not in created
            }
            existing: dict[tuple[str, str, str], int] = {}
            hashes = builtins.list(missing)
            for i in range(0, len(hashes), 500):
                chunk = hashes[i : i + 500]
                cur = await db.execute(
                    f"SELECT id, route, batch, content_hash FROM jobs WHERE forced = 0"
                    f" AND content_hash IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                existing.update({(r[1], r[2], r[3]): int(r[0]) for r in await cur.fetchall()})
            out: builtins.list[InsertResult] = []
            events = []
            status_data = {st: json.dumps({"status": st}) for st in STATUSES}
            forced_iter = iter(forced_ids)
            for j in jobs:
                if j.forced:
                    job_id, new = next(forced_iter), True
                elif (key := (j.route, j.batch, j.content_hash, j.input_path)) in created:
                    job_id, new = created.pop(key), True
                else:
                    found = existing.get((j.route, j.batch, j.content_hash))
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
        return _job(row) if row else None

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
        return [_job(r) for r in await cur.fetchall()]

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

    async def active_inputs(self) -> set[str]:
        """Input paths of jobs that still need their file where it is (not finished)."""
        cur = await self.db.execute(
            "SELECT input_paths FROM jobs WHERE status IN ('queued','running','waiting','paused','failed')"
        )
        out: set[str] = set()
        for (paths,) in await cur.fetchall():
            out.update(json.loads(paths))
        return out

    async def events(self, job_id: int | None = None, *, limit: int = 200) -> builtins.list[Event]:
        if job_id is None:
            cur = await self.db.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        else:
            cur = await self.db.execute(
                "SELECT * FROM events WHERE job_id = ? ORDER BY id DESC LIMIT ?", (job_id, limit)
            )
        rows = await cur.fetchall()
        return [
            Event(r["id"], r["job_id"], r["at"], r["kind"], r["message"], json.loads(r["data"]))
            for r in reversed(builtins.list(rows))
        ]

    # --- claiming and leases ----------------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        *,
        slots: int,
        engine_slots: dict[str, int],
        lease_seconds: float,
        paused_engines: Iterable[str] = (),
    ) -> builtins.list[Job]:
        """Take up to `slots` due jobs, highest priority first, honouring per-engine free slots.

        Jobs with a pending cancel are due at once so that their engine can act on it
        (e.g. cancel a remote task) before they end.
        """
        if slots <= 0:
            return []
        now = time.time()
        paused = list(paused_engines)
        excluded = [e for e, n in engine_slots.items() if n <= 0] + paused
        sql = (
            "SELECT id, engine FROM jobs WHERE status IN ('queued','waiting')"
            " AND (next_attempt_at IS NULL OR next_attempt_at <= ? OR control = 'cancel')"
        )
        args: list[Any] = [now]
        if excluded:
            sql += f" AND engine NOT IN ({','.join('?' * len(excluded))})"
            args += excluded
        sql += " ORDER BY priority DESC, id LIMIT ?"
        args.append(slots * 4 + 16)
        claimed: builtins.list[int] = []
        async with self.transaction() as db:
            cur = await db.execute(sql, args)
            free = dict(engine_slots)
            for job_id, engine in await cur.fetchall():
                if len(claimed) >= slots:
                    break
                if engine in free:
                    if free[engine] <= 0:
                        continue
                    free[engine] -= 1
                claimed.append(job_id)
            if claimed:
                marks = ",".join("?" * len(claimed))
                await db.execute(
                    f"UPDATE jobs SET status = 'running', lease_owner = ?, lease_expires_at = ?,"
                    f" attempts = attempts + 1, started_at = COALESCE(started_at, ?), updated_at = ?"
                    f" WHERE id IN ({marks})",
                    [owner, now + lease_seconds, now, now, *claimed],
                )
                cur = await db.execute(
                    f"SELECT * FROM jobs WHERE id IN ({marks}) ORDER BY priority DESC, id", claimed
                )
                return [_job(r) for r in await cur.fetchall()]
        return []

    async def renew_leases(self, owner: str, lease_seconds: float, job_ids: Iterable[int]) -> None:
        """Extend the leases of `owner`'s jobs that are still being worked on, and its heartbeat.

        Only those: a row whose runner died without a word (its last write failed) must let its
        lease run out, so that `reclaim` puts it back.
        """
        now = time.time()
        ids = list(job_ids)
        async with self.transaction() as db:
            if ids:
                await db.execute(
                    "UPDATE jobs SET lease_expires_at = ? WHERE lease_owner = ? AND status = 'running'"
                    f" AND id IN ({','.join('?' * len(ids))})",
                    (now + lease_seconds, owner, *ids),
                )
            await db.execute(
                "UPDATE daemons SET heartbeat_at = ? WHERE owner = ?",
                (now, owner),
            )

    async def controls(self, owner: str) -> dict[int, str | None]:
        cur = await self.db.execute(
            "SELECT id, control FROM jobs WHERE lease_owner = ? AND status = 'running'", (owner,)
        )
        return {int(r[0]): r[1] for r in await cur.fetchall()}

    async def reclaim(self, *, owner: str, keep: Iterable[int] = ()) -> builtins.list[int]:
        """Put back running jobs whose lease expired or whose owner process is gone.

        `keep`: the jobs `owner` (the caller) is working on. Any other running row of its own is
        an orphan once its lease runs out (its runner's last write failed).
        """
        now = time.time()
        kept = set(keep)
        async with self.transaction() as db:
            cur = await db.execute(
                "SELECT id, lease_owner, lease_expires_at FROM jobs WHERE status = 'running'"
            )
            stale = [
                int(job_id)
                for job_id, lease_owner, expires in await cur.fetchall()
                if job_id not in kept
                and (
                    (expires is not None and expires < now)
                    or (lease_owner != owner and not owner_alive(lease_owner or ""))
                )
            ]
            for job_id in stale:
                await db.execute(
                    "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,"
                    " next_attempt_at = NULL, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
                await self._event(job_id, "state", "reclaimed after its runner stopped (lease expired)")
        return stale

    # --- the runner's writes (all fenced by lease owner) --------------------------------------------

    async def _owned_update(self, job_id: int, owner: str, sets: str, args: Sequence[Any]) -> bool:
        cur = await self.db.execute(
            f"UPDATE jobs SET {sets}, updated_at = ? WHERE id = ? AND lease_owner = ? AND status = 'running'",
            (*args, time.time(), job_id, owner),
        )
        return cur.rowcount == 1

    async def set_progress(self, job_id: int, owner: str, progress: float, message: str) -> bool:
        async with self.transaction():
            return await self._owned_update(
                job_id, owner, "progress = ?, progress_message = ?", (max(0.0, min(1.0, progress)), message)
            )

    async def set_plan(self, job_id: int, owner: str, params: dict[str, Any], provider: str | None) -> None:
        """Replace a running job's params and provider with those the config gives now (a job about
        to start from scratch); its dedupe key stays the one it was registered under."""
        async with self.transaction():
            if not await self._owned_update(
                job_id, owner, "params = ?, provider = ?", (json.dumps(params), provider)
            ):
                raise StoreError(f"job {job_id} is no longer held by this runner")
            await self._event(job_id, "note", "params and provider taken from the current config")

    async def save_checkpoint(
        self, job_id: int, owner: str, checkpoint: dict[str, Any], *, remote_task_id: str | None = None
    ) -> None:
        """Durably record engine state (and a remote task id) before the engine waits on anything."""
        async with self.transaction():
            ok = await self._owned_update(
                job_id,
                owner,
                "checkpoint = ?, remote_task_id = COALESCE(?, remote_task_id)",
                (json.dumps(checkpoint), remote_task_id),
            )
            if not ok:
                raise StoreError(f"job {job_id} is no longer held by this runner")
            if remote_task_id:
                await self._event(job_id, "note", f"remote task {remote_task_id} submitted")

    async def succeed(
        self,
        job_id: int,
        owner: str,
        *,
        outputs: Sequence[str],
        usage: dict[str, Any],
        archived_path: str | None,
        message: str = "done",
    ) -> bool:
        now = time.time()
        async with self.transaction():
            ok = await self._owned_update(
                job_id,
                owner,
                "status = 'succeeded', progress = 1, progress_message = ?, outputs = ?, usage = ?,"
                " tokens_in = ?, tokens_out = ?, archived_path = ?, finished_at = ?, lease_owner = NULL,"
                " lease_expires_at = NULL, control = NULL, error_kind = NULL, error_message = NULL,"
                " error_hint = NULL, next_attempt_at = NULL",
                (
                    message,
                    json.dumps(list(outputs)),
                    json.dumps(usage),
                    int(usage.get("input_tokens", 0)),
                    int(usage.get("output_tokens", 0)),
                    archived_path,
                    now,
                ),
            )
            if ok:
                await self._event(
                    job_id, "state", "succeeded", {"status": "succeeded", "outputs": list(outputs)}
                )
        return ok

    async def set_archived(self, job_id: int, archived_path: str) -> None:
        async with self.transaction() as db:
            await db.execute("UPDATE jobs SET archived_path = ? WHERE id = ?", (archived_path, job_id))
            await self._event(job_id, "note", f"input archived to {archived_path}")

    async def fail(
        self,
        job_id: int,
        owner: str,
        error: dict[str, Any],
        *,
        retry_at: float | None,
        usage: dict[str, Any] | None = None,
    ) -> bool:
        """Record an error: back to `waiting` until `retry_at`, or `failed` when it is None."""
        now = time.time()
        usage_sets, usage_args = "", ()  # type: tuple[str, tuple[Any, ...]]
        if usage is not None:
            usage_sets = ", usage = ?, tokens_in = ?, tokens_out = ?"
            usage_args = (
                json.dumps(usage),
                int(usage.get("input_tokens", 0)),
                int(usage.get("output_tokens", 0)),
            )
        status = "waiting" if retry_at is not None else "failed"
        async with self.transaction():
            ok = await self._owned_update(
                job_id,
                owner,
                "status = ?, error_kind = ?, error_message = ?, error_hint = ?, next_attempt_at = ?,"
                " lease_owner = NULL, lease_expires_at = NULL, finished_at = ?" + usage_sets,
                (
                    status,
                    error.get("kind"),
                    error.get("message"),
                    error.get("hint"),
                    retry_at,
                    None if retry_at is not None else now,
                    *usage_args,
                ),
            )
            if ok:
                what = (
                    f"retry at {time.strftime('%H:%M:%S', time.localtime(retry_at))}"
                    if retry_at
                    else "failed"
                )
                await self._event(
                    job_id, "error", f"{error.get('message')} ({what})", {"status": status, **error}
                )
        return ok

    async def reschedule(
        self, job_id: int, owner: str, *, at: float, message: str, usage: dict[str, Any] | None = None
    ) -> bool:
        """The engine is waiting on something remote: free the slot, come back at `at`.

        The attempt taken by this claim is given back: waiting is not failing.
        """
        extra = ", usage = ?" if usage is not None else ""
        args: tuple[Any, ...] = (at, message) + ((json.dumps(usage),) if usage is not None else ())
        async with self.transaction():
            return await self._owned_update(
                job_id,
                owner,
                "status = 'waiting', next_attempt_at = ?, progress_message = ?, attempts = MAX(attempts - 1, 0),"
                " lease_owner = NULL, lease_expires_at = NULL" + extra,
                args,
            )

    async def release(
        self, job_id: int, owner: str, *, to: str = "queued", message: str = "released"
    ) -> bool:
        """Give a running job back unfinished (shutdown, pause): no attempt is charged."""
        async with self.transaction():
            ok = await self._owned_update(
                job_id,
                owner,
                "status = ?, attempts = MAX(attempts - 1, 0), lease_owner = NULL, lease_expires_at = NULL,"
                " control = NULL",
                (to,),
            )
            if ok:
                await self._event(job_id, "state", message, {"status": to})
        return ok

    async def finish_cancelled(self, job_id: int, owner: str, message: str) -> bool:
        now = time.time()
        async with self.transaction():
            ok = await self._owned_update(
                job_id,
                owner,
                "status = 'cancelled', control = NULL, lease_owner = NULL, lease_expires_at = NULL,"
                " finished_at = ?, progress_message = ?",
                (now, message),
            )
            if ok:
                await self._event(job_id, "state", message, {"status": "cancelled"})
        return ok

    # --- requests from the CLI / TUI ---------------------------------------------------------------

    async def cancel(self, job_id: int) -> str:
        """Cancel a job. Returns what happened: cancelled | requested | noop | missing."""
        async with self.transaction() as db:
            job = await self.get(job_id)
            if job is None:
                return "missing"
            if job.status in TERMINAL:
                return "noop"
            if job.status == "running" or job.remote_task_id:
                # its engine must act (stop work, cancel the remote task): flag it and make it due now
                await db.execute(
                    "UPDATE jobs SET control = 'cancel', next_attempt_at = NULL,"
                    " status = CASE WHEN status = 'paused' THEN 'queued' ELSE status END, updated_at = ?"
                    " WHERE id = ?",
                    (time.time(), job_id),
                )
                await self._event(job_id, "command", "cancel requested")
                return "requested"
            await self._set_status(job_id, "cancelled", "cancelled by user")
            return "cancelled"

    async def pause(self, job_id: int) -> str:
        async with self.transaction() as db:
            job = await self.get(job_id)
            if job is None:
                return "missing"
            if job.status in ("queued", "waiting"):
                await self._set_status(job_id, "paused", "paused by user")
                return "paused"
            if job.status == "running":
                await db.execute(
                    "UPDATE jobs SET control = 'pause', updated_at = ? WHERE id = ?", (time.time(), job_id)
                )
                await self._event(job_id, "command", "pause requested")
                return "requested"
            return "noop"

    async def resume(self, job_id: int) -> str:
        async with self.transaction() as db:
            job = await self.get(job_id)
            if job is None:
                return "missing"
            if job.status == "paused":
                await self._set_status(job_id, "queued", "resumed by user")
                return "resumed"
            if job.status == "running" and job.control == "pause":
                await db.execute("UPDATE jobs SET control = NULL WHERE id = ?", (job_id,))
                return "resumed"
            return "noop"

    async def retry(self, job_id: int) -> str:
        async with self.transaction() as db:
            job = await self.get(job_id)
            if job is None:
                return "missing"
            if job.status not in ("failed", "cancelled", "waiting"):
                return "noop"
            await db.execute(
                "UPDATE jobs SET status = 'queued', attempts = 0, next_attempt_at = NULL, error_kind = NULL,"
                " error_message = NULL, error_hint = NULL, finished_at = NULL, control = NULL, progress = 0,"
                " progress_message = '', updated_at = ? WHERE id = ?",
                (time.time(), job_id),
            )
            await self._event(job_id, "state", "retry requested: queued", {"status": "queued"})
            return "queued"

    async def set_priority(self, job_id: int, priority: int) -> str:
        async with self.transaction() as db:
            cur = await db.execute(
                "UPDATE jobs SET priority = ?, updated_at = ? WHERE id = ?", (priority, time.time(), job_id)
            )
            if cur.rowcount == 0:
                return "missing"
            await self._event(job_id, "command", f"priority set to {priority}")
            return "ok"

    async def remove(self, job_id: int) -> str:
        """Delete a job's record (not its files). Only jobs that are not running."""
        async with self.transaction() as db:
            job = await self.get(job_id)
            if job is None:
                return "missing"
            if job.status == "running":
                return "running"
            await db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            await self._event(job_id, "command", f"job record removed ({job.input_path})")
            return "removed"

    async def _set_status(self, job_id: int, status: str, message: str) -> None:
        now = time.time()
        await self.db.execute(
            "UPDATE jobs SET status = ?, updated_at = ?, finished_at = CASE WHEN ? IN ('succeeded','failed',"
            "'cancelled') THEN ? ELSE finished_at END WHERE id = ?",
            (status, now, status, now, job_id),
        )
        await self._event(job_id, "state", message, {"status": status})

    async def requeue_failed(
        self, job_id: int, input_path: str, input_paths: builtins.list[str] | None = None
    ) -> None:
        """The same content was dropped again after its job failed: try once more, from the new copy
        (`input_paths`: every file of a multi-file unit, primary first)."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE jobs SET status = 'queued', attempts = 0, input_path = ?, input_paths = ?,"
                " next_attempt_at = NULL, error_kind = NULL, error_message = NULL, error_hint = NULL,"
                " finished_at = NULL, updated_at = ? WHERE id = ? AND status IN ('failed','cancelled')",
                (input_path, json.dumps(input_paths or [input_path]), time.time(), job_id),
            )
            await self._event(job_id, "state", f"dropped again ({input_path}): queued", {"status": "queued"})

    # --- settings: engine / global pause --------------------------------------------------------------

    async def get_setting(self, key: str, default: Any = None) -> Any:
        cur = await self.db.execute("SELECT value FROM settings WHERE key = ?", (key,))
        row = await cur.fetchone()
        return json.loads(row[0]) if row else default

    async def set_setting(self, key: str, value: Any) -> None:
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    async def paused_engines(self) -> tuple[bool, set[str]]:
        return bool(await self.get_setting("paused_all", False)), set(
            await self.get_setting("paused_engines", [])
        )

    async def pause_engine(self, engine: str | None, paused: bool) -> None:
        """Hold (or release) every job of one engine, or of all engines when `engine` is None."""
        if engine is None:
            await self.set_setting("paused_all", paused)
        else:
            engines = set(await self.get_setting("paused_engines", []))
            (engines.add if paused else engines.discard)(engine)
            await self.set_setting("paused_engines", sorted(engines))
        await self.add_event(
            None, "command", f"{'paused' if paused else 'resumed'} {engine or 'all engines'}"
        )

    # --- events and daemons ----------------------------------------------------------------------

    async def _event(
        self, job_id: int | None, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        await self.db.execute(
            "INSERT INTO events(job_id, at, kind, message, data) VALUES (?, ?, ?, ?, ?)",
            (job_id, time.time(), kind, message, json.dumps(data or {})),
        )

    async def add_event(
        self, job_id: int | None, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        async with self.transaction():
            await self._event(job_id, kind, message, data)

    async def register_daemon(self, owner: str, version: str) -> None:
        now = time.time()
        host, pid, _ = owner.split(":", 2)
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO daemons(owner, host, pid, version, started_at, heartbeat_at) VALUES (?,?,?,?,?,?)",
                (owner, host, int(pid), version, now, now),
            )

    async def stop_daemon(self, owner: str) -> None:
        async with self.transaction() as db:
            await db.execute("UPDATE daemons SET stopped_at = ? WHERE owner = ?", (time.time(), owner))

    async def live_daemons(self, *, stale_after: float) -> builtins.list[dict[str, Any]]:
        """Daemons that have beaten their heart within `stale_after` seconds and did not stop."""
        cur = await self.db.execute(
            "SELECT * FROM daemons WHERE stopped_at IS NULL AND heartbeat_at > ? ORDER BY started_at",
            (time.time() - stale_after,),
        )
        return [dict(r) for r in await cur.fetchall()]


async def _enable_wal(db: aiosqlite.Connection) -> None:
    """Switch to WAL. Switching needs a moment of exclusive access, which busy_timeout does not
    wait for, so a second process opening a fresh database while the first migrates it retries."""
    for attempt in range(50):
        cur = await db.execute("PRAGMA journal_mode")
        row = await cur.fetchone()
        if row and str(row[0]).lower() == "wal":
            return
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            await asyncio.sleep(0.1)


def _statements(ddl: str) -> builtins.list[str]:
    out, buf = [], []
    for line in ddl.splitlines():
        code = line.split("--", 1)[0]
        buf.append(code)
        if code.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip()
            if stmt.strip(";").strip():
                out.append(stmt)
            buf = []
    tail = "\n".join(buf).strip()
    if tail:
        out.append(tail)
    return out


def with_store(cfg: Config, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Run `fn(store)` on the config's database in a fresh event loop (for sync commands)."""

    async def go() -> T:
        async with Store.open(cfg.paths.database) as store:
            return await fn(store)

    return asyncio.run(go())
