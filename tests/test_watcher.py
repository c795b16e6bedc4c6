"""Watcher and settle gate with real files and the real watchfiles backend."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from dropflow.daemon.core import config as cfgmod
from dropflow.daemon.core.config import WatchSettings
from dropflow.daemon.watcher import SettleGate, Watcher, signature
from dropflow.engine.files import is_ignored_name
from tests.conftest import RunningDaemon, running_daemon, wait_for, write_config
from tests.engines import read_runs


async def test_file_written_slowly_becomes_one_job_only_once_complete(tmp_path: Path) -> None:
    cfg = cfgmod.load(write_config(tmp_path / "p", settle=1.0))
    async with running_daemon(cfg) as daemon:
        await _write_slowly_and_check(daemon)


async def _write_slowly_and_check(daemon: RunningDaemon) -> None:
    cfg = daemon.cfg
    target = cfg.paths.inbox / "record" / "slow.dat"
    chunks = [bytes([i]) * 1000 for i in range(10)]
    with open(target, "wb") as fh:
        for chunk in chunks:  # ~5 s of writing, a pause longer than the check period each time
            fh.write(chunk)
            fh.flush()
            await asyncio.sleep(0.5)
            assert await daemon.jobs() == [], "no job while the file is still being written"
    [job] = await daemon.wait_status(1, ("succeeded",))
    assert Path(job.outputs[0]).read_bytes() == b"".join(chunks)
    await asyncio.sleep(0.5)
    assert len(await daemon.jobs()) == 1
    assert [r["event"] for r in read_runs(cfg.paths.state)].count("done") == 1


async def test_file_moved_in_from_elsewhere_is_taken_without_waiting_out_the_window(tmp_path: Path) -> None:
    settings = WatchSettings(settle_seconds=60, check_seconds=0.05)
    gate = SettleGate(settings)
    old = tmp_path / "old.txt"
    old.write_text("written an hour ago elsewhere")
    an_hour_ago = time.time() - 3600
    import os

    os.utime(old, (an_hour_ago, an_hour_ago))
    fresh = tmp_path / "fresh.txt"
    fresh.write_text("just written")
    from dropflow.daemon.core.config import Route

    route = Route(name="r", folder="r", engine="record")
    gate.offer(route, old)
    gate.offer(route, fresh)
    assert gate.check() == []  # first look only records the signature
    due = gate.next_due()
    assert due is not None and due - time.monotonic() <= settings.check_seconds
    time.sleep(max(0.0, due - time.monotonic()))
    ready = gate.check()
    assert [u for _r, u, _s in ready] == [old]
    assert fresh in gate.pending
    assert gate.pending[fresh].due - time.monotonic() > 50, "a fresh file waits out its window"


def test_untrusted_mtime_waits_the_full_window(tmp_path: Path) -> None:
    gate = SettleGate(WatchSettings(settle_seconds=0.3, trust_mtime=False))
    p = tmp_path / "a.txt"
    p.write_text("x")
    import os

    os.utime(p, (1, 1))
    from dropflow.daemon.core.config import Route

    gate.offer(Route(name="r", folder="r", engine="record"), p)
    assert gate.check() == [] and gate.check() == []
    time.sleep(0.1)
    assert gate.check() == [], "an old mtime is not trusted: the window is observed"
    time.sleep(0.25)
    assert len(gate.check()) == 1


def test_folder_signature_sees_changes_below_and_partial_downloads(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    (batch / "sub").mkdir(parents=True)
    (batch / "sub" / "a.jpg").write_bytes(b"a")
    s1 = signature(batch)
    (batch / "sub" / "b.jpg").write_bytes(b"bb")
    s2 = signature(batch)
    assert s1 != s2 and s2 is not None and s2[0] == 2 and s2[1] == 3
    (batch / "c.jpg.crdownload").write_bytes(b"partial")
    s3 = signature(batch)
    assert s3 is not None and s3[3] is True


def test_ignored_names() -> None:
    for name in (
        "a.part",
        "b.crdownload",
        "c.download",
        "d.tmp",
        "~e.docx",
        ".hidden",
        "x.mp4.error.txt",
        "dropflow.yaml",
        "README.md",
    ):
        assert is_ignored_name(name), name
    for name in ("video.mp4", "prompt.txt", "photo.JPG"):
        assert not is_ignored_name(name), name


async def test_files_dropped_while_down_are_picked_up_at_start(project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dropflow.daemon.core.store import Store
    from dropflow.daemon.daemon import Daemon
    from dropflow.daemon.logs import Redactor

    for i in range(3):
        (project.paths.inbox / "record" / f"early{i}.txt").write_text(f"early {i}")
    d = Daemon(project, Redactor())
    task = asyncio.create_task(d.run(install_signals=False))
    try:
        async with Store.open(project.paths.database) as store:

            async def done() -> bool:
                jobs = await store.list()
                return len(jobs) == 3 and all(j.status == "succeeded" for j in jobs)

            await wait_for(done)
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 30)


async def test_folder_unit_settles_as_a_whole(tmp_path: Path) -> None:
    """A folder engine's unit becomes one job only after nothing below it changed."""
    from dropflow.daemon.core import config as cfgmod
    from dropflow.daemon.core.store import Store
    from dropflow.daemon.daemon import Daemon
    from dropflow.daemon.logs import Redactor
    from tests.conftest import write_config

    root = tmp_path / "p"
    path = write_config(
        root,
        extra="""
  - name: folders
    folder: folders
    engine: folder-record
""",
    )
    text = path.read_text().replace(
        '["tests.engines:RecordEngine"]', '["tests.engines:RecordEngine", "tests.engines:FolderRecordEngine"]'
    )
    path.write_text(text)
    cfg = cfgmod.load(path)
    batch = cfg.paths.inbox / "folders" / "album"
    batch.mkdir(parents=True)
    d = Daemon(cfg, Redactor())
    task = asyncio.create_task(d.run(install_signals=False))
    try:
        async with Store.open(cfg.paths.database) as store:
            for i in range(6):
                (batch / f"{i}.jpg").write_bytes(b"x" * (i + 1))
                await asyncio.sleep(0.15)
                assert await store.list() == []
            [job] = await wait_for(lambda: _succeeded(store))
            assert job.input_path == str(batch)
            assert job.outputs and Path(job.outputs[0]).read_text() == "6"
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 30)


async def _succeeded(store):  # type: ignore[no-untyped-def]
    jobs = await store.list()
    return jobs if jobs and all(j.status == "succeeded" for j in jobs) else None


async def test_hash_taken_while_settling_is_used_only_if_the_file_did_not_change(tmp_path: Path) -> None:
    import hashlib

    from dropflow.daemon.router import Router
    from dropflow.engine import registry

    cfg = cfgmod.load(write_config(tmp_path / "p", settle=0.6))
    registry.load_plugin("tests.engines:RecordEngine")
    got: list[tuple[Path, str | None]] = []

    async def on_ready(ready):  # type: ignore[no-untyped-def]
        got.extend((unit, digest) for _r, unit, _s, digest in ready)

    w = Watcher(cfg.watch, Router(cfg), on_ready)
    target = cfg.paths.inbox / "record" / "changing.txt"
    target.write_bytes(b"first version")
    w.hint(target)
    stop = asyncio.Event()
    task = asyncio.create_task(w._settle(stop))
    try:
        await wait_for(lambda: _has(w.prehashed, target), timeout=10)
        assert w.prehashed[target][1] == hashlib.sha256(b"first version").hexdigest()
        target.write_bytes(b"second, longer version")  # changes after it was hashed
        await wait_for(lambda: _nonempty(got), timeout=10)
    finally:
        stop.set()
        w._wake.set()
        await task
    [(unit, digest)] = got
    assert unit == target
    assert digest == hashlib.sha256(b"second, longer version").hexdigest()


async def _has(d: dict[Path, object], key: Path) -> bool:
    return key in d


async def _nonempty(items: list[object]) -> bool:
    return bool(items)


async def test_a_folder_changed_by_its_own_job_is_not_a_new_drop(tmp_path: Path) -> None:
    """The engine empties its folder unit in steps (as cluster does), slower than it settles: no
    second job for the half-emptied folder. A photo added meanwhile is taken up once it is done
    (it settled while the job ran, and nothing changes after: the watcher must look again)."""
    path = write_config(
        tmp_path / "p",
        extra="  - name: folders\n    folder: folders\n    engine: folder-record\n",
    )
    text = path.read_text().replace(
        '["tests.engines:RecordEngine"]', '["tests.engines:RecordEngine", "tests.engines:FolderRecordEngine"]'
    )
    path.write_text(text)
    cfg = cfgmod.load(path)
    (cfg.paths.inbox / "folders").mkdir()
    (cfg.paths.inbox / "folders" / "dropflow.yaml").write_text("params: {consume: true, seconds: 1.5}\n")
    album = cfg.paths.inbox / "folders" / "album"
    album.mkdir()
    for i in range(4):
        (album / f"{i}.jpg").write_bytes(b"x" * (i + 1))
    async with running_daemon(cfg) as d:

        async def files_left(n: int) -> bool:
            return len(list(album.iterdir())) == n

        await wait_for(lambda: files_left(2), timeout=30)  # half-emptied, and stable for a while
        await wait_for(lambda: files_left(0), timeout=30)
        (album / "late.jpg").write_bytes(b"added while the job ran")  # the job no longer looks
        [first, second] = await d.wait_status(2, ("succeeded",), timeout=30)
        assert not album.exists()
    assert first.input_path == second.input_path == str(album)
    counts = [Path(j.outputs[0]).read_text() for j in (first, second)]
    assert counts == ["4", "1"], "the first job saw the drop, the second only the late photo"
