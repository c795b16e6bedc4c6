"""Per-daemon roles (issue 15 point 3): a daemon limited to some engines claims only their jobs,
and a pure worker (`--no-watch`) runs queued jobs without looking at the inbox."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dropflow.daemon.cli import build_parser
from dropflow.daemon.core import config as cfgmod
from dropflow.daemon.core.config import Config
from dropflow.daemon.daemon import check_engines, check_routes
from dropflow.engine.errors import ConfigError
from tests.conftest import running_daemon, wait_for, write_config
from tests.engines import read_runs


async def test_a_job_waits_for_a_daemon_that_runs_its_engine(project: Config) -> None:
    inbox = project.paths.inbox / "record"
    async with running_daemon(project, engines=["cluster"]) as gpu_box:
        (inbox / "a.txt").write_bytes(b"a")
        [job] = await gpu_box.wait_status(1, ("queued",))  # the watcher queued it...
        await asyncio.sleep(20 * project.scheduler.tick_seconds)  # ...and many claims passed it by
        assert (await gpu_box.store.get(job.id)).status == "queued"  # type: ignore[union-attr]
        assert read_runs(project.paths.state) == []

    async with running_daemon(project, watch=False) as worker:
        [done] = await worker.wait_status(1, ("succeeded",))
        assert done.id == job.id
        # a pure worker never looks at the inbox: a new drop (past a settle and a rescan) stays a file
        (inbox / "b.txt").write_bytes(b"b")
        await asyncio.sleep(project.watch.rescan_seconds + 3 * project.watch.settle_seconds)
        assert [j.id for j in await worker.store.list()] == [job.id]
    assert [r["job"] for r in read_runs(project.paths.state) if r["event"] == "done"] == [job.id]

    async with running_daemon(project, engines=["record"]) as record_box:  # watching, and its engine
        jobs = await wait_for(lambda: _all_succeeded(record_box.store, 2))
        assert sorted(j.input_path.rsplit("/", 1)[1] for j in jobs) == ["a.txt", "b.txt"]


async def _all_succeeded(store, count):  # type: ignore[no-untyped-def]
    jobs = await store.list()
    return jobs if len(jobs) == count and all(j.status == "succeeded" for j in jobs) else None


async def test_a_daemon_limited_to_some_routes_takes_only_their_files_and_jobs(tmp_path: Path) -> None:
    extra = "  - name: other\n    folder: other\n    engine: record\n"
    cfg = cfgmod.load(write_config(tmp_path / "p", extra=extra))
    (cfg.paths.inbox / "other").mkdir()
    (cfg.paths.inbox / "other" / "o.txt").write_bytes(b"o")
    (cfg.paths.inbox / "record" / "r.txt").write_bytes(b"r")
    async with running_daemon(cfg, routes=["record"]) as d:
        [job] = await d.wait_status(1, ("succeeded",))
        assert job.route == "record"
        await asyncio.sleep(3 * cfg.watch.settle_seconds)  # the other folder's file stays a file
        assert [j.route for j in await d.store.list()] == ["record"]
    # the daemon serving the other route takes its file up (claims by route: the contract suite)
    async with running_daemon(cfg, routes=["other"]) as d:
        jobs = await wait_for(lambda: _all_succeeded(d.store, 2))
        assert sorted(j.route for j in jobs) == ["other", "record"]


def test_engines_are_checked_by_name() -> None:
    assert check_engines(None) is None
    assert check_engines(["cluster", "annotate"]) == {"cluster", "annotate"}
    with pytest.raises(ConfigError, match=r"unknown engine.*clusters") as err:
        check_engines(["clusters"])
    assert "cluster" in (err.value.hint or "")
    with pytest.raises(ConfigError, match="none given"):
        check_engines([])


def test_routes_are_checked_against_the_config(project: Config) -> None:
    assert check_routes(project, None) is None
    assert check_routes(project, ["record"]) == {"record"}
    with pytest.raises(ConfigError, match=r"unknown route.*: recrod") as err:
        check_routes(project, ["recrod"])
    assert "record" in (err.value.hint or "")


def test_the_daemon_command_takes_a_role() -> None:
    args = build_parser().parse_args(
        ["daemon", "--engines", "cluster,dataset", "--routes", "faces", "--no-watch"]
    )
    assert (args.engines, args.routes, args.watch) == ("cluster,dataset", "faces", False)
    args = build_parser().parse_args(["daemon"])
    assert (args.engines, args.routes, args.watch) == (None, None, True)
