"""Scheduler: claims due jobs under leases, runs their engines, and records what came of it.

At-least-once: a claimed job holds a lease that a heartbeat renews; after a crash the next start
(or another daemon) reclaims expired leases, so engines are idempotent (atomic outputs, saved
remote task ids). Error kinds decide: retryable -> `waiting` with exponential backoff and jitter
(at least the provider's retry-after), anything else -> `failed` at once.

One module (about 430 lines): the claim loop, one job's run and the recording of its outcome
share the table of running jobs and the wait-out-a-busy-store discipline; split, each part would
reach into the others' state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dropflow.daemon.core.config import Config
from dropflow.daemon.core.jobs import STORE_DOWN, Job, Role
from dropflow.daemon.core.store import Store
from dropflow.daemon.core.store.persons import SqlitePersons
from dropflow.daemon.intake import Intake, clear_error_sidecar, write_error_sidecar
from dropflow.daemon.logs import Redactor
from dropflow.daemon.router import Router
from dropflow.engine.base import Done, JobContext, Providers, Wait
from dropflow.engine.errors import DropflowError, ErrorKind, InputError, JobCancelled, error_payload

log = logging.getLogger("dropflow.scheduler")
T = TypeVar("T")

PROGRESS_INTERVAL = 0.3  # seconds between progress writes of one job
CANCEL_GRACE = 5.0  # seconds an engine gets to notice a cancel before its task is cancelled


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Delay before retry `attempt` (1-based): exponential with equal jitter, never below retry-after."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    delay = delay / 2 + random.uniform(0, delay / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


async def _finish(write: Coroutine[Any, Any, Any]) -> None:
    """Run a store write to its end even though the calling task is being cancelled: a claimed
    row must be released, and the store must not be closed under a write still in flight."""
    task = asyncio.ensure_future(write)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


@dataclass
class _Running:
    job: Job
    task: asyncio.Task[None]
    ctx: JobContext
    control_seen_at: float | None = None
    user_stop: str | None = None  # 'cancel' / 'pause' when the user stopped it
    last_progress: float = field(default=0.0)


class Scheduler:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        router: Router,
        intake: Intake,
        providers: Providers,
        owner: str,
        redact: Redactor,
        *,
        engines: frozenset[str] | None = None,
        routes: frozenset[str] | None = None,
    ) -> None:
        self.cfg = cfg
        # a daemon limited to some engines or routes (`--engines`, `--routes`) claims only their
        # jobs, leaving the others to other daemons
        self.only: dict[Role, list[str]] = {}
        if engines is not None:
            self.only["engine"] = sorted(engines)
        if routes is not None:
            self.only["route"] = sorted(routes)
        self.settings = cfg.scheduler
        self.store = store
        self.router = router
        self.intake = intake
        self.providers = providers
        self.owner = owner
        self.redact = redact
        self.persons = SqlitePersons(store)
        self.running: dict[int, _Running] = {}
        self.wake = asyncio.Event()
        self.on_finished: Callable[[Job, str], None] | None = None
        self.stopping = asyncio.Event()

    # --- main loop --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.stopping = stop
        reclaimed = await self.store.reclaim(owner=self.owner)
        if reclaimed:
            log.info("reclaimed %d job(s) left running by a stopped daemon: %s", len(reclaimed), reclaimed)
        heartbeat = asyncio.create_task(self._heartbeat(), name="dropflow-heartbeat")
        try:
            while not stop.is_set():
                # cleared before the work, not after: a job ending (or a job queued) while the
                # claim awaits the store sets it again, and is not lost until the next tick
                self.wake.clear()
                try:
                    await self._apply_controls()
                    await self._fill_slots()
                except STORE_DOWN as exc:
                    # locked past busy_timeout by another process, disk full: running jobs go on,
                    # and claiming resumes once the database answers again
                    log.warning("job store unavailable (%s); trying again in a second", exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=1.0)
                    continue
                try:
                    await asyncio.wait_for(self._wait_wake(stop), timeout=self.settings.tick_seconds)
                except TimeoutError:
                    pass
        finally:
            await self._drain()
            heartbeat.cancel()
            try:
                await heartbeat
            except asyncio.CancelledError:
                pass

    async def _wait_wake(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _fill_slots(self) -> None:
        free = self.settings.max_concurrency - len(self.running)
        if free <= 0:
            return
        paused_all, paused = await self.store.paused_engines()
        if paused_all:
            return
        busy: dict[str, int] = {}
        for r in self.running.values():
            busy[r.job.engine] = busy.get(r.job.engine, 0) + 1
        engine_slots = {e: n - busy.get(e, 0) for e, n in self.settings.engine_concurrency.items()}
        jobs = await self.store.claim(
            self.owner,
            slots=free,
            engine_slots=engine_slots,
            lease_seconds=self.settings.lease_seconds,
            paused_engines=paused,
            only=self.only,
        )
        for job in jobs:
            self._start(job)

    def _start(self, job: Job) -> None:
        ctx = self._context(job)
        if job.control is not None:
            ctx.cancel_reason = job.control
        task = asyncio.create_task(self._execute(job, ctx), name=f"dropflow-job-{job.id}")
        self.running[job.id] = _Running(job, task, ctx)
        task.add_done_callback(functools.partial(self._done, job.id))

    def _done(self, job_id: int, _task: object = None) -> None:
        self.running.pop(job_id, None)
        self.wake.set()

    def _context(self, job: Job) -> JobContext:
        state: dict[str, float] = {"last": 0.0}

        async def report(fraction: float, message: str) -> None:
            now = time.monotonic()
            if fraction < 1.0 and now - state["last"] < PROGRESS_INTERVAL:
                return
            state["last"] = now
            await self.store.set_progress(job.id, self.owner, fraction, message)

        async def checkpoint(data: dict[str, Any], remote_task_id: str | None) -> None:
            await self.store.save_checkpoint(job.id, self.owner, data, remote_task_id=remote_task_id)
            job.checkpoint = data
            if remote_task_id:
                job.remote_task_id = remote_task_id

        async def note(kind: str, message: str) -> None:
            await self.store.add_event(job.id, kind, message)

        return JobContext(
            job=job,
            output_dir=self.cfg.paths.outputs / job.engine,
            prompts_dir=self.cfg.paths.prompts,
            state_dir=self.cfg.paths.state,
            providers=self.providers,
            logger=logging.getLogger(f"dropflow.engine.{job.engine}"),
            report=report,
            checkpoint=checkpoint,
            spawner=self.store,
            tasks=self.store,
            persons=self.persons,
            read_roots=self._read_roots(job),
            note=note,
        )

    def _read_roots(self, job: Job) -> tuple[Path, ...]:
        """Where a job may read through links: the inbox for what was dropped there, the submitted
        folder (or the submitted file's folder) for `dropflow submit`; our own state folder (ZIPs
        unpacked there hold no links) in both cases."""
        if job.source == "submit":
            unit = Path(job.input_path)
            return (unit if unit.is_dir() else unit.parent, self.cfg.paths.state)
        return (self.cfg.paths.inbox, self.cfg.paths.state)

    # --- one job ----------------------------------------------------------------------------------

    async def _execute(self, job: Job, ctx: JobContext) -> None:
        engine = self.router.engine(job.engine)
        if ctx.cancel_reason == "cancel" and not (engine.supports_cancel and job.remote_task_id):
            await self._record(
                job, lambda: self.store.finish_cancelled(job.id, self.owner, "cancelled by user")
            )
            return
        log.info("job %d (%s) started: %s", job.id, job.engine, job.input_path)
        try:
            for raw in job.input_paths:  # a retry, too, must not read through a link out of the inbox
                ctx.check_readable(Path(raw), what="input")
            await self._replan(job)
            result = await engine.run(job, ctx)
        except asyncio.CancelledError:
            running = self.running.get(job.id)
            stop = running.user_stop if running else None
            if stop == "cancel":
                await _finish(
                    self._record(
                        job, lambda: self.store.finish_cancelled(job.id, self.owner, "cancelled by user")
                    )
                )
            else:
                to = "paused" if stop == "pause" else "queued"
                await _finish(
                    self._record(
                        job, lambda: self.store.release(job.id, self.owner, to=to, message=f"released ({to})")
                    )
                )
            if stop is None:
                raise
            return
        except JobCancelled as exc:
            why = exc.message
            if ctx.cancel_reason == "pause":
                await self._record(
                    job, lambda: self.store.release(job.id, self.owner, to="paused", message="paused by user")
                )
            else:
                await self._record(job, lambda: self.store.finish_cancelled(job.id, self.owner, why))
            return
        except Exception as exc:
            await self._failed(job, exc)
            return
        if isinstance(result, Wait):
            at = time.time() + result.seconds
            await self._record(
                job,
                lambda: self.store.reschedule(
                    job.id, self.owner, at=at, message=result.message, usage=result.usage
                ),
            )
            return
        await self._succeeded(job, result)

    async def _succeeded(self, job: Job, result: Done) -> None:
        outputs = [str(p) for p in result.outputs]
        ok = await self._record(
            job,
            lambda: self.store.succeed(
                job.id,
                self.owner,
                outputs=outputs,
                usage=result.usage,
                # "": its engine keeps the input where it is, so intake never archives it later
                archived_path="" if job.source == "inbox" and not result.archive_input else None,
                message=result.message,
            ),
        )
        if not ok:
            log.warning("job %d finished but its lease was lost; result kept, state unchanged", job.id)
            return
        log.info("job %d (%s) succeeded: %d output(s)", job.id, job.engine, len(outputs))
        if job.source == "inbox" and result.archive_input:
            try:
                archived, left = await asyncio.to_thread(self._archive, job)
            except OSError as exc:
                log.error("job %d: cannot archive its input %s: %s", job.id, job.input_path, exc)
                await self.store.add_event(job.id, "error", f"input not archived: {exc}")
            else:
                if archived:
                    await self.store.set_archived(job.id, archived)
                elif left:
                    await self.store.add_event(
                        job.id,
                        "note",
                        f"input left in the inbox: {job.input_path} was replaced since this job was "
                        "queued, and the new content is its own job",
                    )
        else:
            clear_error_sidecar(Path(job.input_path))
        if self.on_finished:
            self.on_finished(job, "succeeded")

    def _archive(self, job: Job) -> tuple[str | None, bool]:
        """Archive a finished job's inputs (blocking): the primary's new path, and whether an input
        was left where it is (`archive_inputs` leaves only one replaced since the job was queued)."""
        archived = self.intake.archive_inputs(job)
        return archived, archived is None and any(Path(raw).exists() for raw in job.input_paths)

    async def _replan(self, job: Job) -> None:
        """A job starting from scratch takes its params and provider as the config and its folders'
        `dropflow.yaml` say now: a retry after fixing an override, a key set since it was dropped.

        A job with a remote task or a checkpoint keeps what it started with: its work so far was
        done (and paid) under those params.

        Raises ConfigError (naming the file and line) when the params are invalid now.
        """
        if job.source != "inbox" or job.remote_task_id or job.checkpoint:
            return
        # a few stats and a small YAML read, like intake's planning: a thread hop would cost more, queued
        # behind the file work of the other jobs
        unit = self.router.replan(job.route, Path(job.input_path))
        if unit is None:  # its route is gone from the config: it runs as it was registered
            return
        if unit.error is not None:
            raise unit.error
        if unit.params != job.params or unit.provider != job.provider:
            other = await self.store.set_plan(job.id, self.owner, unit.params, unit.provider)
            if other is not None:
                raise InputError(
                    f"job {other} already has this content with these params",
                    hint=f"see `dropflow job {other}`; `dropflow submit --force` runs it again",
                )
            job.params, job.provider = unit.params, unit.provider

    async def _failed(self, job: Job, exc: Exception) -> None:
        payload = self.redact.payload(error_payload(exc))
        kind = exc.kind if isinstance(exc, DropflowError) else ErrorKind.PERMANENT
        if not isinstance(exc, DropflowError):
            log.error("job %d (%s): unexpected error", job.id, job.engine, exc_info=exc)
        retry_at = None
        if kind == ErrorKind.RETRYABLE and job.attempts < job.max_attempts:
            delay = backoff(
                job.attempts,
                self.settings.backoff_base_seconds,
                self.settings.backoff_max_seconds,
                getattr(exc, "retry_after", None),
            )
            retry_at = time.time() + delay
            log.warning(
                "job %d (%s) attempt %d/%d: %s; retry in %.1fs",
                job.id,
                job.engine,
                job.attempts,
                job.max_attempts,
                payload["message"],
                delay,
            )
        else:
            log.error("job %d (%s) failed: %s", job.id, job.engine, payload["message"])
        usage = exc.usage if isinstance(exc, DropflowError) else None
        await self._record(
            job, lambda: self.store.fail(job.id, self.owner, payload, retry_at=retry_at, usage=usage)
        )
        if retry_at is None:
            if job.source == "inbox":
                await asyncio.to_thread(write_error_sidecar, Path(job.input_path), payload, job.id)
            if self.on_finished:
                self.on_finished(job, "failed")

    async def _record(self, job: Job, write: Callable[[], Awaitable[T]]) -> T:
        """Record a job's outcome, waiting out a job store that refuses (locked by another process
        past busy_timeout, disk full): the outcome is known and must not be lost to a busy moment.
        Once the daemon is stopping, a refusal is final: the next start reclaims the job."""
        delay = 1.0
        while True:
            try:
                return await write()
            except STORE_DOWN as exc:
                if self.stopping.is_set():
                    raise
                log.warning(
                    "job %d: cannot record its outcome, job store unavailable (%s); trying again in %.0fs",
                    job.id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # --- controls, heartbeat, shutdown --------------------------------------------------------------

    async def _apply_controls(self) -> None:
        """Act on cancel/pause requests for our running jobs (one indexed query per tick)."""
        if not self.running:
            return
        now = time.monotonic()
        controls = await self.store.controls(self.owner)
        for job_id, control in controls.items():
            r = self.running.get(job_id)
            if r is None or control is None or r.user_stop is not None:
                continue
            r.user_stop = control
            r.ctx.cancel_reason = control
            r.control_seen_at = now
            log.info("job %d: %s requested", job_id, control)
        for r in list(self.running.values()):
            # an engine that does not check ctx.cancelled (or is deep in a blocking step) is cancelled
            if r.control_seen_at is not None and now - r.control_seen_at > CANCEL_GRACE and not r.task.done():
                r.task.cancel()
                r.control_seen_at = None

    async def _heartbeat(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.store.renew_leases(self.owner, self.settings.lease_seconds, self.running)
                # leases that ran out meanwhile: another daemon's that died, or an orphan of ours
                reclaimed = await self.store.reclaim(owner=self.owner, keep=self.running)
            except Exception as exc:  # a locked database must not kill the heartbeat
                log.warning("lease renewal failed: %s", exc)
                continue
            if reclaimed:
                log.warning("reclaimed %d job(s) whose lease ran out: %s", len(reclaimed), reclaimed)
                self.wake.set()

    async def _drain(self) -> None:
        """Shutdown: let running jobs finish for the grace period, then release the rest."""
        if not self.running:
            return
        tasks = [r.task for r in self.running.values()]
        log.info(
            "waiting up to %.0fs for %d running job(s)", self.settings.shutdown_grace_seconds, len(tasks)
        )
        _done, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
            log.info("%d job(s) released unfinished; they resume on the next start", len(pending))
