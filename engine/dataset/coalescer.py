"""Coalesced renders: one dataset's files rewritten from its records while items stream in,
one render at a time and not one per item (see `RenderCoalescer`)."""

from __future__ import annotations

import asyncio
import logging
import math
import time

from dropflow.engine.dataset.folder import DatasetFolder, RecordCache
from dropflow.engine.dataset.formats import FormatName, RenderOptions
from dropflow.engine.dataset.records import ItemRecord

log = logging.getLogger("dropflow.engine.dataset.coalescer")

RENDER_MAX_DELAY = 1.0  # while items stream in, the files are rewritten at least this often ...
RENDER_SHARE = 0.1  # ... and renders take at most this share of the time (see `spacing`)
INLINE_WAIT = 0.25  # a row finishing alone waits this long at most for the spacing to pass
RENDER_WAIT = 1.0  # a guard (see RenderCoalescer) comes back after this long
GUARD_TTL = 5 * RENDER_WAIT  # a guard not back by then is presumed cancelled: rows find a new one
GUARD_FORGET = 600.0  # seconds after which a guard that never came back is dropped from memory


class RenderCoalescer:
    """Rewrites one dataset's files from its records: one render at a time, and not one per item.

    A render starts at once when nothing else of the dataset is in flight in this daemon (the last
    item of a batch, or a lone drop); otherwise within `max_delay`, or as soon as the items in
    flight are done. Each render covers every record written before it started.

    Why items need not wait for the render: the first item that finishes while a render is
    pending becomes a *guard*: its job waits (`settle` says False) until a render that includes
    every row that leaned on it is on disk. Items finishing meanwhile lean on it and finish at
    once. A guard stops taking new rows when it comes back to check (the next item to finish
    becomes the next guard), so no job waits longer than about one render. If the daemon dies,
    the guard is still unfinished in the store, runs again on the next start, and its render
    writes every row: all jobs of a dataset finished means all their rows are in the files.
    """

    def __init__(self, folder: DatasetFolder, *, max_delay: float = RENDER_MAX_DELAY) -> None:
        self.folder = folder
        self.max_delay = max_delay
        self.cache = RecordCache()
        self.covered: dict[str, float] = {}
        self.renders = 0
        self.render_seconds = 0.0  # how long the last render took
        self._rendered_at = -math.inf  # when it ended (monotonic)
        self.write_seq = 0  # records written by this daemon so far
        self.rendered_seq = 0  # write_seq when the last finished render started
        self._guards: dict[int, tuple[int, float]] = {}  # job id -> (write_seq it waits for, since)
        self._open_guard: int | None = None  # the guard that finishing items may lean on
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._formats: list[FormatName] = ["llamafactory"]
        self._options = RenderOptions(name=folder.name, root=folder.root)

    def begin(self) -> None:
        """An item of this dataset started working towards a record."""
        self._in_flight += 1
        self._idle.clear()

    def end(self, *, wrote: bool) -> None:
        """That item is done; `wrote`: its record is on disk (renders from now on include it)."""
        if wrote:
            self.write_seq += 1
        self._in_flight = max(0, self._in_flight - 1)
        if self._in_flight == 0:
            self._idle.set()

    def covers(self, record: ItemRecord) -> bool:
        """True when the files on disk hold this version of the record (a --force run makes a new one)."""
        return self.covered.get(record.hash) == record.created

    def cached(self, content_hash: str) -> ItemRecord | None:
        """The record as the last render read it (saves a file read when a job comes back)."""
        hit = self.cache.entries.get(f"{content_hash}.json")
        return hit[1] if hit is not None else None

    async def settle(
        self, job_id: int, record: ItemRecord, formats: list[FormatName], options: RenderOptions
    ) -> bool:
        """May the job of `record` finish now? False: it guards rows not yet rendered; come back later.

        Raises OSError when a render done right here cannot write its files.
        """
        now = time.monotonic()
        guard = self._guards.get(job_id)
        if guard is not None:
            if self._open_guard == job_id:
                self._open_guard = None  # take no new rows: the next item to finish guards those
            if self.rendered_seq < guard[0]:
                await self.request(formats, options)
            if self.rendered_seq >= guard[0]:
                del self._guards[job_id]
                return True
            return False
        if self.covers(record):
            return True
        await self.request(formats, options)
        if self.covers(record):
            return True
        open_id = self._open_guard
        open_guard = self._guards.get(open_id) if open_id is not None else None
        if open_id is not None and open_guard is not None and now - open_guard[1] < GUARD_TTL:
            self._guards[open_id] = (self.write_seq, open_guard[1])
            return True
        # no guard, or one that never came back (cancelled or paused while waiting)
        self._guards = {k: v for k, v in self._guards.items() if now - v[1] < GUARD_FORGET}
        self._guards[job_id] = (self.write_seq, now)
        self._open_guard = job_id
        return False

    async def request(self, formats: list[FormatName], options: RenderOptions) -> None:
        """Ask for a render with these settings (the newest job's win).

        Raises OSError when a render done right here cannot write its files.
        """
        self._formats, self._options = list(formats), options
        self._dirty = True
        wait = self._rendered_at + self.spacing - time.monotonic()
        if self._in_flight == 0 and wait <= INLINE_WAIT:
            if wait > 0:  # a small dataset: its rows wait a moment rather than a guard's round
                await asyncio.sleep(wait)
            await self._render()
        elif self._task is None or self._task.done():
            self._task = asyncio.create_task(
                self._later(), name=f"dropflow-dataset-render:{self.folder.name}"
            )

    @property
    def spacing(self) -> float:
        """The least time between the end of one render and the start of the next: renders (each
        rewrites every row) take at most `RENDER_SHARE` of the daemon's time. Without it, a
        dataset of thousands of rows fed faster than it renders (an offline or fast provider)
        would render at every lull, and each item would finish slower than the one before."""
        return self.render_seconds / RENDER_SHARE

    async def _later(self) -> None:
        while self._dirty:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=max(self.max_delay, self.spacing))
            except TimeoutError:
                pass
            wait = self._rendered_at + self.spacing - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self._render()
            except Exception as exc:  # a full disk must not kill the loop; the guards wait and retry
                log.error("dataset %s: cannot write its files: %s", self.folder.name, exc)
                await asyncio.sleep(self.max_delay)

    async def _render(self) -> None:
        async with self._lock:
            if not self._dirty:
                return  # a render that started after our record was written just finished
            self._dirty = False
            seq = self.write_seq
            started = time.monotonic()
            try:
                result = await asyncio.to_thread(self.folder.render, self._formats, self._options, self.cache)
            except BaseException:
                self._dirty = True
                raise
            self._rendered_at = time.monotonic()
            self.render_seconds = self._rendered_at - started
            self.covered = result.covered
            self.rendered_seq = seq
            self.renders += 1
