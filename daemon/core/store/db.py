"""The little of a database connection that the store's parts use, whatever the database.

aiosqlite's connection has this shape; the PostgreSQL store lends an adapter of the same shape
(`?` placeholders, rows readable by position and by column name). So the store's SQL that both
dialects accept is written once, in the parts (jobs.py, claims.py, ...), and only what differs
(claiming, id allocation, DDL, change notices) lives with each connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any, Protocol


class DbCursor(Protocol):
    """The result of one statement."""

    @property
    def rowcount(self) -> int: ...

    async def fetchone(self) -> Any: ...

    async def fetchall(self) -> Iterable[Any]: ...


class Db(Protocol):
    """A connection: statements with `?` placeholders; rows support `row[0]`, `row["col"]`, `keys()`."""

    def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> Awaitable[DbCursor]: ...

    def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> Awaitable[DbCursor]: ...

    def execute_fetchall(
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> Awaitable[Iterable[Any]]: ...
