"""`mode: bailian`: the annotate engine's two stages run by Bailian's hosted video analysis.

One job follows one remote task across short runs, waiting between them without a worker:

    run 1   check the video and the params against the service's rules (`bailian_request.py`),
            before anything is uploaded or paid; get a URL the service can fetch: the
            `<video>.url` sidecar, or an upload to the user's OSS bucket (its object key is saved
            once done, and an object of the same size already there is not uploaded again) and a
            signed URL; write a "submitting" marker, submit, save the task id   -> Wait
    run n   poll: PENDING / RUNNING                                              -> Wait
    run m   SUCCESSED: `<name>.json` / `<name>.txt` from the results in the poll's own reply
            (nothing to download, so no link can expire first; `bailian_output.py`) -> Done

Never paid twice: the task id is committed (checkpoint + the job's remote task id) before the
job waits on it; a restarted daemon resumes polling it. A crash inside the create call leaves the
marker without an id: the job then fails with that explanation instead of submitting again, and
`dropflow retry` submits anew (the `deduplicationId` sent may let the service spot the repeat;
unconfirmed, so nothing relies on it).

A user's cancel after the submission asks the service to cancel the task: one still PENDING ends
CANCELED and bills nothing; one that started (or ended) is refused, and the job is cancelled
locally saying the task may still complete and bill (`dropflow retry` follows it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.engine.annotate.asr import clock
from dropflow.engine.annotate.bailian_output import job_usage, shots, write_outputs
from dropflow.engine.annotate.bailian_request import check, frame_interval, read_url, request_fields
from dropflow.engine.annotate.sidecars import URL_SUFFIX, read_sidecars, sidecar
from dropflow.engine.annotate.templates import find_file
from dropflow.engine.base import Done, JobContext, Result, Wait
from dropflow.engine.errors import (
    AuthError,
    ConfigError,
    DropflowError,
    InputError,
    JobCancelled,
    PermanentError,
    ProviderError,
    RetryableError,
)
from dropflow.engine.providers import bailian_rules as rules

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job
    from dropflow.engine.annotate.params import AnnotateParams
    from dropflow.engine.providers.bailian import AnalysisTask, BailianAnalysis


class HostedRun:
    """One run of a `mode: bailian` job; `cp` is its checkpoint, saved whole after each change."""

    def __init__(self, job: Job, ctx: JobContext, params: AnnotateParams) -> None:
        from dropflow.engine.providers.bailian import BailianAnalysis

        self.job, self.ctx, self.p = job, ctx, params
        self.video = Path(job.input_path)
        self.name = self.video.name
        self.interval = frame_interval(params)
        self.cp: dict[str, Any] = dict(job.checkpoint)
        provider = ctx.providers.video_analysis()
        if not isinstance(provider, BailianAnalysis):  # a test's or a plugin's stand-in
            raise ConfigError("mode: bailian needs the bailian provider", hint="check providers.bailian")
        self.service: BailianAnalysis = provider
        if not self.cp.get("phase") and job.remote_task_id:
            # a task id without engine state (should not happen): follow it rather than pay again
            self.cp.update(phase="remote", task_id=job.remote_task_id, submitted_at=time.time())

    async def save(self, *, remote_task_id: str | None = None) -> None:
        await self.ctx.save(self.cp, remote_task_id=remote_task_id)

    async def note(self, message: str) -> None:
        if self.ctx.tasks is not None:
            with contextlib.suppress(Exception):  # history is a nicety; never fail a job over it
                await self.ctx.tasks.add_event(self.job.id, "note", message)

    async def run(self) -> Result:
        """Raises InputError / ConfigError (before anything is uploaded or paid), AuthError,
        PermanentError (refused, failed, refused content, unresolved submission), RetryableError,
        JobCancelled (after cancelling the task at the service when it still could be)."""
        if self.ctx.cancel_reason is not None:
            raise await self.stop()
        self.cp.setdefault("started_at", time.time())
        try:
            if self.cp.get("phase") != "remote":
                await self.submit()
                result: Result = Wait(
                    self.p.bailian.poll_first_seconds,
                    f"submitted: task {self.cp['task_id']}",
                    job_usage(self.p, self.cp),
                )
            else:
                result = await self.follow()
        except ProviderError as exc:
            # the SDK layer knows the call, not the file: name it, as every other error of a job does
            if not exc.message.startswith(f"{self.name}: "):
                exc.message = f"{self.name}: {exc.message}"
                exc.args = (exc.message,)
            raise
        if isinstance(result, Wait) and self.ctx.cancel_reason is not None:
            raise await self.stop()  # asked while this run was under way: act now, not a wait later
        return result

    # --- cancelling ------------------------------------------------------------------------------

    async def stop(self) -> JobCancelled:
        """Act on a user's cancel or pause; what it did, as the job's message.

        A pause leaves the task running (resuming follows it again). A cancel asks the service to
        cancel a submitted task; whatever the answer, the job ends cancelled. Never raises.
        """
        reason, phase, task_id = self.ctx.cancel_reason, self.cp.get("phase"), self.cp.get("task_id")
        if reason != "cancel":
            return JobCancelled(
                f"{reason}d; a submitted Bailian task runs on, and is followed again on resume"
            )
        if phase == "submitting":
            message = (
                "cancelled; an earlier submission was interrupted and its task id never came back: a "
                "Bailian task may exist and bill (check the Bailian console's task list)"
            )
        elif phase != "remote" or not task_id:
            message = "cancelled before anything was submitted (nothing billed)"
        else:
            message = await self.cancel_task(str(task_id))
        self.cp["cancelled"] = {"at": time.time(), "message": message}
        with contextlib.suppress(Exception):  # the job ends cancelled even if this record is lost
            await self.save()
        return JobCancelled(message)

    async def cancel_task(self, task_id: str) -> str:
        """Cancel the task at the service; the job's message saying what came of it."""
        try:
            await self.service.cancel(task_id)
        except DropflowError as exc:
            refused = isinstance(exc, PermanentError) and not isinstance(exc, AuthError)
            why = (
                f"Bailian would not cancel it: {exc.message}"
                if refused
                else f"the cancel failed: {exc.message}"
            )
            message = (
                f"cancelled; Bailian task {task_id} could not be cancelled ({why}); it may still complete "
                f"and bill. dropflow stopped following it; `dropflow retry {self.job.id}` follows it again "
                f"(the service keeps results about {rules.TASK_RESULT_DAYS} days)"
            )
            self.ctx.log.warning("job %d: %s", self.job.id, message)
            return message
        seen = self.cp.get("status")
        self.cp.update(phase="retired", status=rules.CANCEL_STATUS)  # a retry submits anew
        await self.note(f"Bailian task {task_id}: cancelled by dropflow")
        if seen in rules.CANCELLABLE_STATUSES:
            return f"cancelled; Bailian task {task_id} was cancelled at the service while {seen} (nothing billed)"
        # the service took the cancel of a task last seen started: whether that bills is unconfirmed
        return (
            f"cancelled; Bailian task {task_id} was cancelled at the service, but it was last seen "
            f"{seen or 'in an unknown state'}: what it analysed before may bill"
        )

    # --- before the task -------------------------------------------------------------------------

    async def video_url(self) -> str:
        """The `.url` sidecar's URL, or the uploaded video's signed URL (uploading it first)."""
        listed = next((Path(x) for x in self.job.input_paths[1:] if x.endswith(URL_SUFFIX)), None)
        url_file = listed or sidecar(self.video, (URL_SUFFIX,))
        if url_file is not None and url_file.is_file():
            url = read_url(url_file)
            self.cp.update(url_source="sidecar", video_ref=url.split("?", 1)[0])
            return url
        key = (
            self.cp.get("object_key")
            or f"{self.service.settings.oss_prefix}{self.job.content_hash[:16]}/{self.name}"
        )
        if not self.cp.get("uploaded"):
            size = self.video.stat().st_size
            if not await self.service.uploaded(key, size):  # a crash after the upload, before its record
                await self.ctx.progress(0.02, f"uploading {self.name} to OSS")
                await self.service.upload(self.video, key)
                await self.note(f"uploaded {self.name} to OSS as {key}")
            self.cp.update(
                object_key=key, uploaded=True, url_source="oss", video_ref=self.service.object_url(key)
            )
            await self.save()
        expiry = self.service.settings.url_expiry_seconds
        url = await asyncio.to_thread(self.service.sign, key, expiry)
        self.cp["url_valid_until"] = time.time() + expiry
        return url

    async def role_photo_urls(self) -> dict[str, list[str]]:
        """Each role's photo URLs: URLs as given, local photos uploaded once and signed."""
        out: dict[str, list[str]] = {}
        sidecars = read_sidecars(self.p, self.video, [Path(x) for x in self.job.input_paths[1:]])
        places = [p for p in (sidecars.roles_dir, self.video.parent, self.ctx.prompts_dir) if p is not None]
        done: dict[str, str] = dict(self.cp.get("photos", {}))
        for role in sidecars.roles:
            urls = []
            for ref in role.photos:
                if ref.startswith(rules.URL_SCHEMES):
                    urls.append(ref)
                    continue
                path = find_file(ref, places)
                if path is None:
                    raise InputError(
                        f"reference photo {ref!r} of role {role.name!r} not found",
                        hint="put the photo beside the video or in the prompts folder, or give its URL",
                    )
                self.ctx.check_readable(path, what=f"reference photo of role {role.name!r}")
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                key = f"{self.service.settings.oss_prefix}photos/{digest}{path.suffix.lower()}"
                if key not in done.values():
                    await self.service.upload(path, key)
                    done[ref] = key
                    self.cp["photos"] = done
                    await self.save()
                urls.append(
                    await asyncio.to_thread(self.service.sign, key, self.service.settings.url_expiry_seconds)
                )
            out[role.name] = urls
        return out

    async def submit(self) -> None:
        """Check, upload, mark "submitting", create the task and save its id."""
        if self.cp.get("phase") == "submitting" and not self.cp.get("resubmit_ok"):
            raise await self.unresolved("the daemon stopped during the submission")
        found = await asyncio.to_thread(check, self.video, self.p)  # nothing uploaded or paid before this
        roles_urls = await self.role_photo_urls()
        request = request_fields(self.job, self.p, self.ctx.prompts_dir, roles_urls)
        url = await self.video_url()
        if self.ctx.cancel_reason is not None:  # the last moment a cancel costs nothing
            raise await self.stop()
        self.cp.update(
            phase="submitting",
            since=time.time(),
            request=request,
            probe=dataclasses.asdict(found),
            model=self.p.model,
        )
        await self.save()
        try:
            task_id, request_id = await self.service.submit({**request, "videoUrl": url})
        except DropflowError as exc:
            if _never_created(exc):
                self.cp["phase"] = "idle"
                await self.save()
                raise
            raise await self.unresolved(
                f"the submission failed without a clear answer ({exc.message})"
            ) from exc
        self.ctx.log.info("job %d: submitted Bailian task %s for %s", self.job.id, task_id, self.name)
        now = time.time()
        self.cp.update(
            phase="remote",
            task_id=task_id,
            submit_request_id=request_id,
            submitted_at=now,
            status="PENDING",
            polls=0,
        )
        for k in ("resubmit_ok", "since"):
            self.cp.pop(k, None)
        await self.save(remote_task_id=task_id)
        await self.ctx.progress(0.05, f"submitted: task {task_id}")

    async def unresolved(self, why: str) -> PermanentError:
        self.cp["resubmit_ok"] = True
        await self.save()
        return PermanentError(
            f"{self.name}: {why}; a Bailian task may exist and bill, but its id never came back, so dropflow "
            "will not submit it again on its own",
            hint=f"check the Bailian console's task list; to submit again, run `dropflow retry {self.job.id}`",
            provider="bailian",
            code="SubmissionUnresolved",
        )

    # --- following the task ----------------------------------------------------------------------

    def next_delay(self) -> float:
        b = self.p.bailian
        return min(b.poll_max_seconds, b.poll_first_seconds * 1.5 ** int(self.cp.get("polls", 0)))

    async def follow(self) -> Result:
        task_id = str(self.cp["task_id"])
        elapsed = time.time() - float(self.cp.get("submitted_at", time.time()))
        try:
            task = await self.service.fetch(task_id)
        except RetryableError as exc:
            # a network blip must not cost the job: only the deadline ends a run of failed polls
            if elapsed > self.p.bailian.deadline_minutes * 60:
                raise self.deadline(task_id) from exc
            self.cp["polls"] = int(self.cp.get("polls", 0)) + 1
            await self.save()
            return Wait(
                self.next_delay(), f"task {task_id}: status check failed ({exc.message}); trying again"
            )
        if task.status != self.cp.get("status"):
            self.cp["status"] = task.status
            await self.note(f"Bailian task {task_id}: {task.status}")
        if task.refused_content:
            self.cp["phase"] = "retired"
            await self.save()
            raise PermanentError(
                f"{self.name}: Bailian refused the content of this video ({task.error_code}): "
                f"{task.error_message or 'it trips the service security policy'}",
                hint="the service will not analyse this video; nothing to retry unless the video changes",
                provider="bailian",
                code=task.error_code,
                request_id=task.request_id,
            )
        if task.status == "SUCCESSED":
            return await self.finish(task)
        if task.status in ("FAILED", "CANCELED", "UNKNOWN"):
            self.cp["phase"] = "retired"
            await self.save()
            what = {
                "FAILED": "failed at the service",
                "CANCELED": "was cancelled at the service (not by dropflow)",
                "UNKNOWN": f"is unknown to the service (results are kept about {rules.TASK_RESULT_DAYS} days)",
            }[task.status]
            raise PermanentError(
                f"{self.name}: Bailian task {task_id} {what}: {task.error_code or task.status}: "
                f"{task.error_message or 'no message'}",
                hint="a video the service cannot fetch or read fails here: check the .url sidecar or the OSS "
                f"settings, then `dropflow retry {self.job.id}` to submit it again",
                provider="bailian",
                code=task.error_code or f"Task{task.status.title()}",
                request_id=task.request_id,
            )
        if elapsed > self.p.bailian.deadline_minutes * 60:
            raise self.deadline(task_id)
        self.cp["polls"] = int(self.cp.get("polls", 0)) + 1
        await self.save()
        running = task.status == "RUNNING"
        fraction = 0.15 + 0.7 * (1 - math.exp(-elapsed / 300)) if running else 0.1
        message = f"task {task_id} {task.status} ({clock(elapsed)})"
        await self.ctx.progress(fraction, message)
        return Wait(self.next_delay(), message, job_usage(self.p, self.cp))

    def deadline(self, task_id: str) -> PermanentError:
        return PermanentError(
            f"{self.name}: Bailian task {task_id} is unfinished after {self.p.bailian.deadline_minutes:g} min; "
            "dropflow stopped following it (it may still complete and bill)",
            hint=f"`dropflow retry {self.job.id}` follows the same task again; raise params.bailian.deadline_minutes",
            provider="bailian",
            code="DeadlineExceeded",
        )

    # --- the results -----------------------------------------------------------------------------

    async def finish(self, task: AnalysisTask) -> Done:
        self.cp.update(phase="done", finished_at=time.time())
        usage = job_usage(self.p, self.cp, task)
        outputs = await asyncio.to_thread(
            write_outputs,
            task,
            usage,
            job=self.job,
            p=self.p,
            cp=self.cp,
            output_dir=self.ctx.output_dir,
            workspace_id=self.service.settings.workspace_id,
        )
        await self.save()
        return Done(
            outputs,
            usage=usage,
            message=f"Bailian task {task.task_id}: {len(shots(task.output))} shot(s), {usage['frames_sent']} "
            f"frames at {self.interval:g} s",
        )


def _never_created(exc: DropflowError) -> bool:
    """True when a failed submission certainly made no task (the service answered, or nothing was sent)."""
    if isinstance(exc, InputError | AuthError | ConfigError):
        return True
    if not isinstance(exc, ProviderError):
        return False
    if exc.code == "MalformedResponse":
        return False  # answered, but garbled: the task may exist
    if exc.status is not None and exc.status > 0:
        return exc.status not in (502, 504)
    return exc.code.startswith(("ClientConnector", "ConnectionRefused", "ConnectError"))
