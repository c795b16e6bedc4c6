"""The provider contracts and the value types that cross them.

Engines build provider-neutral requests (`VisionRequest`, `VideoGenRequest`); each provider
translates them to its own wire format and maps its failures onto `dropflow.engine.errors`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    """One image: JPEG/PNG bytes (sent inline) or a URL the provider can fetch."""

    data: bytes | None = None
    mime: str = "image/jpeg"
    url: str | None = None


@dataclass(frozen=True)
class VideoPart:
    """A video sent as a list of sampled frames (JPEG bytes) with the sampling rate."""

    frames: Sequence[bytes]
    fps: float


@dataclass(frozen=True)
class AudioPart:
    """A short audio clip sent inline (e.g. a WAV chunk of a soundtrack for speech recognition)."""

    data: bytes
    mime: str = "audio/wav"


Part = TextPart | ImagePart | VideoPart | AudioPart


@dataclass(frozen=True)
class VisionRequest:
    """One chat turn: an optional system prompt and the user's parts, in order."""

    model: str
    parts: Sequence[Part]
    system: str | None = None
    temperature: float = 0.3
    max_tokens: int = 4000
    json_mode: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # ask for a streamed answer where the provider can stream: no service-side cap on the call's
    # duration (DashScope cuts non-streaming calls at 180 s). Not part of the answer: a streamed
    # and a plain answer to the same request are the same answer.
    stream: bool = False


@dataclass
class Usage:
    """What one answer was billed for, as the provider reported it. Speech recognition bills
    seconds of audio (`audio_seconds`), not tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    image_tokens: int = 0
    video_tokens: int = 0
    audio_seconds: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.image_tokens += other.image_tokens
        self.video_tokens += other.video_tokens
        self.audio_seconds += other.audio_seconds

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "image_tokens": self.image_tokens,
            "video_tokens": self.video_tokens,
            "audio_seconds": self.audio_seconds,
        }


@dataclass(frozen=True)
class VisionResult:
    text: str
    model: str
    provider: str
    usage: Usage = field(default_factory=Usage)
    request_id: str = ""
    finish_reason: str = ""
    offline: bool = False
    # the service cut the answer off before the model finished (DashScope's
    # `x-dashscope-partialresponse: true` after 180 s of a non-streaming call)
    partial: bool = False

    @property
    def complete(self) -> bool:
        """False for an answer cut off by the token budget (`finish_reason` "length") or the service."""
        return not self.partial and self.finish_reason != "length"


@dataclass(frozen=True)
class ModelLimits:
    """What one request to a model may hold, as far as the provider knows; None: no known limit.

    Engines size their requests from these (frames per request, bytes per request, the text a
    summary may take) so that the service never refuses them after other requests were paid.
    """

    min_frames: int = 1  # a frame list shorter than this is refused
    max_frames: int | None = None  # frames in one frame list
    max_inline_media: int | None = None  # inline (data:) images, frames and clips per request
    max_request_bytes: int | None = None  # the request body
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None  # the largest `max_tokens` the model accepts
    max_audio_seconds: float | None = None  # one speech-recognition clip
    stream_only: bool = False  # answers only streamed requests


@runtime_checkable
class VisionProvider(Protocol):
    """Answers a chat turn that may hold images and videos (and plain text, for summaries)."""

    name: ClassVar[str]
    offline: ClassVar[bool]

    async def generate(self, request: VisionRequest) -> VisionResult:
        """Run one request.

        Raises:
            RetryableError: rate limits (429), server errors (5xx), timeouts, dropped connections,
                replies that cannot be read (an empty or truncated body, an HTML page).
            AuthError: the key was refused (401).
            PermanentError: the request itself was refused (400, moderation), or the account
                cannot or may not pay for it (arrears, free quota only, a 403).
        """
        ...

    async def aclose(self) -> None:
        """Release connections. Never raises."""
        ...


TaskStatus = Literal["PENDING", "RUNNING", "SUSPENDED", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"]


@dataclass(frozen=True)
class VideoGenRequest:
    model: str
    prompt: str
    negative_prompt: str = ""
    image: str | None = None  # a local path or a URL; providers upload local files their own way
    size: str | None = None  # t2v, e.g. "1280*720"
    resolution: str | None = None  # i2v, e.g. "480P"
    duration: int | None = None
    seed: int | None = None
    prompt_extend: bool | None = None
    # models that take them (seedance): a last frame (a local path or a URL, like `image`), the
    # aspect ratio ("16:9", "adaptive"), a fixed camera and a watermark
    last_image: str | None = None
    ratio: str | None = None
    camera_fixed: bool | None = None
    watermark: bool | None = None


@dataclass(frozen=True)
class VideoTask:
    task_id: str
    status: TaskStatus
    video_url: str | None = None
    code: str = ""
    message: str = ""
    orig_prompt: str = ""
    actual_prompt: str = ""
    submit_time: str = ""
    scheduled_time: str = ""
    end_time: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""

    @property
    def done(self) -> bool:
        return self.status in ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")


@runtime_checkable
class VideoGenProvider(Protocol):
    """Submits asynchronous video-generation tasks and follows them."""

    name: ClassVar[str]
    offline: ClassVar[bool]
    # the models it runs, for the engine's per-model checks: "wan" (DashScope, and the offline
    # stand-in) or "seedance" (Volcengine Ark)
    model_family: ClassVar[str]

    async def prepare(self, request: VideoGenRequest) -> VideoGenRequest:
        """Do everything that creates no task (upload a local image); `submit` of the result is
        then one create call, so a caller can tell "never sent" failures from "maybe created" ones.

        Raises: RetryableError, AuthError, PermanentError; InputError when a local image is missing.
        """
        ...

    async def submit(self, request: VideoGenRequest) -> VideoTask:
        """Create a remote task; the returned task id must be saved before waiting on it.

        Raises: RetryableError, AuthError, PermanentError (as `VisionProvider.generate`).
        """
        ...

    async def fetch(self, task_id: str) -> VideoTask:
        """Poll a task once. An unknown or expired id comes back with status UNKNOWN.

        Raises: RetryableError, AuthError, PermanentError.
        """
        ...

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task; True when the provider accepted (only while PENDING). Never raises
        PermanentError for "not cancellable": returns False instead."""
        ...

    async def aclose(self) -> None: ...


class RateLimiter:
    """Requests-per-minute (token bucket) and in-flight concurrency, shared by every job of one provider.

    Used as ``async with limiter:`` around each request.
    """

    def __init__(self, requests_per_minute: float | None = None, concurrency: int | None = None) -> None:
        self._rate = (requests_per_minute or 0) / 60.0
        self._capacity = max(1.0, self._rate)  # at most one second of burst
        self._tokens = self._capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(concurrency) if concurrency else None

    async def acquire(self) -> None:
        if self._sem is not None:
            await self._sem.acquire()
        if self._rate <= 0:
            return
        try:
            async with self._lock:
                while True:
                    now = time.monotonic()
                    self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
                    self._stamp = now
                    if self._tokens >= 1.0:
                        self._tokens -= 1.0
                        return
                    await asyncio.sleep((1.0 - self._tokens) / self._rate)
        except BaseException:
            if self._sem is not None:
                self._sem.release()
            raise

    def release(self) -> None:
        if self._sem is not None:
            self._sem.release()

    async def __aenter__(self) -> RateLimiter:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
