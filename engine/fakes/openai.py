"""A loopback OpenAI-compatible chat-completions server (vLLM, Ollama, OpenAI, DashScope compatible mode).

``POST /v1/chat/completions`` and ``POST /compatible-mode/v1/chat/completions`` [chat]. Parts:
``text``, ``image_url`` (URL or data URL), Qwen-VL's ``video`` (a frame list, ``fps`` beside it),
``video_url``. Errors are ``{"error": {message, type, param, code}}``; 429s carry ``retry-after``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from aiohttp import web

from dropflow.engine.fakes.answers import Prompt
from dropflow.engine.fakes.server import BODY, REQUEST_ID, FakeServer

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    429: "rate_limit_error",
}


class FakeOpenAI(FakeServer):
    provider = "openai"
    request_id_header = "x-request-id"
    base_path = "/v1"
    rate_limit_retry_after = 1.0
    default_codes: ClassVar[dict[int, str]] = {
        400: "invalid_request_error",
        401: "invalid_api_key",
        403: "access_denied",
        429: "rate_limit_exceeded",
        500: "server_error",
        503: "service_unavailable",
    }

    def error_body(self, status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
        if code == "invalid_api_key" and message == code:
            message = "Incorrect API key provided. You can find your API key in your account settings."
        return {
            "error": {
                "message": message,
                "type": _TYPES.get(status, "server_error"),
                "param": None,
                "code": code,
            },
            "request_id": request_id,
        }

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat, name="chat")
        app.router.add_post("/compatible-mode/v1/chat/completions", self._chat, name="chat_compatible")

    def _prompt(self, body: dict[str, Any]) -> tuple[Prompt, str | None]:
        prompt = Prompt(model=str(body.get("model", "")))
        fmt = body.get("response_format")
        prompt.json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return prompt, "'messages' must be a non-empty array"
        for msg in messages:
            content = msg.get("content")
            if isinstance(content, str):
                if msg.get("role") == "system":
                    prompt.system = content
                else:
                    prompt.texts.append(content)
                continue
            if not isinstance(content, list):
                return prompt, "message content must be a string or an array of parts"
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    if msg.get("role") == "system":
                        prompt.system = part["text"]
                    else:
                        prompt.texts.append(part["text"])
                elif kind == "image_url":
                    prompt.images.append(part["image_url"]["url"])
                elif kind == "video":
                    prompt.frames.extend(part["video"])
                    if "fps" in part:
                        prompt.fps = float(part["fps"])
                elif kind == "video_url":
                    prompt.frames.append(part["video_url"]["url"])
                elif kind == "input_audio":
                    prompt.audios.append(part["input_audio"]["data"])
                else:
                    return prompt, f"unsupported content part type: {kind!r}"
        return prompt, None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        if not isinstance(body, dict) or not body.get("model"):
            return self.error(request, 400, "invalid_request_error", "you must provide a model parameter")
        prompt, problem = self._prompt(body)
        if problem:
            return self.error(request, 400, "invalid_request_error", problem)
        text, tokens = self.answer(prompt)
        rid = request[REQUEST_ID]
        return self.ok(
            request,
            {
                "id": f"chatcmpl-{rid[:12]}",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": tokens["input_tokens"],
                    "completion_tokens": tokens["output_tokens"],
                    "total_tokens": tokens["input_tokens"] + tokens["output_tokens"],
                    "prompt_tokens_details": {
                        "image_tokens": tokens["image_tokens"],
                        "video_tokens": tokens["video_tokens"],
                    },
                },
            },
        )
