"""Any OpenAI-compatible chat-completions server over httpx (vLLM, Ollama, OpenAI, DashScope compat mode)."""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from dropflow.daemon.core.config import ProviderSettings
from dropflow.engine.providers.base import (
    AudioPart,
    ImagePart,
    TextPart,
    Usage,
    VideoPart,
    VisionRequest,
    VisionResult,
)
from dropflow.engine.providers.common import HttpVisionBase, data_url, image_url


class OpenAICompatVision(HttpVisionBase):
    """``POST {base_url}/chat/completions``.

    Frame lists go as Qwen-VL's ``{"type": "video", "video": [...], "fps": f}`` part (vLLM serving
    Qwen-VL, DashScope compatible mode); servers without it get one ``image_url`` part per frame
    (`video_as_frames=False`).
    """

    name: ClassVar[str] = "openai"
    offline: ClassVar[bool] = False
    provider = "openai"
    default_base_url = "https://api.openai.com/v1"
    request_id_header = "x-request-id"

    def __init__(self, settings: ProviderSettings, *, video_as_frames: bool = True) -> None:
        super().__init__(settings)
        self.video_as_frames = video_as_frames

    def body(self, request: VisionRequest) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        for part in request.parts:
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                parts.append({"type": "image_url", "image_url": {"url": image_url(part)}})
            elif isinstance(part, VideoPart):
                urls = [data_url(f) for f in part.frames]
                if self.video_as_frames:
                    parts.append({"type": "video", "video": urls, "fps": part.fps})
                else:
                    parts.extend({"type": "image_url", "image_url": {"url": u}} for u in urls)
            elif isinstance(part, AudioPart):  # the chat-completions audio part (vLLM audio models, OpenAI)
                audio = {
                    "data": base64.b64encode(part.data).decode("ascii"),
                    "format": part.mime.split("/")[-1],
                }
                parts.append({"type": "input_audio", "input_audio": audio})
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": parts})
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            **request.extra,
        }
        if request.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    async def generate(self, request: VisionRequest) -> VisionResult:
        """Raises RetryableError, AuthError, PermanentError (see `VisionProvider`)."""
        headers = {"Authorization": f"Bearer {self._key}"}
        payload, rid = await self._post("/chat/completions", headers, self.body(request))
        rid = rid or str(payload.get("request_id") or payload.get("id") or "")
        try:
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise self._malformed(rid) from exc
        usage = payload.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return VisionResult(
            text=str(text),
            model=str(payload.get("model") or request.model),
            provider=self.name,
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                image_tokens=int(details.get("image_tokens") or 0),
                video_tokens=int(details.get("video_tokens") or 0),
            ),
            request_id=rid,
            finish_reason=str(choice.get("finish_reason") or ""),
        )
