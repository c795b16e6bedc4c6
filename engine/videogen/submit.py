"""Submitting a job's remote task: a slot at the model's gate, the upload, the "submitting" marker,
the create call and its task id saved as one step a cancellation cannot split, throttling (429)
waited out, and a create call of unknown outcome failed rather than repeated (see `run.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from typing import TYPE_CHECKING

from dropflow.engine.base import Result, Wait
from dropflow.engine.errors import (
    AuthError,
    DropflowError,
    InputError,
    JobCancelled,
    PermanentError,
    ProviderError,
    RetryableError,
)
from dropflow.engine.providers.base import VideoGenRequest, VideoTask
from dropflow.engine.videogen.plan import make_plan
from dropflow.engine.videogen.record import iso

if TYPE_CHECKING:
    from dropflow.engine.videogen.run import Run

# transport failures that happen before a request is sent: the task was certainly not created
_CONNECT_FAILURES = ("ClientConnector", "ConnectionRefused", "ConnectError", "ClientProxyConnection")


def _never_created(exc: DropflowError) -> bool:
    """True when a failed create call certainly made no task (the provider answered, or nothing was sent)."""
    if isinstance(exc, InputError | AuthError):
        return True
    if not isinstance(exc, ProviderError):
        return False
    if exc.code == "MalformedResponse":
        return False  # answered, but garbled: a 200 that may carry a task id we could not read
    if exc.status is not None:
        # a gateway's 502/504 may come back after the backend created the task
        return exc.status not in (502, 504)
    return exc.code.startswith(_CONNECT_FAILURES)


async def submit(run: Run) -> Result:
    """Read the unit, take a slot at the gate, prepare, mark "submitting" and create the task.

    Raises InputError (unreadable unit), PermanentError (unresolved submission, 429 past the
    deadline), RetryableError (network), AuthError, JobCancelled.
    """
    if run.cp.get("phase") == "submitting" and not run.cp.get("resubmit_ok"):
        raise await unresolved(run, "the daemon stopped during the create call")
    plan = await make_plan(run)  # the unit as first read, checked; InputError before anything is paid
    spec, request = plan.spec, plan.request
    gate = run.engine.gate(run.provider.name, request.model)
    wait = await gate.admit(run.ctx, run.job, run.p)
    if wait is not None:
        return wait
    try:
        prepared = await run.provider.prepare(request)  # uploads; no task exists yet
        if run.ctx.cancelled:
            raise JobCancelled(f"{run.ctx.cancel_reason}ed before anything was submitted (nothing billed)")
        if not run.cp.get("warned"):
            for warning in plan.warnings:
                await run.ctx.warn(f"{run.name}: {warning}")
        throttling = run.cp.get("throttled")
        run.cp = {
            "phase": "submitting",
            "since": time.time(),
            "provider": run.provider.name,
            "offline": run.provider.offline,
            "model": request.model,
            "kind": spec.kind,
            "job_file": spec.job_file,
            # kept for every later submission of this job: an edited file is another job's
            "spec": dataclasses.asdict(spec),
            "image": plan.image.as_dict() if plan.image else None,
            "last_image": plan.last_image.as_dict() if plan.last_image else None,
            "request": dataclasses.asdict(request),
            "trimmed": [dataclasses.asdict(c) for c in plan.cuts],
            "warned": True,
            "retired": run.cp.get("retired", []),
            "resubmit_ok": run.cp.get("resubmit_ok", False),
        }
        if throttling:  # the 429s before this try count towards the deadline
            run.cp["throttled"] = throttling
        await run.save()
        try:
            task = await create(run, prepared)
        except RetryableError as exc:
            if exc.status != 429:
                raise
            return await throttled(run, exc)
    finally:
        gate.release(run.job.id, created=run.cp.get("phase") == "remote")
    if run.ctx.cancel_reason == "cancel":
        raise await run.cancel()
    # `832*480, 5 s` / `480P 16:9, 5 s, ~48,600 tokens`: what the task was asked to make (and is billed for)
    message = f"submitted: task {task.task_id} ({request.model}, {run.catalog.describe(request)})"
    await run.ctx.progress(0.05, message)
    return Wait(run.p.poll_first_seconds, message, usage=run.usage())


async def throttled(run: Run, exc: RetryableError) -> Wait:
    """DashScope refused the create call with 429 (no task was made): wait it out.

    Throttling says the account's task slots or quota are taken, often by work elsewhere, so
    it is not charged as a failed attempt; after `deadline_minutes` of nothing but 429s the
    job fails (a `dropflow retry` then waits another period).
    """
    now = time.time()
    since, tries = run.cp.get("throttled") or (now, 0)
    if now - since > run.p.deadline_minutes * 60:
        run.cp.pop("throttled", None)
        await run.save()
        raise PermanentError(
            f"{run.name}: {run.provider.name} refused every submission for "
            f"{run.p.deadline_minutes:g} min ({exc.code or 429}: {exc.message}); no task was made",
            hint=f"the account's task slots or quota are taken: check the {run.provider.name} console, "
            f"then `dropflow retry {run.job.id}`; params.deadline_minutes sets how long to wait",
            provider=run.provider.name,
            code=exc.code,
            status=429,
        ) from exc
    run.cp["throttled"] = [since, tries + 1]
    await run.save()
    delay = exc.retry_after or min(run.p.poll_max_seconds, 2.0 * 2**tries)
    delay *= random.uniform(0.8, 1.2)  # many throttled jobs must not come back in lockstep
    message = (
        f"throttled by {run.provider.name} ({exc.code or 429}, try {tries + 1}): no task made; "
        f"submitting again in {delay:.0f}s"
    )
    await run.note(message)
    return Wait(delay, message)


async def create(run: Run, prepared: VideoGenRequest) -> VideoTask:
    """The create call and the saving of its task id, as one step a cancellation cannot split."""
    inner = asyncio.ensure_future(create_and_record(run, prepared))
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        # The call may already be at the provider: let it finish and record the task id, or a
        # restart could not know of a task that bills. Bounded by the provider's own timeout.
        with contextlib.suppress(Exception):
            task = await inner
            if run.ctx.cancel_reason == "cancel":
                with contextlib.suppress(Exception):
                    if await asyncio.wait_for(run.provider.cancel(task.task_id), 10):
                        await run.note(f"remote task {task.task_id} cancelled while PENDING")
        raise


async def create_and_record(run: Run, prepared: VideoGenRequest) -> VideoTask:
    try:
        task = await run.provider.submit(prepared)
    except DropflowError as exc:
        if _never_created(exc):
            run.cp["phase"] = "idle"
            await run.save()
            raise
        raise await unresolved(run, f"the create call failed without an answer ({exc.message})") from exc
    except Exception as exc:  # e.g. the SDK choking on an answer: the task may well exist
        raise await unresolved(
            run, f"the create call failed unexpectedly ({type(exc).__name__}: {exc})"
        ) from exc
    if not task.task_id:
        raise await unresolved(run, "the provider accepted the call but returned no task id")
    # logged before the save: if the process dies in between, the log still has the id
    run.ctx.log.info(
        "job %d: submitted task %s (%s) for %s", run.job.id, task.task_id, prepared.model, run.name
    )
    now = time.time()
    run.cp.update(
        phase="remote",
        task_id=task.task_id,
        submitted_at=now,
        deadline_from=now,
        status=task.status,
        status_at=now,
        polls=0,
        poll_errors=0,
    )
    run.cp.pop("resubmit_ok", None)
    run.cp.pop("since", None)
    run.cp.pop("throttled", None)
    await run.save(remote_task_id=task.task_id)
    if run.ctx.tasks is None:
        run.engine.gate(run.provider.name, prepared.model).active.add(run.job.id)
    return task


async def unresolved(run: Run, why: str) -> PermanentError:
    """Fail the job over a submission whose outcome is unknown; a user's retry then resubmits."""
    since = iso(run.cp.get("since")) or "an unknown time"
    run.cp["resubmit_ok"] = True
    await run.save()
    return PermanentError(
        f"{run.name}: {why}; the task may have been created and may bill, but its id never came "
        f"back, so dropflow will not submit it again on its own (model {run.cp.get('model')}, "
        f"submitted around {since})",
        hint=f"check the provider's console for a task made at that time (the daemon log has a "
        f"'submitted task' line for job {run.job.id} if the id came back before the stop); "
        f"to submit again, run `dropflow retry {run.job.id}`",
        provider=run.provider.name,
        code="SubmissionUnresolved",
    )
