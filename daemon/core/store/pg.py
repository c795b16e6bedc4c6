"""The PostgreSQL job store: one queue shared by several daemons, on one host or several.

`Store`'s parts (store.py) run here unchanged: `self.db` is an adapter with aiosqlite's shape
(`?` placeholders, rows by position or by name) over a psycopg 3 connection pool. What
PostgreSQL does its own way:

- transactions: each takes a pooled connection; the parts' statements inside it find that
  connection through a context variable (the task's own), so concurrent tasks never share one.
  Reads outside a transaction take any pooled connection (autocommit).
- claims: the candidates are locked `FOR UPDATE SKIP LOCKED`: two daemons claiming at once get
  different jobs, and neither waits for the other.
- inserts: `ON CONFLICT DO NOTHING RETURNING id`, one result per row in one pipelined round trip:
  the unique dedupe index says which rows are new, whichever daemon commits first.
- ids handed out by the caller (the cluster plan) are taken under an advisory transaction lock.
- change notices: triggers `NOTIFY dropflow` at commit; `wait_for_change` listens on one
  connection of its own, so an idle TUI or daemon reads nothing.

The URL's password is never put in a message: only `redact_url(url)` is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, Self

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from dropflow.daemon.core.config import redact_url
from dropflow.daemon.core.jobs import Role, StoreUnavailable
from dropflow.daemon.core.store.claims import claim_query
from dropflow.daemon.core.store.db import Db
from dropflow.daemon.core.store.jobs import INSERT_JOB
from dropflow.daemon.core.store.pg_migrations import CHANNEL, PG_MIGRATIONS
from dropflow.daemon.core.store.store import Store

log = logging.getLogger("dropflow.store")

CONNECT_TIMEOUT_S = 10
POOL_SIZE = 8  # a daemon's writers (runners, heartbeat, intake) take one each for a transaction
READONLY_POOL_SIZE = 2
# advisory lock keys (any 64-bit numbers of this application's own)
MIGRATION_LOCK = 0x64726F70_0001
_LOCKS = {"cluster_ids": 0x64726F70_0002}

# (store, connection) of the transaction the current task is in
_CURRENT: ContextVar[tuple[object, psycopg.AsyncConnection[Any]] | None] = ContextVar(
    "dropflow_pg_transaction", default=None
)


@functools.lru_cache(maxsize=2048)
def pg_sql(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (a literal `%` doubled), outside quoted strings."""
    out = []
    for i, part in enumerate(sql.split("'")):
        out.append(part if i % 2 else part.replace("%", "%%").replace("?", "%s"))
    return "'".join(out)


class Row(tuple[Any, ...]):
    """A row readable by position, by column name and as a mapping (like `sqlite3.Row`)."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Self:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Any:
    index = {d.name: i for i, d in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


class _Result:
    """A statement's rows, fetched in full (a pooled connection goes back at once)."""

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self._rowcount = rowcount

    @property
    def rowcount(self) -> int:
        return self._rowcount

    async def fetchone(self) -> Row | None:
        return self._rows.pop(0) if self._rows else None

    async def fetchall(self) -> list[Row]:
        rows, self._rows = self._rows, []
        return rows


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """psycopg's "cannot do it now" errors (connection lost, server down, deadlock) as
    `StoreUnavailable`; a statement PostgreSQL refuses for what it says stays psycopg's error."""
    try:
        yield
    except PoolTimeout as exc:
        raise StoreUnavailable(f"no connection to the job store within its timeout: {exc}") from exc
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"job store: {exc}") from exc


async def _run(conn: psycopg.AsyncConnection[Any], sql: str, parameters: Iterable[Any] | None) -> _Result:
    with _unavailable():
        cur = conn.cursor(row_factory=_row_factory)
        await cur.execute(pg_sql(sql), list(parameters) if parameters is not None else None)
        rows = await cur.fetchall() if cur.description else []
        return _Result(rows, cur.rowcount)


class _PgDb:
    """aiosqlite's connection shape over the pool: in a transaction, its connection; else any."""

    def __init__(self, owner: object, pool: AsyncConnectionPool[Any]) -> None:
        self._owner = owner
        self._pool = pool

    def current(self) -> psycopg.AsyncConnection[Any] | None:
        """The connection of the transaction this task holds on this store, if any."""
        held = _CURRENT.get()
        return held[1] if held is not None and held[0] is self._owner else None

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> _Result:
        conn = self.current()
        if conn is not None:
            return await _run(conn, sql, parameters)
        with _unavailable():
            async with self._pool.connection() as conn:
                return await _run(conn, sql, parameters)

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> _Result:
        rows = [list(p) for p in parameters]
        conn = self.current()
        if conn is None:
            raise RuntimeError("executemany runs inside a transaction")
        if rows:
            with _unavailable():
                async with conn.cursor() as cur:
                    await cur.executemany(pg_sql(sql), rows)
        return _Result([], len(rows))

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] | None = None) -> list[Row]:
        return await (await self.execute(sql, parameters)).fetchall()


class _PgConnection:
    """The pool, transactions, migrations and change notices (the first base of `PgStore`)."""

    notifies = True

    def __init__(self, pool: AsyncConnectionPool[Any], url: str) -> None:
        self.pool = pool
        self._url = url  # holds the password: never formatted into a message
        self.where = redact_url(url)
        self._pgdb = _PgDb(self, pool)
        self.db: Db = self._pgdb  # the shape the store's parts use
        self._changes = 0  # notices received
        self._seen: int | None = None  # wait_for_change's mark
        self._changed = asyncio.Event()
        self._listening = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, *, readonly: bool = False) -> AsyncIterator[Self]:
        """Raises: `StoreUnavailable` when the server cannot be reached or refuses the login."""
        where = redact_url(url)
        try:  # one direct connection first: its error says why (a pool's says only "timeout")
            probe = await psycopg.AsyncConnection.connect(url, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot open the job store {where}: {_first_line(exc)}") from exc
        await probe.close()
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=READONLY_POOL_SIZE if readonly else POOL_SIZE,
            kwargs={"autocommit": True, "application_name": "dropflow"},
            timeout=CONNECT_TIMEOUT_S,
            open=False,
            name="dropflow",
        )
        await pool.open()
        store = cls(pool, url)
        try:
            if not readonly:
                await store.migrate()
            yield store
        finally:
            await store._stop_listening()
            await pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgDb]:
        """A transaction on a pooled connection (READ COMMITTED; claims lock their rows).

        Not re-entrant: methods called inside one use the bare statements, never `transaction()`.
        """
        if self._pgdb.current() is not None:
            raise RuntimeError("store transactions do not nest")
        with _unavailable():
            async with self.pool.connection() as conn, conn.transaction():
                token = _CURRENT.set((self, conn))
                try:
                    yield self._pgdb
                finally:
                    _CURRENT.reset(token)

    async def migrate(self) -> list[int]:
        """Apply what is missing of `PG_MIGRATIONS`, in one transaction that also records them,
        under an advisory lock: daemons starting together apply each migration once."""
        applied: list[int] = []
        async with self.transaction():
            conn = self._pgdb.current()
            assert conn is not None
            with _unavailable():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                )
                cur = await conn.execute("SELECT version FROM schema_migrations")
                done = {int(r[0]) for r in await cur.fetchall()}
                for version, name, ddl in PG_MIGRATIONS:
                    if version in done:
                        continue
                    await conn.execute(ddl)  # no parameters: several statements in one go
                    await conn.execute(
                        "INSERT INTO schema_migrations(version, name, applied_at) VALUES (%s, %s, %s)",
                        (version, name, time.time()),
                    )
                    applied.append(version)
        return applied

    # --- what PostgreSQL does its own way -----------------------------------------------------------

    def _claim_sql(
        self, now: float, excluded: Sequence[str], limit: int, only: Mapping[Role, Sequence[str]] | None
    ) -> tuple[str, list[Any]]:
        """Rows another daemon's claim holds are skipped, not waited for; a row claimed and
        committed meanwhile is re-checked against the WHERE (no longer due) and left out."""
        return claim_query(now, excluded, limit, only, lock=" FOR UPDATE SKIP LOCKED")

    async def _insert_rows(self, db: Db, rows: Sequence[tuple[Any, ...]]) -> list[int | None]:
        """One result per row, pipelined: a new row's id, or None where the dedupe index (this
        batch, or a job another daemon committed) refused it. An insert racing another
        transaction's uncommitted duplicate waits for it to end, so exactly one of them wins."""
        conn = self._pgdb.current()
        if conn is None:
            raise RuntimeError("_insert_rows runs inside a transaction")
        if not rows:
            return []
        ids: list[int | None] = []
        with _unavailable():
            async with conn.cursor() as cur:
                await cur.executemany(pg_sql(INSERT_JOB + " RETURNING id"), rows, returning=True)
                while True:
                    row = await cur.fetchone()
                    ids.append(int(row[0]) if row else None)
                    if not cur.nextset():
                        break
        return ids

    async def _exclusive(self, db: Db, name: str) -> None:
        """Until this transaction ends, no other takes `name` (ids handed out by the caller)."""
        await db.execute("SELECT pg_advisory_xact_lock(?)", (_LOCKS[name],))

    # --- change notices ------------------------------------------------------------------------------

    async def data_version(self) -> int:
        """The number of change notices this store has received (listening from the first call)."""
        await self._listen()
        return self._changes

    async def wait_for_change(self, within: float, *, poll: float = 0.25) -> bool:
        """Woken by the server's notice at another connection's commit; `poll` is not needed."""
        await self._listen()
        if self._seen is None:
            self._seen = self._changes
        if self._changes == self._seen:
            self._changed.clear()  # no await since the check: a notice cannot slip between
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=within)
            except TimeoutError:
                return False
        self._seen = self._changes
        return True

    async def _listen(self) -> None:
        """Start the listener (once) and wait until it listens."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listener_loop(), name="dropflow-store-listen")
        while not self._listening.is_set():
            waiter = asyncio.ensure_future(self._listening.wait())
            done, _ = await asyncio.wait({waiter, self._listener}, return_when=asyncio.FIRST_COMPLETED)
            if self._listener in done:
                waiter.cancel()
                self._listener.result()  # raises what stopped it
                raise StoreUnavailable(f"the job store {self.where} stopped sending change notices")

    async def _listener_loop(self) -> None:
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not first:  # notices were lost while away: say something changed
                        self._bump()
                    first = False
                    self._listening.set()
                    async for _note in conn.notifies():
                        self._bump()
            except psycopg.OperationalError as exc:
                if first:
                    raise StoreUnavailable(f"cannot listen on the job store {self.where}: {exc}") from exc
                log.warning("job store change notices interrupted (%s); listening again in a second", exc)
                await asyncio.sleep(1.0)

    def _bump(self) -> None:
        self._changes += 1
        self._changed.set()

    async def _stop_listening(self) -> None:
        task, self._listener = self._listener, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, StoreUnavailable):
            await task


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# `_PgConnection` first, as `SqliteStore` puts its connection first (see sqlite.py).
class PgStore(_PgConnection, Store):
    """The PostgreSQL job store; implements `dropflow.daemon.core.jobs.JobStore`."""
