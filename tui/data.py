"""The TUI's read side of the store: small, bounded queries on `store.db`.

Nothing here loads every job. The queue reads one window with keyset pagination (`window`), the
header reads counts per state and today's totals (`stats`, a scan of the table that the app runs
at a rate bounded by its own cost), and the change watch waits on the store's change notices
(PostgreSQL) or `PRAGMA data_version` (SQLite) and reads the `daemons` table, both O(1). Writes go through the store's request methods, never through here.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from dropflow.daemon.core.jobs import STATUSES, Event, Job
from dropflow.daemon.core.store import Store, owner_alive
from dropflow.tui.query import JobQuery, keyset, order_by

# the columns the queue shows, plus the sort value so that the next page can start after a row
_ROW_COLUMNS = (
    "id, engine, input_path, status, control, progress, progress_message, attempts, max_attempts,"
    " priority, created_at, tokens_in + tokens_out AS tokens, error_kind, substr(error_message, 1, 300)"
    " AS error_message, substr(error_hint, 1, 300) AS error_hint"
)


@dataclass(frozen=True)
class JobRow:
    """One line of the queue: what the table shows, not the whole job."""

    id: int
    engine: str
    input_path: str
    status: str
    control: str | None
    progress: float
    progress_message: str
    attempts: int
    max_attempts: int
    priority: int
    created_at: float
    tokens: int
    error_kind: str | None
    error_message: str | None
    error_hint: str | None
    sort_value: Any  # the value of the sort's primary expression for this row

    def key(self, terms: int) -> tuple[Any, ...]:
        """The row's position in the order: (sort value, id), or (id,) when sorting by id."""
        return (self.id,) if terms == 1 else (self.sort_value, self.id)


FetchKind = Literal["start", "end", "from", "after", "before"]


@dataclass(frozen=True)
class Stats:
    """Totals for the header: jobs per state, throughput and tokens spent today."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    done_last_10min: int = 0
    tokens_today: int = 0
    paused_all: bool = False
    paused_engines: tuple[str, ...] = ()
    cost_s: float = 0.0  # what the queries took: the app spaces stats refreshes by it

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def per_minute(self) -> float:
        return self.done_last_10min / 10.0


@dataclass(frozen=True)
class DaemonState:
    """Whether a daemon is serving this store, and since when."""

    up: bool
    owner: str | None = None
    pid: int | None = None
    host: str | None = None
    started_at: float | None = None
    count: int = 0  # live daemons (several machines may share one store)
    last_seen: float | None = None  # heartbeat of the newest daemon, up or not


class StoreReader:
    """Read queries for the TUI on the store's connection (the store's own methods do the writes)."""

    def __init__(self, store: Store, *, stale_after: float = 45.0, clock: Any = time.time) -> None:
        self.store = store
        self.db = store.db
        self.stale_after = stale_after
        self.clock = clock

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Run a query and fetch every row in one hop to the connection's thread. A statement left
        open between two awaits pins an old snapshot, and a write on the same connection would
        then fail at once with SQLITE_BUSY_SNAPSHOT ("database is locked")."""
        return list(await self.db.execute_fetchall(sql, args))

    async def data_version(self) -> int:
        return await self.store.data_version()

    async def wait_for_change(self, within: float, *, poll: float) -> bool:
        """True when the store changed (any connection's commit) within `within` seconds."""
        return await self.store.wait_for_change(within, poll=poll)

    async def window(
        self, query: JobQuery, kind: FetchKind, anchor: tuple[Any, ...] | None, limit: int
    ) -> list[JobRow]:
        """Up to `limit` rows in display order.

        kind: `start` the first rows; `end` the last rows; `from` rows at `anchor` and after;
        `after` / `before` rows strictly after / before `anchor` (a row key from `JobRow.key`).
        """
        sort = query.sort
        conds, args = query.filter.where()
        backwards = kind in ("end", "before")
        if kind in ("from", "after", "before"):
            if anchor is None:
                raise ValueError(f"a {kind!r} fetch needs an anchor row")
            cond, more = keyset(sort, anchor, before=kind == "before", inclusive=kind == "from")
            conds.append(cond)
            args += more
        sql = f"SELECT {_ROW_COLUMNS}, {sort.key_expr} AS sort_value FROM jobs"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        sql += " " + order_by(sort, backwards=backwards) + " LIMIT ?"
        args.append(limit)
        rows = [JobRow(**{k: r[k] for k in r.keys()}) for r in await self._rows(sql, args)]
        if backwards:
            rows.reverse()
        return rows

    async def count_matching(self, query: JobQuery) -> int:
        """Rows matching the filter (a scan: the app runs it with the stats, not per keystroke)."""
        conds, args = query.filter.where()
        sql = "SELECT COUNT(*) FROM jobs" + (" WHERE " + " AND ".join(conds) if conds else "")
        [row] = await self._rows(sql, args)
        return int(row[0])

    async def stats(self) -> Stats:
        """Counts per state (through the covering (engine, status) index), jobs done in the last ten
        minutes and tokens of jobs finished since local midnight."""
        started = time.perf_counter()
        now = self.clock()
        counts = dict.fromkeys(STATUSES, 0)
        for _engine, status, n in await self._rows(
            "SELECT engine, status, COUNT(*) FROM jobs GROUP BY engine, status"
        ):
            counts[status] = counts.get(status, 0) + int(n)
        midnight = _local_midnight(now)
        recent = now - 600
        [row] = await self._rows(
            "SELECT COUNT(CASE WHEN status = 'succeeded' AND finished_at >= ? THEN 1 END),"
            # offline jobs spent nothing: their simulated tokens are not spend
            " COALESCE(SUM(CASE WHEN finished_at >= ? AND COALESCE(provider, '') != 'offline'"
            " THEN tokens_in + tokens_out END), 0)"
            " FROM jobs WHERE finished_at >= ?",
            (recent, midnight, min(recent, midnight)),
        )
        paused_all, paused = await self.store.paused_engines()
        return Stats(
            counts=counts,
            done_last_10min=int(row[0]),
            tokens_today=int(row[1]),
            paused_all=paused_all,
            paused_engines=tuple(sorted(paused)),
            cost_s=time.perf_counter() - started,
        )

    async def daemon_state(self) -> DaemonState:
        """Up when a registered daemon has not stopped, beat its heart recently and (on this host)
        its process exists: a SIGKILLed daemon shows as down at the next poll, not a lease later."""
        now = self.clock()
        rows = await self._rows(
            "SELECT owner, host, pid, started_at, heartbeat_at FROM daemons WHERE stopped_at IS NULL"
            " ORDER BY started_at DESC LIMIT 16"
        )
        here = socket.gethostname()
        live = [
            r
            for r in rows
            if r["heartbeat_at"] > now - self.stale_after and (r["host"] != here or owner_alive(r["owner"]))
        ]
        if not live:
            return DaemonState(up=False, last_seen=rows[0]["heartbeat_at"] if rows else None)
        newest = live[0]
        return DaemonState(
            up=True,
            owner=newest["owner"],
            pid=int(newest["pid"]),
            host=newest["host"],
            started_at=float(newest["started_at"]),
            count=len(live),
            last_seen=float(newest["heartbeat_at"]),
        )

    async def job(self, job_id: int) -> Job | None:
        return await self.store.get(job_id)

    async def events(self, job_id: int, limit: int = 300) -> list[Event]:
        return await self.store.events(job_id, limit=limit)


def _local_midnight(now: float) -> float:
    lt = time.localtime(now)
    return time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))
