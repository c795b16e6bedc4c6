"""A SUCCEEDED task's video, brought home: the task is paid for, so nothing that fails on the way
abandons it while the provider can still hand the video out (24 h after submission).

A failed download, a status check that fails while the signed URL is refreshed, a full disk, even
an unexpected error: each is noted in the job's history and tried again on the polling schedule,
without using up the job's attempts (attempts are for work that can be paid for again; this one
cannot). What ends it: the video is written; it is larger than `max_download_mb` (the user's
limit: the job fails and a retry downloads the same task); the task can no longer give its video
(expired or forgotten: the job fails and says a retry pays again); or the user cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from dropflow.engine.base import Done, Result, Wait
from dropflow.engine.errors import DropflowError, JobCancelled, PermanentError, RetryableError
from dropflow.engine.videogen.download import (
    URL_MARGIN,
    DownloadFailed,
    VideoTooLarge,
    download_with_retries,
    url_expires_at,
)
from dropflow.engine.videogen.record import finish

if TYPE_CHECKING:
    from dropflow.engine.videogen.run import Run

TASK_VALIDITY = 24 * 3600.0  # DashScope forgets a task id (and its video URL) after a day


class _Again(Exception):
    """This try failed in a way the next one may not: wait and try again."""

    def __init__(self, why: str, *, refresh: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.refresh = refresh


async def deliver(run: Run) -> Result:
    """Download the video of the task the checkpoint holds as SUCCEEDED and write its record.

    Raises PermanentError (VideoTooLarge, VideoExpired), JobCancelled; returns Wait to try again.
    """
    try:
        return await _deliver(run)
    except (JobCancelled, PermanentError):
        raise
    except _Again as exc:
        return await _again(run, exc.why, refresh=exc.refresh)
    except RetryableError as exc:  # the status check behind a URL refresh
        return await _again(run, exc.message)
    except DropflowError:
        raise
    except OSError as exc:  # outputs/ full or not writable: the video must still come home
        return await _again(run, f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        # a bug must not cost a paid video: it is logged with its traceback and tried again
        run.ctx.log.exception("job %d: unexpected error while downloading task %s", run.job.id, run.task_id)
        return await _again(run, f"unexpected {type(exc).__name__}: {exc}")


async def _again(run: Run, why: str, *, refresh: bool = False) -> Wait:
    failures = int(run.cp.get("download_failures", 0)) + 1
    run.cp["download_failures"] = failures
    run.cp["refresh_url"] = bool(run.cp.get("refresh_url")) or refresh
    with contextlib.suppress(Exception):  # the next run tries anyway; the phase is already saved
        await run.save()
    await run.note(f"download of task {run.task_id} failed: {why}")
    p = run.p
    delay = min(p.poll_max_seconds, p.poll_first_seconds * p.poll_growth ** min(failures, 30))
    message = (
        f"downloading: task {run.task_id} SUCCEEDED; try {failures} failed ({why[:200]}); "
        f"trying again in {delay:.0f}s"
    )
    return Wait(delay, message, usage=run.usage(dict(run.cp.get("task") or {}).get("usage")))


async def _deliver(run: Run) -> Done:
    task = dict(run.cp["task"])
    url = task.get("video_url") or ""
    expires = url_expires_at(url) if url else None
    if not url or run.cp.get("refresh_url") or (expires is not None and expires < time.time() + URL_MARGIN):
        task = await refresh_url(run)
        url = task["video_url"]
    dest = await run.engine.output_path(run)
    if not dest.exists():  # already there: an earlier run renamed it in before stopping
        await run.ctx.progress(0.9, f"downloading: task {run.task_id} SUCCEEDED")
        try:
            await asyncio.to_thread(
                download_with_retries,
                url,
                dest,
                max_bytes=int(run.p.max_download_mb * 1024 * 1024),
                retries=run.p.download_retries,
                stop=lambda: run.ctx.cancelled,
            )
        except JobCancelled:
            if run.ctx.cancel_reason == "cancel":
                raise await run.cancel() from None
            raise
        except VideoTooLarge as exc:
            error = PermanentError(
                f"{run.name}: the video of task {run.task_id} is {exc}, over max_download_mb "
                f"({run.p.max_download_mb:g} MB)",
                hint=f"raise params.max_download_mb, then `dropflow retry {run.job.id}` "
                "(the same task's video is downloaded; no new task is made)",
                provider=run.provider.name,
                code="VideoTooLarge",
            )
            error.usage = run.usage(task.get("usage"))
            raise error from exc
        except DownloadFailed as exc:
            raise _Again(exc.reason, refresh=exc.expired) from exc
    return await finish(run, dest, task)


async def refresh_url(run: Run) -> dict[str, Any]:
    """A fresh signed URL from the task (the old one expired or was refused).

    Raises PermanentError when the task can no longer give its video; RetryableError / _Again
    when the status check failed or came back without a URL (tried again later).
    """
    age = time.time() - float(run.cp["submitted_at"])
    fresh = None if age >= TASK_VALIDITY else await run.provider.fetch(run.task_id)
    if fresh is not None and fresh.status == "SUCCEEDED" and not fresh.video_url:
        raise _Again(f"task {run.task_id} is SUCCEEDED but its status came without a video URL")
    if fresh is None or fresh.status != "SUCCEEDED" or not fresh.video_url:
        task_id, usage = run.task_id, run.usage(dict(run.cp.get("task") or {}).get("usage"))
        await run.retire("EXPIRED" if fresh is None else fresh.status)
        why = f"{age / 3600:.0f} h after submission" if fresh is None else f"the task is now {fresh.status}"
        error = PermanentError(
            f"{run.name}: the video of task {task_id} was never downloaded and can no longer be "
            f"fetched ({why}; the provider keeps tasks and their URLs for 24 h)",
            hint=f"`dropflow retry {run.job.id}` makes it again (a new task, billed again)",
            provider=run.provider.name,
            code="VideoExpired",
        )
        error.usage = usage  # paid, though never received
        raise error
    task = {**run.cp["task"], "video_url": fresh.video_url}
    run.cp["task"] = task
    run.cp["refresh_url"] = False
    await run.save()
    return task
