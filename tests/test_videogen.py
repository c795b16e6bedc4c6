"""The video-gen engine end to end: a real daemon in-process, real SQLite and files, the real
dashscope SDK against the loopback fake DashScope (whose clock the tests move)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from dropflow.daemon.core import config as cfgmod
from dropflow.daemon.core.config import Config
from dropflow.daemon.core.jobs import Job
from dropflow.engine.fakes import FakeDashScope, Fault
from tests.conftest import RunningDaemon, running_daemon, wait_for

KEY = "sk-vg-test-0123456789abcdef"
PENDING, RUNNING = 5.0, 20.0  # fake-clock seconds a task stays PENDING, then RUNNING

CONFIG = """
paths: {{inbox: inbox, outputs: outputs, archive: archive, prompts: prompts, state: state}}
watch: {{settle_seconds: 0.2, rescan_seconds: 1, check_seconds: 0.05}}
scheduler:
  max_concurrency: 8
  engine_concurrency: {{video-gen: 8}}
  lease_seconds: 5
  max_attempts: 5
  backoff_base_seconds: 0.1
  backoff_max_seconds: 0.3
  shutdown_grace_seconds: {grace}
  tick_seconds: 0.05
providers:
  default: {provider}
  dashscope: {{api_key: {key}, base_url: "{base_url}", timeout_seconds: 10}}
  offline: {{video_seconds: 0.6}}
routes:
  - name: video-gen
    folder: video-gen
    engine: video-gen
    params:
      poll_first_seconds: 0.1
      poll_growth: 1.5
      poll_max_seconds: 0.3
{params}
"""


class Clock:
    """The fake server's notion of now (epoch seconds): tasks move only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_project(
    root: Path,
    *,
    base_url: str = "http://127.0.0.1:9/api/v1",
    provider: str = "dashscope",
    params: dict[str, object] | None = None,
    grace: float = 2,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"      {k}: {json.dumps(v)}\n" for k, v in (params or {}).items())
    path = root / "config.yaml"
    path.write_text(CONFIG.format(base_url=base_url, provider=provider, params=lines, key=KEY, grace=grace))
    (root / "inbox" / "video-gen").mkdir(parents=True, exist_ok=True)
    return path


def drop(cfg: Config, name: str, data: bytes | str) -> Path:
    """Write a file elsewhere and rename it in, as a careful producer does."""
    p = cfg.paths.inbox / "video-gen" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.part")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    tmp.rename(p)
    return p


def png(
    color: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (480, 360), fmt: str = "PNG"
) -> bytes:
    """A small image wan i2v models take (each side 360-2000 px)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ds(clock: Clock) -> Iterator[FakeDashScope]:
    with FakeDashScope(api_key=KEY, pending_seconds=PENDING, running_seconds=RUNNING, clock=clock) as srv:
        yield srv


@asynccontextmanager
async def started(
    root: Path,
    ds: FakeDashScope | None,
    *,
    provider: str = "dashscope",
    params: dict[str, object] | None = None,
    grace: float = 2,
) -> AsyncIterator[RunningDaemon]:
    base_url = ds.base_url if ds is not None else "http://127.0.0.1:9/api/v1"
    cfg = cfgmod.load(write_project(root, base_url=base_url, provider=provider, params=params, grace=grace))
    async with running_daemon(cfg) as d:
        yield d


async def job_where(d: RunningDaemon, pred: Callable[[Job], bool], timeout: float = 20) -> Job:
    async def check() -> Job | None:
        return next((j for j in await d.jobs() if pred(j)), None)

    job: Job = await wait_for(check, timeout=timeout)
    return job


async def status(d: RunningDaemon, job_id: int, *statuses: str, timeout: float = 20) -> Job:
    return await job_where(d, lambda j: j.id == job_id and j.status in statuses, timeout)


def following(text: str) -> Callable[[Job], bool]:
    """A job waiting on its remote task, whose last poll said `text`."""
    return lambda j: bool(j.remote_task_id) and j.status == "waiting" and text in j.progress_message


async def history(d: RunningDaemon, job_id: int) -> list[str]:
    return [e.message for e in await d.store.events(job_id)]


def outputs(d: RunningDaemon) -> Path:
    return d.cfg.paths.outputs / "video-gen"


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".dropflow-tmp-")]


# --- text-to-video --------------------------------------------------------------------------------


async def test_t2v_submits_once_follows_and_writes_video_and_record(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    params = {"size": "480x832", "duration": 5, "seed": 7, "prompt_extend": True}
    async with started(tmp_path / "p", ds, params=params) as d:
        src = drop(d.cfg, "fox.txt", "a red fox in snow\n")
        job = await job_where(d, following("PENDING"))
        create = ds.last("video_synthesis")
        assert create.headers["x-dashscope-async"] == "enable"
        assert create.json["model"] == "wan2.2-t2v-plus"
        assert create.json["input"]["prompt"] == "a red fox in snow"
        assert "img_url" not in create.json["input"]
        assert create.json["parameters"] == {
            "size": "480*832",
            "duration": 5,
            "seed": 7,
            "prompt_extend": True,
        }
        assert job.checkpoint["phase"] == "remote" and job.checkpoint["task_id"] == job.remote_task_id
        assert job.attempts == 0, "waiting on the task uses no attempt"

        clock.advance(PENDING + 1)
        await job_where(d, following("RUNNING"))
        clock.advance(RUNNING)
        job = await status(d, job.id, "succeeded")
        events = await history(d, job.id)

    assert ds.count("video_synthesis") == 1  # followed to the end, never submitted again
    video = tmp_path / "p" / "outputs" / "video-gen" / "fox.mp4"
    meta = video.with_suffix(".json")
    record = json.loads(meta.read_text())
    assert video.read_bytes()[4:8] == b"ftyp" and record["bytes"] == video.stat().st_size
    assert job.outputs == [str(video), str(meta)]
    assert record["task_id"] == job.remote_task_id and record["video"] == "fox.mp4"
    assert (record["provider"], record["offline"], record["kind"]) == ("dashscope", False, "text-to-video")
    assert record["model"] == "wan2.2-t2v-plus" and record["inputs"] == ["fox.txt"]
    assert record["prompt"] == record["orig_prompt"] == "a red fox in snow"
    assert record["actual_prompt"] == "a red fox in snow (extended)"
    assert record["params"] == {
        "size": "480*832",
        "resolution": None,
        "duration": 5,
        "seed": 7,
        "prompt_extend": True,
    }
    assert record["usage"] == {
        "model": "wan2.2-t2v-plus",
        "resolution": "480P",
        "size": "480*832",
        "video_seconds": 5,
        "video_count": 1,
        "reported": True,
        "provider_usage": {"video_duration": 5, "video_ratio": "480*832", "video_count": 1},
    }
    times = record["times"]
    assert all(times[k] for k in ("submitted", "succeeded_seen", "downloaded"))
    assert all(times[k] for k in ("provider_submit_time", "provider_start_time", "provider_end_time"))
    assert job.usage == {**record["usage"], "offline": False}
    assert not src.exists() and list((tmp_path / "p" / "archive").rglob("fox.txt"))
    assert no_temp_files(tmp_path / "p" / "outputs")
    task = job.remote_task_id
    assert f"remote task {task} submitted" in events
    assert f"remote task {task}: RUNNING" in events and f"remote task {task}: SUCCEEDED" in events
    for path in (meta, tmp_path / "p" / "state" / "dropflow.db"):
        assert KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"


# --- image-to-video -------------------------------------------------------------------------------


async def test_i2v_pair_uploads_the_local_image_the_sdk_way(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    image = png()
    async with started(tmp_path / "p", ds, params={"resolution": "480p", "size": "1280*720"}) as d:
        drop(d.cfg, "cat.txt", "the cat turns its head")
        drop(d.cfg, "cat.png", image)
        job = await job_where(d, following("PENDING"))
        assert [Path(p).name for p in job.input_paths] == ["cat.png", "cat.txt"]
        assert ds.count("upload_policy") == 1 and ds.last("upload_policy").query["model"] == "wan2.2-i2v-plus"
        (key, data), *_ = ds.uploads.items()
        assert data == image and key.endswith("/cat.png")
        assert "authorization" not in ds.last("oss_upload").headers
        create = ds.last("video_synthesis")
        assert create.json["model"] == "wan2.2-i2v-plus"
        assert create.json["input"]["img_url"] == f"oss://{key}"
        assert create.json["input"]["prompt"] == "the cat turns its head"
        assert create.headers["x-dashscope-ossresourceresolve"] == "enable"
        # the route's resolution goes to image-to-video; its size (a text-to-video setting) does not
        assert create.json["parameters"] == {"resolution": "480P"}
        clock.advance(PENDING + RUNNING + 1)
        await status(d, job.id, "succeeded")
        record = json.loads((outputs(d) / "cat.json").read_text())
        assert record["kind"] == "image-to-video" and record["image"] == "cat.png"
        assert record["inputs"] == ["cat.png", "cat.txt"]
        archived = {p.name for p in d.cfg.paths.archive.rglob("*") if p.is_file()}
        assert {"cat.png", "cat.txt"} <= archived

        # the same first frame with a new prompt is new work, not a duplicate of the pair
        drop(d.cfg, "cat.txt", "the cat jumps off the table")
        drop(d.cfg, "cat.png", image)
        second = await job_where(
            d, lambda j: j.id != job.id and j.status == "waiting" and bool(j.remote_task_id)
        )
        assert ds.last("video_synthesis").json["input"]["prompt"] == "the cat jumps off the table"
        clock.advance(PENDING + RUNNING + 1)
        await status(d, second.id, "succeeded")
        assert (outputs(d) / "cat (2).mp4").exists(), (
            "a second video of the same name does not overwrite the first"
        )
    assert ds.count("video_synthesis") == 2


async def test_image_without_prompt_fails_clearly_then_a_dropped_prompt_completes_the_pair(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    async with started(tmp_path / "p", ds) as d:
        img = drop(d.cfg, "dog.jpg", png((10, 90, 200)))
        failed = await job_where(d, lambda j: j.status == "failed")
        assert failed.error_kind == "input" and ds.count("video_synthesis") == 0
        assert "dog.jpg has no prompt" in (failed.error_message or "")
        assert "dog.txt" in (failed.error_hint or "") and "default_prompt" in (failed.error_hint or "")
        sidecar = img.with_name("dog.jpg.error.txt")
        await wait_for(lambda: _exists(sidecar))

        drop(d.cfg, "dog.txt", "the dog wags its tail")
        pair = await job_where(d, following("PENDING"))
        assert [Path(p).name for p in pair.input_paths] == ["dog.txt", "dog.jpg"]
        assert ds.last("video_synthesis").json["input"]["img_url"].startswith("oss://")
        clock.advance(PENDING + RUNNING + 1)
        await status(d, pair.id, "succeeded")
        assert (outputs(d) / "dog.mp4").exists()
        assert not img.exists() and not sidecar.exists(), "the pair was archived and the old reason cleared"


async def _exists(p: Path) -> bool:
    return p.exists()


async def test_yaml_job_file_with_its_image(tmp_path: Path, ds: FakeDashScope, clock: Clock) -> None:
    async with started(tmp_path / "p", ds, params={"negative_prompt": "blur"}) as d:
        drop(d.cfg, "shot.png", png((0, 120, 0)))
        drop(
            d.cfg,
            "shot.yaml",
            "prompt: slow dolly in on the forest\nimage: shot.png\nresolution: 720p\nduration: 3\nseed: 11\n"
            "negative_prompt: people\nmodel: wanx2.1-i2v-turbo\n",
        )
        job = await job_where(d, following("PENDING"))
        assert [Path(p).name for p in job.input_paths] == ["shot.yaml", "shot.png"]
        body = ds.last("video_synthesis").json
        assert body["model"] == "wanx2.1-i2v-turbo"
        assert body["input"]["negative_prompt"] == "people" and body["input"]["img_url"].startswith("oss://")
        assert body["parameters"] == {"resolution": "720P", "duration": 3, "seed": 11}
        clock.advance(PENDING + RUNNING + 1)
        await status(d, job.id, "succeeded")
        record = json.loads((outputs(d) / "shot.json").read_text())
        assert record["job_file"] == "shot.yaml" and record["negative_prompt"] == "people"
        assert not (d.cfg.paths.inbox / "video-gen" / "shot.png").exists()


async def test_bad_yaml_job_file_fails_with_file_line_and_key(tmp_path: Path, ds: FakeDashScope) -> None:
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "bad.yaml", "prompt: a boat\nduration: 5\ncolour: red\n")
        job = await job_where(d, lambda j: j.status == "failed")
    assert job.error_kind == "input" and ds.count("video_synthesis") == 0
    assert "bad.yaml:3: colour: unknown key" in (job.error_message or "")


# --- task outcomes ----------------------------------------------------------------------------------


async def test_failed_task_carries_the_provider_code_and_a_retry_submits_anew(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    ds.fail_next_tasks(1, code="InternalError.Algo", message="Video generation failed.")
    async with started(tmp_path / "p", ds) as d:
        src = drop(d.cfg, "storm.txt", "a storm over the sea")
        job = await job_where(d, following("PENDING"))
        first_task = job.remote_task_id
        clock.advance(PENDING + RUNNING + 1)
        job = await status(d, job.id, "failed")
        assert job.error_kind == "permanent" and job.attempts == 1
        assert "FAILED" in (job.error_message or "") and "InternalError.Algo" in (job.error_message or "")
        assert "Video generation failed." in (job.error_message or "")
        assert src.exists(), "a failed input stays where it was dropped"
        assert not list(outputs(d).glob("storm*")) if outputs(d).exists() else True

        assert await d.store.retry(job.id) == "queued"
        job = await job_where(
            d, lambda j: j.id == job.id and j.remote_task_id != first_task and j.status == "waiting"
        )
        clock.advance(PENDING + RUNNING + 1)
        job = await status(d, job.id, "succeeded")
        assert [r["task_id"] for r in job.checkpoint["retired"]] == [first_task]
    assert ds.count("video_synthesis") == 2


async def test_failed_pair_dropped_again_under_another_name_keeps_its_prompt(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    ds.fail_next_tasks(1)
    image = png((1, 2, 3))
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "owl.txt", "an owl blinks")
        drop(d.cfg, "owl.png", image)
        job = await job_where(d, following("PENDING"))
        clock.advance(PENDING + RUNNING + 1)
        await status(d, job.id, "failed")
        # the same pair again, renamed: the failed job is queued once more, with both files
        drop(d.cfg, "owl2.txt", "an owl blinks")
        drop(d.cfg, "owl2.png", image)
        job = await job_where(
            d, lambda j: j.id == job.id and j.status == "waiting" and "PENDING" in j.progress_message
        )
        assert [Path(p).name for p in job.input_paths] == ["owl2.png", "owl2.txt"]
        assert ds.last("video_synthesis").json["input"]["prompt"] == "an owl blinks"
        clock.advance(PENDING + RUNNING + 1)
        await status(d, job.id, "succeeded")
    assert ds.count("video_synthesis") == 2


async def test_unknown_task_fails_with_a_reason(tmp_path: Path, ds: FakeDashScope, clock: Clock) -> None:
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "lost.txt", "a lost task")
        job = await job_where(d, following("PENDING"))
        with ds._lock:  # the provider forgets the id, as it does after 24 h
            ds.tasks.clear()
        job = await status(d, job.id, "failed")
    assert job.error_kind == "permanent"
    assert "UNKNOWN" in (job.error_message or "") and "does not know this task id" in (
        job.error_message or ""
    )
    assert "dropflow retry" in (job.error_hint or "")
    assert ds.count("video_synthesis") == 1


async def test_download_failure_is_retried_without_resubmitting(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    ds.fail_downloads(3)  # one quick re-try per run: the first run fails twice, the second once, then works
    async with started(tmp_path / "p", ds, params={"download_retries": 1}) as d:
        drop(d.cfg, "wave.txt", "a wave breaking")
        job = await job_where(d, following("PENDING"))
        clock.advance(PENDING + RUNNING + 1)
        job = await status(d, job.id, "succeeded")
        events = await history(d, job.id)
    assert ds.count("download") == 4 and ds.count("video_synthesis") == 1
    assert job.attempts == 1, "a failed download of a paid video waits without using up attempts"
    assert job.checkpoint["download_failures"] == 1
    assert any("download of task" in m and "HTTP 503" in m for m in events)
    assert (tmp_path / "p" / "outputs" / "video-gen" / "wave.mp4").read_bytes()[4:8] == b"ftyp"
    assert no_temp_files(tmp_path / "p" / "outputs")


async def test_too_large_video_fails_and_keeps_the_task(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    async with started(tmp_path / "p", ds, params={"max_download_mb": 0.001}) as d:
        drop(d.cfg, "big.txt", "a very long take")
        job = await job_where(d, following("PENDING"))
        clock.advance(PENDING + RUNNING + 1)
        job = await status(d, job.id, "failed")
    assert "over max_download_mb" in (job.error_message or "") and "max_download_mb" in (job.error_hint or "")
    assert job.checkpoint["phase"] == "download", "a retry downloads the same task's video"
    assert not (tmp_path / "p" / "outputs" / "video-gen" / "big.mp4").exists()
    assert no_temp_files(tmp_path / "p" / "outputs")


async def test_deadline_cancels_a_pending_task(tmp_path: Path, ds: FakeDashScope) -> None:
    async with started(tmp_path / "p", ds, params={"deadline_minutes": 0.005}) as d:
        drop(d.cfg, "slow.txt", "a queue that never moves")
        job = await job_where(d, lambda j: j.status == "failed")
    assert "still PENDING after 0.005 min" in (job.error_message or "") and "nothing billed" in (
        job.error_message or ""
    )
    assert ds.task_status(job.remote_task_id or "") == "CANCELED"


# --- cancel ---------------------------------------------------------------------------------------------


async def test_cancel_while_pending_cancels_the_remote_task(tmp_path: Path, ds: FakeDashScope) -> None:
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "c.txt", "cancel me")
        job = await job_where(d, following("PENDING"))
        assert await d.store.cancel(job.id) == "requested"
        job = await status(d, job.id, "cancelled")
        events = await history(d, job.id)
    assert ds.count("task_cancel") == 1, events
    assert ds.task_status(job.remote_task_id or "") == "CANCELED", events
    assert "cancelled while PENDING (nothing billed)" in job.progress_message, events
    assert job.checkpoint["phase"] == "retired"


async def test_cancel_while_running_says_it_may_bill_and_retry_follows_the_same_task(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "r.txt", "too late to cancel")
        job = await job_where(d, following("PENDING"))
        clock.advance(PENDING + 1)
        await job_where(d, following("RUNNING"))
        assert await d.store.cancel(job.id) == "requested"
        job = await status(d, job.id, "cancelled")
        assert ds.count("task_cancel") == 1 and ds.task_status(job.remote_task_id or "") == "RUNNING"
        assert "may still complete and bill" in job.progress_message
        assert any("may still complete and bill" in m for m in await history(d, job.id))

        # changed their mind: a retry follows the very same task; nothing is paid twice
        clock.advance(RUNNING)
        assert await d.store.retry(job.id) == "queued"
        job = await status(d, job.id, "succeeded")
    assert ds.count("video_synthesis") == 1


# --- limits --------------------------------------------------------------------------------------------


async def test_concurrent_task_limit_counts_waiting_jobs(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    async with started(tmp_path / "p", ds, params={"max_concurrent_tasks": 2}) as d:
        for i in range(4):
            drop(d.cfg, f"n{i}.txt", f"scene number {i}")

        async def two_following_two_queued() -> bool:
            jobs = await d.jobs()
            remote = [j for j in jobs if j.remote_task_id and j.status == "waiting"]
            queued = [j for j in jobs if "queued: 2 of 2" in j.progress_message]
            return len(jobs) == 4 and len(remote) == 2 and len(queued) == 2

        await wait_for(two_following_two_queued)
        assert ds.count("video_synthesis") == 2, "the jobs holding remote tasks are waiting, yet they count"
        clock.advance(PENDING + RUNNING + 1)  # the first two finish; their slots go to the others

        async def four_submitted() -> bool:
            return (
                ds.count("video_synthesis") == 4 and len([j for j in await d.jobs() if j.remote_task_id]) == 4
            )

        await wait_for(four_submitted)
        clock.advance(PENDING + RUNNING + 1)
        await d.wait_status(4, ("succeeded",))
    assert ds.count("video_synthesis") == 4
    assert len(list((tmp_path / "p" / "outputs" / "video-gen").glob("n*.mp4"))) == 4


async def test_throttled_submission_is_waited_out_without_charging_attempts(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    # the account's task slots are busy elsewhere: more 429s than the job has attempts
    ds.inject(Fault.error(429, "Throttling.RateQuota", retry_after=0.1, endpoint="video_synthesis"), times=6)
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "t.txt", "throttled")
        job = await job_where(d, following("PENDING"))
        assert job.attempts == 0, "waiting out throttling is not a failed attempt"
        assert "throttled" not in job.checkpoint
        events = await history(d, job.id)
        clock.advance(PENDING + RUNNING + 1)
        await status(d, job.id, "succeeded")
    assert sum("throttled by dashscope (Throttling.RateQuota" in m for m in events) == 6
    assert len(ds.tasks) == 1, "the six refused calls made no task; the seventh made exactly one"


async def test_throttling_that_never_ends_fails_the_job_after_the_deadline(
    tmp_path: Path, ds: FakeDashScope
) -> None:
    ds.inject(
        Fault.error(429, "Throttling.AllocationQuota", retry_after=0.1, endpoint="video_synthesis"), times=50
    )
    async with started(tmp_path / "p", ds, params={"deadline_minutes": 0.01}) as d:
        drop(d.cfg, "t.txt", "never")
        job = await job_where(d, lambda j: j.status == "failed", timeout=30)
    assert job.error_kind == "permanent" and "refused every submission" in (job.error_message or "")
    assert "AllocationQuota" in (job.error_message or "") and f"dropflow retry {job.id}" in (
        job.error_hint or ""
    )
    assert job.attempts == 1 and not ds.tasks and ds.pending_faults() > 0


# --- the submission window --------------------------------------------------------------------------


async def test_create_call_without_an_answer_is_not_resubmitted_blindly(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    # the connection dies after the request went out, before any answer; the SDK would silently
    # send it again after a dropped connection, but not a create call's
    ds.inject(Fault.drop(endpoint="video_synthesis"))
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "x.txt", "maybe created")
        job = await job_where(d, lambda j: j.status == "failed")
        assert job.error_kind == "permanent" and ds.count("video_synthesis") == 1
        assert "CreateOutcomeUnknown" in (job.error_message or "")
        assert "may have been created and may bill" in (job.error_message or "")
        assert f"dropflow retry {job.id}" in (job.error_hint or "")
        assert job.remote_task_id is None and job.checkpoint["phase"] == "submitting"

        assert await d.store.retry(job.id) == "queued"  # the user looked: nothing there, submit again
        job = await job_where(d, following("PENDING"))
        clock.advance(PENDING + RUNNING + 1)
        await status(d, job.id, "succeeded")
    assert ds.count("video_synthesis") == 2 and len(ds.tasks) == 1


async def test_stop_during_the_create_call_records_the_task_before_releasing(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    ds.inject(Fault.stall(1.5, endpoint="video_synthesis"))
    async with started(tmp_path / "p", ds, grace=0) as d:
        drop(d.cfg, "s.txt", "stopped mid-call")

        async def in_flight() -> bool:
            return any(r.status == 0 for r in ds.requests("video_synthesis"))

        await wait_for(in_flight)
        await d.stop()  # grace 0: the job is cancelled while the call is in flight
        [job] = await d.jobs()
    assert job.status == "queued" and job.remote_task_id, "the task id was saved before the job was released"
    assert list(ds.tasks) == [job.remote_task_id]
    async with started(tmp_path / "p", ds) as d:
        clock.advance(PENDING + RUNNING + 1)
        await status(d, job.id, "succeeded")
    assert ds.count("video_synthesis") == 1


# --- offline ---------------------------------------------------------------------------------------------


async def test_offline_provider_makes_real_placeholder_videos(tmp_path: Path) -> None:
    import cv2

    async with started(tmp_path / "p", None, provider="offline") as d:
        drop(d.cfg, "a.txt", "an offline sunrise")
        drop(d.cfg, "b.txt", "the shape moves")
        drop(d.cfg, "b.webp", png((30, 200, 90), fmt="WEBP"))
        jobs = await d.wait_status(2, ("succeeded",), timeout=30)
    assert all(j.remote_task_id and j.remote_task_id.startswith("offline-") for j in jobs)
    for name, kind in (("a", "text-to-video"), ("b", "image-to-video")):
        video = tmp_path / "p" / "outputs" / "video-gen" / f"{name}.mp4"
        record = json.loads(video.with_suffix(".json").read_text())
        assert (record["provider"], record["offline"], record["kind"]) == ("offline", True, kind)
        cap = cv2.VideoCapture(str(video))
        try:
            ok, frame = cap.read()
            assert ok and frame is not None and cap.get(cv2.CAP_PROP_FRAME_COUNT) > 1
        finally:
            cap.release()
    assert all("offline placeholder" in j.progress_message for j in jobs)
