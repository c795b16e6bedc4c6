"""`Fault`: one injected misbehaviour (an error body, an HTML page, a dropped connection, a stall).

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
    ``stall`` (the answer is delayed by `seconds`, to trigger client timeouts).
    """

    kind: Literal["error", "html", "drop", "stall"]
    status: int = 500
    code: str = ""
    message: str = ""
    retry_after: float | None = None
    seconds: float = 0.0
    endpoint: str | None = None

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
