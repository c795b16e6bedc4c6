"""Provider failures through a real daemon: 429 backs off and retries, 401 fails at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropflow.daemon.core import config as cfgmod
from dropflow.engine.fakes import FakeDashScope
from dropflow.engine.fakes.server import Fault
from tests.conftest import running_daemon, write_config

KEY = "sk-test-provider-key-0042"


def _cfg(tmp_path: Path, base_url: str) -> cfgmod.Config:
    path = write_config(tmp_path / "p")
    text = path.read_text().replace(
        "providers: {default: offline}",
        f"providers:\n  default: dashscope\n  dashscope: {{api_key: '{KEY}', base_url: '{base_url}'}}",
    )
    path.write_text(text)
    (tmp_path / "p" / "inbox" / "record" / "dropflow.yaml").write_text("params: {ask: true}\n")
    return cfgmod.load(path)


@pytest.fixture
def fake() -> FakeDashScope:
    with FakeDashScope(api_key=KEY) as srv:
        yield srv  # type: ignore[misc]


async def test_429_is_retried_with_backoff_then_succeeds(tmp_path: Path, fake: FakeDashScope) -> None:
    cfg = _cfg(tmp_path, fake.base_url)
    fake.inject(Fault.error(429, "Throttling.RateQuota"), times=2)
    async with running_daemon(cfg) as d:
        (cfg.paths.inbox / "record" / "q.txt").write_text("what is this?")
        [job] = await d.wait_status(1, ("succeeded",))
        assert job.attempts == 3
        events = await d.store.events(job.id)
        retries = [e for e in events if e.kind == "error" and "retry at" in e.message]
        assert len(retries) == 2 and all(e.data["kind"] == "retryable" for e in retries)
        assert fake.count() == 3
        assert Path(job.outputs[0]).read_text().strip()
        assert job.usage["input_tokens"] > 0


async def test_401_fails_at_once_without_retry_and_without_the_key(
    tmp_path: Path, fake: FakeDashScope
) -> None:
    cfg = _cfg(tmp_path, fake.base_url)
    fake.inject(Fault.error(401, "InvalidApiKey", "Invalid API-key provided."), times=1)
    async with running_daemon(cfg) as d:
        (cfg.paths.inbox / "record" / "k.txt").write_text("hello")
        [job] = await d.wait_status(1, ("failed",))
        assert job.attempts == 1 and fake.count() == 1
        assert job.error is not None and job.error["kind"] == "permanent"
        assert "invalid API key" in job.error["message"]
        assert "DASHSCOPE_API_KEY" in job.error["message"] + job.error["hint"]
        assert KEY not in job.error["message"] + job.error["hint"]
