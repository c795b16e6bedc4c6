"""A loopback Volcengine Ark (content-generation tasks) that the real `volcenginesdkarkruntime`
SDK can be pointed at (``AsyncArk(base_url=srv.base_url)``).

Endpoints (route names in brackets, for `count()` / `requests()`):
- ``POST   /api/v3/contents/generations/tasks`` [create]: ``{model, content, ratio, resolution,
  duration, seed, camera_fixed, watermark}`` -> ``{"id": "cgt-..."}``
- ``GET    /api/v3/contents/generations/tasks/{id}`` [task_get]: the task; an unknown id is a 404
- ``DELETE /api/v3/contents/generations/tasks/{id}`` [task_delete]: cancels a queued task, deletes
  a finished one, refuses a running one
- ``GET    /files/{id}.mp4`` [download]: the TOS-signed `video_url` of a finished task, valid 24 h

Errors are Ark's ``{"error": {code, message, param, type}}``. What each model takes, and what it
bills (``usage.completion_tokens``), is in ark_models.py; faults, rate limits and latency come
from `FakeServer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from dropflow.engine.fakes import ark_models as ark
from dropflow.engine.fakes.dashscope import sample_mp4
from dropflow.engine.fakes.server import BODY, REQUEST_ID, FakeServer, new_id

API = "/api/v3"
TASKS = f"{API}/contents/generations/tasks"
_TYPES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 429: "TooManyRequests"}


@dataclass
class ArkTask:
    task_id: str
    model: str
    made: ark.Made
    created: float
    expires_after: int | None = None
    fail: tuple[str, str] | None = None  # (code, message) when this task is to fail
    cancelled_at: float | None = None


class FakeArk(FakeServer):
    provider = "ark"
    request_id_header = "X-Request-Id"
    base_path = API
    default_codes: ClassVar[dict[int, str]] = {
        400: "InvalidParameter",
        401: "AuthenticationError",
        403: "AccessDenied",
        404: "ResourceNotFound",
        429: "RateLimitExceeded",
        500: "InternalServiceError",
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
        """A task is queued for `pending_seconds`, then running for `running_seconds`, then
        succeeded (or failed, see `fail_next_tasks`); its video URL works for `video_url_ttl`
        seconds. `clock` (epoch seconds) drives both: tests pass a fake one."""
        super().__init__(**kwargs)
        self.clock = clock
        self.pending_seconds = pending_seconds
        self.running_seconds = running_seconds
        self.video_url_ttl = video_url_ttl
        self.tasks: dict[str, ArkTask] = {}
        self.refused_words: set[str] = set()  # prompts with one of these: InputTextSensitiveContentDetected
        self._fail_next: list[tuple[str, str]] = []
        self._garbled: list[tuple[bytes, str]] = []

    # --- test controls -------------------------------------------------------------------------

    def fail_next_tasks(
        self,
        n: int = 1,
        code: str = "OutputVideoSensitiveContentDetected",
        message: str = "The request failed because the output video may contain sensitive information.",
    ) -> None:
        """The next `n` created tasks end failed with this `error`."""
        with self._lock:
            self._fail_next.extend([(code, message)] * n)

    def garble_create_replies(
        self, body: bytes, *, content_type: str = "application/json", times: int = 1
    ) -> None:
        """The next `times` create calls make their task (it would bill) but answer a 200 of `body`."""
        with self._lock:
            self._garbled.extend([(body, content_type)] * times)

    def task_status(self, task_id: str) -> str:
        with self._lock:
            task = self.tasks.get(task_id)
            return self._status(task) if task else "unknown"

    # --- the server side -----------------------------------------------------------------------

    def error_body(self, status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
        text = message if "Request id" in message else f"{message} Request id: {request_id}"
        return {
            "error": {"code": code, "message": text, "param": "", "type": _TYPES.get(status, "InternalError")}
        }

    def refuse(self, request: web.Request, refused: ark.Refused) -> web.Response:
        rid = request.get(REQUEST_ID, "")
        body = self.error_body(refused.status, refused.code, refused.message, rid)
        body["error"]["param"] = refused.param
        return web.json_response(body, status=refused.status, headers={self.request_id_header: rid})

    def public(self, endpoint: str) -> bool:
        return endpoint == "download"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(TASKS, self._create, name="create")
        app.router.add_get(TASKS + "/{task_id}", self._get, name="task_get")
        app.router.add_delete(TASKS + "/{task_id}", self._delete, name="task_delete")
        app.router.add_get("/files/{name}", self._download, name="download")

    def _status(self, task: ArkTask) -> str:
        if task.cancelled_at is not None:
            return "cancelled"
        age = self.clock() - task.created
        done_at = self.pending_seconds + self.running_seconds
        if task.expires_after is not None and age >= task.expires_after and age < done_at:
            return "expired"
        if age < self.pending_seconds:
            return "queued"
        if age < done_at:
            return "running"
        return "failed" if task.fail else "succeeded"

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        if not isinstance(body, dict):
            return self.refuse(
                request, ark.Refused("InvalidParameter", "The request body is not a JSON object.")
            )
        try:
            made = ark.check_create(body)
        except ark.Refused as exc:
            return self.refuse(request, exc)
        if any(word in made.prompt for word in self.refused_words):
            return self.refuse(
                request,
                ark.Refused(
                    "InputTextSensitiveContentDetected",
                    "The request failed because the input text may contain sensitive information.",
                ),
            )
        now = self.clock()
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M%S")
        task = ArkTask(f"cgt-{stamp}-{new_id()[:5]}", body["model"], made, now)
        expires = body.get("execution_expires_after")
        if isinstance(expires, int) and not isinstance(expires, bool):
            task.expires_after = expires
        with self._lock:
            if self._fail_next:
                task.fail = self._fail_next.pop(0)
            self.tasks[task.task_id] = task
            garbled = self._garbled.pop(0) if self._garbled else None
        if garbled is not None:
            return web.Response(status=200, body=garbled[0], headers={"Content-Type": garbled[1]})
        return self.ok(request, {"id": task.task_id})

    def _not_found(self, request: web.Request, task_id: str) -> web.Response:
        return self.refuse(
            request,
            ark.Refused(
                "ResourceNotFound",
                f"The specified task {task_id} is not found.",  # (unconfirmed) Ark's wording and code
                status=404,
                param="id",
            ),
        )

    async def _get(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task_id"]
        with self._lock:
            task = self.tasks.get(task_id)
            status = self._status(task) if task else ""
        if task is None:
            return self._not_found(request, task_id)
        made = task.made
        ends = {
            "queued": task.created,
            "running": task.created + self.pending_seconds,
            "succeeded": task.created + self.pending_seconds + self.running_seconds,
            "failed": task.created + self.pending_seconds + self.running_seconds,
            "expired": task.created + (task.expires_after or 0),
            "cancelled": task.cancelled_at or task.created,
        }
        out: dict[str, Any] = {
            "id": task_id,
            "model": task.model,
            "status": status,
            "error": None,
            "created_at": int(task.created),
            "updated_at": int(ends[status]),
            "seed": made.seed,
            "resolution": made.resolution,
            "ratio": made.ratio,
            "duration": made.duration,
            "framespersecond": ark.FPS,
            "service_tier": "default",
            "execution_expires_after": task.expires_after or 172800,
        }
        if status == "failed" and task.fail:
            out["error"] = {"code": task.fail[0], "message": task.fail[1]}
        if status == "expired":
            out["error"] = {"code": "TaskExpired", "message": "The task was not finished before it expired."}
        if status == "succeeded":
            done = task.created + self.pending_seconds + self.running_seconds
            signed = datetime.fromtimestamp(done, UTC).strftime("%Y%m%dT%H%M%SZ")
            out["content"] = {
                "video_url": f"{self.url}/files/{task_id}.mp4?X-Tos-Algorithm=TOS4-HMAC-SHA256"
                f"&X-Tos-Credential=FAKE%2F{signed[:8]}%2Fcn-beijing%2Ftos%2Frequest&X-Tos-Date={signed}"
                f"&X-Tos-Expires={int(self.video_url_ttl)}&X-Tos-Signature=fakesig&X-Tos-SignedHeaders=host"
            }
            out["usage"] = {"completion_tokens": made.tokens, "total_tokens": made.tokens}
        return self.ok(request, out)

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task_id"]
        with self._lock:
            task = self.tasks.get(task_id)
            status = self._status(task) if task else ""
            if task is not None and status == "queued":
                task.cancelled_at = self.clock()
            elif task is not None and status != "running":
                del self.tasks[task_id]  # a finished task's record (and video) is deleted
        if task is None:
            return self._not_found(request, task_id)
        if status == "running":
            return self.refuse(
                request,
                ark.Refused(
                    "InvalidAction.TaskRunning",  # (unconfirmed) Ark's code for this refusal
                    f"The task {task_id} is running and cannot be cancelled or deleted.",
                    status=409,
                ),
            )
        return self.ok(request, {})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            signed = datetime.strptime(q.get("X-Tos-Date", ""), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            expires = signed.timestamp() + int(q.get("X-Tos-Expires", "0"))
        except ValueError:
            expires = 0.0
        if "X-Tos-Signature" not in q or expires < self.clock():
            return web.Response(
                status=403,
                text="<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                content_type="application/xml",
            )
        task_id = request.match_info["name"].removesuffix(".mp4")
        with self._lock:
            task = self.tasks.get(task_id)
            status = self._status(task) if task else ""
        if status != "succeeded":
            return web.Response(status=404, text="<Error><Code>NoSuchKey</Code></Error>")
        return web.Response(body=sample_mp4(), content_type="video/mp4")
