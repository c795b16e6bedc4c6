"""The limits every job of one daemon shares, per (provider, model): the spacing of task submissions
and the count of remote tasks in flight (from the store, so waiting jobs and an earlier daemon's
tasks count too)."""

from __future__ import annotations

import asyncio
import math
import time

from dropflow.daemon.core.jobs import ACTIVE, Job
from dropflow.engine.base import JobContext, Wait
from dropflow.engine.videogen.params import VideoGenParams

IN_FLIGHT = ("submitting", "remote")  # checkpoint phases whose remote task may be running
SNAPSHOT_SECONDS = 1.0  # how long a count of in-flight tasks read from the store is reused


class ModelGate:
    """Submission spacing and the tasks in flight, for one (provider, model)."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.lock = asyncio.Lock()
        self.next_at = 0.0  # monotonic time of the next allowed submission
        self.reserved: set[int] = set()  # jobs between admission and their saved task id
        self.active: set[int] = set()  # jobs with a remote task (the count when no store is at hand)
        # Read from the store at most once a second: hundreds of jobs queued for a slot each ask.
        # Tasks this daemon created after a snapshot was read are added on top; tasks that ended
        # are only seen at the next read, so a stale count can hold a job back but never let an
        # extra one through.
        self.snapshot: set[int] = set()
        self.snapshot_started = -math.inf
        self.created: dict[int, float] = {}  # job id -> monotonic time its task id was saved

    def release(self, job_id: int, *, created: bool) -> None:
        self.reserved.discard(job_id)
        if created:
            self.created[job_id] = time.monotonic()

    async def in_flight(self, ctx: JobContext, job: Job) -> set[int]:
        """Jobs (other than `job`) with a task of this model that may be running remotely.

        Counted from the store, so jobs that are `waiting` (holding no worker) and jobs left by an
        earlier daemon count too. Call with `self.lock` held.
        """
        store = ctx.tasks
        if store is None:
            return (self.active | self.reserved) - {job.id}
        now = time.monotonic()
        if now - self.snapshot_started > SNAPSHOT_SECONDS:
            self.snapshot = {
                j.id
                for j in await store.list(engine=job.engine, status=ACTIVE)
                if j.checkpoint.get("phase") in IN_FLIGHT
                and j.checkpoint.get("model") == self.model
                and j.checkpoint.get("provider") == self.provider
            }
            self.snapshot_started = now
            # saved before the read began: the read saw them
            self.created = {jid: at for jid, at in self.created.items() if at >= now}
        return (self.snapshot | set(self.created) | self.reserved) - {job.id}

    async def admit(self, ctx: JobContext, job: Job, p: VideoGenParams) -> Wait | None:
        """Reserve a task slot and a submission time for this model, or say how long to wait."""
        async with self.lock:
            busy = await self.in_flight(ctx, job)
            if len(busy) >= p.max_concurrent_tasks:
                message = (
                    f"queued: {len(busy)} of {p.max_concurrent_tasks} {self.model} tasks in flight; "
                    "waiting for one to finish"
                )
                return Wait(min(p.poll_first_seconds, p.poll_max_seconds), message)
            now = time.monotonic()
            start = max(now, self.next_at)
            if start - now > 1.0:  # a long queue of submissions: give the worker back meanwhile
                return Wait(
                    start - now,
                    f"queued: {self.model} submissions are limited to {p.submissions_per_second:g}/s",
                )
            self.next_at = start + 1.0 / p.submissions_per_second
            self.reserved.add(job.id)
        if start > now:
            await asyncio.sleep(start - now)  # under a second: cheaper than a trip through the queue
        return None
