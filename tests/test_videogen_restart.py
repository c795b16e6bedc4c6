"""SIGKILL the daemon (a real child process) while video tasks are pending, running, and in the
middle of being created; restart it: polling resumes on the same task ids and nothing is paid twice."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

from dropflow.daemon.core import config as cfgmod
from dropflow.daemon.core.jobs import Job
from dropflow.daemon.core.store import Store
from dropflow.engine.fakes import FakeDashScope, Fault
from tests.conftest import DaemonProcess, subprocess_env, wait_for
from tests.test_videogen import KEY, PENDING, RUNNING, Clock, drop, png, write_project


async def _jobs(db: Path) -> list[Job]:
    if not db.exists():
        return []
    async with Store.open(db) as store:
        return await store.list()


def _by_name(jobs: list[Job]) -> dict[str, Job]:
    return {Path(j.input_path).name: j for j in jobs}


async def test_sigkill_while_tasks_pend_run_and_are_created_then_restart(tmp_path: Path) -> None:
    clock = Clock()
    with FakeDashScope(api_key=KEY, pending_seconds=PENDING, running_seconds=RUNNING, clock=clock) as ds:
        path = write_project(tmp_path / "p", base_url=ds.base_url, params={"max_concurrent_tasks": 10})
        cfg = cfgmod.load(path)
        db = cfg.paths.database

        async def following(names: set[str], text: str) -> bool:
            jobs = _by_name(await _jobs(db))
            return all(
                n in jobs and jobs[n].remote_task_id and text in jobs[n].progress_message for n in names
            )

        with DaemonProcess(path) as first:
            # group A: submitted, then RUNNING at the kill
            drop(cfg, "a1.txt", "a lighthouse at dusk")
            drop(cfg, "a2.txt", "a paper boat on a river")
            drop(cfg, "a3.txt", "the boat drifts away")
            drop(cfg, "a3.png", png())  # image-to-video: the upload happened before the kill
            group_a = {"a1.txt", "a2.txt", "a3.png"}
            await wait_for(lambda: following(group_a, "PENDING"), timeout=60)
            clock.advance(PENDING + 1)
            await wait_for(lambda: following(group_a, "RUNNING"), timeout=30)
            # group B: still PENDING at the kill
            drop(cfg, "b1.txt", "a city in the rain")
            await wait_for(lambda: following({"b1.txt"}, "PENDING"), timeout=30)
            # C: killed while its create call is in flight (the fake holds the answer back)
            ds.inject(Fault.stall(60, endpoint="video_synthesis"))
            drop(cfg, "c1.txt", "killed mid-call")

            async def c_in_flight() -> bool:
                return any(r.status == 0 for r in ds.requests("video_synthesis"))

            await wait_for(c_in_flight, timeout=30)
            first.kill()

        before = _by_name(await _jobs(db))
        ids = {n: before[n].remote_task_id for n in ("a1.txt", "a2.txt", "a3.png", "b1.txt")}
        assert all(ids.values()) and before["c1.txt"].remote_task_id is None
        assert before["c1.txt"].checkpoint["phase"] == "submitting"
        submissions = ds.count("video_synthesis")
        assert submissions == 5 and len(ds.tasks) == 4  # the stalled call made no task (the client died)
        polls_before = len(ds.requests("task_get"))

        with DaemonProcess(path) as second:
            clock.advance(PENDING + RUNNING)

            async def settled() -> bool:
                jobs = _by_name(await _jobs(db))
                return all(jobs[n].status == "succeeded" for n in ids) and jobs["c1.txt"].status == "failed"

            await wait_for(settled, timeout=60)
            after = _by_name(await _jobs(db))
            assert {n: after[n].remote_task_id for n in ids} == ids, "polling resumed on the same task ids"
            assert ds.count("video_synthesis") == submissions, "nothing was submitted again"
            polled = {r.path.rstrip("/").rsplit("/", 1)[-1] for r in ds.requests("task_get")[polls_before:]}
            assert set(ids.values()) <= polled

            c = after["c1.txt"]
            assert c.error_kind == "permanent" and c.remote_task_id is None
            assert "may have been created and may bill" in (c.error_message or "")
            assert f"dropflow retry {c.id}" in (c.error_hint or "")

            # the user checks the console, finds nothing, and asks for it explicitly
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "dropflow.daemon", "--config", str(path), "retry", str(c.id)],
                env=subprocess_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr

            async def c_following() -> bool:
                return await following({"c1.txt"}, "PENDING")

            await wait_for(c_following, timeout=30)
            clock.advance(PENDING + RUNNING + 1)

            async def all_done() -> bool:
                return all(j.status == "succeeded" for j in await _jobs(db))

            await wait_for(all_done, timeout=60)
            assert second.terminate() == 0

    # exactly one task per job (the lost call made none); one video per job
    prompts = Counter(t.input.get("prompt") for t in ds.tasks.values())
    assert len(ds.tasks) == 5 and set(prompts.values()) == {1}
    videos = sorted(p.name for p in (cfg.paths.outputs / "video-gen").glob("*.mp4"))
    assert videos == ["a1.mp4", "a2.mp4", "a3.mp4", "b1.mp4", "c1.mp4"]
