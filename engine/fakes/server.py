"""What every loopback fake shares: the server thread, the request log, faults, rate limit, latency.

A fake is an `aiohttp.web` app running on 127.0.0.1 in a background thread with its own event
loop, so synchronous tests, asyncio tests and a daemon subprocess can all reach it the same way::

    with FakeDashScope(api_key="k", latency=0.05) as srv:
        srv.inject(Fault.error(429), times=2)      # the next two requests get a 429
        ...                                        # point a client at srv.base_url
        assert srv.count("video_synthesis") == 1   # per-endpoint counters (route names)

Subclasses add routes and say how their provider spells an error (`error_body`, `default_codes`).
Everything the test thread reads is guarded by one lock: handlers run on the server thread.
What a fault is lives in `faults.py`, what a fake answers in `answers.py`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from aiohttp import web

from dropflow.engine.fakes.answers import Prompt, default_answer, token_usage
from dropflow.engine.fakes.faults import Fault

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class RecordedRequest:
    endpoint: str  # the route name, e.g. "multimodal", "chat", "messages"
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # keys lower-cased
    json: Any = None  # the parsed JSON body, when there was one
    form: dict[str, Any] = field(default_factory=dict)  # multipart fields (files as {filename, size})
    status: int = 0  # what the fake answered (0 while in flight, or for a dropped connection)
    request_id: str = ""  # the id the fake sent back (header and body)
    at: float = field(default_factory=time.monotonic)


# per-request storage, set by the shared middleware for the handlers
REQUEST_ID = web.RequestKey("request_id", str)
RECORD = web.RequestKey("record", RecordedRequest)
BODY = web.RequestKey("body", object)  # the parsed JSON body, or None


class FakeServer:
    """Base of the three fakes. Not used directly: subclasses define `provider` and `add_routes`."""

    provider: ClassVar[str] = "fake"
    request_id_header: ClassVar[str] = "X-Request-ID"
    # the code a fake sends for a status when a fault or a check names none
    default_codes: ClassVar[dict[int, str]] = {}
    # the Retry-After (seconds) sent with rate-limit answers; None: no header (DashScope sends none)
    rate_limit_retry_after: ClassVar[float | None] = None
    base_path: ClassVar[str] = ""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        latency: float = 0.0,
        rate_limit: int | None = None,
        rate_window: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """`rate_limit`: requests accepted per `rate_window` seconds (sliding) before 429s."""
        self.api_key = api_key
        self.latency = latency
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.host = host
        self.port = port
        # replaces the deterministic answer text; called on the server thread
        self.responder: Callable[[Prompt], str] | None = None
        self._lock = threading.Lock()
        self._log: list[RecordedRequest] = []
        self._counts: Counter[str] = Counter()
        self._faults: deque[Fault] = deque()
        self._recent: deque[float] = deque()
        self._in_flight = 0
        self._max_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- for subclasses ---------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def error_body(self, status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}"

    def public(self, endpoint: str) -> bool:
        """Endpoints that take no key (an OSS upload, a signed download)."""
        return False

    def answer(self, prompt: Prompt) -> tuple[str, dict[str, int]]:
        text = self.responder(prompt) if self.responder else default_answer(self.provider, prompt)
        return text, token_usage(prompt, text)

    def error(
        self,
        request: web.Request,
        status: int,
        code: str = "",
        message: str = "",
        *,
        retry_after: float | None = None,
    ) -> web.Response:
        """A JSON error in the provider's format, with its request-id header."""
        rid = request.get(REQUEST_ID, "")
        code = code or self.default_codes.get(status, "InternalError")
        body = self.error_body(status, code, message or code, rid)
        headers = {self.request_id_header: rid}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        return web.json_response(body, status=status, headers=headers)

    def ok(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        return web.json_response(body, headers={self.request_id_header: request.get(REQUEST_ID, "")})

    # --- the shared middleware ----------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = request.match_info.route.name or "unknown"
        rid = str(uuid.uuid4())
        request[REQUEST_ID] = rid
        body: Any = None
        if request.content_type == "application/json" and request.can_read_body:
            try:
                body = json.loads(await request.read())
            except ValueError:
                body = None
        record = RecordedRequest(
            endpoint=endpoint,
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=body,
            request_id=rid,
        )
        request[RECORD] = record
        request[BODY] = body
        now = time.monotonic()
        with self._lock:
            self._log.append(record)
            self._counts[endpoint] += 1
            fault = self._take_fault(endpoint)
            limited = self._rate_limited(now)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            response = await self._respond(request, handler, endpoint, fault, limited)
        except web.HTTPException as exc:  # aiohttp's own 404/405 answers
            record.status = exc.status
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
        record.status = response.status if response is not None else 0
        return response

    async def _respond(
        self, request: web.Request, handler: Handler, endpoint: str, fault: Fault | None, limited: bool
    ) -> web.StreamResponse:
        if fault is not None:
            if fault.kind == "drop":
                # Closing the transport mid-request is what a crashed upstream or a proxy reset looks like:
                # the client sees a disconnect before any status line.
                if request.transport is not None:
                    request.transport.close()
                raise asyncio.CancelledError
            if fault.kind == "cut":
                # a reply broken off mid-body: the request was served (and would be billed)
                partial = web.StreamResponse(
                    status=fault.status, headers={"Content-Type": fault.content_type}
                )
                partial.content_length = len(fault.body_text) + 4096
                await partial.prepare(request)
                await partial.write(fault.body_text.encode())
                if request.transport is not None:
                    request.transport.close()
                raise asyncio.CancelledError
            if fault.kind == "body":
                return web.Response(
                    status=fault.status,
                    body=fault.body_text.encode(),
                    headers={"Content-Type": fault.content_type, self.request_id_header: request[REQUEST_ID]},
                )
            if fault.kind == "stall":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "html":
                return web.Response(
                    status=fault.status,
                    text="<html><head><title>500 Internal Server Error</title></head>"
                    "<body><center><h1>500 Internal Server Error</h1></center></body></html>",
                    content_type="text/html",
                )
            else:
                return self.error(
                    request, fault.status, fault.code, fault.message, retry_after=fault.retry_after
                )
        if limited:
            return self.error(
                request,
                429,
                self.default_codes.get(429, ""),
                "Requests rate limit exceeded, please try again later.",
                retry_after=self.rate_limit_retry_after,
            )
        if not self.public(endpoint) and not self.authorized(request):
            return self.error(request, 401, self.default_codes.get(401, ""))
        return await handler(request)

    def _take_fault(self, endpoint: str) -> Fault | None:
        for i, fault in enumerate(self._faults):
            if fault.endpoint is None or fault.endpoint == endpoint:
                del self._faults[i]
                return fault
        return None

    def _rate_limited(self, now: float) -> bool:
        if not self.rate_limit:
            return False
        while self._recent and now - self._recent[0] >= self.rate_window:
            self._recent.popleft()
        if len(self._recent) >= self.rate_limit:
            return True
        self._recent.append(now)
        return False

    # --- what tests use -------------------------------------------------------------------------

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Queue `fault` for the next `times` matching requests (faults are consumed in order)."""
        with self._lock:
            self._faults.extend([fault] * times)

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """A copy of the request log, oldest first, optionally for one endpoint (route name)."""
        with self._lock:
            return [r for r in self._log if endpoint is None or r.endpoint == endpoint]

    def last(self, endpoint: str | None = None) -> RecordedRequest:
        found = self.requests(endpoint)
        if not found:
            raise AssertionError(f"no request recorded for {endpoint or 'any endpoint'}")
        return found[-1]

    def count(self, endpoint: str | None = None) -> int:
        with self._lock:
            return self._counts[endpoint] if endpoint else sum(self._counts.values())

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def max_in_flight(self) -> int:
        """The most requests the fake was handling at once (to check client-side concurrency caps)."""
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._counts.clear()
            self._faults.clear()
            self._recent.clear()
            self._max_in_flight = self._in_flight

    # --- lifetime -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client's `base_url` setting should hold to reach this fake."""
        return self.url + self.base_path

    def start(self) -> Self:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"fake-{self.provider}", daemon=True)
        self._thread.start()
        ready.wait()
        asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=30)
        return self

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self.add_routes(app)
        # handler_cancellation: a dropped client cancels its handler instead of running it to the end
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def new_id() -> str:
    return str(uuid.uuid4())
