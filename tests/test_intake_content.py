"""An input is its job's only while it holds the job's content: what the daemon remembers at start,
what it archives when a job ends, and one unit hash for a drop and `dropflow submit`."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import textwrap
import time
from pathlib import Path

import pytest

from dropflow.daemon.cli import EXIT_OK, EXIT_STATE, main
from dropflow.daemon.core import config as config_mod
from dropflow.daemon.core.config import Config
from dropflow.daemon.core.jobs import ActiveInput, Job, NewJob
from dropflow.daemon.core.store import Store
from dropflow.daemon.intake import Intake
from dropflow.daemon.router import Router
from dropflow.daemon.watcher import Watcher, signature
from dropflow.engine import files
from tests.conftest import running_daemon, wait_for

REPO = Path(__file__).resolve().parent.parent


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def no_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any hash of a file fails the test: the cheap checks must decide alone."""

    def refuse(path: Path) -> str:
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(files, "file_hash", refuse)


# --- 1. at start, the daemon remembers an input only while it holds its job's content -----------


def watcher_for(cfg: Config) -> Watcher:
    async def ignore(_ready: object) -> None:
        return None

    return Watcher(cfg.watch, Router(cfg), ignore)


def test_an_input_untouched_since_its_job_is_remembered_without_reading_it(
    project: Config, no_reads: None
) -> None:
    src = write(project.paths.inbox / "record" / "big.bin", b"a large video, say")
    watcher = watcher_for(project)
    registered_after = time.time() + 60  # the file's mtime and ctime are well before its job
    assert watcher.remember(ActiveInput((str(src),), sha(b"not read anyway"), registered_after))
    assert watcher.known[src] == signature(src)


def test_an_input_edited_since_its_job_is_not_remembered(project: Config) -> None:
    src = write(project.paths.inbox / "record" / "a.txt", b"first")
    registered = time.time() - 60
    watcher = watcher_for(project)
    assert not watcher.remember(ActiveInput((str(src),), sha(b"before the edit"), registered))
    assert src not in watcher.known, "offered at the startup scan as a new drop"
    # touched, but the same content: one hash says it is still the job's
    assert watcher.remember(ActiveInput((str(src),), sha(b"first"), registered))
    assert src in watcher.known
    gone = project.paths.inbox / "record" / "gone.txt"
    assert not watcher.remember(ActiveInput((str(gone),), sha(b"x"), registered))


async def test_a_failed_input_edited_while_the_daemon_was_down_becomes_a_new_job(project: Config) -> None:
    (project.paths.inbox / "record" / "dropflow.yaml").write_text("params: {fail: input}\n")
    src = write(project.paths.inbox / "record" / "a.txt", b"broken")
    async with running_daemon(project) as first:
        [job] = await first.wait_status(1, ("failed",))
    assert job.content_hash == sha(b"broken") and src.exists()
    src.write_bytes(b"fixed while the daemon was down")
    async with running_daemon(project) as second:
        jobs = await second.wait_status(2, ("failed", "succeeded"))
    assert [j.content_hash for j in jobs] == [sha(b"broken"), sha(b"fixed while the daemon was down")]
    assert jobs[1].input_path == str(src)


# --- 2. a finished job archives its input only while it holds the job's content -------------------


async def registered(store: Store, path: Path, data: bytes) -> Job:
    [res] = await store.insert_jobs(
        [NewJob("record", "record", str(path), sha(data), input_paths=[str(path)])]
    )
    job = await store.get(res.job_id)
    assert job is not None
    return job


async def test_archive_leaves_a_file_replaced_since_the_job(
    project: Config, caplog: pytest.LogCaptureFixture
) -> None:
    src = write(project.paths.inbox / "record" / "a.txt", b"old")
    async with Store.open(project.database) as store:
        intake = Intake(project, store, Router(project))
        job = await registered(store, src, b"old")
        job.created_at -= 60  # the replacement below is clearly after the job
        src.write_bytes(b"new, queued as a newer job")
        assert intake.archive_inputs(job) is None
        assert src.read_bytes() == b"new, queued as a newer job"
        assert "no longer holds the content this job processed" in caplog.text
        # the same content, touched since: one hash says it is the job's, and it goes
        src.write_bytes(b"old")
        archived = intake.archive_inputs(job)
    assert archived is not None and Path(archived).read_bytes() == b"old" and not src.exists()


async def test_archive_of_an_untouched_input_reads_nothing(project: Config, no_reads: None) -> None:
    src = write(project.paths.inbox / "record" / "big.bin", b"a large video, say")
    async with Store.open(project.database) as store:
        job = await registered(store, src, b"a large video, say")
        job.created_at += 60  # nothing changed since the job: stats decide
        archived = Intake(project, store, Router(project)).archive_inputs(job)
    assert archived is not None and not src.exists()


async def test_a_file_replaced_while_its_job_runs_stays_for_the_newer_job(project: Config) -> None:
    (project.paths.inbox / "record" / "dropflow.yaml").write_text("params: {seconds: 1.5}\n")
    src = write(project.paths.inbox / "record" / "a.txt", b"first take")
    async with running_daemon(project) as d:
        await d.wait_status(1, ("running",))
        await asyncio.sleep(0.1)
        src.write_bytes(b"second take")  # same name, new content: a new job
        jobs = await d.wait_status(2, ("succeeded",), timeout=30)

        async def second_archived() -> Job | None:
            job = await d.store.get(jobs[1].id)
            return job if job and job.archived_path else None

        second = await wait_for(second_archived)
        first = await d.store.get(jobs[0].id)
        events = await d.store.events(jobs[0].id)
    assert second.content_hash == sha(b"second take")
    assert Path(second.archived_path).read_bytes() == b"second take"
    assert first is not None and not first.archived_path, "the first job did not take the newer job's input"
    assert any("input left in the inbox" in e.message for e in events), "the first job says why"


# --- 3. a drop and `dropflow submit` of the same unit are one job ---------------------------------

ANNOTATE = """
paths: {inbox: inbox, outputs: outputs, archive: archive, prompts: prompts, state: state}
providers: {default: offline}
routes:
  - name: annotate
    folder: annotate
    engine: annotate
"""


@pytest.fixture
def annotate(tmp_path: Path) -> Config:
    root = tmp_path / "proj"
    (root / "inbox" / "annotate").mkdir(parents=True)
    shutil.copytree(REPO / "prompts", root / "prompts")
    (root / "config.yaml").write_text(textwrap.dedent(ANNOTATE))
    return config_mod.load(root / "config.yaml")


def video_with_sidecars(cfg: Config) -> Path:
    """A unit of three files: its hash is of all three (the bytes need not decode: nothing runs)."""
    video = write(cfg.paths.inbox / "annotate" / "clip.mp4", b"not really a video")
    write(video.with_name("clip.mp4.roles.yaml"), b"- name: Ann\n")
    write(video.with_name("clip.mp4.extra.txt"), b"filmed in Hangzhou\n")
    return video


def drop(cfg: Config, unit: Path) -> list[int]:
    """What the watcher hands intake once `unit` settles; the ids of new jobs."""

    async def accept() -> list[int]:
        router = Router(cfg)
        found = router.unit_root(unit)
        assert found is not None
        async with Store.open(cfg.database) as store:
            sig = signature(unit)
            assert sig is not None
            return await Intake(cfg, store, router).accept([(found[0], found[1], sig, None)])

    return asyncio.run(accept())


def all_jobs(cfg: Config) -> list[Job]:
    async def read() -> list[Job]:
        async with Store.open(cfg.database) as store:
            return await store.list()

    return asyncio.run(read())


def test_submitted_then_dropped_unit_is_one_job(annotate: Config, capsys: pytest.CaptureFixture[str]) -> None:
    video = video_with_sidecars(annotate)
    assert main(["--config", str(annotate.source), "submit", str(video)]) == EXIT_OK
    assert "job 1: queued" in capsys.readouterr().out
    assert drop(annotate, video) == [], "the drop is the submitted job's content"
    [job] = all_jobs(annotate)
    assert job.source == "submit" and len(job.input_paths) == 3
    assert job.content_hash == files.unit_hash([Path(p) for p in job.input_paths])


def test_dropped_then_submitted_unit_is_one_job(annotate: Config, capsys: pytest.CaptureFixture[str]) -> None:
    video = video_with_sidecars(annotate)
    assert len(drop(annotate, video)) == 1
    assert main(["--config", str(annotate.source), "submit", str(video)]) == EXIT_STATE
    assert "already has this content" in capsys.readouterr().out
    [job] = all_jobs(annotate)
    assert job.source == "inbox"


def test_unit_hash_is_of_every_file_and_a_lone_file_keeps_its_own(tmp_path: Path) -> None:
    video = write(tmp_path / "v.mp4", b"video")
    roles = write(tmp_path / "v.mp4.roles.yaml", b"- name: Ann\n")
    assert files.unit_hash([video]) == files.content_hash(video) == sha(b"video")
    both = files.unit_hash([video, roles])
    assert both not in (sha(b"video"), sha(b"- name: Ann\n"))
    roles.write_bytes(b"- name: Bo\n")
    assert files.unit_hash([video, roles]) != both, "a changed sidecar is other content"
