"""What the remote providers share: error classification, Retry-After parsing, data URLs, httpx posting.

Every provider turns its failures into the `dropflow.engine.errors` family here, so the rules
(what is retryable, what the user is told) live in one place. A key never reaches a message:
auth failures use a fixed text, and every provider message is scrubbed of the key before use.
"""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from dropflow.engine.errors import AuthError, PermanentError, ProviderError, RetryableError
from dropflow.engine.providers.base import ImagePart, RateLimiter

if TYPE_CHECKING:
    from dropflow.daemon.core.config import ProviderSettings

KEY_ENV = {
    "dashscope": "DASHSCOPE_API_KEY",
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "ark": "ARK_API_KEY",
}

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
MODERATION_CODES = frozenset({"datainspectionfailed", "data_inspection_failed", "content_filter"})
AUTH_CODES = frozenset({"InvalidApiKey", "invalid_api_key", "authentication_error"})

# The key was accepted, but the account cannot make this call: telling the user to fix the key
# would send them the wrong way. (message, hint) per code; DashScope's codes (error-code docs;
# FreeTierOnly and Arrearage also seen in users' reports).
ACCOUNT_CODES: dict[str, tuple[str, str]] = {
    "AllocationQuota.FreeTierOnly": (
        "the model's free quota is used up and the account is set to use free quota only",
        "the key is fine: turn off 'use free quota only' for this model in the Model Studio console "
        "(paid calls from then on), or choose a model with free quota left",
    ),
    "Arrearage": (
        "the Alibaba Cloud account is in arrears (overdue payment)",
        "the key is fine: top up the account in the Alibaba Cloud billing console; calls work again "
        "once it is in good standing",
    ),
    "PrepaidBillOverdue": (
        "a prepaid bill of the account is overdue",
        "the key is fine: settle the bill in the Alibaba Cloud billing console",
    ),
    "PostpaidBillOverdue": (
        "a postpaid bill of the account is overdue",
        "the key is fine: settle the bill in the Alibaba Cloud billing console",
    ),
    "AccessDenied.Unpurchased": (
        "the account has not activated this model (or Model Studio)",
        "the key is fine: activate Model Studio and the model in the console of the key's region",
    ),
    "CommodityNotPurchased": (
        "the account has not activated this model (or Model Studio)",
        "the key is fine: activate Model Studio and the model in the console of the key's region",
    ),
    "Model.AccessDenied": (
        "the key's workspace may not use this model",
        "the key is fine: grant its workspace access to the model in the Model Studio console, or "
        "choose another model",
    ),
    "Workspace.AccessDenied": (
        "the key may not use this workspace",
        "the key is fine: use a key of the workspace, or fix providers.dashscope.workspace",
    ),
}


def auth_message(provider: str) -> tuple[str, str]:
    """(message, hint) for a refused or missing key; never includes the key itself."""
    env = KEY_ENV.get(provider, "the provider's API key variable")
    return (
        f"invalid API key: set {env} (or providers.{provider}.api_key) to a valid key",
        f"check the key in the environment variable {env} or the key file named in config.yaml",
    )


def require_key(provider: str, settings: ProviderSettings) -> str:
    """The configured key, or AuthError naming the environment variable to set."""
    key = settings.key()
    if not key:
        env = KEY_ENV.get(provider, "the API key variable")
        raise AuthError(
            f"no API key for {provider}: set {env} (or providers.{provider}.api_key)",
            hint=f"export {env}=... or name a key file in providers.{provider}.api_key_file; "
            "or choose the offline provider",
            provider=provider,
            code="MissingApiKey",
        )
    return key


def scrub(text: str, secret: str | None) -> str:
    """Remove a key (and any long fragment of it) from provider text before it is shown or stored."""
    if not secret or not text:
        return text
    text = text.replace(secret, "***")
    if len(secret) >= 12:
        # providers echo masked keys such as "sk-abc***wxyz": drop the visible head and tail too
        for frag in (secret[:8], secret[-8:]):
            text = text.replace(frag, "***")
    return text


def classify(
    provider: str,
    status: int | None,
    code: str,
    message: str,
    *,
    request_id: str = "",
    retry_after: float | None = None,
    secret: str | None = None,
    key_hint: str = "",
) -> ProviderError:
    """The error to raise for a failed call, by HTTP status and the provider's own code.

    `key_hint`: added to the hint of a refused key (e.g. which console the endpoint's keys come from).
    """
    code = code or ""
    message = scrub(message or "", secret)
    common: dict[str, Any] = {"provider": provider, "code": code, "status": status, "request_id": request_id}
    short = message[:300] if message else "no message"
    if code in ACCOUNT_CODES:
        text, hint = ACCOUNT_CODES[code]
        return PermanentError(f"{provider}: {text} ({code})", hint=hint, **common)
    if status == 401 or code in AUTH_CODES:
        text, hint = auth_message(provider)
        return AuthError(text, hint=f"{hint}; {key_hint}" if key_hint else hint, **common)
    if status == 403:
        # a 403 is the account or the workspace saying no, not a wrong key (that is a 401)
        return PermanentError(
            f"{provider} denied access (HTTP 403, {code or 'no code'}): {short}",
            hint="the key was accepted but may not make this call: check the model's availability "
            "in the key's region and workspace, and the account's status in the console",
            **common,
        )
    if code.lower() in MODERATION_CODES:
        return PermanentError(
            f"{provider} content moderation refused the input or the output ({code})",
            hint="the prompt, an image or a frame was flagged; change the input, retrying will not help",
            **common,
        )
    if (
        status in RETRYABLE_STATUS
        or (status is not None and status >= 500)
        or code.startswith("Throttling")
        or code in ("Unknown", "overloaded_error", "rate_limit_error", "rate_limit_exceeded")
    ):
        return RetryableError(
            f"{provider} is busy or failing (HTTP {status}, {code or 'no code'}): {short}",
            hint="retried automatically with backoff",
            retry_after=retry_after,
            **common,
        )
    return PermanentError(
        f"{provider} refused the request (HTTP {status}, {code or 'no code'}): {short}",
        hint="fix the input or the route parameters; retrying the same request will not help",
        **common,
    )


def transport_error(provider: str, exc: BaseException) -> RetryableError:
    """A timeout, refused or dropped connection: always worth another try."""
    what = "timed out" if isinstance(exc, TimeoutError | httpx.TimeoutException) else "connection failed"
    return RetryableError(
        f"{provider} request {what} ({type(exc).__name__})",
        hint="check the network or the provider's base_url; retried automatically",
        provider=provider,
        code=type(exc).__name__,
    )


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), else None."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    if ms := lower.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def image_bytes(part: ImagePart) -> tuple[bytes, str] | None:
    """The inline bytes of an image (reading a local path), or None for a remote URL."""
    if part.data is not None:
        return part.data, part.mime
    if part.url and not part.url.startswith(("http://", "https://", "data:", "oss://")):
        path = Path(part.url.removeprefix("file://"))
        return path.read_bytes(), part.mime
    return None


def data_url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_url(part: ImagePart) -> str:
    inline = image_bytes(part)
    if inline is not None:
        return data_url(*inline)
    assert part.url is not None, "an ImagePart needs data or a url"
    return part.url


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    provider: str,
    headers: dict[str, str],
    body: dict[str, Any],
    secret: str,
    error_fields: Callable[[Any], tuple[str, str]],
    request_id_header: str,
) -> tuple[dict[str, Any], str]:
    """POST a JSON body; return (parsed reply, request id) or raise the classified error.

    `error_fields` pulls (code, message) out of the provider's JSON error body.
    """
    try:
        response = await client.post(url, headers=headers, json=body)
    except httpx.HTTPError as exc:  # timeouts, refused and dropped connections, protocol errors
        raise transport_error(provider, exc) from exc
    rid = response.headers.get(request_id_header, "")
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.is_success and isinstance(payload, dict):
        return payload, rid
    if payload is None:
        code, message = "Unknown", response.text[:300]
    else:
        code, message = error_fields(payload)
        if not rid and isinstance(payload, dict):
            rid = str(payload.get("request_id", ""))
    raise classify(
        provider,
        response.status_code,
        code,
        message,
        request_id=rid,
        retry_after=retry_after(response.headers),
        secret=secret,
    )


class HttpVisionBase:
    """Shared plumbing of the httpx providers: key, base URL, one client, the shared rate limiter."""

    provider: str = ""
    default_base_url: str = ""
    request_id_header: str = "x-request-id"

    def __init__(self, settings: ProviderSettings) -> None:
        """Raises AuthError when no key is configured."""
        self._key = require_key(self.provider, settings)
        self._base_url = (settings.base_url or self.default_base_url).rstrip("/")
        self._limiter = RateLimiter(settings.requests_per_minute, settings.concurrency)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(settings.timeout_seconds))

    def error_fields(self, payload: Any) -> tuple[str, str]:
        """(code, message) from the provider's JSON error body."""
        err = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(err, dict):
            return str(err.get("code") or err.get("type") or ""), str(err.get("message") or "")
        return "", str(payload)[:300]

    async def _post(
        self, path: str, headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        async with self._limiter:
            return await post_json(
                self._client,
                f"{self._base_url}{path}",
                provider=self.provider,
                headers=headers,
                body=body,
                secret=self._key,
                error_fields=self.error_fields,
                request_id_header=self.request_id_header,
            )

    def _malformed(self, request_id: str) -> RetryableError:
        return RetryableError(
            f"{self.provider} returned an answer in an unexpected shape",
            provider=self.provider,
            code="MalformedResponse",
            request_id=request_id,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
