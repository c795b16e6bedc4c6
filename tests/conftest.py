"""Shared fixtures: a project folder with its own config, and a daemon running in-process."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from dropflow.daemon.core import config as config_mod
from dropflow.daemon.core.config import Config
from dropflow.daemon.core.jobs import Job
from dropflow.daemon.core.store import Store
from dropflow.daemon.daemon import Daemon
from dropflow.daemon.logs import Redactor
from tests.pgserver import INSTALL_HINT, PgServer, find_bin_dir

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
    for var in (
        "DASHSCOPE_API_KEY",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "DROPFLOW_CONFIG",
        "DROPFLOW_DATABASE",
    ):
        monkeypatch.delenv(var, raising=False)


# --- PostgreSQL: one real server for the whole run (tests/pgserver.py), a fresh database per test ---


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server, started once and stopped at the end; the tests that need it skip
    (saying how to install it) where it is missing."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(INSTALL_HINT)
    server = PgServer(bin_dir).start()
    try:
        # every test's database is a copy of one migrated template: CREATE DATABASE ... TEMPLATE
        # costs a file copy, not the migrations
        server.sql("CREATE DATABASE dropflow_template")

        async def migrate() -> None:
            async with Store.open(server.url("dropflow_template")):
                pass

        asyncio.run(migrate())
        yield server
    finally:
        server.stop()


_pg_databases = itertools.count()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a fresh, migrated database of its own."""
    name = f"test_{os.getpid()}_{next(_pg_databases)}"
    pg_server.sql(f"CREATE DATABASE {name} TEMPLATE dropflow_template")
    return pg_server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Each store in turn: a SQLite file, then a PostgreSQL database (the contract tests)."""
    if request.param == "sqlite":
        return tmp_path / "store.db"
    return str(request.getfixturevalue("pg_url"))


def write_config(root: Path, *, settle: float = 0.3, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(RECORD_CONFIG.format(settle=settle, extra=extra))
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

    async def wait_status(
        self, job_count: int, statuses: tuple[str, ...], timeout: float = 20.0
    ) -> list[Job]:
        async def check() -> list[Job] | None:
            jobs = await self.store.list()
            if len(jobs) >= job_count and all(j.status in statuses for j in jobs):
                return jobs
            return None

        return await wait_for(check, timeout=timeout)  # type: ignore[no-any-return]

    async def stop(self) -> None:
        self.daemon.request_stop()
        await asyncio.wait_for(self.task, timeout=30)


@asynccontextmanager
async def running_daemon(cfg: Config, **role: Any) -> AsyncIterator[RunningDaemon]:
    """An in-process daemon on `cfg` (`role`: its `engines` / `watch`), stopped (gracefully) on exit."""
    d = Daemon(cfg, Redactor(cfg.secrets()), **role)
    task = asyncio.create_task(d.run(install_signals=False))
    async with Store.open(cfg.database) as store:
        rd = RunningDaemon(cfg, d, task, store)
        try:
            yield rd
        finally:
            if not task.done():
                await rd.stop()
            else:
                task.result()


@pytest.fixture
async def daemon(project: Config) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(project) as rd:
        yield rd


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class DaemonProcess:
    """`python -m dropflow.daemon daemon` as a real child process (for SIGKILL / SIGTERM tests)."""

    def __init__(self, config: Path, **env: str) -> None:
        self.config = config
        self.env = subprocess_env(**env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "daemon-stderr.log"

    def start(self) -> DaemonProcess:
        self._fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dropflow.daemon", "--config", str(self.config), "daemon"],
            env=self.env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=self.config.parent,
        )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._fh.close()

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._fh.close()
        if code != 0:  # shown with the failing test's output
            print(f"daemon exited with {code}; its output:\n{self.log.read_text(errors='replace')[-4000:]}")
        return code

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if not self._fh.closed:
            self._fh.close()
