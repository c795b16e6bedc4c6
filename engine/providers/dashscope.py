"""DashScope (Qwen-VL, Qwen text models, wan video synthesis) through the real `dashscope` SDK.

The SDK's classic call objects do not raise on HTTP errors: they return a response with
`status_code`, `code`, `message`, `request_id`; `_check` turns those into our error family.
Transport failures (aiohttp / requests exceptions, timeouts) are wrapped at the boundary.

`dashscope.base_http_api_url` is module-global and read when each request is built. We set it
right before each SDK coroutine starts: the URL is captured synchronously, before the first
suspension, so providers with different base URLs in one event loop do not race. Which URL (the
key's region) and what a reply must look like are in `dashscope_wire.py`; what each model accepts
in `dashscope_models.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any, ClassVar, cast, get_args

import aiohttp
import dashscope
import requests
from aiohttp.helpers import get_env_proxy_for_url
from dashscope.aigc.video_synthesis import AioVideoSynthesis
from dashscope.api_entities.aio_session import close_shared_aio_session, get_ssl_context
from dashscope.common.error import UploadFileException
from dashscope.utils.oss_utils import OssUtils
from yarl import URL

from dropflow.daemon.core.config import ProviderSettings
from dropflow.engine.errors import AuthError, InputError, PermanentError, RetryableError
from dropflow.engine.providers.base import (
    RateLimiter,
    TaskStatus,
    VideoGenRequest,
    VideoTask,
)
from dropflow.engine.providers.common import (
    classify,
    require_key,
    retry_after,
    transport_error,
)
from dropflow.engine.providers.dashscope_wire import MalformedReply, base_url, check_reply, region_hint

PROVIDER = "dashscope"
_TRANSPORT_ERRORS = (aiohttp.ClientError, requests.RequestException, TimeoutError, ConnectionError)


class CreateOutcomeUnknown(aiohttp.ClientError):
    """The connection of a create call broke after it was made: the request may have reached the server.

    Deliberately not an `aiohttp.ClientConnectionError`: the SDK silently sends a request again
    after one of those (`send_with_retry_async`), which for a create call could start a second,
    billed task.
    """


async def _no_silent_resend(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    try:
        return await handler(request)
    except aiohttp.ClientConnectorError:
        raise  # never connected: nothing was sent, a resend is harmless
    except aiohttp.ClientConnectionError as exc:
        raise CreateOutcomeUnknown(f"connection lost during the create call ({type(exc).__name__})") from exc


def _env_proxy(url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for `url` (HTTPS_PROXY, NO_PROXY, ...), as `trust_env` would."""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


class _DashScopeClient:
    """Key, base URL, timeout and the shared rate limiter; the SDK-response checks; our sessions.

    Calls go through aiohttp sessions of our own (the SDK's `session=` argument), one per event
    loop: the proxy settings are read from the environment once, where a `trust_env` session (the
    SDK's own) looks up netrc and the proxy variables in a worker thread on every request, two
    thread hops per call that queue behind the daemon's file work. Create calls of video tasks
    get a session of their own: a fresh connection each time (a stale pooled one is the usual
    reason for a dropped request) and no silent resend once connected (`CreateOutcomeUnknown`).
    """

    def __init__(self, settings: ProviderSettings) -> None:
        self._key = require_key(PROVIDER, settings)
        self._base_url = base_url(settings)
        self._workspace: str | None = getattr(settings, "workspace", None)
        self._timeout = settings.timeout_seconds
        self._limiter = RateLimiter(settings.requests_per_minute, settings.concurrency)
        self._proxy, self._proxy_auth = _env_proxy(self._base_url)
        self._sessions: dict[bool, tuple[aiohttp.ClientSession, asyncio.AbstractEventLoop]] = {}

    def _session(self, *, create: bool = False) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        found = self._sessions.get(create)
        if found is not None and not found[0].closed and found[1] is loop:  # sessions are loop-bound
            return found[0]
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=get_ssl_context(), force_close=create),
            proxy=self._proxy,
            proxy_auth=self._proxy_auth,
            middlewares=(_no_silent_resend,) if create else (check_reply,),
        )
        self._sessions[create] = (session, loop)
        return session

    def _point_sdk(self) -> None:
        dashscope.base_http_api_url = self._base_url

    def _check(self, response: Any) -> None:
        """Raise the classified error for a non-200 SDK response."""
        if response.status_code == 200:
            return
        raise classify(
            PROVIDER,
            int(response.status_code),
            str(response.code or ""),
            str(response.message or ""),
            request_id=str(response.request_id or ""),
            retry_after=retry_after(response.headers),
            secret=self._key,
            key_hint=region_hint(self._base_url),
        )

    async def _guarded(self, coro_fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one SDK coroutine under the rate limiter and the timeout, wrapping transport errors
        and replies the SDK cannot read (`MalformedReply`, from our sessions)."""
        if self._workspace:
            kwargs.setdefault("workspace", self._workspace)
        async with self._limiter:
            try:
                async with asyncio.timeout(self._timeout):
                    self._point_sdk()
                    return await coro_fn(*args, api_key=self._key, **kwargs)
            except MalformedReply as exc:
                raise _malformed(exc) from exc
            except _TRANSPORT_ERRORS as exc:
                raise transport_error(PROVIDER, exc) from exc

    async def aclose(self) -> None:
        """Close our sessions and the SDK's own (task status calls take no `session=`)."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session, loop in sessions:
            if not session.closed and loop is asyncio.get_running_loop():
                with contextlib.suppress(Exception):  # closing must never raise
                    await session.close()
        # left open, the SDK's per-loop session warns at interpreter exit
        with contextlib.suppress(Exception):
            await close_shared_aio_session()


def _malformed(exc: MalformedReply) -> RetryableError:
    return RetryableError(
        f"{PROVIDER} sent a reply that cannot be read: {exc.problem} (HTTP {exc.status})",
        hint="a garbled answer (proxy, gateway or service trouble); retried automatically",
        provider=PROVIDER,
        code="MalformedResponse",
        status=exc.status,
    )


def _is_local(ref: str) -> bool:
    return not ref.startswith(("http://", "https://", "oss://", "data:"))


class DashScopeVideoGen(_DashScopeClient):
    """wan text-to-video / image-to-video through `AioVideoSynthesis` (create, fetch, cancel)."""

    name: ClassVar[str] = PROVIDER
    offline: ClassVar[bool] = False
    model_family: ClassVar[str] = "wan"

    def _upload(self, model: str, path: Path) -> str:
        """The SDK's two-step upload (policy, then a form POST to OSS); returns ``oss://key``. Blocking."""
        if not path.is_file():
            raise InputError(f"the image for image-to-video does not exist: {path}")
        policy = OssUtils.get_upload_certificate(
            model=model, api_key=self._key, base_address=self._base_url, request_timeout=self._timeout
        )
        self._check(policy)
        try:
            url, _ = OssUtils.upload(
                model=model, file_path=str(path), api_key=self._key, upload_certificate=policy.output
            )
        except UploadFileException as exc:  # OSS refused the form post
            raise RetryableError(
                f"{PROVIDER} upload of {path.name} failed", provider=PROVIDER, code="UploadFailed"
            ) from exc
        return str(url)

    async def prepare(self, request: VideoGenRequest) -> VideoGenRequest:
        """Upload a local image (the request then names ``oss://key``); creates no task.

        Raises RetryableError, AuthError, PermanentError; InputError when the local image is missing.
        """
        img = request.image
        if not img or not _is_local(img):
            return request
        path = Path(img.removeprefix("file://"))
        async with self._limiter:
            try:
                url = await asyncio.to_thread(self._upload, request.model, path)
            except _TRANSPORT_ERRORS as exc:
                raise transport_error(PROVIDER, exc) from exc
        return dataclasses.replace(request, image=url)

    async def submit(self, request: VideoGenRequest) -> VideoTask:
        """Raises RetryableError, AuthError, PermanentError; InputError when the local image is missing."""
        request = await self.prepare(request)  # a no-op when the caller prepared it already
        img = request.image
        params: dict[str, Any] = {
            k: v
            for k, v in {
                "size": request.size,
                "resolution": request.resolution,
                "duration": request.duration,
                "seed": request.seed,
                "prompt_extend": request.prompt_extend,
                "negative_prompt": request.negative_prompt or None,
                "img_url": img or None,
            }.items()
            if v is not None
        }
        response = await self._video_call(
            AioVideoSynthesis.async_call,
            model=request.model,
            prompt=request.prompt,
            request_timeout=self._timeout,
            session=self._session(create=True),
            **params,
        )
        self._check(response)
        # a reply without a task id is the engine's to judge: the task may exist (see video-gen `submit`)
        return self._task(response, expected=None)

    async def fetch(self, task_id: str) -> VideoTask:
        """Raises RetryableError (also for a reply that is not a task status: an empty, truncated or
        HTML 200, a status without its task id, a SUCCEEDED without its video URL), AuthError,
        PermanentError."""
        response = await self._video_call(AioVideoSynthesis.fetch, task_id)
        self._check(response)
        return self._task(response, expected=task_id)

    async def _video_call(self, coro_fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`_guarded`, with a 200 reply the SDK cannot parse reported as a retryable MalformedResponse.

        The SDK decodes a 200 body as JSON and builds its objects from it without checks: an empty
        body raises TypeError, a truncated one JSONDecodeError, an output without `task_id` TypeError.
        No status is set, so a create call answered this way counts as "may have created a task".
        """
        try:
            return await self._guarded(coro_fn, *args, **kwargs)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RetryableError(
                f"{PROVIDER} answered with a reply that is not a task ({type(exc).__name__}: "
                f"{str(exc)[:120]})",
                hint="a garbled answer (proxy, gateway or service trouble); retried automatically",
                provider=PROVIDER,
                code="MalformedResponse",
            ) from exc

    async def cancel(self, task_id: str) -> bool:
        """True when the task was PENDING and is now cancelled; False when it can no longer be."""
        response = await self._video_call(AioVideoSynthesis.cancel, task_id)
        try:
            self._check(response)
        except AuthError:
            raise
        except PermanentError:
            return False  # 400 UnsupportedOperation: already running or finished
        return True

    @staticmethod
    def _task(response: Any, *, expected: str | None) -> VideoTask:
        """Our task from the SDK's response; `expected`: the id polled, which the reply must name.

        Raises RetryableError (MalformedResponse) for a poll reply that is not a status of that task:
        taking it at its word (no status = UNKNOWN) would fail the job and pay for the video twice.
        """
        out = dict(response.output or {})
        status = str(out.get("task_status") or "")
        problem = ""
        if expected is not None and str(out.get("task_id") or "") != expected:
            problem = f"a reply about task {out.get('task_id')!r}"
        elif expected is not None and status not in _TASK_STATUSES:
            problem = f"task status {status or 'missing'}"
        elif status == "SUCCEEDED" and not out.get("video_url"):
            problem = "SUCCEEDED without a video_url"
        if problem:
            raise RetryableError(
                f"{PROVIDER} answered the status check of task {expected} with {problem}",
                hint="retried automatically; the task is kept",
                provider=PROVIDER,
                code="MalformedResponse",
                request_id=str(response.request_id or ""),
            )
        return VideoTask(
            task_id=str(out.get("task_id", "")),
            status=cast("TaskStatus", status if status in _TASK_STATUSES else "UNKNOWN"),
            video_url=out.get("video_url") or None,
            code=str(out.get("code") or ""),
            message=str(out.get("message") or ""),
            orig_prompt=str(out.get("orig_prompt") or ""),
            actual_prompt=str(out.get("actual_prompt") or ""),
            submit_time=str(out.get("submit_time") or ""),
            scheduled_time=str(out.get("scheduled_time") or ""),
            end_time=str(out.get("end_time") or ""),
            usage=_video_usage(response.usage),
            request_id=str(response.request_id or ""),
        )


_TASK_STATUSES = frozenset(get_args(TaskStatus))


def _video_usage(raw: Any) -> dict[str, Any]:
    """The task's usage as the service sent it. The SDK's `VideoSynthesisUsage` fills in
    `video_count=1, video_duration=0, video_ratio=""` for keys a reply lacks (wan2.5+ reports
    `duration`, `SR`, `output_video_duration` ... instead): a filled-in zero is dropped, never
    recorded as a free video."""
    usage = dict(raw or {})
    if not usage.get("video_duration"):
        usage.pop("video_duration", None)
    if not usage.get("video_ratio"):
        usage.pop("video_ratio", None)
    return usage


def __getattr__(name: str) -> Any:
    # the vision provider lives in dashscope_vision.py, which builds on `_DashScopeClient` here;
    # imported on first use (an import at the top would be circular)
    if name == "DashScopeVision":
        from dropflow.engine.providers.dashscope_vision import DashScopeVision

        return DashScopeVision
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
