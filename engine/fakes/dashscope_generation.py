"""The fake DashScope's synchronous side: multimodal and text generation (JSON or SSE) and OSS uploads.

`FakeDashScope` (dashscope.py) adds the asynchronous video-synthesis tasks on top; the endpoint list
and the wire-shape notes are in that module's docstring. Generation keeps the real service's limits
and billing, per model: the table is dashscope_models.py, the rules dashscope_rules.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from aiohttp import web

from dropflow.engine.fakes import dashscope_rules as rules
from dropflow.engine.fakes.answers import Prompt
from dropflow.engine.fakes.dashscope_models import PARTIAL_HEADER, ModelRule, rule_for
from dropflow.engine.fakes.server import BODY, RECORD, REQUEST_ID, FakeServer, new_id

API = "/api/v1"


class FakeDashScopeGeneration(FakeServer):
    """DashScope's generation and upload endpoints; the error format and codes of the whole fake."""

    provider = "dashscope"
    request_id_header = "X-Request-ID"
    base_path = API
    default_codes: ClassVar[dict[int, str]] = {
        400: "InvalidParameter",
        401: "InvalidApiKey",
        403: "AccessDenied",
        404: "NotFound",
        429: "Throttling.RateQuota",
        500: "InternalError",
        503: "ServiceUnavailable",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uploads: dict[str, bytes] = {}  # OSS object key -> uploaded bytes
        self.upload_forms: list[dict[str, str]] = []  # the text fields of each form upload
        # how long the model takes to answer a prompt, in pretend seconds (nothing sleeps): a
        # non-streaming call over 180 s gets a partial answer; called on the server thread
        self.answer_seconds: Callable[[Prompt], float] | None = None
        # the token counter's vocabulary takes most of a second to load: loaded by the first
        # request, it stalled the server's only thread while a round of requests waited
        threading.Thread(target=rules.preload, name="fake-dashscope-tokenizer", daemon=True).start()

    # --- the server side -------------------------------------------------------------------------

    def error_body(self, status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
        return {"code": code, "message": message, "request_id": request_id}

    def public(self, endpoint: str) -> bool:
        return endpoint == "oss_upload"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(
            f"{API}/services/aigc/multimodal-generation/generation", self._multimodal, name="multimodal"
        )
        app.router.add_post(f"{API}/services/aigc/text-generation/generation", self._text, name="text")
        app.router.add_get(f"{API}/uploads", self._policy, name="upload_policy")
        app.router.add_post("/oss", self._oss_upload, name="oss_upload")

    def _envelope(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        body = request[BODY]
        if not isinstance(body, dict) or not body.get("model"):
            return None, self.error(request, 400, "InvalidParameter", "Model not exist.")
        if not isinstance(body.get("input"), dict):
            return None, self.error(request, 400, "InvalidParameter", "Input should be a dict.")
        return body, None

    def _check_url(self, request: web.Request, url: str) -> str | None:
        """Why a media URL is unusable, or None."""
        if url.startswith("oss://"):
            if request.headers.get("X-DashScope-OssResourceResolve") != "enable":
                return "oss:// URLs need the X-DashScope-OssResourceResolve header"
            with self._lock:
                if url[len("oss://") :] not in self.uploads:
                    return f"The uploaded object does not exist: {url}"
        elif not url.startswith(("http://", "https://", "data:")):
            return f"The provided URL is not supported: {url[:40]}"
        return None

    def _prompt(self, body: dict[str, Any], request: web.Request) -> tuple[Prompt, str | None]:
        params = body.get("parameters") or {}
        prompt = Prompt(model=body["model"])
        fmt = params.get("response_format")
        prompt.json_mode = isinstance(fmt, dict) and fmt.get("type") == "json_object"
        messages = body["input"].get("messages")
        if not isinstance(messages, list) or not messages:
            if isinstance(body["input"].get("prompt"), str):
                prompt.texts.append(body["input"]["prompt"])
                return prompt, None
            return prompt, "Input messages must be a non-empty list."
        for msg in messages:
            content = msg.get("content")
            parts = [{"text": content}] if isinstance(content, str) else content
            if not isinstance(parts, list):
                return prompt, "Message content must be a string or a list."
            for part in parts:
                if not isinstance(part, dict):
                    return prompt, "Content parts must be objects."
                if "text" in part:
                    if msg.get("role") == "system":
                        prompt.system = part["text"]
                    else:
                        prompt.texts.append(part["text"])
                elif "image" in part:
                    if problem := self._check_url(request, part["image"]):
                        return prompt, problem
                    prompt.images.append(part["image"])
                elif "video" in part:
                    frames = part["video"] if isinstance(part["video"], list) else [part["video"]]
                    for url in frames:
                        if problem := self._check_url(request, url):
                            return prompt, problem
                    prompt.frames.extend(frames)
                    if "fps" in part:
                        prompt.fps = float(part["fps"])
                elif "audio" in part:
                    if problem := self._check_url(request, part["audio"]):
                        return prompt, problem
                    prompt.audios.append(part["audio"])
        return prompt, None

    def _generate(
        self, request: web.Request, body: dict[str, Any], prompt: Prompt, rule: ModelRule
    ) -> tuple[rules.Ending, dict[str, Any], bool] | web.Response:
        """The ending, usage and stream flag of this call's answer, or the 400 the service sends."""
        params = body.get("parameters") or {}
        stream = request.headers.get("X-DashScope-SSE") == "enable"
        size = request.content_length or 0
        if refused := rules.refusal(rule, prompt, params, body_bytes=size, stream=stream):
            return self.error(request, 400, *refused)
        text, _ = self.answer(prompt)
        seconds = self.answer_seconds(prompt) if self.answer_seconds else 0.0
        end = rules.ending(text, params, stream=stream, seconds=seconds, rule=rule)
        return end, rules.usage(rule, prompt, end.text), stream

    async def _multimodal(self, request: web.Request) -> web.StreamResponse:
        body, err = self._envelope(request)
        if err is not None or body is None:
            return err or web.Response(status=500)
        prompt, problem = self._prompt(body, request)
        if problem:
            code = "InvalidURL" if "URL" in problem or "object" in problem else "InvalidParameter"
            return self.error(request, 400, code, problem)
        rule = rule_for(prompt.model, "multimodal")
        made = self._generate(request, body, prompt, rule)
        if isinstance(made, web.Response):
            return made
        end, usage, stream = made
        message: dict[str, Any] = {"role": "assistant", "content": [{"text": end.text}]}
        if rule.kind == "asr":  # speech recognition adds what it heard about the audio
            message["annotations"] = [{"language": "en", "type": "audio_info", "emotion": "neutral"}]
        if stream:
            return await self._stream(request, end, usage, body.get("parameters") or {})
        reply = {
            "output": {"choices": [{"finish_reason": end.finish_reason, "message": message}]},
            "usage": usage,
            "request_id": request[REQUEST_ID],
        }
        return self._reply(request, reply, end)

    def _reply(self, request: web.Request, body: dict[str, Any], end: rules.Ending) -> web.Response:
        response = self.ok(request, body)
        if end.partial:
            response.headers[PARTIAL_HEADER] = "true"
        return response

    async def _stream(
        self,
        request: web.Request,
        end: rules.Ending,
        usage: dict[str, Any],
        params: dict[str, Any],
        *,
        text_content: bool = False,
    ) -> web.StreamResponse:
        """An SSE answer in two pieces; `text_content`: the text endpoint's string content."""
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream;charset=UTF-8",
                self.request_id_header: request[REQUEST_ID],
            }
        )
        await resp.prepare(request)
        words = end.text.split(" ")
        half = max(1, len(words) // 2)
        chunks = [" ".join(words[:half]) + " ", " ".join(words[half:])]
        incremental = bool(params.get("incremental_output"))
        sent = ""
        for i, chunk in enumerate(chunks, start=1):
            sent += chunk
            last = i == len(chunks)
            piece = chunk if incremental else sent
            data = {
                "output": {
                    "choices": [
                        {
                            "finish_reason": end.finish_reason if last else "null",
                            "message": {
                                "role": "assistant",
                                "content": piece if text_content else [{"text": piece}],
                            },
                        }
                    ]
                },
                "usage": usage,
                "request_id": request[REQUEST_ID],
            }
            frame = f"id:{i}\nevent:result\n:HTTP_STATUS/200\ndata:{json.dumps(data)}\n\n"
            await resp.write(frame.encode())
        await resp.write_eof()
        return resp

    async def _text(self, request: web.Request) -> web.StreamResponse:
        body, err = self._envelope(request)
        if err is not None or body is None:
            return err or web.Response(status=500)
        prompt, problem = self._prompt(body, request)
        if problem:
            return self.error(request, 400, "InvalidParameter", problem)
        if prompt.images or prompt.frames:
            return self.error(request, 400, "InvalidParameter", "Text models accept text content only.")
        made = self._generate(request, body, prompt, rule_for(prompt.model, "text"))
        if isinstance(made, web.Response):
            return made
        end, usage, stream = made
        params = body.get("parameters") or {}
        if stream:
            return await self._stream(request, end, usage, params, text_content=True)
        if params.get("result_format") == "message":
            message = {"role": "assistant", "content": end.text}
            output: dict[str, Any] = {"choices": [{"finish_reason": end.finish_reason, "message": message}]}
        else:
            output = {"text": end.text, "finish_reason": end.finish_reason}
        return self._reply(
            request, {"output": output, "usage": usage, "request_id": request[REQUEST_ID]}, end
        )

    # --- uploads ---------------------------------------------------------------------------------

    async def _policy(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("action") != "getPolicy" or not request.query.get("model"):
            return self.error(request, 400, "InvalidParameter", "action=getPolicy and model are required.")
        data = {
            "policy": "eyJmYWtlIjogInBvbGljeSJ9",
            "signature": "fake-signature",
            "upload_dir": f"dashscope-instant/fake/{datetime.now():%Y-%m-%d}/{new_id()[:8]}",
            "upload_host": f"{self.url}/oss",
            "expire_in_seconds": 300,
            "max_file_size_mb": 100,
            "capacity_limit_mb": 999999999,
            "oss_access_key_id": "FAKEOSSACCESSKEY",
            "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true",
        }
        return self.ok(request, {"request_id": request[REQUEST_ID], "data": data})

    async def _oss_upload(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        fields: dict[str, str] = {}
        payload: bytes | None = None
        for name, value in form.items():
            if isinstance(value, web.FileField):
                payload = value.file.read()
                request[RECORD].form[name] = {"filename": value.filename, "size": len(payload)}
            else:
                fields[name] = str(value)
                request[RECORD].form[name] = str(value)
        missing = [
            k
            for k in ("OSSAccessKeyId", "Signature", "policy", "key", "success_action_status")
            if k not in fields
        ]
        if payload is None or missing:
            # OSS answers in XML; the SDK only needs a non-200 here
            return web.Response(
                status=400, text=f"<Error><Code>InvalidArgument</Code><Missing>{missing}</Missing></Error>"
            )
        with self._lock:
            self.uploads[fields["key"]] = payload
            self.upload_forms.append(fields)
        return web.Response(status=200)
