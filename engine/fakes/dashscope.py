"""A loopback DashScope (native API) that the real `dashscope` SDK can be pointed at.

Endpoints (route names in brackets, for `count()` / `requests()`):
- ``POST /api/v1/services/aigc/multimodal-generation/generation`` [multimodal], JSON or SSE; parts
  ``text``, ``image``, ``video`` (a frame list or a file) and ``audio`` (speech recognition, qwen3-asr-flash)
- ``POST /api/v1/services/aigc/text-generation/generation`` [text]
- ``GET  /api/v1/uploads?action=getPolicy&model=`` [upload_policy], then ``POST /oss`` [oss_upload]
- ``POST /api/v1/services/aigc/video-generation/video-synthesis`` [video_synthesis] (async header required)
- ``GET  /api/v1/tasks/{id}`` [task_get], ``POST /api/v1/tasks/{id}/cancel`` [task_cancel]
- ``GET  /files/{name}`` [download]: the signed `video_url` of a finished task

Wire shapes follow ``reference/dashscope.md``; see that file for what is confirmed and what is not.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from aiohttp import web

from dropflow.engine.fakes.server import BODY, RECORD, REQUEST_ID, FakeServer, Prompt, new_id

API = "/api/v1"


@dataclass
class FakeTask:
    task_id: str
    model: str
    input: dict[str, Any]
    parameters: dict[str, Any]
    created: float
    submit_time: str
    fail: tuple[str, str] | None = None  # (code, message) when this task is to fail
    canceled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


_MP4_LOCK = threading.Lock()
_MP4: bytes | None = None


def sample_mp4() -> bytes:
    """A small real mp4 (rendered once per process with OpenCV), served as every task's video."""
    global _MP4
    with _MP4_LOCK:
        if _MP4 is None:
            import tempfile

            from dropflow.engine.providers.offline import render_placeholder_video

            with tempfile.TemporaryDirectory() as tmp:
                path = render_placeholder_video(Path(tmp) / "fake.mp4", "dropflow fake video", seconds=1.0)
                _MP4 = path.read_bytes()
        return _MP4


class FakeDashScope(FakeServer):
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

    def __init__(
        self,
        *,
        pending_seconds: float = 0.5,
        running_seconds: float = 1.0,
        video_url_ttl: float = 86400.0,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        """`pending_seconds` then `running_seconds` after creation a task SUCCEEDS (or FAILS, see
        `fail_next_tasks`); its signed video_url stays valid for `video_url_ttl` seconds.
        `clock` (epoch seconds) drives the task timeline and URL expiry: tests pass a fake one."""
        super().__init__(**kwargs)
        self.clock = clock
        self.pending_seconds = pending_seconds
        self.running_seconds = running_seconds
        self.video_url_ttl = video_url_ttl
        self.tasks: dict[str, FakeTask] = {}
        self.uploads: dict[str, bytes] = {}  # OSS object key -> uploaded bytes
        self.upload_forms: list[dict[str, str]] = []  # the text fields of each form upload
        self.download_failures = 0  # the next N downloads answer 503
        self._fail_next: list[tuple[str, str]] = []

    # --- test controls ---------------------------------------------------------------------------

    def fail_next_tasks(
        self, n: int = 1, code: str = "InternalError.Algo", message: str = "Video generation failed."
    ) -> None:
        """The next `n` created tasks end FAILED (with `output.code` / `output.message`)."""
        with self._lock:
            self._fail_next.extend([(code, message)] * n)

    def fail_downloads(self, n: int) -> None:
        with self._lock:
            self.download_failures += n

    def task_status(self, task_id: str) -> str:
        with self._lock:
            task = self.tasks.get(task_id)
            return self._status(task) if task else "UNKNOWN"

    # --- the server side -------------------------------------------------------------------------

    def error_body(self, status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
        return {"code": code, "message": message, "request_id": request_id}

    def public(self, endpoint: str) -> bool:
        return endpoint in ("oss_upload", "download")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(
            f"{API}/services/aigc/multimodal-generation/generation", self._multimodal, name="multimodal"
        )
        app.router.add_post(f"{API}/services/aigc/text-generation/generation", self._text, name="text")
        app.router.add_get(f"{API}/uploads", self._policy, name="upload_policy")
        app.router.add_post("/oss", self._oss_upload, name="oss_upload")
        app.router.add_post(
            f"{API}/services/aigc/video-generation/video-synthesis", self._synthesis, name="video_synthesis"
        )
        # the SDK's task calls end in a slash (``tasks/<id>/``, ``tasks/<id>/cancel/``); accept both
        app.router.add_get(f"{API}/tasks/{{task_id}}{{_:/?}}", self._task_get, name="task_get")
        app.router.add_post(f"{API}/tasks/{{task_id}}/cancel{{_:/?}}", self._task_cancel, name="task_cancel")
        app.router.add_get("/files/{name}", self._download, name="download")

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

    async def _multimodal(self, request: web.Request) -> web.StreamResponse:
        body, err = self._envelope(request)
        if err is not None or body is None:
            return err or web.Response(status=500)
        prompt, problem = self._prompt(body, request)
        if problem:
            code = "InvalidURL" if "URL" in problem or "object" in problem else "InvalidParameter"
            return self.error(request, 400, code, problem)
        text, tokens = self.answer(prompt)
        usage: dict[str, Any] = {
            "input_tokens": tokens["input_tokens"],
            "output_tokens": tokens["output_tokens"],
            "total_tokens": tokens["input_tokens"] + tokens["output_tokens"],
        }
        if prompt.images:
            usage["image_tokens"] = tokens["image_tokens"]
        if prompt.frames:
            usage["video_tokens"] = tokens["video_tokens"]
        if prompt.audios:
            usage["audio_tokens"] = tokens["audio_tokens"]
        if request.headers.get("X-DashScope-SSE") == "enable":
            return await self._stream(request, text, usage, body.get("parameters") or {})
        return self.ok(
            request,
            {
                "output": {
                    "choices": [
                        {
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": [{"text": text}]},
                        }
                    ]
                },
                "usage": usage,
                "request_id": request[REQUEST_ID],
            },
        )

    async def _stream(
        self, request: web.Request, text: str, usage: dict[str, Any], params: dict[str, Any]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream;charset=UTF-8",
                self.request_id_header: request[REQUEST_ID],
            }
        )
        await resp.prepare(request)
        words = text.split(" ")
        half = max(1, len(words) // 2)
        chunks = [" ".join(words[:half]) + " ", " ".join(words[half:])]
        incremental = bool(params.get("incremental_output"))
        sent = ""
        for i, chunk in enumerate(chunks, start=1):
            sent += chunk
            last = i == len(chunks)
            data = {
                "output": {
                    "choices": [
                        {
                            "finish_reason": "stop" if last else "null",
                            "message": {
                                "role": "assistant",
                                "content": [{"text": chunk if incremental else sent}],
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
        text, tokens = self.answer(prompt)
        usage = {
            "input_tokens": tokens["input_tokens"],
            "output_tokens": tokens["output_tokens"],
            "total_tokens": tokens["input_tokens"] + tokens["output_tokens"],
        }
        params = body.get("parameters") or {}
        if params.get("result_format") == "message":
            output: dict[str, Any] = {
                "choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": text}}]
            }
        else:
            output = {"text": text, "finish_reason": "stop"}
        return self.ok(request, {"output": output, "usage": usage, "request_id": request[REQUEST_ID]})

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

    # --- video synthesis -------------------------------------------------------------------------

    def _status(self, task: FakeTask) -> str:
        if task.canceled:
            return "CANCELED"
        age = self.clock() - task.created
        if age < self.pending_seconds:
            return "PENDING"
        if age < self.pending_seconds + self.running_seconds:
            return "RUNNING"
        return "FAILED" if task.fail else "SUCCEEDED"

    async def _synthesis(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-DashScope-Async") != "enable":
            return self.error(
                request, 403, "AccessDenied", "current user api does not support synchronous calls"
            )
        body, err = self._envelope(request)
        if err is not None or body is None:
            return err or web.Response(status=500)
        model, inp = body["model"], body["input"]
        params = body.get("parameters") or {}
        if "i2v" in model:
            img = inp.get("img_url")
            if not img:
                return self.error(request, 400, "InvalidParameter", "img_url is required for image-to-video.")
            if problem := self._check_url(request, img):
                return self.error(request, 400, "InvalidURL", problem)
        elif not inp.get("prompt"):
            return self.error(request, 400, "InvalidParameter", "prompt is required.")
        now = self.clock()
        task = FakeTask(new_id(), model, inp, params, now, _stamp(now))
        with self._lock:
            if self._fail_next:
                task.fail = self._fail_next.pop(0)
            self.tasks[task.task_id] = task
        return self.ok(
            request,
            {
                "output": {"task_id": task.task_id, "task_status": "PENDING"},
                "request_id": request[REQUEST_ID],
            },
        )

    async def _task_get(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task_id"]
        with self._lock:
            task = self.tasks.get(task_id)
        rid = request[REQUEST_ID]
        if task is None:
            return self.ok(
                request, {"request_id": rid, "output": {"task_id": task_id, "task_status": "UNKNOWN"}}
            )
        status = self._status(task)
        output: dict[str, Any] = {"task_id": task_id, "task_status": status, "submit_time": task.submit_time}
        body: dict[str, Any] = {"request_id": rid, "output": output}
        if status != "PENDING":
            output["scheduled_time"] = _stamp(task.created + self.pending_seconds)
        if status in ("SUCCEEDED", "FAILED"):
            output["end_time"] = _stamp(task.created + self.pending_seconds + self.running_seconds)
        if status == "FAILED" and task.fail:
            output["code"], output["message"] = task.fail
        if status == "SUCCEEDED":
            expires = int(self.clock() + self.video_url_ttl)
            output["video_url"] = (
                f"{self.url}/files/{task_id}.mp4?Expires={expires}&OSSAccessKeyId=FAKEOSSACCESSKEY"
                f"&Signature=fake%2Bsig%3D"
            )
            prompt = str(task.input.get("prompt") or "")
            output["orig_prompt"] = prompt
            output["actual_prompt"] = (
                prompt + " (extended)" if task.parameters.get("prompt_extend") else prompt
            )
            body["usage"] = {
                "video_duration": task.parameters.get("duration", 5),
                "video_ratio": task.parameters.get("size") or task.parameters.get("resolution") or "1280*720",
                "video_count": 1,
            }
        return self.ok(request, body)

    async def _task_cancel(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task_id"]
        with self._lock:
            task = self.tasks.get(task_id)
            status = self._status(task) if task else "UNKNOWN"
            if task is not None and status == "PENDING":
                task.canceled = True
                return self.ok(request, {"request_id": request[REQUEST_ID]})
        return self.error(
            request,
            400,
            "UnsupportedOperation",
            f"Failed to cancel the task, please confirm if the task status is PENDING (now {status}).",
        )

    async def _download(self, request: web.Request) -> web.StreamResponse:
        try:
            expires = int(request.query.get("Expires", "0"))
        except ValueError:
            expires = 0
        if "Signature" not in request.query or expires < self.clock():
            return web.Response(
                status=403,
                text="<Error><Code>AccessDenied</Code><Message>Request has expired.</Message></Error>",
                content_type="application/xml",
            )
        with self._lock:
            task = self.tasks.get(request.match_info["name"].removesuffix(".mp4"))
            failing = self.download_failures > 0
            if failing:
                self.download_failures -= 1
        if failing:
            return web.Response(status=503, text="<Error><Code>ServiceUnavailable</Code></Error>")
        if task is None or self._status(task) != "SUCCEEDED":
            return web.Response(status=404, text="<Error><Code>NoSuchKey</Code></Error>")
        return web.Response(body=sample_mp4(), content_type="video/mp4")
