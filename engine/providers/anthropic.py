"""Anthropic's Messages API over httpx."""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from dropflow.engine.providers.base import ImagePart, TextPart, Usage, VideoPart, VisionRequest, VisionResult
from dropflow.engine.providers.common import HttpVisionBase, image_bytes

API_VERSION = "2023-06-01"
JSON_INSTRUCTION = "Answer with one JSON object and nothing else."


def _b64_block(data: bytes, mime: str) -> dict[str, Any]:
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": mime, "data": base64.b64encode(data).decode("ascii")},
    }


class AnthropicVision(HttpVisionBase):
    """``POST {base_url}/v1/messages``: base64 image blocks, the system prompt top-level.

    Claude takes no video: a frame list becomes a short note with the rate, then one image block
    per frame. There is no JSON mode either: `json_mode` adds an instruction to the system prompt.
    """

    name: ClassVar[str] = "anthropic"
    offline: ClassVar[bool] = False
    provider = "anthropic"
    default_base_url = "https://api.anthropic.com"
    request_id_header = "request-id"

    def error_fields(self, payload: Any) -> tuple[str, str]:
        err = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(err, dict):
            return str(err.get("type") or ""), str(err.get("message") or "")
        return "", str(payload)[:300]

    def body(self, request: VisionRequest) -> dict[str, Any]:
        blocks: list[dict[str, Any]] = []
        for part in request.parts:
            if isinstance(part, TextPart):
                blocks.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                inline = image_bytes(part)
                if inline is not None:
                    blocks.append(_b64_block(*inline))
                else:
                    blocks.append({"type": "image", "source": {"type": "url", "url": part.url}})
            elif isinstance(part, VideoPart):
                blocks.append(
                    {"type": "text", "text": f"{len(part.frames)} video frames sampled at {part.fps:g} fps:"}
                )
                blocks.extend(_b64_block(f, "image/jpeg") for f in part.frames)
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "messages": [{"role": "user", "content": blocks}],
            **request.extra,
        }
        system = request.system or ""
        if request.json_mode:
            system = f"{system}\n\n{JSON_INSTRUCTION}".strip()
        if system:
            body["system"] = system
        return body

    async def generate(self, request: VisionRequest) -> VisionResult:
        """Raises RetryableError (429, 5xx, 529 overloaded), AuthError, PermanentError."""
        headers = {"x-api-key": self._key, "anthropic-version": API_VERSION}
        payload, rid = await self._post("/v1/messages", headers, self.body(request))
        try:
            text = "".join(b["text"] for b in payload["content"] if b.get("type") == "text")
        except (KeyError, TypeError) as exc:
            raise self._malformed(rid) from exc
        usage = payload.get("usage") or {}
        return VisionResult(
            text=text,
            model=str(payload.get("model") or request.model),
            provider=self.name,
            usage=Usage(
                input_tokens=int(usage.get("input_tokens") or 0),
                output_tokens=int(usage.get("output_tokens") or 0),
            ),
            request_id=rid or str(payload.get("id") or ""),
            finish_reason=str(payload.get("stop_reason") or ""),
        )
