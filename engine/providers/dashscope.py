"""DashScope (Qwen-VL, Qwen text models, wan video synthesis) through the real `dashscope` SDK.

The SDK's classic call objects do not raise on HTTP errors: they return a response with
`status_code`, `code`, `message`, `request_id`; `_check` turns those into our error family.
Transport failures (aiohttp / requests exceptions, timeouts) are wrapped at the boundary.

`dashscope.base_http_api_url` is module-global and read when each request is built. We set it
right before each SDK coroutine starts: the URL is captured synchronously, before the first
suspension, so providers with different base URLs in one event loop do not race.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any, ClassVar

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
    AudioPart,
    ImagePart,
    RateLimiter,
    TextPart,
    Usage,
    VideoGenRequest,
    VideoPart,
    VideoTask,
    VisionRequest,
    VisionResult,
)
from dropflow.engine.providers.common import (
    classify,
    data_url,
    image_url,
    require_key,
    retry_after,
    transport_error,
)

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com/api/v1"
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
        self._base_url = (settings.base_url or DEFAULT_BASE_URL).rstrip("/")
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
            middlewares=(_no_silent_resend,) if create else (),
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
        )

    async def _guarded(self, coro_fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one SDK coroutine under the rate limiter and the timeout, wrapping transport errors."""
        async with self._limiter:
            try:
                async with asyncio.timeout(self._timeout):
                    self._point_sdk()
                    return await coro_fn(*args, api_key=self._key, **kwargs)
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


def _usage(raw: Any) -> Usage:
    u = dict(raw or {})
    details = dict(u.get("input_tokens_details") or {})
    return Usage(
        input_tokens=int(u.get("input_tokens") or 0),
        output_tokens=int(u.get("output_tokens") or 0),
        image_tokens=int(u.get("image_tokens") or details.get("image_tokens") or 0),
        video_tokens=int(u.get("video_tokens") or details.get("video_tokens") or 0),
    )


def _looks_multimodal(model: str) -> bool:
    m = model.lower()
    return any(tag in m for tag in ("-vl", "vl-", "qvq", "omni"))


class DashScopeVision(_DashScopeClient):
    """Qwen-VL through `AioMultiModalConversation`; text-only turns through `AioGeneration`."""

    name: ClassVar[str] = PROVIDER
    offline: ClassVar[bool] = False

    def __init__(self, settings: ProviderSettings, *, text_model: str = "qwen-plus") -> None:
        """Raises AuthError when no key is configured."""
        super().__init__(settings)
        self.text_model = text_model

    @staticmethod
    def messages(request: VisionRequest) -> list[dict[str, Any]]:
        """The native message list: frames as ``{"video": [data URLs], "fps": f}``, images as data URLs."""
        content: list[dict[str, Any]] = []
        for part in request.parts:
            if isinstance(part, TextPart):
                content.append({"text": part.text})
            elif isinstance(part, ImagePart):
                content.append({"image": image_url(part)})
            elif isinstance(part, VideoPart):
                content.append({"video": [data_url(f) for f in part.frames], "fps": part.fps})
            elif isinstance(part, AudioPart):  # speech recognition (qwen3-asr-flash) and audio models
                content.append({"audio": data_url(part.data, part.mime)})
        out: list[dict[str, Any]] = []
        if request.system:
            out.append({"role": "system", "content": [{"text": request.system}]})
        out.append({"role": "user", "content": content})
        return out

    async def generate(self, request: VisionRequest) -> VisionResult:
        """Raises RetryableError, AuthError, PermanentError (see `VisionProvider`)."""
        params: dict[str, Any] = {
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "request_timeout": self._timeout,
            **request.extra,
        }
        if request.json_mode:
            params["response_format"] = {"type": "json_object"}
        text_only = all(isinstance(p, TextPart) for p in request.parts)
        if text_only:
            model = request.model if not _looks_multimodal(request.model) else self.text_model
            messages: list[dict[str, Any]] = []
            if request.system:
                messages.append({"role": "system", "content": request.system})
            texts = [p.text for p in request.parts if isinstance(p, TextPart)]
            messages.append({"role": "user", "content": "\n\n".join(texts)})
            response = await self._guarded(
                dashscope.AioGeneration.call,
                model=model,
                messages=messages,
                result_format="message",
                session=self._session(),
                **params,
            )
        else:
            model = request.model
            response = await self._guarded(
                dashscope.AioMultiModalConversation.call,
                model=model,
                messages=self.messages(request),
                session=self._session(),
                **params,
            )
        self._check(response)
        try:
            choice = response.output["choices"][0]
            content = choice["message"]["content"]
            if isinstance(content, list):
                text = "".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
            else:
                text = str(content)
            finish = str(choice.get("finish_reason") or "")
        except (KeyError, IndexError, TypeError) as exc:
            raise RetryableError(
                f"{PROVIDER} returned an answer without choices",
                provider=PROVIDER,
                code="MalformedResponse",
                request_id=str(response.request_id or ""),
            ) from exc
        return VisionResult(
            text=text,
            model=model,
            provider=PROVIDER,
            usage=_usage(response.usage),
            request_id=str(response.request_id or ""),
            finish_reason=finish,
        )


def _is_local(ref: str) -> bool:
    return not ref.startswith(("http://", "https://", "oss://", "data:"))


class DashScopeVideoGen(_DashScopeClient):
    """wan text-to-video / image-to-video through `AioVideoSynthesis` (create, fetch, cancel)."""

    name: ClassVar[str] = PROVIDER
    offline: ClassVar[bool] = False

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
        response = await self._guarded(
            AioVideoSynthesis.async_call,
            model=request.model,
            prompt=request.prompt,
            request_timeout=self._timeout,
            session=self._session(create=True),
            **params,
        )
        self._check(response)
        return self._task(response)

    async def fetch(self, task_id: str) -> VideoTask:
        """Raises RetryableError, AuthError, PermanentError."""
        response = await self._guarded(AioVideoSynthesis.fetch, task_id)
        self._check(response)
        return self._task(response)

    async def cancel(self, task_id: str) -> bool:
        """True when the task was PENDING and is now cancelled; False when it can no longer be."""
        response = await self._guarded(AioVideoSynthesis.cancel, task_id)
        try:
            self._check(response)
        except AuthError:
            raise
        except PermanentError:
            return False  # 400 UnsupportedOperation: already running or finished
        return True

    @staticmethod
    def _task(response: Any) -> VideoTask:
        out = dict(response.output or {})
        return VideoTask(
            task_id=str(out.get("task_id", "")),
            status=out.get("task_status", "UNKNOWN"),
            video_url=out.get("video_url") or None,
            code=str(out.get("code") or ""),
            message=str(out.get("message") or ""),
            orig_prompt=str(out.get("orig_prompt") or ""),
            actual_prompt=str(out.get("actual_prompt") or ""),
            submit_time=str(out.get("submit_time") or ""),
            scheduled_time=str(out.get("scheduled_time") or ""),
            end_time=str(out.get("end_time") or ""),
            usage=dict(response.usage or {}),
            request_id=str(response.request_id or ""),
        )
