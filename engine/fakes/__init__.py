"""Loopback fake servers that speak the real wire protocols, for tests and benches.

In-process (a background thread)::

    with FakeDashScope(api_key="k") as srv:
        srv.base_url                 # http://127.0.0.1:PORT/api/v1

As a subprocess (the first stdout line is the base URL)::

    python -m dropflow.engine.fakes dashscope --port 0 --latency 0.3
"""

from dropflow.engine.fakes.answers import Prompt
from dropflow.engine.fakes.anthropic import FakeAnthropic
from dropflow.engine.fakes.ark import FakeArk
from dropflow.engine.fakes.dashscope import FakeDashScope
from dropflow.engine.fakes.faults import Fault
from dropflow.engine.fakes.openai import FakeOpenAI
from dropflow.engine.fakes.oss import FakeOSS
from dropflow.engine.fakes.quanmiao import FakeQuanMiao
from dropflow.engine.fakes.server import FakeServer, RecordedRequest

FAKES: dict[str, type[FakeServer]] = {
    "dashscope": FakeDashScope,
    "openai": FakeOpenAI,
    "anthropic": FakeAnthropic,
    "ark": FakeArk,
    "quanmiao": FakeQuanMiao,
    "oss": FakeOSS,
}

__all__ = [
    "FAKES",
    "FakeAnthropic",
    "FakeArk",
    "FakeDashScope",
    "FakeOSS",
    "FakeOpenAI",
    "FakeQuanMiao",
    "FakeServer",
    "Fault",
    "Prompt",
    "RecordedRequest",
]
