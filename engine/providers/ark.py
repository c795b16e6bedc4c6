"""Doubao Seedance video generation on Volcengine Ark, through the official SDK
(`volcenginesdkarkruntime.AsyncArk`, its content-generation tasks).

On the wire (SDK 5.0.54, `resources/content_generation/tasks.py`): ``POST
/contents/generations/tasks`` with ``{model, content: [text, image_url + role], ratio,
resolution, duration, seed, camera_fixed, watermark}`` answers ``{id}``; ``GET .../tasks/{id}``
answers the task (``status``: queued, running, succeeded, failed, cancelled, expired; ``content.
video_url`` once succeeded, valid 24 h; ``usage.completion_tokens``, what is billed; ``error``
when failed); ``DELETE .../tasks/{id}`` cancels a queued task and *deletes* a finished one.
Errors are ``{"error": {code, message, param, type}}`` with the HTTP status; the key is a bearer
token (``ARK_API_KEY``).

The SDK re-sends a request after a dropped connection, a timeout, a 429 or a 5xx
(`_base_client._request`); for a create call that could start a second, billed task, so the
client is made with ``max_retries=0`` and the video-gen engine's own schedule does the retrying
(it knows which failures may have created a task). Local images go inline as base64 data URLs:
Ark fetches URLs itself, and a local file has none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from volcenginesdkarkruntime import AsyncArk
from volcenginesdkarkruntime._exceptions import (
    ArkAPIConnectionError,
    ArkAPIResponseValidationError,
    ArkAPIStatusError,
    ArkAPITimeoutError,
)
from volcenginesdkarkruntime.types.content_generation.content_generation_task import ContentGenerationTask
from volcenginesdkarkruntime.types.content_generation.content_generation_task_id import (
    ContentGenerationTaskID,
)

from dropflow.daemon.core.config import ArkSettings
from dropflow.engine.errors import AuthError, InputError, PermanentError, ProviderError, RetryableError
from dropflow.engine.providers.ark_models import IMAGE_MAX_BYTES
from dropflow.engine.providers.base import RateLimiter, TaskStatus, VideoGenRequest, VideoTask
from dropflow.engine.providers.common import classify, require_key, retry_after, scrub

PROVIDER = "ark"
BASE_URL = "https://ark.cn-beijing.volces.com/api/v3"  # the SDK's own default (`_constants.BASE_URL`)
_REMOTE = ("http://", "https://", "data:")
_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
_MIME.update({".bmp": "image/bmp", ".gif": "image/gif", ".tif": "image/tiff", ".tiff": "image/tiff"})

# Ark's task statuses -> ours. "expired": the task did not finish within its execution window
# (`execution_expires_after`, 48 h by default): nothing was made or billed, like a failure.
_STATUS: dict[str, TaskStatus] = {
    "queued": "PENDING",
    "running": "RUNNING",
    "succeeded": "SUCCEEDED",
    "failed": "FAILED",
    "expired": "FAILED",
    "cancelled": "CANCELED",
}

# The key is fine, the account cannot make this call: (message, hint) per Ark error code
# (Ark's error-code page, docs 82379/1299023).
_ACCOUNT: dict[str, tuple[str, str]] = {
    "AccountOverdueError": (
        "the Volcengine account is overdue (arrears)",
        "the key is fine: top up the account in the Volcengine billing console",
    ),
    "SetLimitExceeded": (
        "the account's own inference limit for this model was reached (Ark's 'safe experience "
        "mode' paused the model)",
        "the key is fine: raise or turn off the limit for the model in the Ark console "
        "(Model activation), then `dropflow retry` the job",
    ),
    "InvalidEndpointOrModel.ModelNotOpen": (
        "the account has not activated this model",
        "the key is fine: activate the model in the Ark console (Model activation)",
    ),
}
_KEY_HINT = "Ark keys come from the Ark console's API Key management (region cn-beijing by default)"

T = TypeVar("T")


def _iso(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(int(epoch)).astimezone().isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _malformed(what: str, *, task_id: str = "") -> RetryableError:
    about = f" of task {task_id}" if task_id else ""
    return RetryableError(
        f"{PROVIDER} answered the call{about} with {what}",
        hint="a garbled answer (proxy, gateway or service trouble); retried automatically",
        provider=PROVIDER,
        code="MalformedResponse",
    )


def data_url(path: Path) -> str:
    """A local image as a base64 data URL (``data:image/png;base64,...``). Blocking.

    Raises InputError: missing, or over Ark's 30 MB.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"the image for image-to-video cannot be read: {path} ({exc.strerror})") from exc
    if len(data) > IMAGE_MAX_BYTES:
        raise InputError(f"{path.name} is {len(data):,} bytes; Ark takes images of at most 30 MB")
    mime = _MIME.get(path.suffix.lower(), "image/jpeg")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class ArkVideoGen:
    """Seedance text-to-video / image-to-video (first, and last, frame) tasks on Ark."""

    name: ClassVar[str] = PROVIDER
    offline: ClassVar[bool] = False
    model_family: ClassVar[str] = "seedance"

    def __init__(self, settings: ArkSettings) -> None:
        """Raises AuthError when no key is configured."""
        self._key = require_key(PROVIDER, settings)
        self._base_url = (settings.base_url or BASE_URL).rstrip("/")
        self._timeout = settings.timeout_seconds
        self._limiter = RateLimiter(settings.requests_per_minute, settings.concurrency)
        self._client: tuple[AsyncArk, asyncio.AbstractEventLoop] | None = None

    def _ark(self) -> AsyncArk:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client[1] is loop:  # connections are loop-bound
            return self._client[0]
        client = AsyncArk(api_key=self._key, base_url=self._base_url, timeout=self._timeout, max_retries=0)
        self._client = (client, loop)
        return client

    # --- the calls -------------------------------------------------------------------------------

    async def _call(self, fn: Callable[[AsyncArk], Awaitable[T]], *, task_id: str = "") -> T:
        """One SDK call under the rate limiter, its failures mapped onto our error family."""
        async with self._limiter:
            try:
                return await fn(self._ark())
            except ArkAPIStatusError as exc:
                raise self._status_error(exc) from exc
            except ArkAPITimeoutError as exc:
                raise RetryableError(
                    f"{PROVIDER} request timed out (after {self._timeout:g} s)",
                    hint="check the network or providers.ark.base_url; retried automatically",
                    provider=PROVIDER,
                    code="ReadTimeout",
                ) from exc
            except ArkAPIConnectionError as exc:
                # the cause tells "never connected" (ConnectError) from "sent, then lost"
                cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "ConnectionError"
                raise RetryableError(
                    f"{PROVIDER} request failed: connection failed ({cause})",
                    hint="check the network or providers.ark.base_url; retried automatically",
                    provider=PROVIDER,
                    code=cause,
                ) from exc
            except ArkAPIResponseValidationError as exc:
                raise _malformed("a reply that is not what the API describes", task_id=task_id) from exc
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                # the SDK decodes a 200 without checks: an empty or truncated JSON body
                raise _malformed(
                    f"a reply that cannot be read ({type(exc).__name__})", task_id=task_id
                ) from exc

    def _status_error(self, exc: ArkAPIStatusError) -> ProviderError:
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        code = str(body.get("code") or "")
        if body:
            message = str(body.get("message") or "")
        elif "<html" in str(exc.body or "")[:512].lower():
            message = "an HTML page instead of JSON"
        else:
            message = str(exc.body or "")[:300]
        message = scrub(message, self._key)
        headers = exc.response.headers
        common: dict[str, Any] = {
            "provider": PROVIDER,
            "code": code,
            "status": status,
            "request_id": headers.get("x-request-id") or exc.request_id or "",
        }
        if code in _ACCOUNT:
            text, hint = _ACCOUNT[code]
            return PermanentError(f"{PROVIDER}: {text} ({code})", hint=hint, **common)
        if "SensitiveContentDetected" in code or "RiskDetection" in code:
            where = "the prompt" if "Text" in code else "an image" if "Image" in code else "the input"
            return PermanentError(
                f"{PROVIDER} content moderation refused {where} ({code})",
                hint="the prompt or an image was flagged; change it, retrying will not help",
                **common,
            )
        return classify(
            PROVIDER,
            status,
            code,
            message,
            request_id=common["request_id"],
            retry_after=retry_after(dict(headers)),
            secret=self._key,
            key_hint=_KEY_HINT,
        )

    # --- the contract ---------------------------------------------------------------------------

    async def prepare(self, request: VideoGenRequest) -> VideoGenRequest:
        """Local first / last frames become base64 data URLs; creates no task.

        Raises InputError when a local image is missing, unreadable or over 30 MB.
        """
        image, last = request.image, request.last_image
        if image and not image.startswith(_REMOTE):
            image = await asyncio.to_thread(data_url, Path(image.removeprefix("file://")))
        if last and not last.startswith(_REMOTE):
            last = await asyncio.to_thread(data_url, Path(last.removeprefix("file://")))
        if (image, last) == (request.image, request.last_image):
            return request
        return dataclasses.replace(request, image=image, last_image=last)

    async def submit(self, request: VideoGenRequest) -> VideoTask:
        """One create call. Raises RetryableError, AuthError, PermanentError; InputError for a
        local image that cannot be sent."""
        request = await self.prepare(request)  # a no-op when the caller prepared it already
        content: list[Any] = []
        if request.prompt:
            content.append({"type": "text", "text": request.prompt})
        for ref, role in ((request.image, "first_frame"), (request.last_image, "last_frame")):
            if ref:
                content.append({"type": "image_url", "image_url": {"url": ref}, "role": role})
        options: dict[str, Any] = {
            k: v
            for k, v in {
                "ratio": request.ratio,
                "resolution": request.resolution.lower() if request.resolution else None,
                "duration": request.duration,
                "seed": request.seed,
                "camera_fixed": request.camera_fixed,
                "watermark": request.watermark,
            }.items()
            if v is not None
        }
        created = await self._call(
            lambda ark: ark.content_generation.tasks.create(model=request.model, content=content, **options)
        )
        task_id = getattr(created, "id", None) if isinstance(created, ContentGenerationTaskID) else None
        if not isinstance(task_id, str) or not task_id:
            # answered, but not with a task id: the task may exist (the engine treats it so)
            raise _malformed("a reply without a task id")
        return VideoTask(task_id=task_id, status="PENDING")

    async def fetch(self, task_id: str) -> VideoTask:
        """Raises RetryableError (also for a reply that is not this task's status, and a succeeded
        task without its video URL), AuthError, PermanentError."""
        try:
            task = await self._call(
                lambda ark: ark.content_generation.tasks.get(task_id=task_id), task_id=task_id
            )
        except PermanentError as exc:
            if exc.status == 404 and not isinstance(exc, AuthError):
                return VideoTask(task_id=task_id, status="UNKNOWN", code=exc.code, message=exc.message)
            raise
        return self._task(task, task_id)

    async def cancel(self, task_id: str) -> bool:
        """True when the task was queued and is now cancelled.

        Ark's DELETE cancels a queued task but *deletes* a finished one (its video with it), so
        the task is read first and only a queued one is sent the DELETE. A task that starts
        running between the two calls is refused by Ark (running tasks cannot be cancelled).
        """
        task = await self.fetch(task_id)
        if task.status != "PENDING":
            return False
        try:
            await self._call(
                lambda ark: ark.content_generation.tasks.delete(task_id=task_id), task_id=task_id
            )
        except AuthError:
            raise
        except PermanentError:
            return False
        return True

    async def aclose(self) -> None:
        """Close the SDK's connections. Never raises."""
        found, self._client = self._client, None
        if found is not None and found[1] is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await found[0].close()

    # --- reading a task -------------------------------------------------------------------------

    @staticmethod
    def _task(task: Any, expected: str) -> VideoTask:
        """Our task from the SDK's; a reply that is not a status of `expected` is a retryable
        MalformedResponse (taken at its word it would fail the job and pay twice)."""
        if not isinstance(task, ContentGenerationTask):
            raise _malformed("a reply that is not JSON", task_id=expected)
        raw = str(getattr(task, "status", "") or "")
        if getattr(task, "id", None) != expected:
            raise _malformed(f"a reply about task {getattr(task, 'id', None)!r}", task_id=expected)
        if raw not in _STATUS:
            raise _malformed(f"task status {raw or 'missing'}", task_id=expected)
        content = getattr(task, "content", None)
        video_url = str(getattr(content, "video_url", "") or "") if content is not None else ""
        if raw == "succeeded" and not video_url:
            raise _malformed("succeeded without a video_url", task_id=expected)
        error = getattr(task, "error", None)
        code = str(getattr(error, "code", "") or "") if error is not None else ""
        message = str(getattr(error, "message", "") or "") if error is not None else ""
        if raw == "expired" and not code:
            code, message = "TaskExpired", "the task did not finish within its execution window"
        usage: dict[str, Any] = {}
        billed = getattr(task, "usage", None)
        for key in ("completion_tokens", "total_tokens"):
            if (value := getattr(billed, key, None)) is not None:
                usage[key] = value
        if usage:  # what the tokens were billed for, as the task reports it
            for key in ("duration", "resolution", "ratio", "framespersecond"):
                if (value := getattr(task, key, None)) is not None:
                    usage[key] = value
        done = raw in ("succeeded", "failed", "expired", "cancelled")
        return VideoTask(
            task_id=expected,
            status=_STATUS[raw],
            video_url=video_url or None,
            code=code,
            message=message,
            actual_prompt=str(getattr(task, "revised_prompt", "") or ""),
            submit_time=_iso(getattr(task, "created_at", None)),
            end_time=_iso(getattr(task, "updated_at", None)) if done else "",
            usage=usage,
        )
