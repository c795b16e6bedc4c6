"""Several daemons on one PostgreSQL store: real daemon processes, a real server (tests/pgserver.py).

Every job runs exactly once however the two daemons interleave; a daemon killed mid-run loses its
jobs to the other; the CLI and the TUI read and edit the same store.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dropflow.daemon.core import config as cfgmod
from dropflow.daemon.core.config import Config
from dropflow.daemon.core.jobs import NewJob
from dropflow.daemon.core.store import Store
from tests.conftest import DaemonProcess, subprocess_env, wait_for, write_config
from tests.engines import read_runs

SCHEDULER = """
scheduler:
  max_concurrency: {slots}
  engine_concurrency: {{record: {slots}}}
  lease_seconds: 3
  backoff_base_seconds: 0.1
  backoff_max_seconds: 0.5
  shutdown_grace_seconds: 2
  tick_seconds: 0.05
"""


def pg_project(root: Path, url: str, *, slots: int = 4) -> tuple[Path, Config]:
    path = write_config(root, extra=f"state: {{database: '{url}'}}")
    text = path.read_text()
    start = text.index("scheduler:")
    end = text.index("providers:")
    path.write_text(text[:start] + SCHEDULER.format(slots=slots).lstrip() + text[end:])
    return path, cfgmod.load(path)


def new_jobs(cfg: Config, n: int, mix: list[dict[str, object]], prefix: str = "j") -> list[NewJob]:
    inputs = cfg.paths.state.parent / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        f = inputs / f"{prefix}{i:05}.txt"
        f.write_text(f"payload {i}")
        params = mix[i % len(mix)]
        out.append(
            NewJob("record", "record", str(f), f"{prefix}{i}", source="submit", params=params, priority=i % 3)
        )
    return out


@pytest.mark.timeout(240)
async def test_two_daemons_run_2000_mixed_jobs_exactly_once(tmp_path: Path, pg_url: str) -> None:
    path, cfg = pg_project(tmp_path / "p", pg_url, slots=12)
    mix: list[dict[str, object]] = [
        {},
        {"note": "b"},
        {"fail": "retryable", "fail_times": 1, "retry_after": 0.1},  # fails once, then succeeds
        {"wait_once": 0.1},  # waits on a pretend remote task, then runs again
        {"fail": "permanent"},  # fails for good
    ]
    async with Store.open(cfg.database) as store:
        await store.insert_jobs(new_jobs(cfg, 2000, mix))
        with DaemonProcess(path) as a, DaemonProcess(path) as b:

            async def finished() -> Counter[str] | None:
                c = await store.counts()
                return c if c["succeeded"] + c["failed"] == 2000 else None

            counts = await wait_for(finished, timeout=200, interval=0.5)
            assert a.terminate() == 0 and b.terminate() == 0
        jobs = await store.list()
    assert counts["succeeded"] == 1600 and counts["failed"] == 400
    runs = read_runs(cfg.paths.state)
    done = Counter(r["job"] for r in runs if r["event"] == "done")
    assert sorted(done) == sorted(j.id for j in jobs if j.status == "succeeded")
    assert set(done.values()) == {1}, [j for j, n in done.items() if n > 1][:10]
    by_pid = Counter(r["pid"] for r in runs if r["event"] == "done")
    assert len(by_pid) == 2 and min(by_pid.values()) > 100, by_pid  # both daemons did real work
    # every job's attempts as its params say: one, or two for those failing once
    retried = [j for j in jobs if j.params.get("fail") == "retryable"]
    assert all(j.attempts == 2 and j.status == "succeeded" for j in retried)


@pytest.mark.timeout(180)
async def test_sigkill_one_daemon_and_the_other_finishes_its_jobs(tmp_path: Path, pg_url: str) -> None:
    path, cfg = pg_project(tmp_path / "p", pg_url, slots=4)
    async with Store.open(cfg.database) as store:
        await store.insert_jobs(new_jobs(cfg, 24, [{"seconds": 1.0}]))
        with DaemonProcess(path) as a, DaemonProcess(path) as b:
            assert a.proc is not None and b.proc is not None

            async def a_is_running() -> list[int]:
                runs = read_runs(cfg.paths.state)
                done = {r["job"] for r in runs if r["event"] == "done"}
                return [
                    int(str(r["job"])) for r in runs if r["pid"] == a.proc.pid and r["event"] == "start"
                    and r["job"] not in done
                ]  # fmt: skip

            held = await wait_for(a_is_running, timeout=60)
            a.kill()

            async def all_done() -> bool:
                return (await store.counts())["succeeded"] == 24

            await wait_for(all_done, timeout=120, interval=0.2)
            assert b.terminate() == 0
        events = {j: [e.message for e in await store.events(j)] for j in held}
    runs = read_runs(cfg.paths.state)
    for job_id in held:
        finishers = {r["pid"] for r in runs if r["job"] == job_id and r["event"] == "done"}
        assert b.proc.pid in finishers, (job_id, finishers)
        assert any("reclaimed" in m for m in events[job_id]), events[job_id]


async def test_cli_and_tui_work_against_postgres(tmp_path: Path, pg_url: str) -> None:
    path, cfg = pg_project(tmp_path / "p", pg_url)
    async with Store.open(cfg.database) as store:
        ids = [r.job_id for r in await store.insert_jobs(new_jobs(cfg, 3, [{}]))]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dropflow.daemon", "--config", str(path), *args],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = cli("jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)] == ids
    cancelled = cli("cancel", str(ids[0]))
    assert cancelled.returncode == 0, cancelled.stderr
    async with Store.open(cfg.database) as store:
        assert (await store.get(ids[0])).status == "cancelled"  # type: ignore[union-attr]

    from dropflow.tui.app import DropflowApp
    from dropflow.tui.screens.queue import QueueScreen
    from dropflow.tui.widgets.job_table import JobTable

    app = DropflowApp(cfg, images="off", poll_interval=0.05)
    async with app.run_test(size=(140, 40)) as pilot:

        async def rows() -> list[int]:
            await pilot.pause(0.05)
            if not isinstance(app.screen, QueueScreen):
                return []
            return [r.id for r in app.screen.query_one(JobTable).window.visible]

        assert sorted(await wait_for(rows, timeout=15)) == ids
        # a job added by another connection shows up, woken by PostgreSQL's notice
        async with Store.open(cfg.database) as store:
            [extra] = await store.insert_jobs(new_jobs(cfg, 1, [{}], prefix="late"))

        async def shows_extra() -> bool:
            return extra.job_id in await rows()

        assert await wait_for(shows_extra, timeout=15)
    await asyncio.sleep(0)
