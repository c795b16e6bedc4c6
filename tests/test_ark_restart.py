"""SIGKILL the daemon (a real child process) while Seedance tasks are queued and running on the
fake Ark; restart it: polling resumes on the same task ids and nothing is submitted twice."""

from __future__ import annotations

from pathlib import Path

from dropflow.daemon.core import config as cfgmod
from dropflow.engine.fakes import FakeArk
from tests.conftest import DaemonProcess, wait_for
from tests.test_ark import KEY, PENDING, RUNNING, write_project
from tests.test_videogen import Clock, drop, png
from tests.test_videogen_restart import _by_name, _jobs


async def test_sigkill_while_tasks_are_queued_and_running_then_restart(tmp_path: Path) -> None:
    clock = Clock()
    with FakeArk(api_key=KEY, pending_seconds=PENDING, running_seconds=RUNNING, clock=clock) as fake:
        path = write_project(tmp_path / "p", fake.base_url, params={"max_concurrent_tasks": 10})
        cfg = cfgmod.load(path)
        db = cfg.paths.database

        async def following(names: set[str], text: str) -> bool:
            jobs = _by_name(await _jobs(db))
            return all(
                n in jobs and jobs[n].remote_task_id and text in jobs[n].progress_message for n in names
            )

        with DaemonProcess(path) as first:
            drop(cfg, "a1.txt", "a lighthouse at dusk")
            drop(cfg, "a2.txt", "the boat drifts away")
            drop(cfg, "a2.png", png(size=(640, 480)))  # image-to-video, its first frame sent inline
            await wait_for(lambda: following({"a1.txt", "a2.png"}, "PENDING"), timeout=60)
            clock.advance(PENDING + 1)
            await wait_for(lambda: following({"a1.txt", "a2.png"}, "RUNNING"), timeout=30)
            drop(cfg, "b1.txt", "a city in the rain")  # still queued at the kill
            await wait_for(lambda: following({"b1.txt"}, "PENDING"), timeout=30)
            first.kill()

        before = _by_name(await _jobs(db))
        ids = {n: before[n].remote_task_id for n in ("a1.txt", "a2.png", "b1.txt")}
        assert all(ids.values()) and fake.count("create") == 3
        polls_before = len(fake.requests("task_get"))

        with DaemonProcess(path) as second:
            clock.advance(PENDING + RUNNING)

            async def settled() -> bool:
                return all(j.status == "succeeded" for j in await _jobs(db))

            await wait_for(settled, timeout=60)
            after = _by_name(await _jobs(db))
            assert {n: after[n].remote_task_id for n in ids} == ids, "polling resumed on the same task ids"
            assert fake.count("create") == 3, "nothing was submitted again"
            polled = {r.path.rsplit("/", 1)[-1] for r in fake.requests("task_get")[polls_before:]}
            assert set(ids.values()) <= polled
            assert second.terminate() == 0

    videos = sorted(p.name for p in (cfg.paths.outputs / "video-gen").glob("*.mp4"))
    assert videos == ["a1.mp4", "a2.mp4", "b1.mp4"]
    assert all(a.usage and a.usage["reported"] and a.usage["tokens"] for a in after.values())
