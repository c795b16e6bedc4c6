"""DashScope's vision and text models (Qwen-VL, qvq, omni, Qwen text, speech recognition) through
the real SDK: `AioMultiModalConversation` for turns with media, `AioGeneration` for text-only ones.

The client plumbing (key, region URL, sessions, rate limit, error mapping) is `_DashScopeClient`
in dashscope.py, shared with the video-synthesis provider.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import dashscope

from dropflow.daemon.core.config import ProviderSettings
from dropflow.engine.errors import RetryableError
from dropflow.engine.providers.base import (
    AudioPart,
    ImagePart,
    TextPart,
    VideoPart,
    VisionRequest,
    VisionResult,
)
from dropflow.engine.providers.common import data_url, image_url, transport_error
from dropflow.engine.providers.dashscope import _TRANSPORT_ERRORS, PROVIDER, _DashScopeClient
from dropflow.engine.providers.dashscope_models import limits
from dropflow.engine.providers.dashscope_wire import answer

STREAM_SECONDS = 1800.0  # a streamed answer has no service-side cap; ours, beside the idle timeout


def _looks_multimodal(model: str) -> bool:
    m = model.lower()
    return any(tag in m for tag in ("-vl", "vl-", "qvq", "omni"))


class DashScopeVision(_DashScopeClient):
    """Qwen-VL through `AioMultiModalConversation`; text-only turns through `AioGeneration`.

    Stream-only models (qvq, omni, thinking models), and requests that ask for it, are called in
    streaming mode and the pieces joined; an answer the service cut off after 180 s comes back
    with `partial` set (header ``x-dashscope-partialresponse``).
    """

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
                # a frame list shorter than the model takes is refused: repeat frames in order
                n, least = len(part.frames), limits(request.model).min_frames
                frames = (
                    part.frames
                    if n >= least or not n
                    else [part.frames[i * n // least] for i in range(least)]
                )
                content.append({"video": [data_url(f) for f in frames], "fps": part.fps})
            elif isinstance(part, AudioPart):  # speech recognition (qwen3-asr-flash) and audio models
                content.append({"audio": data_url(part.data, part.mime)})
        out: list[dict[str, Any]] = []
        if request.system:
            out.append({"role": "system", "content": [{"text": request.system}]})
        out.append({"role": "user", "content": content})
        return out

    async def generate(self, request: VisionRequest) -> VisionResult:
        """Raises RetryableError, AuthError, PermanentError (see `VisionProvider`)."""
        most = limits(request.model).max_output_tokens
        params: dict[str, Any] = {
            "temperature": request.temperature,
            # the service refuses a budget over the model's output limit: ask for what it gives
            "max_tokens": min(request.max_tokens, most) if most else request.max_tokens,
            "request_timeout": self._timeout,
            **request.extra,
        }
        if request.json_mode:
            params["response_format"] = {"type": "json_object"}
        text_only = all(isinstance(p, TextPart) for p in request.parts)
        call: Any
        if text_only:
            model = request.model if not _looks_multimodal(request.model) else self.text_model
            messages: list[dict[str, Any]] = []
            if request.system:
                messages.append({"role": "system", "content": request.system})
            texts = [p.text for p in request.parts if isinstance(p, TextPart)]
            messages.append({"role": "user", "content": "\n\n".join(texts)})
            call, params["result_format"] = dashscope.AioGeneration.call, "message"
        else:
            model, messages = request.model, self.messages(request)
            call = dashscope.AioMultiModalConversation.call
        if request.stream or limits(model).stream_only:
            responses = await self._streamed(call, model=model, messages=messages, **params)
        else:
            responses = [
                await self._guarded(call, model=model, messages=messages, session=self._session(), **params)
            ]
        for response in responses:
            self._check(response)
        try:
            text, finish, usage, partial = answer(responses)
        except (KeyError, IndexError, TypeError) as exc:
            raise RetryableError(
                f"{PROVIDER} returned an answer without choices",
                provider=PROVIDER,
                code="MalformedResponse",
                request_id=str(responses[-1].request_id or "") if responses else "",
            ) from exc
        return VisionResult(
            text=text,
            model=model,
            provider=PROVIDER,
            usage=usage,
            request_id=str(responses[-1].request_id or ""),
            finish_reason=finish,
            partial=partial,
        )

    async def _streamed(self, call: Any, **kwargs: Any) -> list[Any]:
        """One streamed call (incremental pieces), read to its end under the rate limiter.

        The SDK bounds each silence between pieces by `request_timeout`; the whole by STREAM_SECONDS.
        Returns the responses in order; an error arrives as a response with its status (`_check`).
        """
        if self._workspace:
            kwargs.setdefault("workspace", self._workspace)
        kwargs.update(stream=True, incremental_output=True)
        async with self._limiter:
            try:
                async with asyncio.timeout(STREAM_SECONDS):
                    self._point_sdk()
                    stream = await call(api_key=self._key, session=self._session(), **kwargs)
                    out = []
                    async for response in stream:
                        out.append(response)
                        if response.status_code != 200:
                            break
                    return out
            except _TRANSPORT_ERRORS as exc:
                raise transport_error(PROVIDER, exc) from exc
