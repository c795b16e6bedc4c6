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
What each wan model accepts, how it cuts prompts and how it reports usage are in wan_models.py.
This module holds the video-synthesis tasks and their downloads; the generation and upload
endpoints (and the error format) are `FakeDashScopeGeneration` in dashscope_generation.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from dropflow.engine.fakes import wan_models as wan
from dropflow.engine.fakes.dashscope_generation import API, FakeDashScopeGeneration
from dropflow.engine.fakes.server import REQUEST_ID, new_id


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


class FakeDashScope(FakeDashScopeGeneration):
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
        self.download_failures = 0  # the next N downloads answer 503
        self._fail_next: list[tuple[str, str]] = []
        self._garbled: list[tuple[bytes, str]] = []  # (body, content type) of create replies to garble

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

    def garble_create_replies(
        self, body: bytes, *, content_type: str = "application/json", times: int = 1
    ) -> None:
        """The next `times` create calls are carried out (the task exists and would bill) but answered
        with a 200 of `body` (empty, truncated JSON ...), as a failing gateway may. Unlike
        `Fault.body`, which answers in place of the handler, the task is really made."""
        with self._lock:
            self._garbled.extend([(body, content_type)] * times)

    def _garble(self) -> web.Response | None:
        with self._lock:
            if not self._garbled:
                return None
            body, ctype = self._garbled.pop(0)
        return web.Response(status=200, body=body, headers={"Content-Type": ctype})

    def task_status(self, task_id: str) -> str:
        with self._lock:
            task = self.tasks.get(task_id)
            return self._status(task) if task else "UNKNOWN"

    # --- the server side -------------------------------------------------------------------------

    def public(self, endpoint: str) -> bool:
        return endpoint == "download" or super().public(endpoint)

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_post(
            f"{API}/services/aigc/video-generation/video-synthesis", self._synthesis, name="video_synthesis"
        )
        # the SDK's task calls end in a slash (``tasks/<id>/``, ``tasks/<id>/cancel/``); accept both
        app.router.add_get(f"{API}/tasks/{{task_id}}{{_:/?}}", self._task_get, name="task_get")
        app.router.add_post(f"{API}/tasks/{{task_id}}/cancel{{_:/?}}", self._task_cancel, name="task_cancel")
        app.router.add_get("/files/{name}", self._download, name="download")

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
        img = inp.get("img_url")
        if img and (problem := self._check_url(request, img)):
            return self.error(request, 400, "InvalidURL", problem)
        image = wan.image_bytes(str(img), self.uploads) if img else None
        try:  # what the real model refuses (engine/fakes/wan_models.py)
            wan.check_create(model, inp, params, image)
        except wan.Refused as exc:
            return self.error(request, 400, exc.code, exc.message)
        now = self.clock()
        task = FakeTask(new_id(), model, inp, params, now, _stamp(now), extra={"image": image})
        with self._lock:
            if self._fail_next:
                task.fail = self._fail_next.pop(0)
            self.tasks[task.task_id] = task
        if garbled := self._garble():
            return garbled
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
            rules = wan.WAN[task.model]
            prompt, _ = wan.used_prompts(rules, task.input)  # cut to what the model reads, silently
            output["orig_prompt"] = str(task.input.get("prompt") or "")
            output["actual_prompt"] = (
                prompt + " (extended)" if task.parameters.get("prompt_extend") else prompt
            )
            body["usage"] = wan.usage(rules, task.parameters, task.extra.get("image"))
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
