"""A loopback fake of Alibaba Cloud OSS: as much of it as an upload and a signed download need.

Path-style addressing (``/<bucket>/<key>``: what oss2 uses for an IP endpoint), one private bucket:

- ``PUT`` an object: V4-signed (``Authorization: OSS4-HMAC-SHA256 Credential=<id>/...``) by a known
  AccessKey id; else 403 InvalidAccessKeyId, like OSS;
- ``HEAD`` an object: signed the same way (404 without a body for a missing key, as OSS answers);
- ``GET`` an object: signed, or through a signed URL (``x-oss-credential``, ``x-oss-date``,
  ``x-oss-expires``): refused with 403 AccessDenied "Request has expired" once it has; an
  unsigned GET is refused (the bucket is private).

Errors are OSS's XML body with ``x-oss-request-id``. The signature itself is not recomputed (the
fake checks that one is there and names a known key); the QuanMiao fake checks its signatures in full.
"""

from __future__ import annotations

import base64
import calendar
import time
from typing import Any, ClassVar
from xml.sax.saxutils import escape

from aiohttp import web

from dropflow.engine.fakes.server import REQUEST_ID, FakeServer


class FakeOSS(FakeServer):
    provider: ClassVar[str] = "oss"
    request_id_header: ClassVar[str] = "x-oss-request-id"
    default_codes: ClassVar[dict[int, str]] = {
        400: "InvalidArgument",
        403: "AccessDenied",
        404: "NoSuchKey",
        429: "Throttling",
        500: "InternalError",
        503: "ServiceUnavailable",
    }

    def __init__(self, *, bucket: str = "dropflow-test", access_key_id: str = "LTAI-test", **kw: Any) -> None:
        super().__init__(**kw)
        self.bucket = bucket
        self.access_key_ids = {access_key_id}
        self._objects: dict[str, bytes] = {}

    # --- what tests use --------------------------------------------------------------------------

    def objects(self) -> dict[str, int]:
        """Key -> size of every object stored."""
        with self._lock:
            return {k: len(v) for k, v in self._objects.items()}

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._objects[key] = data

    # --- the protocol ------------------------------------------------------------------------------

    def public(self, endpoint: str) -> bool:
        return True  # each handler checks its own way in (header or signed URL), with OSS's codes

    def error_body(self, status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
        return {"Code": code, "Message": message, "RequestId": request_id}

    def error(
        self,
        request: web.Request,
        status: int,
        code: str = "",
        message: str = "",
        *,
        retry_after: float | None = None,
    ) -> web.Response:
        rid = request.get(REQUEST_ID, "")
        code = code or self.default_codes.get(status, "InternalError")
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            f"<Code>{escape(code)}</Code><Message>{escape(message or code)}</Message>"
            f"<RequestId>{rid}</RequestId><HostId>{self.host}</HostId></Error>"
        )
        headers = {self.request_id_header: rid}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        if request.method == "HEAD":  # no body: OSS puts the error in a header
            headers["x-oss-err"] = base64.b64encode(xml.encode()).decode()
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, text=xml, content_type="application/xml", headers=headers)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_put("/{bucket}/{key:.+}", self._put, name="put_object")
        app.router.add_route("HEAD", "/{bucket}/{key:.+}", self._head, name="head_object")
        app.router.add_get("/{bucket}/{key:.+}", self._get, name="get_object", allow_head=False)

    def _signed_header(self, request: web.Request) -> web.Response | None:
        """None when the Authorization header is a V4 signature by a known key; else the refusal."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith(("OSS4-HMAC-SHA256 ", "OSS ")):
            return self.error(request, 403, "AccessDenied", "You have no right to access this object.")
        if auth.startswith("OSS "):
            key_id = auth[4:].split(":", 1)[0]
        else:
            cred = auth.split("Credential=", 1)[-1]
            key_id = cred.split("/", 1)[0]
        if key_id not in self.access_key_ids:
            return self.error(
                request,
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
            )
        return None

    def _signed_url(self, request: web.Request) -> web.Response | None:
        q = request.query
        if "x-oss-signature" not in q:
            return self._signed_header(request)
        key_id = q.get("x-oss-credential", "").split("/", 1)[0]
        if key_id not in self.access_key_ids:
            return self.error(
                request,
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
            )
        try:
            signed_at = calendar.timegm(time.strptime(q["x-oss-date"], "%Y%m%dT%H%M%SZ"))
            expires = int(q["x-oss-expires"])
        except (KeyError, ValueError):
            return self.error(
                request, 400, "InvalidArgument", "x-oss-date / x-oss-expires missing or invalid"
            )
        if time.time() > signed_at + expires:
            return self.error(request, 403, "AccessDenied", "Request has expired.")
        return None

    def _bucket_or_error(self, request: web.Request) -> web.Response | None:
        if request.match_info["bucket"] != self.bucket:
            return self.error(request, 404, "NoSuchBucket", "The specified bucket does not exist.")
        return None

    async def _put(self, request: web.Request) -> web.StreamResponse:
        refused = self._signed_header(request) or self._bucket_or_error(request)
        if refused is not None:
            return refused
        data = await request.content.read()
        self.put(request.match_info["key"], data)
        return web.Response(
            status=200, headers={self.request_id_header: request[REQUEST_ID], "ETag": f'"{len(data):x}"'}
        )

    def _object(self, request: web.Request) -> bytes | None:
        with self._lock:
            return self._objects.get(request.match_info["key"])

    async def _head(self, request: web.Request) -> web.StreamResponse:
        refused = self._signed_header(request) or self._bucket_or_error(request)
        if refused is not None:
            return refused
        data = self._object(request)
        if data is None:
            return web.Response(status=404, headers={self.request_id_header: request[REQUEST_ID]})
        return web.Response(
            status=200,
            headers={
                self.request_id_header: request[REQUEST_ID],
                "Content-Length": str(len(data)),
                "Content-Type": "video/mp4",
                "ETag": f'"{len(data):x}"',
            },
        )

    async def _get(self, request: web.Request) -> web.StreamResponse:
        refused = self._signed_url(request) or self._bucket_or_error(request)
        if refused is not None:
            return refused
        data = self._object(request)
        if data is None:
            return self.error(request, 404, "NoSuchKey", "The specified key does not exist.")
        return web.Response(
            body=data, content_type="video/mp4", headers={self.request_id_header: request[REQUEST_ID]}
        )
