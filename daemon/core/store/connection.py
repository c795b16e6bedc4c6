"""Opening the store's database: one aiosqlite connection, WAL, busy_timeout, migrations, and
the `BEGIN IMMEDIATE` transactions every write of the other parts of `Store` runs in.

Also the lease owner names (`owner_id`, `owner_alive`) that claims are fenced by.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Self

import aiosqlite

from dropflow.daemon.core.store.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 10_000  # how long a write waits for another process's write lock


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


class _Connection:
    """The connection and its transactions; the base every other part of `Store` builds on."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        # One connection is shared by every task of the process: without this lock a second
        # task's BEGIN would land inside the first one's transaction.
        self._write_lock = asyncio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path, *, readonly: bool = False) -> AsyncIterator[Self]:
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

    async def schema_version(self) -> int:
        cur = await self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        row = await cur.fetchone()
        return int(row[0]) if row else 0


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
