"""Watcher and settle gate: from filesystem changes to settled units, ready to become jobs.

watchfiles events are only hints: a startup scan picks up what was dropped while the daemon was
down, and a periodic rescan catches what the OS missed (queue overflow, network mounts, polling).
A unit is ready when its signature (size + mtime; for a folder, file count, total size, newest
mtime) has not changed for `settle_seconds`, or, with `trust_mtime`, at once when it was last
modified longer ago than that (a file written elsewhere and renamed in).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import watchfiles

from dropflow.daemon.core.config import Route, WatchSettings
from dropflow.daemon.core.jobs import STORE_DOWN, ActiveInput
from dropflow.daemon.router import Router
from dropflow.engine.files import (
    TEMP_SUFFIXES,
    changed_since,
    file_hash,
    is_ignored_name,
    link_outside,
    same_content,
)

log = logging.getLogger("dropflow.watcher")

Signature = tuple[
    int, int, int, bool, bool
]  # files, bytes, newest mtime (ns), a temp file inside, is a folder
Ready = tuple[Route, Path, Signature, str | None]  # ... and the content hash when already known

PREHASH_MAX_BYTES = 64 * 1024 * 1024


def signature(path: Path) -> Signature | None:
    """What must stay still for `path` to count as settled; None when it is gone."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return (1, st.st_size, st.st_mtime_ns, False, False)
    files = size = 0
    newest = st.st_mtime_ns
    busy = False
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            if name.lower().endswith(TEMP_SUFFIXES):
                busy = True  # a download still in progress inside the folder
                continue
            if name.startswith("."):
                continue
            try:
                fst = os.stat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            files += 1
            size += fst.st_size
            newest = max(newest, fst.st_mtime_ns)
        for d in dirnames:
            try:
                newest = max(newest, os.stat(os.path.join(dirpath, d)).st_mtime_ns)
            except FileNotFoundError:
                pass
    return (files, size, newest, busy, True)


@dataclass
class _Pending:
    route: Route
    sig: Signature | None
    stable_since: float  # monotonic time the signature last changed
    due: float  # monotonic time of the next look


class SettleGate:
    """Holds candidate units until they stop changing.

    Each unit is looked at only when a decision can be due: on first sight, then at the moment
    its settle window would end. So a thousand files settling costs a thousand stats at the
    deadline, not a stat of every pending file every tick, and a settled unit is let through at
    its deadline rather than at the next polling tick.
    """

    def __init__(self, settings: WatchSettings) -> None:
        self.settle = settings.settle_seconds
        self.trust_mtime = settings.trust_mtime
        # the second, confirming look at a unit that was already old when first seen
        self.recheck = min(settings.check_seconds, self.settle) if self.settle else 0.0
        self.pending: dict[Path, _Pending] = {}
        # files seen with a new signature since the last take_fresh(): worth hashing ahead
        self.fresh: list[tuple[Path, Signature]] = []

    def take_fresh(self) -> list[tuple[Path, Signature]]:
        fresh, self.fresh = self.fresh, []
        return fresh

    def offer(self, route: Route, unit: Path) -> None:
        if unit not in self.pending:
            now = time.monotonic()
            self.pending[unit] = _Pending(route, None, now, now)

    def next_due(self) -> float | None:
        return min((p.due for p in list(self.pending.values())), default=None)

    def check(self) -> list[tuple[Route, Path, Signature]]:
        """Look at every unit that is due (blocking: run in a thread); return and forget the settled ones."""
        ready: list[tuple[Route, Path, Signature]] = []
        now = time.monotonic()
        wall_ns = time.time_ns()
        for unit, p in list(self.pending.items()):
            if p.due > now:
                continue
            sig = signature(unit)
            if sig is None:
                del self.pending[unit]
                continue
            if sig != p.sig:
                p.sig = sig
                p.stable_since = now
                if not sig[4] and sig[1] <= PREHASH_MAX_BYTES:
                    self.fresh.append((unit, sig))
                p.due = now + self._wait_left(sig, wall_ns, 0.0, first_look=True)
                continue
            if sig[3]:  # a partial download inside a folder unit
                p.due = now + max(self.settle, self.recheck)
                continue
            left = self._wait_left(sig, wall_ns, now - p.stable_since, first_look=False)
            if left <= 0:
                ready.append((p.route, unit, sig))
                del self.pending[unit]
            else:
                p.due = now + left
        return ready

    def _wait_left(self, sig: Signature, wall_ns: int, observed: float, *, first_look: bool) -> float:
        """Seconds until `sig` would count as settled, given how long it was observed unchanged."""
        left = self.settle - observed
        if self.trust_mtime:
            age = (wall_ns - sig[2]) / 1e9
            # even an old file gets a second identical look before it counts
            by_mtime = self.recheck if first_look and age >= self.settle else self.settle - age
            left = min(left, max(by_mtime, self.recheck if first_look else 0.0))
        return max(0.0, left)


class Watcher:
    """Feeds settled units to `on_ready`; owns the watch, rescan and settle loops."""

    def __init__(
        self,
        settings: WatchSettings,
        router: Router,
        on_ready: Callable[[list[Ready]], Awaitable[object]],
        *,
        routes: frozenset[str] | None = None,
    ) -> None:
        self.settings = settings
        self.routes = routes  # a daemon limited by `--routes` leaves the other folders to others
        self.router = router
        self.inbox = router.inbox
        self.gate = SettleGate(settings)
        self.on_ready = on_ready
        # units already handed over, with the signature they had: not offered again unless changed
        self.known: dict[Path, Signature] = {}
        # content hashes computed while files settle, valid only for the signature they were taken at
        self.prehashed: dict[Path, tuple[Signature, str]] = {}
        self._prehashing: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    def remember(self, job: ActiveInput) -> bool:
        """Inputs the store has an unfinished job for: not offered again unless they change.
        Returns whether they were remembered (blocking: may read the unit, run in a thread).

        Only while the unit still holds the job's content: one edited while the daemon was down
        is left to the startup scan, which offers it as a new drop (intake then finds its job by
        content, or makes it new work). Stats decide for a unit not changed since its job was
        registered; only one changed since is hashed, so a start does not read every video.
        """
        paths = [Path(p) for p in job.input_paths]
        if changed_since(paths, job.created_at):
            if any(link_outside(p, self.inbox) for p in paths):
                return False  # never read through a link out of the inbox; intake fails it again
            if not same_content(paths, job.content_hash):
                return False
        for path in paths:
            sig = signature(path)
            if sig is not None:
                self.known[path] = sig
        return True

    def forget(self, unit: Path) -> None:
        """Offer `unit` again at the next rescan if it still exists (e.g. a folder whose job ended)."""
        self.known.pop(unit, None)

    def hint(self, path: Path) -> None:
        """Something changed at `path` (file or folder): offer the unit(s) it belongs to.

        Like the scans (`os.walk` does not descend into linked folders), a hint never looks inside
        a linked folder: what lies there is not a unit of the inbox. A linked file or a linked
        folder unit is offered, and the router fails its job when the link leaves the inbox.
        """
        if path.parent != self.inbox and link_outside(path.parent, self.inbox) is not None:
            return  # below a folder linked from outside (a watcher may follow the link)
        if path.is_dir() and path != self.inbox:
            found = self.router.unit_root(path)
            if found is not None and found[1] == path:  # a folder unit itself
                self._offer(*found)
                return
            if not path.is_symlink():
                self._scan(path)
            return
        found = self.router.unit_root(path)
        if found is not None:
            self._offer(*found)

    def _offer(self, route: Route, unit: Path) -> None:
        if unit in self.gate.pending or (self.routes is not None and route.name not in self.routes):
            return
        known = self.known.get(unit)
        if known is not None:
            sig = signature(unit)
            if sig == known:
                return
            if sig is None:
                self.known.pop(unit, None)
                return
        self.gate.offer(route, unit)
        self._wake.set()

    def _scan(self, root: Path) -> int:
        n = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not is_ignored_name(d)]
            here = Path(dirpath)
            for d in dirnames:
                found = self.router.unit_root(here / d)
                if found is not None and found[1] == here / d:
                    self._offer(*found)
                    n += 1
            for name in filenames:
                if is_ignored_name(name):
                    continue
                found = self.router.unit_root(here / name)
                if found is not None:
                    self._offer(*found)
                    n += 1
        return n

    def scan(self) -> int:
        """Walk the whole inbox (blocking: run in a thread); returns how many units were offered."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        return self._scan(self.inbox)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self.scan)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch(stop))
            tg.create_task(self._rescan(stop))
            tg.create_task(self._settle(stop))

    async def _watch(self, stop: asyncio.Event) -> None:
        try:
            async for changes in watchfiles.awatch(
                self.inbox,
                stop_event=stop,
                force_polling=self.settings.force_polling or None,
                debounce=200,
                step=50,
                recursive=True,
                ignore_permission_denied=True,
            ):
                for _change, raw in changes:
                    path = Path(raw)
                    if path.name.startswith(".dropflow"):
                        continue
                    self.hint(path)
        except (OSError, RuntimeError) as exc:
            # e.g. inotify watch limit reached: the rescan keeps things moving, only slower
            log.warning(
                "file watcher stopped (%s); relying on rescans every %.0fs", exc, self.settings.rescan_seconds
            )
            await stop.wait()

    async def _rescan(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.rescan_seconds)
            except TimeoutError:
                await asyncio.to_thread(self.scan)

    async def _settle(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            due = self.gate.next_due()
            if due is None:
                await self._stop_or_wake(stop)
                continue
            delay = due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop_or_wake(stop), timeout=delay)
                except TimeoutError:
                    pass
                continue
            settled = await asyncio.to_thread(self.gate.check)
            fresh = self.gate.take_fresh()
            if fresh:
                # hash while the files settle, so that settling is not followed by reading them all
                task = asyncio.create_task(asyncio.to_thread(self._prehash, fresh))
                self._prehashing.add(task)
                task.add_done_callback(self._prehashing.discard)
            if settled:
                ready: list[Ready] = []
                for route, unit, sig in settled:
                    self.known[unit] = sig
                    pre = self.prehashed.pop(unit, None)
                    ready.append((route, unit, sig, pre[1] if pre and pre[0] == sig else None))
                try:
                    await self.on_ready(ready)
                except STORE_DOWN as exc:
                    # the job store is locked or full: the files stay where they are, and the
                    # next rescan offers them again
                    for _route, unit, _sig, _pre in ready:
                        self.known.pop(unit, None)
                    log.warning(
                        "could not queue %d new file(s): job store unavailable (%s); "
                        "trying again at the next rescan",
                        len(ready),
                        exc,
                    )

    def _prehash(self, fresh: list[tuple[Path, Signature]]) -> None:
        for unit, sig in fresh:
            if unit not in self.gate.pending:
                continue
            if link_outside(unit, self.router.inbox):
                continue  # never read through a link out of the inbox; the router fails its job
            try:
                digest = file_hash(unit)
            except OSError:
                continue
            if signature(unit) == sig:  # unchanged while it was read: the hash is the content's
                self.prehashed[unit] = (sig, digest)

    async def _stop_or_wake(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
