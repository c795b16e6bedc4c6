"""Bailian hosted video analysis (the QuanMiao light app): the SDK call layer.

Two SDKs, both official: `alibabacloud-quanmiaolightapp20240801` (SubmitVideoAnalysisTask /
GetVideoAnalysisTask / UpdateVideoAnalysisTask, ROA calls signed ACS3-HMAC-SHA256 with an AccessKey
pair) and `oss2` (the
upload of a dropped video to the user's bucket, and the signed URL the service fetches it from).
The AccessKey pair comes from the environment on every use and is never kept in a field that is
printed, stored or sent anywhere but the signing code.

Failures are mapped onto `dropflow.engine.errors` here, at the boundary: a key the service does
not know or a wrong secret -> AuthError; throttling and 5xx, dropped connections and replies that
cannot be read -> RetryableError; everything the service refused -> PermanentError with its code.
The rules of the service (limits, values, prices) live in `bailian_rules.py` beside this module.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from dropflow.engine.errors import AuthError, ConfigError, PermanentError, ProviderError, RetryableError
from dropflow.engine.providers.bailian_rules import CANCEL_STATUS, REFUSED_CONTENT

if TYPE_CHECKING:
    from dropflow.daemon.core.config import BailianSettings

ACCESS_KEY_ID_ENV = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ACCESS_KEY_SECRET_ENV = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
KEY_HINT = (
    f"set {ACCESS_KEY_ID_ENV} and {ACCESS_KEY_SECRET_ENV} to an AccessKey pair of the Alibaba Cloud "
    "account (or a RAM user allowed quanmiaolightapp:* and to write the OSS bucket), then "
    "`dropflow retry` the job"
)
# the codes Alibaba Cloud gateways answer for a refused AccessKey (OpenAPI common error codes)
AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidSecurityToken.Expired",
    }
)
# the account cannot pay, or has used up what it may: a retry will not change it (unconfirmed
# beyond Arrearage, which every Alibaba Cloud product answers for an overdue account)
QUOTA_CODES = ("Arrearage", "Account.Arrearage", "QuotaExhausted", "Quota.Exceeded", "FreeTierOnly")
# the light app's task statuses (GetVideoAnalysisTask data.taskStatus; SUCCESSED is its spelling)
DONE_STATUSES = frozenset({"SUCCESSED", "FAILED", "CANCELED", "UNKNOWN"})


@dataclass(frozen=True)
class AnalysisTask:
    """One poll of a task: its status, and on success what the service made (`output`, as the wire
    spells it) and what it billed (`usage`)."""

    task_id: str
    status: str  # PENDING, RUNNING, SUCCESSED, FAILED, CANCELED; UNKNOWN: the service has no such task
    error_code: str = ""
    error_message: str = ""
    output: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def refused_content(self) -> bool:
        return self.error_code == REFUSED_CONTENT


def credentials(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The AccessKey pair from the environment.

    Raises:
        AuthError: either half is missing.
    """
    env = os.environ if env is None else env
    key_id = env.get(ACCESS_KEY_ID_ENV, "").strip()
    secret = env.get(ACCESS_KEY_SECRET_ENV, "").strip()
    if not key_id or not secret:
        missing = [n for n, v in ((ACCESS_KEY_ID_ENV, key_id), (ACCESS_KEY_SECRET_ENV, secret)) if not v]
        raise AuthError(
            f"no Alibaba Cloud AccessKey: {' and '.join(missing)} not set", hint=KEY_HINT, provider="bailian"
        )
    return key_id, secret


def _host(endpoint: str) -> tuple[str, str]:
    """(host[:port], protocol) of an endpoint given as a host or a URL."""
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        return parts.netloc, parts.scheme
    return endpoint.strip("/"), "https"


class BailianAnalysis:
    """The hosted video analysis of one daemon (shared by its jobs): submit, poll, upload, sign.

    Not a chat model (not one of the vision providers): the annotate engine's `mode: bailian`
    drives it, through `ProviderPool.video_analysis`.
    """

    name: ClassVar[str] = "bailian"
    offline: ClassVar[bool] = False

    def __init__(self, settings: BailianSettings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._env = env  # None: os.environ, read on every use (a key set later is picked up)

    # --- the contract's chat call: not this service ---------------------------------------------

    async def aclose(self) -> None:
        """Nothing held between calls (each call makes its own SDK client). Never raises."""

    # --- the light app ---------------------------------------------------------------------------

    @property
    def workspace(self) -> str:
        ws = self.settings.workspace_id
        if not ws:
            raise ConfigError(
                "providers.bailian.workspace_id is not set",
                hint="copy the workspace id (llm-...) from the Bailian console into config.yaml",
            )
        return ws

    def _client(self) -> Any:
        from alibabacloud_quanmiaolightapp20240801.client import Client
        from alibabacloud_tea_openapi.utils_models import Config

        key_id, secret = credentials(self._env)
        host, protocol = _host(self.settings.endpoint)
        ms = int(self.settings.timeout_seconds * 1000)
        return Client(
            Config(
                access_key_id=key_id,
                access_key_secret=secret,
                endpoint=host,
                protocol=protocol,
                region_id=self.settings.region_id,
                read_timeout=ms,
                connect_timeout=min(ms, 10_000),
            )
        )

    async def submit(self, fields: dict[str, Any]) -> tuple[str, str]:
        """Create a task from `fields` (the request as the wire spells it: videoUrl, frameSampleMethod,
        ...); its (task id, request id).

        Raises:
            AuthError: the AccessKey was refused or is missing.
            PermanentError: the request was refused (its code), or the account cannot pay.
            RetryableError: throttling, 5xx, a dropped connection, an unreadable reply
                (code MalformedResponse: the task may exist).
        """
        from alibabacloud_quanmiaolightapp20240801 import models

        request = models.SubmitVideoAnalysisTaskRequest().from_map(dict(fields))
        client = self._client()
        try:
            response = await client.submit_video_analysis_task_async(self.workspace, request)
            body = response.body
            self._check_body(body, "submit")
            task_id = body.data.task_id if body.data is not None else None
            request_id = body.request_id or ""
        except ProviderError:
            raise
        except Exception as exc:
            raise _wrap(exc, "submitting the video analysis task") from exc
        if not task_id:
            raise RetryableError(
                "Bailian accepted the submission but its reply holds no task id",
                provider=self.name,
                code="MalformedResponse",
                request_id=request_id,
            )
        return str(task_id), request_id

    async def fetch(self, task_id: str) -> AnalysisTask:
        """Poll a task once; a task the service does not know comes back UNKNOWN.

        Raises: AuthError, PermanentError, RetryableError (as `submit`).
        """
        from alibabacloud_quanmiaolightapp20240801 import models

        client = self._client()
        try:
            response = await client.get_video_analysis_task_async(
                self.workspace, models.GetVideoAnalysisTaskRequest(task_id=task_id)
            )
            body = response.body
            self._check_body(body, "poll")
            raw = response.to_map().get("body", {})
        except Exception as exc:
            error = exc if isinstance(exc, ProviderError) else _wrap(exc, f"polling task {task_id}")
            if "NotExist" in error.code or error.code.endswith("TaskNotFound"):  # unconfirmed codes
                return AnalysisTask(
                    task_id, "UNKNOWN", error.code, error.message, request_id=error.request_id
                )
            if error is exc:
                raise
            raise error from exc
        data = raw.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("taskStatus"), str):
            raise RetryableError(
                f"Bailian's reply for task {task_id} holds no task status",
                provider=self.name,
                code="MalformedResponse",
                request_id=str(raw.get("requestId", "")),
            )
        header, payload = _dict(data.get("header")), _dict(data.get("payload"))
        code = str(header.get("errorCode") or "")
        return AnalysisTask(
            task_id=task_id,
            status=data["taskStatus"],
            error_code="" if code.lower() == "success" else code,
            error_message=str(data.get("errorMessage") or header.get("errorMessage") or ""),
            output=_dict(payload.get("output")),
            usage=_dict(payload.get("usage")),
            run_info=_dict(data.get("taskRunInfo")),
            request_id=str(raw.get("requestId", "")),
        )

    async def cancel(self, task_id: str) -> None:
        """Cancel a task (UpdateVideoAnalysisTask to CANCELED); returns once the service says it is.

        Raises:
            PermanentError: the service would not cancel it (it started or ended, or is unknown to
                the service: its code and message).
            AuthError, RetryableError: as `submit`; also RetryableError (MalformedResponse) for a
                reply that does not say CANCELED (the task may or may not be cancelled).
        """
        from alibabacloud_quanmiaolightapp20240801 import models

        client = self._client()
        try:
            response = await client.update_video_analysis_task_async(
                self.workspace,
                models.UpdateVideoAnalysisTaskRequest(task_id=task_id, task_status=CANCEL_STATUS),
            )
            body = response.body
            self._check_body(body, "cancel")
            status = body.data.task_status if body.data is not None else None
        except ProviderError:
            raise
        except Exception as exc:
            raise _wrap(exc, f"cancelling task {task_id}") from exc
        if status != CANCEL_STATUS:
            raise RetryableError(
                f"Bailian accepted the cancel of task {task_id} but its reply says {status or 'no status'}",
                provider=self.name,
                code="MalformedResponse",
                request_id=body.request_id or "",
            )

    def _check_body(self, body: Any, what: str) -> None:
        """A 200 whose body says it failed (`success: false`) is that failure."""
        if body is None:
            raise RetryableError(
                f"Bailian's {what} reply is empty", provider=self.name, code="MalformedResponse"
            )
        if body.success is False:
            raise _classify(
                int(body.http_status_code or 400),
                str(body.code or ""),
                str(body.message or ""),
                body.request_id or "",
            )

    # --- OSS ---------------------------------------------------------------------------------------

    def _bucket(self) -> Any:
        import oss2

        s = self.settings
        if not s.oss_bucket or not s.oss_endpoint:
            raise ConfigError(
                "no OSS bucket to upload the video to (providers.bailian.oss_bucket / oss_endpoint)",
                hint="set providers.bailian.oss_bucket and oss_endpoint, or put the video's URL in a "
                "<video>.url file beside it",
            )
        key_id, secret = credentials(self._env)
        return oss2.Bucket(
            oss2.AuthV4(key_id, secret),
            s.oss_endpoint,
            s.oss_bucket,
            region=s.oss_region,
            connect_timeout=s.timeout_seconds,
        )

    async def uploaded(self, key: str, size: int) -> bool:
        """True when `key` already holds an object of `size` bytes (an upload finished earlier).

        Raises: AuthError, PermanentError, RetryableError, ConfigError (no bucket configured).
        """
        import oss2

        bucket = self._bucket()

        def head() -> bool:
            try:
                meta = bucket.head_object(key)
            except oss2.exceptions.NotFound as exc:
                if exc.code in ("", "NoSuchKey"):  # a HEAD answer has no body: a bare 404 is the key
                    return False
                raise
            return int(meta.content_length) == size

        try:
            return await asyncio.to_thread(head)
        except Exception as exc:
            raise _wrap_oss(exc, f"checking {key} in the OSS bucket") from exc

    async def upload(self, path: Path, key: str) -> None:
        """Put `path` at `key` in the bucket (blocking I/O in a thread).

        Raises: AuthError, PermanentError, RetryableError, ConfigError; OSError when the file
        cannot be read.
        """
        bucket = self._bucket()

        def put() -> None:
            # one PUT: OSS takes up to 5 GB in one, and dropflow caps a video at 1 GB
            bucket.put_object_from_file(key, str(path), headers={"Content-Type": "video/mp4"})

        try:
            await asyncio.to_thread(put)
        except OSError:
            raise
        except Exception as exc:
            raise _wrap_oss(exc, f"uploading {path.name} to the OSS bucket") from exc

    def sign(self, key: str, expires: int) -> str:
        """A URL the service can GET `key` from for `expires` seconds (signed locally, no call).

        Raises: AuthError, ConfigError.
        """
        return str(self._bucket().sign_url("GET", key, expires, slash_safe=True))

    def object_url(self, key: str) -> str:
        """The object's address without a signature: what outputs and job rows record."""
        s = self.settings
        host, scheme = _host(s.oss_endpoint or "")
        return f"oss://{s.oss_bucket}/{key}" if not host else f"{scheme}://{host}/{s.oss_bucket}/{key}"


def _dict(value: Any) -> dict[str, Any]:
    """`value` when the reply put a JSON object there, else empty (a reply is read, never trusted)."""
    return value if isinstance(value, dict) else {}


def _classify(status: int, code: str, message: str, request_id: str) -> ProviderError:
    """The error of one refused call, by the service's code first, then its HTTP status."""
    text = f"Bailian refused the call ({status} {code}): {message}".rstrip(": ")
    if code in AUTH_CODES or status == 401:
        return AuthError(
            text, hint=KEY_HINT, provider="bailian", code=code, status=status, request_id=request_id
        )
    if code.startswith("Throttling") or status == 429:
        return RetryableError(text, provider="bailian", code=code, status=status, request_id=request_id)
    if code.startswith(QUOTA_CODES):
        return PermanentError(
            text,
            hint="the account cannot pay for this (overdue, or its quota is used up): top it up in the "
            "Alibaba Cloud console, then `dropflow retry` the job",
            provider="bailian",
            code=code,
            status=status,
            request_id=request_id,
        )
    if status >= 500:
        return RetryableError(text, provider="bailian", code=code, status=status, request_id=request_id)
    if status == 403:
        return PermanentError(
            text,
            hint="the AccessKey may not call this: grant its RAM user quanmiaolightapp:* and add it to "
            "the Bailian workspace",
            provider="bailian",
            code=code,
            status=status,
            request_id=request_id,
        )
    return PermanentError(
        text,
        hint="fix the params named in the message (see the README's Bailian section), then drop the video again",
        provider="bailian",
        code=code,
        status=status,
        request_id=request_id,
    )


def _wrap(exc: Exception, what: str) -> ProviderError:
    """A tea/darabonba SDK failure as a dropflow error."""
    from alibabacloud_tea_openapi.exceptions import AlibabaCloudException

    if isinstance(exc, AlibabaCloudException):
        return _classify(
            int(exc.status_code or 0), str(exc.code or ""), _sdk_message(exc), str(exc.request_id or "")
        )
    inner = getattr(exc, "inner_exception", None) or exc
    if isinstance(inner, ValueError | AttributeError | TypeError | KeyError):
        # a 200 the SDK could not read (an empty or truncated body, an HTML page)
        return RetryableError(
            f"{what}: Bailian's reply could not be read ({type(inner).__name__})",
            provider="bailian",
            code="MalformedResponse",
        )
    return RetryableError(
        f"{what}: {type(inner).__name__}: {inner}", provider="bailian", code=f"{type(inner).__name__}"
    )


def _sdk_message(exc: Any) -> str:
    """The service's own message, without the SDK's "code: 404, ... request id: X" wrapping."""
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        for k in ("Message", "message"):
            if isinstance(data.get(k), str):
                return str(data[k])
    return str(getattr(exc, "message", "") or exc)


def _wrap_oss(exc: Exception, what: str) -> ProviderError:
    """An oss2 failure as a dropflow error."""
    import oss2

    if isinstance(exc, oss2.exceptions.RequestError):  # no answer: network, timeout
        return RetryableError(f"{what}: {exc.__class__.__name__}", provider="bailian", code="OSSRequestError")
    if isinstance(exc, oss2.exceptions.OssError):
        code, status = str(exc.code or ""), int(exc.status or 0)
        text = f"{what}: OSS answered {status} {code}: {exc.message}"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 401:
            return AuthError(text, hint=KEY_HINT, provider="bailian", code=code, status=status)
        if status in (429, 503) or status >= 500:
            return RetryableError(text, provider="bailian", code=code, status=status)
        hint = (
            "check providers.bailian.oss_bucket and its region, and that the AccessKey may write it"
            if code in ("NoSuchBucket", "AccessDenied")
            else "see the OSS error code in the message"
        )
        return PermanentError(text, hint=hint, provider="bailian", code=code, status=status)
    return RetryableError(f"{what}: {type(exc).__name__}: {exc}", provider="bailian", code=type(exc).__name__)
