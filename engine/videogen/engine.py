"""Video generation: prompts and images dropped into inbox/video-gen/ become videos made by
asynchronous remote tasks (DashScope wan models, or the offline stand-in).

One job follows one remote task across several short runs; between runs it waits without a worker:

    run 1   read the unit, take a task slot, prepare (upload the image), write a "submitting"
            marker, create the task, save its id (durable)              -> Wait(first delay)
    run n   fetch the task: PENDING / RUNNING                            -> Wait(growing delay)
                            FAILED / UNKNOWN / CANCELED                  -> fail with the reason
    run m   SUCCEEDED: download (temp name, size checks, retries), then <name>.mp4 + <name>.json

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

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from dropflow.daemon.core.jobs import ACTIVE, Job
from dropflow.engine import files
from dropflow.engine.base import Done, FileEngine, JobContext, Params, Result, Wait
from dropflow.engine.errors import (
    AuthError,
    DropflowError,
    InputError,
    JobCancelled,
    PermanentError,
    ProviderError,
    RetryableError,
)
from dropflow.engine.providers.base import VideoGenProvider, VideoGenRequest, VideoTask
from dropflow.engine.videogen.job import (
    ALL_SUFFIXES,
    Resolution,
    Size,
    VideoSpec,
    read_spec,
    unit_inputs,
)

TASK_VALIDITY = 24 * 3600.0  # DashScope forgets a task id (and its video URL) after a day
IN_FLIGHT = ("submitting", "remote")  # checkpoint phases whose remote task may be running
URL_MARGIN = 60.0  # a signed URL this close to its expiry is refreshed before downloading
# transport failures that happen before a request is sent: the task was certainly not created
_CONNECT_FAILURES = ("ClientConnector", "ConnectionRefused", "ConnectError", "ClientProxyConnection")


class VideoGenParams(Params):
    """Route parameters of the video-gen engine (`routes[].params` in config.yaml)."""

    model: str = Field("wan2.2-t2v-plus", description="Text-to-video model.")
    i2v_model: str = Field("wan2.2-i2v-plus", description="Image-to-video model.")
    size: Size = Field(None, description="Text-to-video size WIDTH*HEIGHT; the model's default if empty.")
    resolution: Resolution = Field(None, description="Image-to-video resolution (480P/720P/1080P).")
    duration: int | None = Field(
        None, ge=1, le=60, description="Seconds of video; the model's default if empty."
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Fixed seed; random if empty.")
    prompt_extend: bool | None = Field(
        None, description="Let the provider rewrite prompts (its default if empty)."
    )
    negative_prompt: str = Field(
        "", description="What videos must not show, unless a job file says otherwise."
    )
    default_prompt: str = Field(
        "", description="Prompt for an image dropped without a .txt; empty: such images fail."
    )
    poll_first_seconds: float = Field(15.0, gt=0, description="First status check after submitting.")
    poll_growth: float = Field(1.5, ge=1.0, description="Each interval is the previous times this.")
    poll_max_seconds: float = Field(60.0, gt=0, description="Longest interval between status checks.")
    deadline_minutes: float = Field(
        60.0,
        gt=0,
        le=24 * 60,
        description="Give up following a task not finished this long after submission (or "
        "submitting one that every try is throttled, 429).",
    )
    max_download_mb: float = Field(512.0, gt=0, description="Refuse a video larger than this.")
    download_retries: int = Field(
        3, ge=0, le=10, description="Quick re-tries of a failed download in one run."
    )
    submissions_per_second: float = Field(2.0, gt=0, description="Task submissions per second, per model.")
    max_concurrent_tasks: int = Field(2, ge=1, description="Remote tasks in flight at once, per model.")

    @model_validator(mode="after")
    def _intervals(self) -> VideoGenParams:
        if self.poll_max_seconds < self.poll_first_seconds:
            raise ValueError("poll_max_seconds must be at least poll_first_seconds")
        return self


def build_request(spec: VideoSpec, p: VideoGenParams) -> VideoGenRequest:
    """The provider request: what the unit says, the route's params for what it leaves open."""
    i2v = spec.kind == "i2v"
    explicit = spec.size is not None or spec.resolution is not None
    return VideoGenRequest(
        model=spec.model or (p.i2v_model if i2v else p.model),
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt if spec.negative_prompt is not None else p.negative_prompt,
        image=spec.image,
        # route defaults: size only for text-to-video, resolution only for image-to-video
        size=spec.size if explicit else (None if i2v else p.size),
        resolution=spec.resolution if explicit else (p.resolution if i2v else None),
        duration=spec.duration if spec.duration is not None else p.duration,
        seed=spec.seed if spec.seed is not None else p.seed,
        prompt_extend=spec.prompt_extend if spec.prompt_extend is not None else p.prompt_extend,
    )


# --- limits shared by every job of one daemon -----------------------------------------------------


SNAPSHOT_SECONDS = 1.0  # how long a count of in-flight tasks read from the store is reused


class _ModelGate:
    """Submission spacing and the tasks in flight, for one (provider, model)."""

    def __init__(self) -> None:
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


async def _in_flight_jobs(ctx: JobContext, job: Job, provider: str, model: str, gate: _ModelGate) -> set[int]:
    """Jobs (other than `job`) with a task of `model` that may be running remotely.

    Counted from the store, so jobs that are `waiting` (holding no worker) and jobs left by an
    earlier daemon count too. Call with `gate.lock` held.
    """
    store = ctx.tasks
    if store is None:
        return (gate.active | gate.reserved) - {job.id}
    now = time.monotonic()
    if now - gate.snapshot_started > SNAPSHOT_SECONDS:
        gate.snapshot = {
            j.id
            for j in await store.list(engine=job.engine, status=ACTIVE)
            if j.checkpoint.get("phase") in IN_FLIGHT
            and j.checkpoint.get("model") == model
            and j.checkpoint.get("provider") == provider
        }
        gate.snapshot_started = now
        # saved before the read began: the read saw them
        gate.created = {jid: at for jid, at in gate.created.items() if at >= now}
    return (gate.snapshot | set(gate.created) | gate.reserved) - {job.id}


# --- downloading ---------------------------------------------------------------------------------


class DownloadFailed(Exception):
    """One download attempt failed; `expired` when the signed URL was refused (403) or is stale."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


class VideoTooLarge(Exception):
    pass


def _is_mp4(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] == b"ftyp"


def fetch_video(
    url: str, dest: Path, *, max_bytes: int, stop: Callable[[], bool], timeout: float = 60.0
) -> int:
    """Stream `url` into `dest` (temp name in its folder, then rename); returns the byte count.

    Blocking: run it in a thread. `file://` URLs (the offline provider) are copied.
    Raises DownloadFailed (worth another try), VideoTooLarge, JobCancelled (when `stop()`).
    """
    import httpx

    if url.startswith("file://"):
        src = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        try:
            size = src.stat().st_size
            if size > max_bytes:
                raise VideoTooLarge(f"{size:,} bytes")
            files.copy_file(src, dest)
        except FileNotFoundError as exc:
            raise DownloadFailed(f"the offline video {src} is missing") from exc
        return size
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise DownloadFailed(
                    f"HTTP {response.status_code} from the video URL", expired=response.status_code == 403
                )
            expected = response.headers.get("content-length")
            length = int(expected) if expected and expected.isdigit() else None
            if length is not None and length > max_bytes:
                raise VideoTooLarge(f"{length:,} bytes")
            received, head = 0, b""
            with files.atomic_writer(dest, "wb") as fh:
                for chunk in response.iter_bytes(1 << 20):
                    if stop():
                        raise JobCancelled("stopped during the download")
                    received += len(chunk)
                    if received > max_bytes:
                        raise VideoTooLarge(f"more than {max_bytes:,} bytes")
                    if len(head) < 12:
                        head += chunk[: 12 - len(head)]
                    fh.write(chunk)
                # raising inside the writer discards the temp file: nothing half-written is renamed
                if length is not None and received != length:
                    raise DownloadFailed(f"truncated: {received:,} of {length:,} bytes")
                if not _is_mp4(head):
                    raise DownloadFailed(f"the URL answered {received:,} bytes that are not an mp4")
            return received
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"{type(exc).__name__}: {exc}") from exc


def download_with_retries(
    url: str, dest: Path, *, max_bytes: int, retries: int, stop: Callable[[], bool]
) -> int:
    """`fetch_video`, re-tried `retries` times with short pauses (not when the URL went stale).

    Blocking. Raises the last DownloadFailed, VideoTooLarge, JobCancelled.
    """
    for attempt in range(retries + 1):
        try:
            return fetch_video(url, dest, max_bytes=max_bytes, stop=stop)
        except DownloadFailed as exc:
            if exc.expired or attempt == retries:
                raise
            pause = min(8.0, 0.5 * 2**attempt)
            end = time.monotonic() + pause
            while time.monotonic() < end:
                if stop():
                    raise JobCancelled("stopped during the download") from exc
                time.sleep(0.05)
    raise AssertionError("unreachable")  # pragma: no cover


def url_expires_at(url: str) -> float | None:
    """The epoch second a signed OSS URL stops working (its ``Expires`` parameter), if it says."""
    values = urllib.parse.parse_qs(urllib.parse.urlparse(url).query).get("Expires")
    try:
        return float(values[0]) if values else None
    except ValueError:
        return None


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t else None


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} KB"


def _clock(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _image_label(image: str | None) -> str | None:
    """A local image by its name (paths stay private), a URL as it is."""
    if not image:
        return None
    return image if image.startswith(("http://", "https://", "oss://")) else Path(image).name


def _never_created(exc: DropflowError) -> bool:
    """True when a failed create call certainly made no task (the provider answered, or nothing was sent)."""
    if isinstance(exc, InputError | AuthError):
        return True
    if not isinstance(exc, ProviderError):
        return False
    if exc.status is not None:
        # a gateway's 502/504 may come back after the backend created the task
        return exc.status not in (502, 504)
    return exc.code.startswith(_CONNECT_FAILURES)


# --- one run of one job --------------------------------------------------------------------------


class _Run:
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
                model=params.model,
            )

    @property
    def task_id(self) -> str:
        return str(self.cp.get("task_id") or "")

    async def save(self, *, remote_task_id: str | None = None) -> None:
        await self.ctx.save(self.cp, remote_task_id=remote_task_id)

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
            return await self.submit()
        if phase == "remote":
            waiting = await self.follow()
            if self.ctx.cancel_reason == "cancel":  # asked while this poll was under way
                raise await self.cancel()
            if waiting is not None:
                return waiting
        return await self.download()

    # --- submitting --------------------------------------------------------------------------

    async def submit(self) -> Result:
        if self.cp.get("phase") == "submitting" and not self.cp.get("resubmit_ok"):
            raise await self.unresolved("the daemon stopped during the create call")
        inputs = [Path(p) for p in self.job.input_paths]
        spec = await asyncio.to_thread(read_spec, inputs, default_prompt=self.p.default_prompt)
        request = build_request(spec, self.p)
        gate = self.engine.gate(self.provider.name, request.model)
        wait = await self.admit(gate, request.model)
        if wait is not None:
            return wait
        try:
            prepared = await self.provider.prepare(request)  # uploads; no task exists yet
            if self.ctx.cancelled:
                raise JobCancelled(
                    f"{self.ctx.cancel_reason}ed before anything was submitted (nothing billed)"
                )
            throttled = self.cp.get("throttled")
            self.cp = {
                "phase": "submitting",
                "since": time.time(),
                "provider": self.provider.name,
                "offline": self.provider.offline,
                "model": request.model,
                "kind": spec.kind,
                "job_file": spec.job_file,
                "request": dataclasses.asdict(request),
                "retired": self.cp.get("retired", []),
                "resubmit_ok": self.cp.get("resubmit_ok", False),
            }
            if throttled:  # the 429s before this try count towards the deadline
                self.cp["throttled"] = throttled
            await self.save()
            try:
                task = await self.create(prepared)
            except RetryableError as exc:
                if exc.status != 429:
                    raise
                return await self.throttled(exc)
        finally:
            gate.release(self.job.id, created=self.cp.get("phase") == "remote")
        if self.ctx.cancel_reason == "cancel":
            raise await self.cancel()
        message = f"submitted: task {task.task_id} ({request.model})"
        await self.ctx.progress(0.05, message)
        return Wait(self.p.poll_first_seconds, message)

    async def throttled(self, exc: RetryableError) -> Wait:
        """DashScope refused the create call with 429 (no task was made): wait it out.

        Throttling says the account's task slots or quota are taken, often by work elsewhere, so
        it is not charged as a failed attempt; after `deadline_minutes` of nothing but 429s the
        job fails (a `dropflow retry` then waits another period).
        """
        now = time.time()
        since, tries = self.cp.get("throttled") or (now, 0)
        if now - since > self.p.deadline_minutes * 60:
            self.cp.pop("throttled", None)
            await self.save()
            raise PermanentError(
                f"{self.name}: {self.provider.name} refused every submission for "
                f"{self.p.deadline_minutes:g} min ({exc.code or 429}: {exc.message}); no task was made",
                hint="the account's task slots or quota are taken: check the DashScope console, "
                f"then `dropflow retry {self.job.id}`; params.deadline_minutes sets how long to wait",
                provider=self.provider.name,
                code=exc.code,
                status=429,
            ) from exc
        self.cp["throttled"] = [since, tries + 1]
        await self.save()
        delay = exc.retry_after or min(self.p.poll_max_seconds, 2.0 * 2**tries)
        delay *= random.uniform(0.8, 1.2)  # many throttled jobs must not come back in lockstep
        message = (
            f"throttled by {self.provider.name} ({exc.code or 429}, try {tries + 1}): no task made; "
            f"submitting again in {delay:.0f}s"
        )
        await self.note(message)
        return Wait(delay, message)

    async def admit(self, gate: _ModelGate, model: str) -> Wait | None:
        """Reserve a task slot and a submission time for `model`, or say how long to wait."""
        async with gate.lock:
            busy = await _in_flight_jobs(self.ctx, self.job, self.provider.name, model, gate)
            if len(busy) >= self.p.max_concurrent_tasks:
                message = (
                    f"queued: {len(busy)} of {self.p.max_concurrent_tasks} {model} tasks in flight; "
                    "waiting for one to finish"
                )
                return Wait(min(self.p.poll_first_seconds, self.p.poll_max_seconds), message)
            now = time.monotonic()
            start = max(now, gate.next_at)
            if start - now > 1.0:  # a long queue of submissions: give the worker back meanwhile
                return Wait(
                    start - now,
                    f"queued: {model} submissions are limited to {self.p.submissions_per_second:g}/s",
                )
            gate.next_at = start + 1.0 / self.p.submissions_per_second
            gate.reserved.add(self.job.id)
        if start > now:
            await asyncio.sleep(start - now)  # under a second: cheaper than a trip through the queue
        return None

    async def create(self, prepared: VideoGenRequest) -> VideoTask:
        """The create call and the saving of its task id, as one step a cancellation cannot split."""
        inner = asyncio.ensure_future(self.create_and_record(prepared))
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            # The call may already be at the provider: let it finish and record the task id, or a
            # restart could not know of a task that bills. Bounded by the provider's own timeout.
            with contextlib.suppress(Exception):
                task = await inner
                if self.ctx.cancel_reason == "cancel":
                    with contextlib.suppress(Exception):
                        if await asyncio.wait_for(self.provider.cancel(task.task_id), 10):
                            await self.note(f"remote task {task.task_id} cancelled while PENDING")
            raise

    async def create_and_record(self, prepared: VideoGenRequest) -> VideoTask:
        try:
            task = await self.provider.submit(prepared)
        except DropflowError as exc:
            if _never_created(exc):
                self.cp["phase"] = "idle"
                await self.save()
                raise
            raise await self.unresolved(f"the create call failed without an answer ({exc.message})") from exc
        except Exception as exc:  # e.g. the SDK choking on an answer: the task may well exist
            raise await self.unresolved(
                f"the create call failed unexpectedly ({type(exc).__name__}: {exc})"
            ) from exc
        if not task.task_id:
            raise await self.unresolved("the provider accepted the call but returned no task id")
        # logged before the save: if the process dies in between, the log still has the id
        self.ctx.log.info(
            "job %d: submitted task %s (%s) for %s", self.job.id, task.task_id, prepared.model, self.name
        )
        now = time.time()
        self.cp.update(
            phase="remote",
            task_id=task.task_id,
            submitted_at=now,
            deadline_from=now,
            status=task.status,
            status_at=now,
            polls=0,
            poll_errors=0,
        )
        self.cp.pop("resubmit_ok", None)
        self.cp.pop("since", None)
        self.cp.pop("throttled", None)
        await self.save(remote_task_id=task.task_id)
        if self.ctx.tasks is None:
            self.engine.gate(self.provider.name, prepared.model).active.add(self.job.id)
        return task

    async def unresolved(self, why: str) -> PermanentError:
        """Fail the job over a submission whose outcome is unknown; a user's retry then resubmits."""
        since = _iso(self.cp.get("since")) or "an unknown time"
        self.cp["resubmit_ok"] = True
        await self.save()
        return PermanentError(
            f"{self.name}: {why}; the task may have been created and may bill, but its id never came "
            f"back, so dropflow will not submit it again on its own (model {self.cp.get('model')}, "
            f"submitted around {since})",
            hint=f"check the provider's console for a task made at that time (the daemon log has a "
            f"'submitted task' line for job {self.job.id} if the id came back before the stop); "
            f"to submit again, run `dropflow retry {self.job.id}`",
            provider=self.provider.name,
            code="SubmissionUnresolved",
        )

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
            return Wait(self.next_delay(), message)
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
        return Wait(self.next_delay(), message)

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

    # --- downloading -------------------------------------------------------------------------

    async def download(self) -> Done:
        task = dict(self.cp["task"])
        url = task.get("video_url") or ""
        expires = url_expires_at(url) if url else None
        if (
            not url
            or self.cp.get("refresh_url")
            or (expires is not None and expires < time.time() + URL_MARGIN)
        ):
            task = await self.refresh_url()
            url = task["video_url"]
        dest = await self.engine.output_path(self)
        if not dest.exists():  # already there: an earlier run renamed it in before stopping
            message = f"downloading: task {self.task_id} SUCCEEDED"
            await self.ctx.progress(0.9, message)
            try:
                await asyncio.to_thread(
                    download_with_retries,
                    url,
                    dest,
                    max_bytes=int(self.p.max_download_mb * 1024 * 1024),
                    retries=self.p.download_retries,
                    stop=lambda: self.ctx.cancelled,
                )
            except JobCancelled:
                if self.ctx.cancel_reason == "cancel":
                    raise await self.cancel() from None
                raise
            except VideoTooLarge as exc:
                raise PermanentError(
                    f"{self.name}: the video of task {self.task_id} is {exc}, over max_download_mb "
                    f"({self.p.max_download_mb:g} MB)",
                    hint=f"raise params.max_download_mb, then `dropflow retry {self.job.id}` "
                    "(the same task's video is downloaded; no new task is made)",
                    provider=self.provider.name,
                    code="VideoTooLarge",
                ) from exc
            except DownloadFailed as exc:
                self.cp["download_failures"] = int(self.cp.get("download_failures", 0)) + 1
                self.cp["refresh_url"] = exc.expired
                await self.save()
                await self.note(f"download of task {self.task_id} failed: {exc.reason}")
                raise RetryableError(
                    f"{self.name}: the download of task {self.task_id}'s video failed: {exc.reason}",
                    hint="retried automatically; the task id is kept, nothing is submitted again",
                    provider=self.provider.name,
                    code="DownloadFailed",
                ) from exc
        return await self.finish(dest, task)

    async def refresh_url(self) -> dict[str, Any]:
        """A fresh signed URL from the task (the old one expired or was refused)."""
        age = time.time() - float(self.cp["submitted_at"])
        fresh = None if age >= TASK_VALIDITY else await self.provider.fetch(self.task_id)
        if fresh is None or fresh.status != "SUCCEEDED" or not fresh.video_url:
            task_id = self.task_id
            await self.retire("EXPIRED" if fresh is None else fresh.status)
            why = f"{_clock(age)} after submission" if fresh is None else f"the task is now {fresh.status}"
            raise PermanentError(
                f"{self.name}: the video of task {task_id} was never downloaded and can no longer be "
                f"fetched ({why}; the provider keeps tasks and their URLs for 24 h)",
                hint=f"`dropflow retry {self.job.id}` makes it again (a new task, billed again)",
                provider=self.provider.name,
                code="VideoExpired",
            )
        task = {**self.cp["task"], "video_url": fresh.video_url}
        self.cp["task"] = task
        self.cp["refresh_url"] = False
        await self.save()
        return task

    async def finish(self, video: Path, task: dict[str, Any]) -> Done:
        """Write `<name>.json` beside the video; the job's result."""
        request = self.cp.get("request") or {}
        size = (await asyncio.to_thread(video.stat)).st_size
        record = {
            "video": video.name,
            "bytes": size,
            "task_id": self.task_id,
            "provider": self.cp.get("provider", self.provider.name),
            "offline": bool(self.cp.get("offline", self.provider.offline)),
            "model": self.cp.get("model"),
            "kind": {"t2v": "text-to-video", "i2v": "image-to-video"}.get(str(self.cp.get("kind")), None),
            "inputs": [Path(p).name for p in self.job.input_paths],
            "prompt": request.get("prompt", ""),
            "orig_prompt": task.get("orig_prompt") or request.get("prompt", ""),
            "actual_prompt": task.get("actual_prompt") or "",
            "negative_prompt": request.get("negative_prompt", ""),
            "image": _image_label(request.get("image")),
            "params": {
                k: request.get(k) for k in ("size", "resolution", "duration", "seed", "prompt_extend")
            },
            "usage": task.get("usage") or {},
            "times": {
                "submitted": _iso(self.cp.get("submitted_at")),
                "provider_submit_time": task.get("submit_time") or None,
                "provider_start_time": task.get("scheduled_time") or None,
                "provider_end_time": task.get("end_time") or None,
                "succeeded_seen": _iso(self.cp.get("remote_done_at")),
                "downloaded": _iso(time.time()),
            },
            "request_id": task.get("request_id") or None,
            "job_id": self.job.id,
        }
        if self.cp.get("job_file"):
            record["job_file"] = self.cp["job_file"]
        meta = await asyncio.to_thread(files.write_json, video.with_suffix(".json"), record)
        usage = {**(task.get("usage") or {}), "offline": record["offline"]}
        label = " (offline placeholder)" if record["offline"] else ""
        return Done([video, meta], usage=usage, message=f"succeeded: {video.name} ({_size(size)}){label}")

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


# --- the engine ----------------------------------------------------------------------------------


class VideoGenEngine(FileEngine):
    """`.txt` prompts, images with a same-named `.txt` and `.yaml` job files become `<name>.mp4` + `.json`."""

    name: ClassVar[str] = "video-gen"
    extensions: ClassVar[frozenset[str]] = ALL_SUFFIXES
    Params = VideoGenParams
    supports_cancel: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = True

    def __init__(self) -> None:
        # one engine instance per daemon (the router keeps it): these are the daemon's shared limits
        self._gates: dict[tuple[str, str], _ModelGate] = {}
        self._names: asyncio.Lock | None = None
        self._chosen: set[str] = set()  # output names chosen by this daemon (used when no store is at hand)

    def inputs_for(self, path: Path) -> list[Path] | None:
        return unit_inputs(path)

    def gate(self, provider: str, model: str) -> _ModelGate:
        return self._gates.setdefault((provider, model), _ModelGate())

    async def run(self, job: Job, ctx: JobContext) -> Result:
        """Submit, follow or download, depending on how far the job got.

        Raises InputError (unreadable unit), PermanentError (task FAILED / UNKNOWN, deadline,
        unresolved submission), RetryableError (429, network, download), AuthError, JobCancelled.
        """
        params = VideoGenParams.model_validate(job.params)
        # a task is followed through the provider that created it, even if the default changed since
        started = job.checkpoint.get("phase") in ("submitting", "remote", "download")
        provider = ctx.providers.videogen(job.checkpoint.get("provider") if started else job.provider)
        return await _Run(self, job, ctx, params, provider).run()

    async def output_path(self, run: _Run) -> Path:
        """`<name>.mp4` in outputs/video-gen[/<batch>], chosen once per job and saved in its checkpoint.

        A name is free when neither the video nor its `.json` exists and no other unfinished job
        chose it (they are written later, so the disk alone cannot tell).
        """
        chosen = run.cp.get("output")
        if chosen and _ours(Path(chosen), run.task_id):
            return Path(chosen)
        if self._names is None:
            self._names = asyncio.Lock()
        async with self._names:
            store = run.ctx.tasks
            if store is None:
                taken = set(self._chosen)
            else:
                # failed jobs too: a retry of one writes under the name it chose
                jobs = await store.list(engine=run.job.engine, status=(*ACTIVE, "failed"))
                taken = {
                    str(j.checkpoint["output"])
                    for j in jobs
                    if j.id != run.job.id and j.checkpoint.get("output")
                }
            folder = run.ctx.output_dir / run.job.batch if run.job.batch else run.ctx.output_dir
            stem = Path(run.job.input_path).stem
            candidate, n = folder / f"{stem}.mp4", 2
            while candidate.exists() or candidate.with_suffix(".json").exists() or str(candidate) in taken:
                candidate, n = folder / f"{stem} ({n}).mp4", n + 1
            run.cp["output"] = str(candidate)
            await run.save()
            self._chosen.add(str(candidate))
        return candidate


def _ours(video: Path, task_id: str) -> bool:
    """Whether a name chosen earlier still belongs to this job: its `.json`, if written, names our task."""
    meta = video.with_suffix(".json")
    if not meta.exists():
        return True
    try:
        return bool(json.loads(meta.read_text(encoding="utf-8")).get("task_id") == task_id)
    except (OSError, ValueError, AttributeError):
        return False
