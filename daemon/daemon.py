"""The daemon: store, watcher, intake and scheduler under one task group, stopped by a signal.

Signal handlers only set the stop event; the scheduler then lets running jobs finish for
`shutdown_grace_seconds` and releases the rest, so nothing is half-written and nothing is lost.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import signal
import threading
from collections.abc import Collection
from pathlib import Path

from dropflow.daemon import __version__
from dropflow.daemon.core.config import Config, redact_url
from dropflow.daemon.core.jobs import ActiveInput, Job, StoreUnavailable
from dropflow.daemon.core.store import Store, owner_id
from dropflow.daemon.intake import Intake
from dropflow.daemon.logs import Redactor
from dropflow.daemon.router import Router
from dropflow.daemon.scheduler import Scheduler
from dropflow.daemon.watcher import Watcher
from dropflow.engine import files, registry
from dropflow.engine.errors import ConfigError, DropflowError
from dropflow.engine.providers import ProviderPool, resolve_default

log = logging.getLogger("dropflow.daemon")


def load_plugins(cfg: Config) -> None:
    for spec in cfg.engines.plugins:
        registry.load_plugin(spec)


def _forget_folder(watcher: Watcher, job: Job, _outcome: str) -> None:
    """A folder unit's job ended: what is left in the folder (added while it ran) is offered anew."""
    path = Path(job.input_path)
    if path.is_dir():
        watcher.forget(path)


def _remember_all(watcher: Watcher, jobs: list[ActiveInput]) -> None:
    """Tell the watcher the inputs that unfinished jobs still hold (see `Watcher.remember`)."""
    differ = sum(not watcher.remember(job) for job in jobs)
    if differ:
        log.info(
            "%d unfinished job(s) no longer find their input as it was queued (edited or gone);"
            " the inbox scan takes an edited one as a new drop",
            differ,
        )


def warm_clustering(cfg: Config) -> threading.Thread | None:
    """Compile the clustering kernels in the background when a route clusters, so that the first
    cluster job does not spend a minute in numba on a fresh install (later starts load them from
    numba's disk cache in about a second).

    A daemon thread: a numba compile cannot be interrupted, and a stop must not wait for it (the
    process exits under it; numba writes its cache files atomically). The import of numba happens
    in the thread too, never on the event loop. Returns the thread, or None when no route clusters.
    """
    if not any(route.engine == "cluster" for route in cfg.routes):
        return None

    def warm() -> None:
        try:
            from dropflow.engine.cluster import clustering

            clustering.warm_up()
        except DropflowError as exc:  # fast_hdbscan missing: the first cluster job says so
            log.debug("clustering not warmed up: %s", exc)
        except Exception:  # a failed warm-up costs the first job its minute, nothing more
            log.warning(
                "warming up the clustering failed; the first cluster job will compile it", exc_info=True
            )
        else:
            log.debug("clustering kernels ready")

    thread = threading.Thread(target=warm, name="dropflow-warm-clustering", daemon=True)
    thread.start()
    return thread


def check_engines(engines: Collection[str] | None) -> frozenset[str] | None:
    """The engines a daemon limited by `--engines` runs (None: all), each one known."""
    if engines is None:
        return None
    unknown = sorted(set(engines) - set(registry.names()))
    if unknown or not engines:
        raise ConfigError(
            f"unknown engine(s) for --engines: {', '.join(unknown) or '(none given)'}",
            hint=f"choose among: {', '.join(registry.names())}",
        )
    return frozenset(engines)


def check_routes(cfg: Config, routes: Collection[str] | None) -> frozenset[str] | None:
    """The routes a daemon limited by `--routes` serves (None: all), each one in the config."""
    if routes is None:
        return None
    names = [r.name for r in cfg.routes]
    unknown = sorted(set(routes) - set(names))
    if unknown or not routes:
        raise ConfigError(
            f"unknown route(s) for --routes: {', '.join(unknown) or '(none given)'}",
            hint=f"routes in {cfg.source}: {', '.join(names)}",
        )
    return frozenset(routes)


class Daemon:
    """One daemon. Its role on a shared store: `engines` limits the jobs it claims (a GPU box runs
    only cluster jobs); `routes` limits both the jobs it claims and the inbox folders it takes new
    files from; `watch=False` makes it a pure worker that never looks at the inbox (other daemons,
    `dropflow submit` and the TUI queue the jobs)."""

    def __init__(
        self,
        cfg: Config,
        redact: Redactor,
        *,
        engines: Collection[str] | None = None,
        routes: Collection[str] | None = None,
        watch: bool = True,
    ) -> None:
        self.cfg = cfg
        self.redact = redact
        self.owner = owner_id()
        self.stop = asyncio.Event()
        self.engines = engines
        self.routes = routes
        self.watch = watch

    def request_stop(self) -> None:
        self.stop.set()

    async def run(self, *, install_signals: bool = True) -> None:
        cfg = self.cfg
        load_plugins(cfg)
        engines = check_engines(self.engines)
        routes = check_routes(cfg, self.routes)
        for p in (cfg.paths.inbox, cfg.paths.outputs, cfg.paths.archive, cfg.paths.state):
            p.mkdir(parents=True, exist_ok=True)
        removed = await asyncio.to_thread(files.clean_temp_files, cfg.paths.outputs)
        if removed:
            log.info("removed %d partial output file(s) left by an earlier stop", removed)
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        default, announcement = resolve_default(cfg.providers)
        if announcement:
            log.warning(announcement)
        else:
            log.info("default provider: %s", default)
        if engines is None or "cluster" in engines:
            warm_clustering(cfg)
        hub = ProviderPool(cfg.providers, state_dir=cfg.paths.state)
        if default == "dashscope":
            # the SDK takes about a second to import: not on the event loop at the first job
            await asyncio.to_thread(importlib.import_module, "dashscope")
        try:
            async with Store.open(cfg.database) as store:
                await store.register_daemon(self.owner, __version__)
                router = Router(cfg)
                intake = Intake(cfg, store, router)
                scheduler = Scheduler(
                    cfg, store, router, intake, hub, self.owner, self.redact, engines=engines, routes=routes
                )
                intake.on_new = scheduler.wake.set
                watcher = Watcher(cfg.watch, router, intake.accept, routes=routes) if self.watch else None
                if watcher is not None:
                    scheduler.on_finished = functools.partial(_forget_folder, watcher)
                    # stats for each unit; a read only of one edited since its job was registered
                    await asyncio.to_thread(_remember_all, watcher, await store.active_inputs())
                log.info(
                    "dropflow %s %s (outputs %s, database %s)%s%s",
                    __version__,
                    f"watching {cfg.paths.inbox}" if watcher is not None else "not watching the inbox",
                    cfg.paths.outputs,
                    redact_url(cfg.database),
                    f"; running only {', '.join(sorted(engines))} jobs" if engines is not None else "",
                    f"; serving only routes {', '.join(sorted(routes))}" if routes is not None else "",
                )
                try:
                    async with asyncio.TaskGroup() as tg:
                        if watcher is not None:
                            tg.create_task(watcher.run(self.stop), name="dropflow-watcher")
                        tg.create_task(scheduler.run(self.stop), name="dropflow-scheduler")
                        if store.notifies:  # jobs queued elsewhere (another daemon, the CLI) wake it
                            tg.create_task(
                                _relay_changes(store, scheduler.wake, self.stop), name="dropflow-notices"
                            )
                finally:
                    await store.stop_daemon(self.owner)
        finally:
            await hub.aclose()
            if install_signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        log.info("dropflow stopped")


RELAY_MIN_INTERVAL = 0.05  # seconds: a burst of notices (progress, events) is one wake-up


async def _relay_changes(store: Store, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Wake the scheduler at a change notice instead of at its next tick (a store that `notifies`).

    Every commit notifies, this daemon's own progress writes too: notices within
    `RELAY_MIN_INTERVAL` of a wake-up are folded into the next one, so a busy store costs the
    scheduler at most that many claims a second, not one per write."""
    while not stop.is_set():
        try:
            if await store.wait_for_change(1.0):
                wake.set()
                await asyncio.sleep(RELAY_MIN_INTERVAL)
        except StoreUnavailable as exc:  # the scheduler's own loop reports the store being down
            log.debug("change notices unavailable: %s", exc)
            await asyncio.sleep(1.0)
