"""DashScope on the wire, below the SDK: which host a key belongs to, replies the SDK cannot read,
and what an answer (plain or streamed) says.

- `base_url`: keys are region-bound. `providers.dashscope.base_url`, else `region`, else the SDK's
  own variables (``DASHSCOPE_HTTP_BASE_URL``, ``DASHSCOPE_API_REGION`` + ``DASHSCOPE_WORKSPACE_ID``,
  as its ``common/env.py`` reads them), else Beijing.
- `check_reply`: an aiohttp client middleware that reads each JSON reply before the SDK does. The
  SDK decodes a 200 without checks (an empty body gives None and then a TypeError, a truncated one
  a JSONDecodeError, an HTML page a ContentTypeError): here such a reply becomes `MalformedReply`,
  which the provider reports as a retryable error instead of a crash.
- `answer`: text, finish reason, usage and the partial-answer flag of one answer, from the SDK's
  response objects (one, or the chunks of a stream).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from dropflow.engine.errors import ConfigError
from dropflow.engine.providers.base import Usage

if TYPE_CHECKING:
    from dropflow.daemon.core.config import ProviderSettings

BEIJING = "https://dashscope.aliyuncs.com/api/v1"
SINGAPORE = "https://dashscope-intl.aliyuncs.com/api/v1"
REGION_URLS = {"beijing": BEIJING, "cn-beijing": BEIJING, "singapore": SINGAPORE, "ap-southeast-1": SINGAPORE}
# regions the SDK reaches only through a workspace's own host (its `common/env.py` MAAS_REGIONS)
MAAS_REGIONS = ("ap-southeast-1", "us-east-1", "cn-hongkong", "eu-central-1", "ap-northeast-1")
PARTIAL_HEADER = "x-dashscope-partialresponse"


def _maas(region: str, workspace: str | None, where: str) -> str:
    if not workspace:
        raise ConfigError(
            f"DashScope region {region} ({where}) is reached through a workspace's own host: "
            "a workspace id is needed",
            hint="set providers.dashscope.workspace (or DASHSCOPE_WORKSPACE_ID), or use "
            "region: singapore for the international endpoint",
        )
    return f"https://{workspace}.{region}.maas.aliyuncs.com/api/v1"


def base_url(settings: ProviderSettings, env: Mapping[str, str] | None = None) -> str:
    """The API base URL for these settings (see the module docstring for the order).

    Raises ConfigError for a region that needs a workspace id when none is given.
    """
    env = os.environ if env is None else env
    if settings.base_url:
        return settings.base_url.rstrip("/")
    region: str | None = getattr(settings, "region", None)
    workspace: str | None = getattr(settings, "workspace", None)
    if region:
        if region in REGION_URLS:
            return REGION_URLS[region]
        return _maas(region, workspace, "providers.dashscope.region")
    if url := env.get("DASHSCOPE_HTTP_BASE_URL"):
        return url.rstrip("/")
    sdk_region = env.get("DASHSCOPE_API_REGION", "cn-beijing")
    if sdk_region in MAAS_REGIONS:  # as the SDK itself resolves it
        return _maas(sdk_region, workspace or env.get("DASHSCOPE_WORKSPACE_ID"), "DASHSCOPE_API_REGION")
    return BEIJING


def region_hint(url: str) -> str:
    """Where a key for `url` comes from, for the "invalid key" hint."""
    if "dashscope-intl" in url or ".maas." in url:
        return "this endpoint takes keys from the international (Singapore) Model Studio console"
    if url == BEIJING:
        return (
            "this endpoint (Beijing) takes keys from the China Model Studio console; for a key from "
            "the international console set providers.dashscope.region: singapore"
        )
    return f"keys are region-bound: the key must come from the console of {url}"


class MalformedReply(aiohttp.ClientError):
    """A reply the SDK would choke on. Not a `ClientConnectionError`: the SDK resends silently after
    those, and this request reached the service (and may have been paid for)."""

    def __init__(self, status: int, problem: str) -> None:
        super().__init__(f"HTTP {status}: {problem}")
        self.status = status
        self.problem = problem


def reply_problem(status: int, content_type: str, body: bytes, *, answer: bool = True) -> str | None:
    """What the SDK could not read in this (non-streamed) reply, or None when it is fine.

    `answer`: a generation call, whose 200 must hold an `output` (the SDK builds its response
    object from it; a task cancel, say, answers with a request id alone).
    """
    is_json = "application/json" in content_type
    if status != 200 and not is_json:
        return None  # the SDK reports it as code "Unknown" with the body as message: fine
    if status == 200 and not is_json:
        kind = "an HTML page" if b"<html" in body[:512].lower() else f"a {content_type or 'bodiless'} reply"
        return f"{kind} instead of JSON"
    if not body.strip():
        return "an empty body"
    try:
        data = json.loads(body)
    except ValueError:
        return f"a truncated or invalid JSON body ({len(body)} bytes)"
    if not isinstance(data, dict):
        return "a JSON body that is not an object"
    if status != 200 and "code" not in data:
        return "an error body without a code"
    if status == 200 and answer and not isinstance(data.get("output"), dict):
        return "an answer without an output"
    return None


async def check_reply(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """Client middleware: raise `MalformedReply` for a JSON reply the SDK cannot read.

    Streams are left alone: the SDK reads them line by line and reports a bad line itself.
    The body read here stays cached on the response, so the SDK reads it again for free.
    """
    response = await handler(request)
    content_type = response.headers.get("Content-Type", "")
    if "text/event-stream" in content_type or "multipart" in content_type:
        return response
    body = await response.read()  # a reset mid-body raises ClientPayloadError: a transport error
    generation = request.url.path.rstrip("/").endswith("/generation")
    problem = reply_problem(response.status, content_type, body, answer=generation)
    if problem is not None:
        response.release()
        raise MalformedReply(response.status, problem)
    return response


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def usage(raw: Any) -> Usage:
    """Our usage from DashScope's: flat (`input_tokens`, `image_tokens`/`video_tokens`), with
    details (`input_tokens_details.image_tokens`, newer models), or speech recognition's
    (`input_tokens_details.text_tokens`, `output_tokens_details.text_tokens`, `seconds`)."""
    u = dict(raw or {})
    details_in = dict(u.get("input_tokens_details") or {})
    details_out = dict(u.get("output_tokens_details") or {})
    media = ("text_tokens", "image_tokens", "video_tokens", "audio_tokens")
    return Usage(
        input_tokens=_int(u.get("input_tokens")) or sum(_int(details_in.get(k)) for k in media),
        output_tokens=_int(u.get("output_tokens")) or _int(details_out.get("text_tokens")),
        image_tokens=_int(u.get("image_tokens")) or _int(details_in.get("image_tokens")),
        video_tokens=_int(u.get("video_tokens")) or _int(details_in.get("video_tokens")),
        audio_seconds=math.ceil(float(u.get("seconds") or 0)),
    )


def _text(choice: Any) -> str:
    content = choice["message"]["content"]
    if isinstance(content, list):
        return "".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content or "")


def answer(responses: Sequence[Any]) -> tuple[str, str, Usage, bool]:
    """(text, finish reason, usage, partial) of one answer: a plain response, or the chunks of an
    incremental stream (each holds the next piece; the last the finish reason and the usage).

    Raises KeyError, IndexError, TypeError for a response without choices.
    """
    pieces = []
    finish = ""
    for response in responses:
        choice = response.output["choices"][0]
        pieces.append(_text(choice))
        finish = str(choice.get("finish_reason") or "")
    last = responses[-1]
    headers = {str(k).lower(): str(v) for k, v in dict(last.headers or {}).items()}
    partial = headers.get(PARTIAL_HEADER, "").lower() == "true"
    return "".join(pieces), "" if finish == "null" else finish, usage(last.usage), partial
