"""A loopback fake of Bailian's hosted video analysis (the QuanMiao light app, 2024-08-01), driven
by the real `alibabacloud_quanmiaolightapp20240801` SDK pointed at it (``endpoint`` = its URL).

Endpoints (ROA, as the SDK sends them):

    POST /{workspaceId}/quanmiao/lightapp/videoAnalysis/submitVideoAnalysisTask   (form body)
    GET  /{workspaceId}/quanmiao/lightapp/videoAnalysis/getVideoAnalysisTask?taskId=...
    PUT  /{workspaceId}/quanmiao/lightapp/videoAnalysis/updateVideoAnalysisTask       (form body)

What it holds callers to:

- the ACS3-HMAC-SHA256 signature, recomputed with the secret of the key id it names: an unknown
  id gets 404 InvalidAccessKeyId.NotFound, a wrong secret (or a body changed after signing)
  400 SignatureDoesNotMatch, no signature 400 IncompleteSignature;
- a workspace it knows (403 otherwise; code unconfirmed);
- the request's rules (`engine/providers/bailian_rules.py`): videoUrl, frameSampleMethod ranges,
  the video template's ``{videoAsrText}``, generateOptions and language values, role photo URLs;
- the task's life: PENDING, RUNNING, then the video is fetched from its URL (a signed OSS URL
  that has expired fails the task, as does a video over the size or length caps), and SUCCESSED
  with results built from the video's real duration, or FAILED with the reason. A video marked
  refused (`refuse_content`) ends with header.errorCode ViolationOfSecurityPolicy and no results.
- a cancel (taskStatus CANCELED, the only change taken) only while the task is PENDING: it then
  ends CANCELED, is never fetched nor billed, and polls say so; a task that started or ended is
  refused (200, success false, `CANCEL_REFUSED`), an unknown id gets DataNotExists.

Answers are deterministic placeholders ("fake quanmiao shot 00:00-00:10 ..."); usage follows
the frames the service would sample (one per interval, ``frame_tokens`` each) and the text.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from dropflow.engine.fakes.server import REQUEST_ID, FakeServer
from dropflow.engine.providers import bailian_rules as rules

PREFIX = "/{workspace}/quanmiao/lightapp/videoAnalysis"
SHOT_SECONDS = 10.0  # the fake cuts a shot every 10 s of video


@dataclass
class Task:
    task_id: str
    fields: dict[str, Any]
    created: float
    status: str = "PENDING"
    error_code: str = ""
    error_message: str = ""
    output: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    ran: bool = False


class FakeQuanMiao(FakeServer):
    provider: ClassVar[str] = "quanmiao"
    request_id_header: ClassVar[str] = "x-acs-request-id"
    default_codes: ClassVar[dict[int, str]] = {
        400: "InvalidParameter",
        403: "Forbidden",
        404: "NotFound",
        429: "Throttling.User",
        500: "InternalError",
        503: "ServiceUnavailable",
    }

    def __init__(
        self,
        *,
        access_keys: dict[str, str] | None = None,
        workspace: str = "llm-test",
        pending_seconds: float = 0.2,
        running_seconds: float = 0.3,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.access_keys = dict(access_keys or {"LTAI-test": "secret-test-0123456789"})
        self.workspace = workspace
        self.pending_seconds = pending_seconds
        self.running_seconds = running_seconds
        self.refuse_content = False  # the next tasks' videos trip the content check
        self.tasks: dict[str, Task] = {}

    @property
    def endpoint(self) -> str:
        """What `providers.bailian.endpoint` should hold."""
        return self.url

    # --- what tests use --------------------------------------------------------------------------

    def submitted(self) -> list[dict[str, Any]]:
        """The fields of every accepted submission, oldest first (JSON fields parsed)."""
        with self._lock:
            return [t.fields for t in self.tasks.values()]

    def task(self, task_id: str) -> Task:
        """The task as the service holds it (KeyError: never submitted)."""
        with self._lock:
            return self.tasks[task_id]

    # --- the protocol ------------------------------------------------------------------------------

    def public(self, endpoint: str) -> bool:
        return True  # the handlers check the ACS3 signature themselves, with the gateway's codes

    def error_body(self, status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
        # the POP gateway's error shape (what the SDK reads: Code, Message, RequestId)
        return {
            "RequestId": request_id,
            "HostId": "quanmiaolightapp.cn-beijing.aliyuncs.com",
            "Code": code,
            "Message": message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}",
        }

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(f"{PREFIX}/submitVideoAnalysisTask", self._submit, name="submit")
        app.router.add_get(f"{PREFIX}/getVideoAnalysisTask", self._get, name="get")
        app.router.add_put(f"{PREFIX}/updateVideoAnalysisTask", self._update, name="update")

    async def _refusal(self, request: web.Request, body: bytes) -> web.Response | None:
        """None when the request is signed right by a known key, for a known workspace."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("ACS3-HMAC-SHA256 "):
            return self.error(
                request,
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            )
        parts = dict(p.strip().split("=", 1) for p in auth[len("ACS3-HMAC-SHA256 ") :].split(",") if "=" in p)
        key_id = parts.get("Credential", "")
        secret = self.access_keys.get(key_id)
        if secret is None:
            return self.error(
                request, 404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
            )
        payload = hashlib.sha256(body).hexdigest()
        if request.headers.get("x-acs-content-sha256") != payload:
            return self.error(
                request, 400, "SignatureDoesNotMatch", "The request body does not match its hash."
            )
        signed = parts.get("SignedHeaders", "").split(";")
        headers = "".join(f"{h}:{request.headers.get(h, '').strip()}\n" for h in signed)
        query = "&".join(f"{k}={quote(v, safe='~')}" for k, v in sorted(request.rel_url.query.items()))
        canonical = (
            f"{request.method}\n{request.rel_url.raw_path}\n{query}\n{headers}\n{';'.join(signed)}\n{payload}"
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        expected = hmac.new(
            secret.encode(), f"ACS3-HMAC-SHA256\n{digest}".encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, parts.get("Signature", "")):
            return self.error(
                request, 400, "SignatureDoesNotMatch", "Specified signature does not match our calculation."
            )
        if request.match_info["workspace"] != self.workspace:
            return self.error(request, 403, "WorkspaceNotExist", "workspace not found or no permission")
        return None

    def _ok(self, request: web.Request, data: dict[str, Any]) -> web.Response:
        rid = request[REQUEST_ID]
        return self.ok(
            request,
            {
                "requestId": rid,
                "code": "successful",
                "message": "success",
                "httpStatusCode": 200,
                "success": True,
                "data": data,
            },
        )

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        refused = await self._refusal(request, body)
        if refused is not None:
            return refused
        form = dict((await request.post()).items())
        fields, why = _check(form)
        if why:
            return self.error(request, 400, "InvalidParameter", why)
        task = Task(task_id=str(uuid.uuid4()), fields=fields, created=time.monotonic())
        if self.refuse_content:
            task.error_code = rules.REFUSED_CONTENT
        with self._lock:
            self.tasks[task.task_id] = task
        return self._ok(request, {"taskId": task.task_id})

    def _refused(self, request: web.Request, code: str, message: str, data: dict[str, Any]) -> web.Response:
        """A refusal the light app answers as a 200 whose body says `success: false` ([update]'s example)."""
        rid = request[REQUEST_ID]
        body = {
            "requestId": rid,
            "code": code,
            "message": message,
            "httpStatusCode": 200,
            "success": False,
            "data": data,
        }
        return self.ok(request, body)

    async def _advance(self, task: Task) -> None:
        """Move the task along its life by its age (fetching the video once it is due to run)."""
        if task.ran:
            return
        age = time.monotonic() - task.created
        if age < self.pending_seconds:
            task.status = "PENDING"
        elif age < self.pending_seconds + self.running_seconds:
            task.status = "RUNNING"
        else:
            await self._run(task)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        refused = await self._refusal(request, await request.read())
        if refused is not None:
            return refused
        with self._lock:
            task = self.tasks.get(request.query.get("taskId", ""))
        if task is None:
            return self.error(request, 400, "TaskNotExist", "task not exist")  # unconfirmed code
        age = time.monotonic() - task.created
        await self._advance(task)
        data: dict[str, Any] = {
            "taskId": task.task_id,
            "taskStatus": task.status,
            "header": {
                "event": "task-finished" if task.ran else "task-running",
                "taskId": task.task_id,
                "errorCode": task.error_code or "success",
                "errorMessage": task.error_message,
            },
            "taskRunInfo": {"concurrentChargeEnable": False, "responseTime": int(age * 1000)},
        }
        if task.status == "FAILED":
            data["errorMessage"] = task.error_message
        if task.ran and task.status == "SUCCESSED":
            data["payload"] = {"output": task.output, "usage": task.usage}
        return self._ok(request, data)

    async def _update(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        refused = await self._refusal(request, body)
        if refused is not None:
            return refused
        form = await request.post()
        task_id, status = str(form.get("taskId", "")), str(form.get("taskStatus", ""))
        if status != rules.CANCEL_STATUS:
            return self.error(request, 400, "InvalidParameter", "taskStatus: only CANCELED is supported")
        with self._lock:
            task = self.tasks.get(task_id)
        if task is None:
            return self._refused(request, rules.UNKNOWN_TASK, "task not exist", {"taskId": task_id})
        await self._advance(task)
        if task.status not in rules.CANCELLABLE_STATUSES:
            return self._refused(
                request,
                rules.CANCEL_REFUSED,
                f"task status {task.status} cannot be canceled",
                {"taskId": task_id, "taskStatus": task.status},
            )
        # ran: the task is over; the video is never fetched and no result (or usage) is made
        task.status, task.ran, task.error_message = rules.CANCEL_STATUS, True, "canceled by user"
        return self._ok(
            request, {"taskId": task_id, "taskStatus": task.status, "taskErrorMessage": task.error_message}
        )

    async def _run(self, task: Task) -> None:
        """Fetch the video and make the results (once per task)."""
        task.ran = True
        url = task.fields["videoUrl"]
        try:
            async with ClientSession(timeout=ClientTimeout(total=30)) as http, http.get(url) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:300]
                    task.status, task.error_code = "FAILED", "VideoDownloadFailed"
                    task.error_message = f"video download failed: HTTP {resp.status} {text}"
                    return
                if (resp.content_length or 0) > rules.MAX_VIDEO_BYTES:
                    task.status, task.error_code = "FAILED", "VideoTooLarge"
                    task.error_message = "video file too large"
                    return
                data = await resp.read()
        except (TimeoutError, ClientError) as exc:
            task.status, task.error_code = "FAILED", "VideoDownloadFailed"
            task.error_message = f"video download failed: {type(exc).__name__}"
            return
        try:
            duration, width, height = await asyncio.to_thread(_probe, data)
        except Exception:
            task.status, task.error_code, task.error_message = (
                "FAILED",
                "VideoDecodeFailed",
                "video cannot be decoded",
            )
            return
        if duration > rules.MAX_VIDEO_SECONDS:
            task.status, task.error_code, task.error_message = "FAILED", "VideoTooLong", "video too long"
            return
        if task.error_code == rules.REFUSED_CONTENT:
            task.status, task.error_message = "SUCCESSED", "content violates the security policy"
            return
        task.output, task.usage = _results(task.fields, duration, width, height)
        task.status = "SUCCESSED"


def _check(form: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The submission's fields (JSON ones parsed), or why it is refused."""
    fields: dict[str, Any] = {}
    for k, v in form.items():
        if not isinstance(v, str):
            return {}, f"{k}: not a text field"
        if k in (
            "frameSampleMethod",
            "generateOptions",
            "videoRoles",
            "textProcessTasks",
            "videoCaptionInfo",
        ):
            try:
                fields[k] = json.loads(v)
            except ValueError:
                return {}, f"{k}: not valid JSON"
        else:
            fields[k] = v
    url = fields.get("videoUrl", "")
    if not url:
        return {}, "videoUrl is mandatory for this action."
    if not url.startswith(rules.URL_SCHEMES):
        return {}, "videoUrl: must be an http(s) URL"
    method = fields.get("frameSampleMethod")
    if method is not None:
        if not isinstance(method, dict):
            return {}, "frameSampleMethod: must be an object"
        lo, hi = rules.FRAME_INTERVAL_RANGE
        interval = method.get("interval")
        if interval is not None and not (isinstance(interval, int | float) and lo <= interval <= hi):
            return {}, f"frameSampleMethod.interval: must be between {lo:g} and {hi:g} seconds"
        plo, phi = rules.FRAME_PIXEL_RANGE
        pixel = method.get("pixel")
        if pixel is not None and not (isinstance(pixel, int) and plo <= pixel <= phi):
            return {}, f"frameSampleMethod.pixel: must be between {plo} and {phi}"
    template = fields.get("videoModelCustomPromptTemplate")
    if template is not None and rules.VIDEO_TEMPLATE_VARIABLE not in template:
        return {}, f"videoModelCustomPromptTemplate: must contain {rules.VIDEO_TEMPLATE_VARIABLE}"
    model = fields.get("videoModelId")
    if model is not None and model not in rules.VIDEO_MODELS:
        return {}, f"videoModelId: {model} is not supported"
    options = fields.get("generateOptions")
    if options is not None and (
        not isinstance(options, list) or any(o not in rules.GENERATE_OPTIONS for o in options)
    ):
        return {}, f"generateOptions: values must be among {', '.join(rules.GENERATE_OPTIONS)}"
    language = fields.get("language")
    if language is not None and language not in set(rules.LANGUAGES.values()):
        return {}, f"language: {language} is not supported"
    for role in fields.get("videoRoles") or []:
        if not isinstance(role, dict) or not role.get("roleName"):
            return {}, "videoRoles: every role needs a roleName"
        if any(not str(u).startswith(rules.URL_SCHEMES) for u in role.get("urls") or []):
            return {}, "videoRoles.urls: photos must be http(s) URLs"
    return fields, ""


def _probe(data: bytes) -> tuple[float, int, int]:
    import av

    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / 1_000_000
        return duration, stream.codec_context.width or 0, stream.codec_context.height or 0


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _results(
    fields: dict[str, Any], duration: float, width: int, height: int
) -> tuple[dict[str, Any], dict[str, int]]:
    method = fields.get("frameSampleMethod") or {}
    interval = float(method.get("interval") or 2)
    pixel = int(method.get("pixel") or 768)
    model = fields.get("videoModelId") or "qwen-vl-max-latest"
    text_model = fields.get("modelId") or "qwen-max"
    options = fields.get("generateOptions") or ["videoAnalysis", "videoGenerate"]
    per_frame = rules.frame_tokens(width, height, pixel)
    shots: list[dict[str, Any]] = []
    start = 0.0
    while start < duration or not shots:
        end = min(duration, start + SHOT_SECONDS)
        frames = rules.frames_billed(end - start, interval)
        text = f"fake quanmiao shot {_clock(start)}-{_clock(end)} by {model}: {frames} frame(s) at {pixel} px"
        shots.append({"startTime": _ms(start), "endTime": _ms(end), "text": text, "frames": frames})
        start = end
        if end >= duration:
            break
    image_tokens = sum(s.pop("frames") for s in shots) * per_frame
    prompt_tokens = _tokens(fields.get("videoModelCustomPromptTemplate", "")) * len(shots)
    analysis_text = "\n".join(s["text"] for s in shots)
    analysis_usage = {
        "inputTokens": image_tokens + prompt_tokens,
        "imageTokens": image_tokens,
        "outputTokens": _tokens(analysis_text),
    }
    analysis_usage["totalTokens"] = analysis_usage["inputTokens"] + analysis_usage["outputTokens"]
    output: dict[str, Any] = {
        "videoCaptionResult": {
            "generateFinished": True,
            "videoCaptions": [
                {
                    "startTime": s["startTime"],
                    "endTime": s["endTime"],
                    "startTimeFormat": _clock(s["startTime"] / 1000),
                    "endTimeFormat": _clock(s["endTime"] / 1000),
                    "text": f"fake caption {i + 1}",
                    "speaker": "speaker 1",
                }
                for i, s in enumerate(shots)
            ],
        },
    }
    usages = [analysis_usage]
    if "videoAnalysis" in options:
        output["videoAnalysisResult"] = {
            "generateFinished": True,
            "text": analysis_text,
            "usage": analysis_usage,
            "videoShotAnalysisResults": shots,
        }

    def text_result(kind: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        text = f"fake quanmiao {kind} by {text_model} of {len(shots)} shot(s), {duration:.1f} s"
        if fields.get("videoExtraInfo"):
            text += f"; extra: {fields['videoExtraInfo'][:40]}"
        if fields.get("language"):
            text += f"; in {fields['language']}"
        usage = {"inputTokens": _tokens(analysis_text) + _tokens(fields.get("modelCustomPromptTemplate", ""))}
        usage["outputTokens"] = _tokens(text)
        usage["totalTokens"] = usage["inputTokens"] + usage["outputTokens"]
        usages.append(usage)
        return {"generateFinished": True, "text": text, "usage": usage, **(extra or {})}

    if "videoGenerate" in options:
        output["videoGenerateResult"] = text_result("summary", {"modelId": text_model, "index": 0})
    if "videoTitleGenerate" in options:
        output["videoTitleGenerateResult"] = text_result("title")
    if "videoMindMappingGenerate" in options:
        output["videoMindMappingGenerateResult"] = text_result(
            "mind map",
            {
                "videoMindMappings": [
                    {"name": "video", "childNodes": [{"name": s["text"][:30]} for s in shots]}
                ]
            },
        )
    total = {
        "inputTokens": sum(u["inputTokens"] for u in usages),
        "outputTokens": sum(u["outputTokens"] for u in usages),
    }
    total["totalTokens"] = total["inputTokens"] + total["outputTokens"]
    return output, total
