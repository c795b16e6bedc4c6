"""The spine end to end, in-process: drop -> settle -> job -> engine -> outputs -> archive."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from dropflow.daemon.core import config as config_mod
from dropflow.daemon.core.config import Config
from dropflow.daemon.core.jobs import Job
from dropflow.daemon.core.store import Store
from dropflow.engine import files
from tests.conftest import RunningDaemon, running_daemon, wait_for, write_config
from tests.engines import read_runs


def drop(cfg_inbox: Path, name: str, data: bytes = b"hello", sub: str = "record") -> Path:
    p = cfg_inbox / sub / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


async def test_dropped_file_becomes_one_job_and_is_archived(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    src = drop(cfg.paths.inbox, "a.txt", b"alpha")
    [job] = await daemon.wait_status(1, ("succeeded",))
    assert job.engine == "record" and job.route == "record"
    assert job.input_path == str(src)
    out = Path(job.outputs[0])
    assert out.read_bytes() == b"alpha"
    assert out.parent == cfg.paths.outputs / "record"
    # the input left the watched tree for the archive, and the job says where
    assert not src.exists()
    await wait_for(lambda: _archived(daemon, job.id))
    archived = Path((await daemon.store.get(job.id)).archived_path)  # type: ignore[union-attr,arg-type]
    assert archived.read_bytes() == b"alpha" and cfg.paths.archive in archived.parents
    assert job.usage["input_tokens"] == 5


async def _archived(daemon: RunningDaemon, job_id: int) -> bool:
    job = await daemon.store.get(job_id)
    return bool(job and job.archived_path)


async def test_same_content_twice_is_processed_once(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    drop(cfg.paths.inbox, "one.txt", b"same bytes")
    await daemon.wait_status(1, ("succeeded",))
    second = drop(cfg.paths.inbox, "two.txt", b"same bytes")

    async def noted() -> bool:
        return any("dropped again" in e.message for e in await daemon.store.events(1))

    await wait_for(noted)
    assert not second.exists()
    jobs = await daemon.jobs()
    assert len(jobs) == 1
    dupes = list((cfg.paths.archive / "record" / "duplicates").rglob("two.txt"))
    assert len(dupes) == 1, "the duplicate is kept, in the archive"
    assert [r["event"] for r in read_runs(cfg.paths.state)].count("done") == 1


async def test_temp_names_and_hidden_files_are_ignored(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    for name in ("x.txt.part", ".hidden.txt", "~lock.txt", "y.crdownload", "z.tmp"):
        drop(cfg.paths.inbox, name, b"ignored " + name.encode())
    drop(cfg.paths.inbox, "real.txt", b"real")
    jobs = await daemon.wait_status(1, ("succeeded",))
    await asyncio.sleep(1.0)  # give the ignored names every chance to be (wrongly) picked up
    jobs = await daemon.jobs()
    assert [Path(j.input_path).name for j in jobs] == ["real.txt"]


async def test_retryable_error_backs_off_then_succeeds(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    (cfg.paths.inbox / "record" / "dropflow.yaml").write_text("params: {fail: retryable, fail_times: 2}\n")
    drop(cfg.paths.inbox, "flaky.txt", b"flaky")
    [job] = await daemon.wait_status(1, ("succeeded",))
    assert job.attempts == 3
    events = await daemon.store.events(job.id)
    assert sum("pretend 429" in e.message and "retry at" in e.message for e in events) == 2


async def test_permanent_error_fails_at_once_and_leaves_reason_beside_input(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    (cfg.paths.inbox / "record" / "dropflow.yaml").write_text("params: {fail: permanent, fail_times: 9}\n")
    src = drop(cfg.paths.inbox, "bad.txt", b"bad")
    [job] = await daemon.wait_status(1, ("failed",))
    assert job.attempts == 1
    assert job.error and job.error["kind"] == "permanent" and "pretend 400" in job.error["message"]
    assert src.exists(), "a failed input stays where the user dropped it"
    sidecar = src.with_name("bad.txt.error.txt")
    await wait_for(lambda: _exists(sidecar))
    assert "pretend 400" in sidecar.read_text()
    assert f"dropflow retry {job.id}`" in sidecar.read_text(), (
        "the retry hint names this job, not a literal ID"
    )


async def test_a_name_at_the_length_limit_still_gets_its_reason(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    (cfg.paths.inbox / "record" / "dropflow.yaml").write_text("params: {fail: permanent, fail_times: 9}\n")
    name = "é" * 60 + "x" * 124 + ".txt"  # 248 bytes: `<name>.error.txt` would be 258
    assert len(name.encode()) == 248
    src = drop(cfg.paths.inbox, name, b"long")
    [job] = await daemon.wait_status(1, ("failed",))
    sidecar = files.error_sidecar(src)
    await wait_for(lambda: _exists(sidecar))
    assert len(sidecar.name.encode()) <= 255 and sidecar.name.endswith(".error.txt")
    assert sidecar.name.startswith("é" * 60), "the sidecar starts like the file it explains"
    assert name in sidecar.read_text() and "pretend 400" in sidecar.read_text()
    assert job.error and "pretend 400" in job.error["message"]
    other = files.error_sidecar(src.with_name("é" * 60 + "x" * 123 + "y.txt"))
    assert other != sidecar, "two long names that share a start get two sidecars"


async def _exists(p: Path) -> bool:
    return p.exists()


async def test_invalid_folder_override_fails_only_that_job(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    bad = cfg.paths.inbox / "record" / "broken"
    bad.mkdir(parents=True)
    (bad / "dropflow.yaml").write_text("params:\n  seconds: 0\n  colour: red\n")
    drop(cfg.paths.inbox, "broken/x.txt", b"x")
    drop(cfg.paths.inbox, "fine.txt", b"fine")

    async def settled() -> list[Job] | None:
        jobs = await daemon.jobs()
        done = [j for j in jobs if j.status in ("failed", "succeeded")]
        return jobs if len(done) == 2 else None

    jobs = await wait_for(settled)
    by_name = {Path(j.input_path).name: j for j in jobs}
    assert by_name["fine.txt"].status == "succeeded"
    failed = by_name["x.txt"]
    assert failed.status == "failed" and failed.error_kind == "config"
    assert f"{bad / 'dropflow.yaml'}:3" in (failed.error_message or "")
    assert "colour" in (failed.error_message or "")


async def test_retry_after_fixing_an_override_takes_the_fixed_params(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    folder = cfg.paths.inbox / "record" / "broken"
    folder.mkdir(parents=True)
    override = folder / "dropflow.yaml"
    override.write_text("params:\n  seconds: 0\n  colour: red\n")
    drop(cfg.paths.inbox, "broken/x.txt", b"x")
    [job] = await daemon.wait_status(1, ("failed",))
    assert job.error_kind == "config" and f"{override}:3" in (job.error_message or "")

    # a retry with the override still broken fails the same way: a config error naming the line
    assert await daemon.store.retry(job.id) == "queued"
    await wait_for(lambda: _status_is(daemon, job.id, "failed"))
    again = await daemon.store.get(job.id)
    assert (
        again is not None and again.error_kind == "config" and f"{override}:3" in (again.error_message or "")
    )

    override.write_text("params:\n  seconds: 0.05\n")
    assert await daemon.store.retry(job.id) == "queued"
    await wait_for(lambda: _status_is(daemon, job.id, "succeeded"))
    fixed = await daemon.store.get(job.id)
    assert fixed is not None and fixed.params["seconds"] == 0.05, "the retry took the fixed params"
    assert fixed.provider == "offline", "the job says which provider it ran on, not 'default'"


async def _status_is(daemon: RunningDaemon, job_id: int, status: str) -> bool:
    job = await daemon.store.get(job_id)
    return job is not None and job.status == status


async def test_cancel_running_job(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    (cfg.paths.inbox / "record" / "dropflow.yaml").write_text("params: {seconds: 30}\n")
    drop(cfg.paths.inbox, "slow.txt", b"slow")
    [job] = await daemon.wait_status(1, ("running",))
    assert await daemon.store.cancel(job.id) == "requested"
    [job] = await daemon.wait_status(1, ("cancelled",), timeout=5)
    assert not job.outputs


async def test_pause_and_resume_running_job(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    (cfg.paths.inbox / "record" / "dropflow.yaml").write_text("params: {seconds: 3}\n")
    drop(cfg.paths.inbox, "p.txt", b"p")
    [job] = await daemon.wait_status(1, ("running",))
    assert await daemon.store.pause(job.id) == "requested"
    [job] = await daemon.wait_status(1, ("paused",), timeout=5)
    assert job.attempts == 0, "a pause is not a failed attempt"
    assert await daemon.store.resume(job.id) == "resumed"
    [job] = await daemon.wait_status(1, ("succeeded",))


async def test_engine_pause_holds_new_jobs(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    await daemon.store.pause_engine("record", True)
    drop(cfg.paths.inbox, "held.txt", b"held")
    [job] = await daemon.wait_status(1, ("queued",))
    await asyncio.sleep(0.5)
    assert (await daemon.store.get(job.id)).status == "queued"  # type: ignore[union-attr]
    await daemon.store.pause_engine("record", False)
    await daemon.wait_status(1, ("succeeded",))


async def test_wait_result_frees_slot_and_comes_back(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    (cfg.paths.inbox / "record" / "dropflow.yaml").write_text("params: {wait_once: 0.3}\n")
    drop(cfg.paths.inbox, "w.txt", b"w")
    [job] = await daemon.wait_status(1, ("succeeded",))
    assert job.remote_task_id == f"rec-{job.id}"
    assert job.attempts == 1, "waiting on a remote task does not use up attempts"
    starts = [r for r in read_runs(cfg.paths.state) if r["event"] == "start"]
    assert len(starts) == 2


async def test_priority_orders_claims(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    await daemon.store.pause_engine(None, True)
    for i in range(3):
        drop(cfg.paths.inbox, f"n{i}.txt", f"n{i}".encode())
    jobs = await daemon.wait_status(3, ("queued",))
    last = max(j.id for j in jobs)
    await daemon.store.set_priority(last, 10)
    cfg.scheduler.max_concurrency = 1
    await daemon.store.pause_engine(None, False)
    await daemon.wait_status(3, ("succeeded",))
    order = [r["job"] for r in read_runs(cfg.paths.state) if r["event"] == "start"]
    assert order[0] == last


def test_jobs_json_shape(tmp_path: Path) -> None:
    from dropflow.daemon.core.jobs import NewJob
    from dropflow.daemon.core.store import Store

    async def go() -> dict[str, object]:
        async with Store.open(tmp_path / "db.sqlite") as s:
            [r] = await s.insert_jobs([NewJob("record", "record", "/x/a.txt", "h1")])
            job = await s.get(r.job_id)
            assert job is not None
            return job.as_dict()

    d = asyncio.run(go())
    assert json.loads(json.dumps(d))["status"] == "queued"
    for key in ("id", "engine", "status", "input", "progress", "outputs", "error"):
        assert key in d
    assert d["error"] is None and d["outputs"] == []


async def test_a_locked_job_store_delays_the_daemon_but_does_not_stop_it(
    project: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store refuses (locked past busy_timeout by another process): the new file is offered
    again at the next rescan, claiming is tried again a second later, the outcome is recorded once
    the store answers, and the job runs once."""
    caplog.set_level(logging.WARNING, logger="dropflow")
    failures = {"insert_jobs": 1, "claim": 2, "succeed": 1}

    def refuse_first(name: str) -> Any:
        real = getattr(Store, name)

        async def method(self: Store, *args: Any, **kwargs: Any) -> Any:
            if failures[name]:
                failures[name] -= 1
                raise sqlite3.OperationalError("database is locked")
            return await real(self, *args, **kwargs)

        return method

    for name in failures:
        monkeypatch.setattr(Store, name, refuse_first(name))
    async with running_daemon(project) as d:
        (project.paths.inbox / "record" / "a.txt").write_text("a")
        [job] = await d.wait_status(1, ("succeeded",), timeout=30)
        assert not d.task.done(), "the daemon is still running"
    assert failures == {"insert_jobs": 0, "claim": 0, "succeed": 0}
    assert job.attempts == 1 and len(read_runs(project.paths.state)) == 2  # one start, one done
    messages = [r.getMessage() for r in caplog.records]
    assert any("trying again at the next rescan" in m for m in messages)
    assert any("cannot record its outcome" in m for m in messages)
    assert sum("job store unavailable" in m for m in messages) >= 4  # intake, two claims, outcome


async def test_an_input_its_engine_kept_is_not_archived_when_offered_again(project: Config) -> None:
    (project.paths.inbox / "record" / "dropflow.yaml").write_text("params: {keep_input: true}\n")
    src = drop(project.paths.inbox, "kept.txt", b"kept")
    async with running_daemon(project) as first:
        [job] = await first.wait_status(1, ("succeeded",))
    assert job.archived_path == "" and src.exists(), "the engine kept its input where it was dropped"
    # a new daemon's first scan offers the file again: same content, same params, finished
    async with running_daemon(project) as second:
        (project.paths.inbox / "record" / "marker.txt").write_bytes(b"scan done")
        await second.wait_status(2, ("succeeded",))
        jobs = await second.store.list()
    assert len(jobs) == 2 and src.exists(), "not archived, not run again"


async def test_a_job_ending_while_the_scheduler_claims_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that ends (or is queued) while a claim awaits the store sets the wake-up again; the
    scheduler must claim again at once, not at its next tick (this cost the dataset bench a third
    of a second per round)."""
    from dropflow.daemon.scheduler import Scheduler

    path = write_config(tmp_path / "p")
    path.write_text(path.read_text().replace("tick_seconds: 0.05", "tick_seconds: 30"))
    cfg = config_mod.load(path)
    fills: list[float] = []

    async def fill(self: Scheduler) -> None:
        fills.append(time.monotonic())
        if len(fills) == 1:
            await asyncio.sleep(0)  # the claim awaits the store ...
            self.wake.set()  # ... while a running job ends (its done callback)

    monkeypatch.setattr(Scheduler, "_fill_slots", fill)
    async with running_daemon(cfg):
        await wait_for(lambda: _at_least(fills, 2), timeout=10)  # with a 30 s tick: only the wake


async def _at_least(items: list[float], n: int) -> bool:
    return len(items) >= n
