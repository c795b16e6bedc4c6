"""Shared fixtures: a project folder with its own config, and a daemon running in-process."""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from dropflow.daemon import config as config_mod
from dropflow.daemon.config import Config
from dropflow.daemon.daemon import Daemon
from dropflow.daemon.logs import Redactor
from dropflow.daemon.store import Job, Store

REPO = Path(__file__).resolve().parent.parent

RECORD_CONFIG = """
paths: {{inbox: inbox, outputs: outputs, archive: archive, prompts: prompts, state: state}}
watch: {{settle_seconds: {settle}, rescan_seconds: 2, check_seconds: 0.1}}
scheduler:
  max_concurrency: 4
  engine_concurrency: {{record: 4}}
  lease_seconds: 3
  backoff_base_seconds: 0.1
  backoff_max_seconds: 1
  shutdown_grace_seconds: 2
  tick_seconds: 0.05
providers: {{default: offline}}
engines: {{plugins: ["tests.engines:RecordEngine"]}}
routes:
  - name: record
    folder: record
    engine: record
{extra}
"""


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for var in ("DASHSCOPE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DROPFLOW_CONFIG"):
        monkeypatch.delenv(var, raising=False)


def write_config(root: Path, *, settle: float = 0.3, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(RECORD_CONFIG.format(settle=settle, extra=textwrap.dedent(extra)))
    (root / "inbox" / "record").mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Config:
    return config_mod.load(write_config(tmp_path / "proj"))


async def wait_for(
    predicate: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll an async predicate until it returns something truthy; fail with a clear message."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class RunningDaemon:
    def __init__(self, cfg: Config, daemon: Daemon, task: asyncio.Task[None], store: Store) -> None:
        self.cfg = cfg
        self.daemon = daemon
        self.task = task
        self.store = store

    async def jobs(self, **kw: Any) -> list[Job]:
        return await self.store.list(**kw)

    async def wait_status(self, job_count: int, statuses: tuple[str, ...], timeout: float = 20.0) -> list[Job]:
        async def check() -> list[Job] | None:
            jobs = await self.store.list()
            if len(jobs) >= job_count and all(j.status in statuses for j in jobs):
                return jobs
            return None

        return await wait_for(check, timeout=timeout)  # type: ignore[no-any-return]

    async def stop(self) -> None:
        self.daemon.request_stop()
        await asyncio.wait_for(self.task, timeout=30)


@pytest.fixture
async def daemon(project: Config) -> AsyncIterator[RunningDaemon]:
    d = Daemon(project, Redactor(project.secrets()))
    task = asyncio.create_task(d.run(install_signals=False))
    async with Store.open(project.paths.database) as store:
        rd = RunningDaemon(project, d, task, store)
        try:
            yield rd
        finally:
            if not task.done():
                await rd.stop()
            else:
                task.result()


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env
