"""The change watch: how the TUI learns that something changed without reading what did not.

It waits on the store's `wait_for_change`: PostgreSQL tells it at each commit (LISTEN/NOTIFY);
SQLite is asked four times a second for `PRAGMA data_version` (a counter that moves only when
another connection commits). Nothing else is read while nothing changes, so an idle TUI costs
next to no CPU. Once a second it reads the `daemons` table (a few rows) for "daemon up/down".
The header totals scan the jobs table, so they are re-read only after a change, and no sooner
than `STATS_COST_FACTOR` times their own last cost: on a big table they refresh less often
instead of eating a core.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from dropflow.tui.data import DaemonState, Stats, StoreReader
from dropflow.tui.query import JobQuery

POLL_SECONDS = 0.25
DAEMON_SECONDS = 1.0
STATS_MIN_SECONDS = 1.0
STATS_COST_FACTOR = 20  # stats use at most ~1/20 of a core, however large the table
STATS_HOLD_SECONDS = 1.0  # at start, the longest the totals wait for the queue's first rows


class StorePoller:
    def __init__(self, reader: StoreReader, *, interval: float = POLL_SECONDS) -> None:
        self.reader = reader
        self.interval = interval
        self.filter_query: JobQuery | None = None  # the queue's filter, counted with the stats
        self._wake = asyncio.Event()
        self._forced = False
        self._stats_dirty = True
        self._stats_due = 0.0
        # the first totals wait for the queue's first rows (or a second): on a big table the scan
        # would otherwise compete with the read the user is waiting for
        self._hold_until = time.monotonic() + STATS_HOLD_SECONDS

    def release(self) -> None:
        """The queue has shown its rows: the header totals may be read now."""
        self._hold_until = 0.0
        self._wake.set()

    def nudge(self) -> None:
        """This app wrote to the store: refresh at once instead of at the next tick (the totals
        still keep to their cost-bound pace)."""
        self._forced = True
        self._stats_dirty = True
        self._wake.set()

    def want_stats(self) -> None:
        """Re-read the totals at the next allowed time (a new filter to count)."""
        self._stats_dirty = True
        self._wake.set()

    async def run(
        self,
        on_change: Callable[[int], None],
        on_daemon: Callable[[DaemonState], object],
        on_stats: Callable[[Stats, dict[str, int]], object],
    ) -> None:
        """Poll until cancelled. Raises what the store raises (the app restarts the poll)."""
        version = 0
        changed = False
        next_daemon = 0.0
        while True:
            self._wake.clear()  # before reading: a nudge that lands during this pass is kept
            if self._forced or changed:
                self._forced = False
                self._stats_dirty = True
                version += 1
                on_change(version)
            now = time.monotonic()
            if now >= next_daemon:
                next_daemon = now + DAEMON_SECONDS
                on_daemon(await self.reader.daemon_state())
            if self._stats_dirty and now >= max(self._stats_due, self._hold_until):
                self._stats_dirty = False
                stats = await self.reader.stats()
                matching: dict[str, int] = {}
                if self.filter_query is not None:
                    matching[self.filter_query.filter.text] = await self.reader.count_matching(
                        self.filter_query
                    )
                cost = time.monotonic() - now
                self._stats_due = time.monotonic() + max(STATS_MIN_SECONDS, STATS_COST_FACTOR * cost)
                on_stats(stats, matching)
            wake_at = next_daemon
            if self._stats_dirty:
                wake_at = min(wake_at, max(self._stats_due, self._hold_until))
            changed = await self._wait(max(0.0, wake_at - time.monotonic()))

    async def _wait(self, within: float) -> bool:
        """Until the store changes, this app nudges, or `within` seconds pass: True on a change."""
        change = asyncio.ensure_future(self.reader.wait_for_change(within, poll=self.interval))
        nudge = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({change, nudge}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            nudge.cancel()
            if not change.done():
                change.cancel()
        if change.done() and not change.cancelled():
            return change.result()  # raises what the store raised (the app restarts the poll)
        return False
