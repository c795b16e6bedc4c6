"""Opening the SQLite database: one aiosqlite connection, WAL, busy_timeout, migrations, the
`BEGIN IMMEDIATE` transactions every write of the other parts of `Store` runs in, and what
SQLite does its own way (the claim's query, id allocation, the change poll).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import aiosqlite

from dropflow.daemon.core.jobs import Role
from dropflow.daemon.core.store.claims import claim_query
from dropflow.daemon.core.store.db import Db
from dropflow.daemon.core.store.jobs import INSERT_JOB
from dropflow.daemon.core.store.migrations import MIGRATIONS
from dropflow.daemon.core.store.owners import owner_alive, owner_id

__all__ = ["owner_alive", "owner_id"]  # their old home

BUSY_TIMEOUT_MS = 10_000  # how long a write waits for another process's write lock


class _Connection:
    """The SQLite connection and its transactions (the first base of `SqliteStore`)."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.conn = db
        self.db: Db = db  # the shape the store's parts use
        self.path = path
        # One connection is shared by every task of the process: without this lock a second
        # task's BEGIN would land inside the first one's transaction.
        self._write_lock = asyncio.Lock()
        self._seen_version: int | None = None  # wait_for_change's last look

    @classmethod
    @asynccontextmanager
    async def connect(cls, path: Path, *, readonly: bool = False) -> AsyncIterator[Self]:
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
                yield self.conn
            except BaseException:
                # A cancelled await does not cancel the statement: aiosqlite's thread still runs
                # it (even the BEGIN). rollback() is queued behind it and is a no-op when no
                # transaction is open; shielded, so a second cancel cannot leave one dangling.
                await asyncio.shield(self.conn.rollback())
                raise
            else:
                await self.conn.execute("COMMIT")

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
                await self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT")
                if not busy or time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)

    async def migrate(self) -> list[int]:
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        applied: list[int] = []
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

    # --- changes ------------------------------------------------------------------------------------

    async def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "did anything change?" poll."""
        cur = await self.db.execute("PRAGMA data_version")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def wait_for_change(self, within: float, *, poll: float = 0.25) -> bool:
        """SQLite tells no one: read `data_version` every `poll` seconds (O(1), no table read)."""
        deadline = time.monotonic() + within
        while True:
            version = await self.data_version()
            if self._seen_version is None:
                self._seen_version = version
            elif version != self._seen_version:
                self._seen_version = version
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(poll, left))

    # --- what SQLite does its own way ------------------------------------------------------------------

    def _claim_sql(
        self, now: float, excluded: Sequence[str], limit: int, only: Mapping[Role, Sequence[str]] | None
    ) -> tuple[str, list[Any]]:
        """INDEXED BY: with no ANALYZE statistics (the daemon never runs it) SQLite prefers
        jobs_status_id and reads and sorts every queued row on each claim, a cost that grows with
        the queue (14 ms a claim at 100,000 queued). jobs_ready is in claim order, so the claim
        stops at its LIMIT; a query shape that could not use it fails loudly instead of slowing down.
        The write lock taken by `BEGIN IMMEDIATE` makes the claim exclusive."""
        return claim_query(now, excluded, limit, only, hint=" INDEXED BY jobs_ready")

    async def _insert_rows(self, db: Db, rows: Sequence[tuple[Any, ...]]) -> list[int | None]:
        """Insert `rows` (see `INSERT_JOB`); each one's new id, None where the dedupe index refused it.

        The write lock is held, so the ids above the largest one before are this batch's: three
        statements, however many rows (a RETURNING per row would cost a round trip per row).
        """
        cur = await db.execute("SELECT COALESCE(MAX(id), 0) FROM jobs")
        before = int((await cur.fetchone() or (0,))[0])
        await db.executemany(INSERT_JOB, rows)
        cur = await db.execute(
            "SELECT id, route, batch, content_hash, input_path, forced FROM jobs WHERE id > ? ORDER BY id",
            (before,),
        )
        created: dict[tuple[str, str, str, str], int] = {}
        forced_ids: list[int] = []
        for r in await cur.fetchall():
            if r[5]:
                forced_ids.append(int(r[0]))
            else:
                created[(r[1], r[2], r[3], r[4])] = int(r[0])
        forced_iter = iter(forced_ids)
        return [
            next(forced_iter) if row[7] else created.pop((row[1], row[2], row[6], row[4]), None)
            for row in rows
        ]

    async def _exclusive(self, db: Db, name: str) -> None:
        """Nothing to take: `BEGIN IMMEDIATE` already holds the database's only write lock."""


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


def _statements(ddl: str) -> list[str]:
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
