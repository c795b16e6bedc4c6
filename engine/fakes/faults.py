"""`Fault`: one injected misbehaviour (an error body, an HTML page, a dropped connection, a stall,
a malformed reply).

Tests queue faults with `FakeServer.inject`; the server's shared middleware applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, consumed by the next request (of `endpoint`, when given).

    kinds: ``error`` (a JSON error body in the provider's own format), ``html`` (an HTML error
    page, as a load balancer sends), ``drop`` (the connection is closed without a response),
    ``stall`` (the answer is delayed by `seconds`, to trigger client timeouts), ``body`` (a reply
    with a raw body: empty, truncated JSON, anything), ``cut`` (the status line and part of the
    body arrive, then the connection is reset).
    """

    kind: Literal["error", "html", "drop", "stall", "body", "cut"]
    status: int = 500
    code: str = ""
    message: str = ""
    retry_after: float | None = None
    seconds: float = 0.0
    endpoint: str | None = None
    body_text: str = ""  # the raw body of a ``body`` fault, the part sent of a ``cut`` one
    content_type: str = "application/json"

    @classmethod
    def error(
        cls,
        status: int,
        code: str = "",
        message: str = "",
        *,
        retry_after: float | None = None,
        endpoint: str | None = None,
    ) -> Fault:
        """A JSON error; an empty `code` becomes the provider's usual code for `status`."""
        return cls("error", status, code, message, retry_after, endpoint=endpoint)

    @classmethod
    def html(cls, status: int = 500, *, endpoint: str | None = None) -> Fault:
        return cls("html", status, endpoint=endpoint)

    @classmethod
    def drop(cls, *, endpoint: str | None = None) -> Fault:
        return cls("drop", endpoint=endpoint)

    @classmethod
    def stall(cls, seconds: float, *, endpoint: str | None = None) -> Fault:
        return cls("stall", seconds=seconds, endpoint=endpoint)

    @classmethod
    def body(
        cls,
        text: str,
        *,
        status: int = 200,
        content_type: str = "application/json",
        endpoint: str | None = None,
    ) -> Fault:
        """A reply with exactly this body (a 200 with ``""`` or ``'{"output": {"cho'``, say)."""
        return cls("body", status, endpoint=endpoint, body_text=text, content_type=content_type)

    @classmethod
    def cut(cls, text: str = '{"output": {"choices": [{"mess', *, endpoint: str | None = None) -> Fault:
        """A 200 that promises a longer body, sends `text`, and resets the connection."""
        return cls("cut", 200, endpoint=endpoint, body_text=text)
