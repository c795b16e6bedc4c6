"""`Store`: the job store whichever database holds it, and `Store.open`, the one place that picks it.

`Store` is composed of one part per concern, written once in the SQL both databases accept:
jobs.py (insert, read), claims.py (claims, leases, the runner's writes), controls.py (requests
from the CLI / TUI, settings) and events.py (events, daemons). Each database adds its connection
and what it does its own way (transactions, DDL, claiming, change notices):

- `SqliteStore` (sqlite.py, connection.py): one file, WAL, `BEGIN IMMEDIATE`; the embedded default.
- `PgStore` (pg.py): PostgreSQL for several daemons on several hosts sharing one queue; claims
  with `FOR UPDATE SKIP LOCKED`, `LISTEN/NOTIFY` change notices.

`JobStore` in `dropflow.daemon.core.jobs` lists the methods the daemon runtime, the CLI and the
TUI rely on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dropflow.daemon.core import config
from dropflow.daemon.core.store.claims import ClaimsMixin
from dropflow.daemon.core.store.controls import ControlsMixin
from dropflow.daemon.core.store.db import Db
from dropflow.daemon.core.store.events import EventsMixin
from dropflow.daemon.core.store.jobs import JobsMixin

if TYPE_CHECKING:
    from dropflow.daemon.core.config import Config
    from dropflow.daemon.core.jobs import JobStore, Role

T = TypeVar("T")


def is_database_url(target: Path | str) -> bool:
    """True for a PostgreSQL URL, False for a path to a SQLite file."""
    return isinstance(target, str) and config.is_database_url(target)


class Store(JobsMixin, ClaimsMixin, ControlsMixin, EventsMixin):
    """The job store; implements `dropflow.daemon.core.jobs.JobStore` on SQLite or PostgreSQL."""

    db: Db
    # True: `wait_for_change` is woken by the server (LISTEN/NOTIFY); False: it polls
    notifies: bool = False

    @staticmethod
    def open(target: Path | str, *, readonly: bool = False) -> AbstractAsyncContextManager[Store]:
        """Open (and unless `readonly`, create and migrate) the store at `target`: a SQLite file's
        path, or a `postgresql://` URL.

        Raises: OSError / `sqlite3.Error` for a SQLite file that cannot be opened;
        `StoreUnavailable` for a PostgreSQL server that cannot be reached.
        """
        if is_database_url(target):
            from dropflow.daemon.core.store.pg import PgStore  # psycopg loads only when used

            return PgStore.connect(str(target), readonly=readonly)
        from dropflow.daemon.core.store.sqlite import SqliteStore

        return SqliteStore.connect(Path(target), readonly=readonly)

    # --- what each database does its own way (sqlite.py / pg.py) ------------------------------------

    def transaction(self) -> AbstractAsyncContextManager[Db]:
        """A write transaction; the statements of the store's parts inside it run in it."""
        raise NotImplementedError

    async def migrate(self) -> list[int]:
        """Apply the migrations not yet applied; their versions."""
        raise NotImplementedError

    async def schema_version(self) -> int:
        cur = await self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def data_version(self) -> int:
        """A number that changes whenever another connection commits."""
        raise NotImplementedError

    async def wait_for_change(self, within: float, *, poll: float = 0.25) -> bool:
        """Wait up to `within` seconds for a commit (of another connection) since the last call;
        True when there was one. `poll`: how often a store without `notifies` looks."""
        raise NotImplementedError

    def _claim_sql(
        self, now: float, excluded: Sequence[str], limit: int, only: Mapping[Role, Sequence[str]] | None
    ) -> tuple[str, list[Any]]:
        raise NotImplementedError

    async def _insert_rows(self, db: Db, rows: Sequence[tuple[Any, ...]]) -> list[int | None]:
        raise NotImplementedError

    async def _exclusive(self, db: Db, name: str) -> None:
        raise NotImplementedError


def with_store(cfg: Config, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Run `fn(store)` on the config's database in a fresh event loop (for sync commands)."""

    async def go() -> T:
        async with Store.open(cfg.database) as store:
            return await fn(store)

    return asyncio.run(go())


if TYPE_CHECKING:

    def _implements_job_store(store: Store) -> JobStore:
        return store  # mypy checks every method's types against the protocol here
