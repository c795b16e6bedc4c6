"""A loopback Anthropic Messages API: ``POST /v1/messages`` [messages].

Auth is ``x-api-key`` plus a required ``anthropic-version`` header. Errors are
``{"type": "error", "error": {"type", "message"}}`` with a ``request-id`` header; 529 is
``overloaded_error``; 429s carry ``retry-after``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from aiohttp import web

from dropflow.engine.fakes.answers import Prompt
from dropflow.engine.fakes.server import BODY, REQUEST_ID, FakeServer

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class FakeAnthropic(FakeServer):
    provider = "anthropic"
    request_id_header = "request-id"
    base_path = ""
    rate_limit_retry_after = 1.0
    default_codes: ClassVar[dict[int, str]] = dict(_TYPES)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("x-api-key", "") == self.api_key

    def error_body(self, status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
        if code == "authentication_error" and message == code:
            message = "invalid x-api-key"
        if code == "overloaded_error" and message == code:
            message = "Overloaded"
        return {"type": "error", "error": {"type": code, "message": message}}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages, name="messages")

    def _prompt(self, body: dict[str, Any]) -> tuple[Prompt, str | None]:
        prompt = Prompt(model=str(body.get("model", "")))
        system = body.get("system")
        if isinstance(system, list):
            system = " ".join(b.get("text", "") for b in system if isinstance(b, dict))
        prompt.system = system or None
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return prompt, "messages: at least one message is required"
        for msg in messages:
            if msg.get("role") not in ("user", "assistant"):
                return prompt, "messages: roles must be 'user' or 'assistant' (system goes top-level)"
            content = msg.get("content")
            blocks: list[Any] = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for block in blocks or []:
                kind = block.get("type")
                if kind == "text":
                    prompt.texts.append(block["text"])
                elif kind == "image":
                    source = block.get("source") or {}
                    if source.get("type") == "base64":
                        if not source.get("media_type") or not source.get("data"):
                            return prompt, "image source: media_type and data are required"
                        prompt.images.append(source["data"])
                    elif source.get("type") == "url":
                        prompt.images.append(source["url"])
                    else:
                        return prompt, "image source: type must be 'base64' or 'url'"
                else:
                    return prompt, f"unsupported content block type: {kind!r}"
        return prompt, None

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if not request.headers.get("anthropic-version"):
            return self.error(request, 400, "invalid_request_error", "anthropic-version: header is required")
        body = request[BODY]
        if not isinstance(body, dict) or not body.get("model") or not body.get("max_tokens"):
            return self.error(request, 400, "invalid_request_error", "model and max_tokens are required")
        prompt, problem = self._prompt(body)
        if problem:
            return self.error(request, 400, "invalid_request_error", problem)
        text, tokens = self.answer(prompt)
        return self.ok(
            request,
            {
                "id": f"msg_{request[REQUEST_ID][:12]}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": tokens["input_tokens"], "output_tokens": tokens["output_tokens"]},
            },
        )
