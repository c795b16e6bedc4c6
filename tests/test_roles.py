"""Per-daemon roles (issue 15 point 3): a daemon limited to some engines claims only their jobs,
and a pure worker (`--no-watch`) runs queued jobs without looking at the inbox."""

from __future__ import annotations

import asyncio

import pytest

from dropflow.daemon.cli import build_parser
from dropflow.daemon.core.config import Config
from dropflow.daemon.daemon import check_engines
from dropflow.engine.errors import ConfigError
from tests.conftest import running_daemon, wait_for
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


def test_engines_are_checked_by_name() -> None:
    assert check_engines(None) is None
    assert check_engines(["cluster", "annotate"]) == {"cluster", "annotate"}
    with pytest.raises(ConfigError, match=r"unknown engine.*clusters") as err:
        check_engines(["clusters"])
    assert "cluster" in (err.value.hint or "")
    with pytest.raises(ConfigError, match="none given"):
        check_engines([])


def test_the_daemon_command_takes_a_role() -> None:
    args = build_parser().parse_args(["daemon", "--engines", "cluster,dataset", "--no-watch"])
    assert (args.engines, args.watch) == ("cluster,dataset", False)
    args = build_parser().parse_args(["daemon"])
    assert (args.engines, args.watch) == (None, True)
