"""Video generation: prompts and images dropped into inbox/video-gen/ become videos made by
asynchronous remote tasks (DashScope wan models, or the offline stand-in).

One job follows one remote task across several short runs; between runs it waits without a worker:

    run 1   read the unit (once: kept for later submissions) and check it against its model
            (`plan.py`), take a task slot, prepare (the first frame made fit, then uploaded),
            write a "submitting" marker, create the task, save its id (durable)  -> Wait(first delay)
    run n   fetch the task: PENDING / RUNNING                            -> Wait(growing delay)
                            FAILED / UNKNOWN / CANCELED                  -> fail with the reason
    run m   SUCCEEDED: download (temp name, size checks, retries), then <name>.mp4 + <name>.json;
            whatever fails after SUCCEEDED is tried again while the task lasts (`deliver.py`)

Never paid twice. The task id is committed before the job waits on it, so a restart resumes
polling the same task. The one window left is a crash after the provider accepted the create call
and before its id was saved: the marker written just before the call makes a restart that finds
it (with no id) fail the job with that plain explanation instead of creating a second task; the
user decides, and `dropflow retry` then submits again. A graceful stop inside the window finishes
the call and saves the id first (the call is shielded from cancellation), and a create call that
failed with no answer (timeout, dropped connection) is treated like the crash. DashScope's task
list cannot be matched to a submission (it carries no prompt and no client token), so no attempt
is made to guess which listed task is ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.daemon.core.jobs import Job
from dropflow.engine.base import JobContext, Result, Wait
from dropflow.engine.errors import DropflowError, JobCancelled, PermanentError, RetryableError
from dropflow.engine.providers.base import VideoGenProvider, VideoGenRequest
from dropflow.engine.videogen.catalog import Catalog, catalog_for
from dropflow.engine.videogen.deliver import TASK_VALIDITY, deliver
from dropflow.engine.videogen.params import VideoGenParams
from dropflow.engine.videogen.submit import submit

if TYPE_CHECKING:
    from dropflow.engine.videogen.engine import VideoGenEngine


def _clock(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Run:
    """The steps of one run; `cp` is the job's checkpoint, saved whole after each change."""

    def __init__(
        self,
        engine: VideoGenEngine,
        job: Job,
        ctx: JobContext,
        params: VideoGenParams,
        provider: VideoGenProvider,
    ) -> None:
        self.engine = engine
        self.job = job
        self.ctx = ctx
        self.p = params
        self.provider = provider
        self.catalog: Catalog = catalog_for(provider.model_family)
        self.cp: dict[str, Any] = dict(job.checkpoint)
        self.name = Path(job.input_path).name
        if not self.cp.get("phase") and job.remote_task_id:
            # a task id without engine state (should not happen): follow it rather than pay again
            self.cp.update(
                phase="remote",
                task_id=job.remote_task_id,
                submitted_at=job.started_at or time.time(),
                deadline_from=time.time(),
                provider=provider.name,
                model=params.model or "",
            )

    @property
    def task_id(self) -> str:
        return str(self.cp.get("task_id") or "")

    async def save(self, *, remote_task_id: str | None = None) -> None:
        await self.ctx.save(self.cp, remote_task_id=remote_task_id)

    def usage(self, reported: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The job's usage keys (see `usage.py`): what the task is billed for, from the provider's
        `reported` usage when there is one, else from what was asked."""
        asked = self.cp.get("request")
        if not isinstance(asked, dict):
            return None
        usage = self.catalog.paid_usage(reported, VideoGenRequest(**asked))
        usage["offline"] = bool(self.cp.get("offline", self.provider.offline))
        return usage

    async def note(self, message: str) -> None:
        """An event in the job's history (`dropflow job N`), when the store is at hand."""
        store = self.ctx.tasks
        if store is not None:
            with contextlib.suppress(Exception):  # history is a nicety; never fail a job over it
                await store.add_event(self.job.id, "note", message)

    async def run(self) -> Result:
        if self.ctx.cancel_reason == "cancel":
            raise await self.cancel()
        self.ctx.check_cancelled()
        phase = self.cp.get("phase")
        if phase in (None, "idle", "retired", "submitting"):
            return await submit(self)
        if phase == "remote":
            waiting = await self.follow()
            if self.ctx.cancel_reason == "cancel":  # asked while this poll was under way
                raise await self.cancel()
            if waiting is not None:
                return waiting
        return await deliver(self)

    # --- following the task ------------------------------------------------------------------

    def next_delay(self) -> float:
        p = self.p
        delay = min(p.poll_max_seconds, p.poll_first_seconds * p.poll_growth ** int(self.cp.get("polls", 0)))
        left = self.cp["deadline_from"] + p.deadline_minutes * 60 - time.time()
        return max(0.05, min(delay, left + 0.05))

    async def retire(self, status: str, code: str = "") -> None:
        """The task ended without a video: keep its id for the record; a retry submits anew."""
        self.cp["retired"] = [
            *self.cp.get("retired", []),
            {"task_id": self.task_id, "status": status, "code": code},
        ]
        self.cp["phase"] = "retired"
        await self.save()
        self.engine.gate(self.provider.name, str(self.cp.get("model"))).active.discard(self.job.id)

    async def follow(self) -> Wait | None:
        """Poll once; None when the task SUCCEEDED (the download comes next)."""
        now = time.time()
        task_id, submitted = self.task_id, float(self.cp["submitted_at"])
        if now - submitted >= TASK_VALIDITY:
            await self.retire("EXPIRED")
            raise PermanentError(
                f"{self.name}: task {task_id} was submitted {_clock(now - submitted)} ago; the provider "
                "forgets task ids after 24 h, so its result can no longer be fetched",
                hint=f"run `dropflow retry {self.job.id}` to submit it again",
                provider=self.provider.name,
                code="TaskExpired",
            )
        if self.cp.pop("deadline_hit", False):  # the user retried after the deadline: another full period
            self.cp["deadline_from"] = now
        try:
            task = await self.provider.fetch(task_id)
        except RetryableError as exc:
            # a network blip must not cost the job: poll errors only end it at the deadline
            self.cp["poll_errors"] = int(self.cp.get("poll_errors", 0)) + 1
            if self.past_deadline():
                raise await self.deadline(str(self.cp.get("status", "UNKNOWN"))) from exc
            self.cp["polls"] = int(self.cp.get("polls", 0)) + 1
            await self.save()
            message = f"task {task_id}: status check failed ({exc.message}); trying again"
            return Wait(self.next_delay(), message, usage=self.usage())
        self.cp["poll_errors"] = 0
        previous = self.cp.get("status")
        if task.status != previous:
            self.cp.update(status=task.status, status_at=now)
            await self.note(f"remote task {task_id}: {task.status}")
        if task.status == "SUCCEEDED":
            self.cp.update(phase="download", task=dataclasses.asdict(task), remote_done_at=now)
            await self.save()
            self.engine.gate(self.provider.name, str(self.cp.get("model"))).active.discard(self.job.id)
            return None
        if task.status == "FAILED":
            await self.retire("FAILED", task.code)
            raise PermanentError(
                f"{self.name}: task {task_id} FAILED at {self.provider.name}: "
                f"{task.code or 'no code'}: {task.message or 'no message'}",
                hint="the provider could not make this video; change the prompt or image and drop it "
                f"again, or `dropflow retry {self.job.id}` to submit the same request once more",
                provider=self.provider.name,
                code=task.code or "TaskFailed",
                request_id=task.request_id,
            )
        if task.status in ("UNKNOWN", "CANCELED"):
            await self.retire(task.status)
            why = (
                "the provider does not know this task id (expired after 24 h, or another account/region)"
                if task.status == "UNKNOWN"
                else "the task was cancelled at the provider (not by dropflow)"
            )
            raise PermanentError(
                f"{self.name}: task {task_id} is {task.status}: {why}",
                hint=f"run `dropflow retry {self.job.id}` to submit it again",
                provider=self.provider.name,
                code=f"Task{task.status.title()}",
                request_id=task.request_id,
            )
        if self.past_deadline():
            raise await self.deadline(task.status)
        self.cp["polls"] = int(self.cp.get("polls", 0)) + 1
        await self.save()
        elapsed = now - submitted
        if task.status == "RUNNING":
            running = now - float(self.cp.get("status_at", now))
            fraction = 0.15 + 0.65 * (1 - math.exp(-running / 300))
        else:
            fraction = 0.1
        message = f"task {task_id} {task.status} ({_clock(elapsed)})"
        await self.ctx.progress(fraction, message)
        return Wait(self.next_delay(), message, usage=self.usage())

    def past_deadline(self) -> bool:
        return time.time() - float(self.cp["deadline_from"]) > self.p.deadline_minutes * 60

    async def deadline(self, status: str) -> PermanentError:
        """Stop following a task that overran `deadline_minutes`; cancel it if it has not started."""
        task_id, limit = self.task_id, f"{self.p.deadline_minutes:g} min"
        cancelled = False
        if status == "PENDING":
            with contextlib.suppress(DropflowError):
                cancelled = await self.provider.cancel(task_id)
        if cancelled:
            await self.retire("CANCELED", "DeadlineExceeded")
            what = f"it was still PENDING after {limit}, so it was cancelled (nothing billed)"
            hint = f"raise params.deadline_minutes, or `dropflow retry {self.job.id}` to submit again"
        else:
            self.cp["deadline_hit"] = True
            await self.save()
            what = (
                f"it was still {status} after {limit}; dropflow stopped following it, "
                "but the remote task may still complete and bill"
            )
            hint = (
                f"`dropflow retry {self.job.id}` follows the same task again (no new submission) "
                "for another deadline period; raise params.deadline_minutes for slow models"
            )
        return PermanentError(
            f"{self.name}: task {task_id}: {what}",
            hint=hint,
            provider=self.provider.name,
            code="DeadlineExceeded",
        )

    # --- cancelling ----------------------------------------------------------------------------

    async def cancel(self) -> JobCancelled:
        """Act on a user's cancel: cancel the remote task while PENDING, else say what it may cost."""
        phase, task_id = self.cp.get("phase"), self.task_id
        if phase == "submitting":
            message = (
                "cancelled; an earlier submission was interrupted and its task id is unknown: "
                "a remote task may exist and bill"
            )
        elif phase == "download":
            message = (
                f"cancelled; remote task {task_id} had already SUCCEEDED, so it is billed; "
                "the video was not downloaded"
            )
        elif phase != "remote" or not task_id:
            message = "cancelled before anything was submitted (nothing billed)"
        else:
            why = "it is already running"
            try:
                ok = await self.provider.cancel(task_id)
            except DropflowError as exc:
                ok, why = False, f"the cancel request failed: {exc.message}"
            if ok:
                await self.retire("CANCELED", "CancelledByUser")
                message = f"cancelled; remote task {task_id} was cancelled while PENDING (nothing billed)"
            else:
                bill = "run on (offline: nothing is billed)" if self.provider.offline else "complete and bill"
                message = (
                    f"cancelled; remote task {task_id} could not be cancelled ({why}): it may still "
                    f"{bill}. dropflow stopped following it; `dropflow retry {self.job.id}` "
                    "follows it again (within 24 h of submission)"
                )
                self.ctx.log.warning("job %d: %s", self.job.id, message)
        self.cp["cancelled"] = {"at": time.time(), "message": message}
        with contextlib.suppress(Exception):
            await self.save()
        return JobCancelled(message)
