"""wan models as the real service behaves: the real dashscope SDK against the strict fake DashScope,
driven by a real daemon (issue 11 points 1, 2, 3, 6, 10, 11; issue 12 point 5).

- first frames out of range are made fit once (or fail at once), never refused after upload;
- params are checked per model before anything is paid; the cheapest tier is sent explicitly;
- usage is recorded in dropflow's keys whatever shape the model reports it in;
- garbled answers are retried, and a SUCCEEDED task always ends with its video at home;
- long prompts are cut, warned about and recorded;
- an edited file is a new job, and retrying the old one never pays for it again.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from dropflow.engine.errors import PermanentError, RetryableError
from dropflow.engine.fakes import FakeDashScope, Fault
from dropflow.engine.providers.base import VideoGenRequest
from dropflow.engine.providers.dashscope import DashScopeVideoGen
from dropflow.engine.videogen import plan
from tests.test_providers import settings
from tests.test_videogen import (
    KEY,
    PENDING,
    RUNNING,
    Clock,
    drop,
    following,
    history,
    job_where,
    outputs,
    png,
    started,
    status,
)

DONE = PENDING + RUNNING + 1


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ds(clock: Clock) -> Iterator[FakeDashScope]:
    with FakeDashScope(api_key=KEY, pending_seconds=PENDING, running_seconds=RUNNING, clock=clock) as srv:
        yield srv


def photo(size: tuple[int, int] = (4032, 3024), orientation: int = 6) -> bytes:
    """A phone photo: stored landscape with an EXIF rotation that makes it portrait."""
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", size, (90, 140, 60)).save(buf, "JPEG", quality=85, exif=exif)
    return buf.getvalue()


def record(d: object, name: str) -> dict[str, object]:
    return json.loads((outputs(d) / name).read_text())  # type: ignore[arg-type]


# --- 1. first frames ------------------------------------------------------------------------------------


async def test_a_phone_photo_is_made_fit_once_and_kept_for_the_retry(
    tmp_path: Path, ds: FakeDashScope, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared: list[str] = []
    real = plan.prepare_image
    monkeypatch.setattr(plan, "prepare_image", lambda src, *a: prepared.append(src.name) or real(src, *a))
    ds.fail_next_tasks(1)
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "cat.txt", "the cat turns its head")
        drop(d.cfg, "cat.jpg", photo())
        job = await job_where(d, following("PENDING"))
        first = job.remote_task_id
        clock.advance(DONE)
        job = await status(d, job.id, "failed")
        assert await d.store.retry(job.id) == "queued"
        await job_where(d, lambda j: j.id == job.id and j.status == "waiting" and j.remote_task_id != first)
        clock.advance(DONE)
        job = await status(d, job.id, "succeeded")
        meta = record(d, "cat.json")
        assert not (d.cfg.paths.state / "video-gen" / f"job-{job.id}").exists(), "the copy goes once done"
    sent = list(ds.uploads.values())
    assert len(sent) == 2 and sent[0] == sent[1], "the retry uploaded the very same frame"
    assert prepared == ["cat.jpg"], "prepared once, not on every run"
    with Image.open(io.BytesIO(sent[0])) as im:
        assert im.size == (1500, 2000), "upright (EXIF applied) and within 2000 px, aspect kept"
    assert meta["image"] == "cat.jpg"
    assert meta["image_sent"] == {
        "width": 1500,
        "height": 2000,
        "bytes": len(sent[0]),
        "resized_from": "3024x4032",
    }
    assert ds.count("video_synthesis") == 2


async def test_an_image_too_small_fails_at_once_with_its_size_and_the_limit(
    tmp_path: Path, ds: FakeDashScope
) -> None:
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "icon.txt", "the icon spins")
        drop(d.cfg, "icon.png", png(size=(300, 200)))
        job = await job_where(d, lambda j: j.status == "failed")
    assert job.error_kind == "input" and job.attempts == 1
    assert "icon.png is 300x200 px; wan2.2-i2v-plus takes images of 360-2000 px per side" in (
        job.error_message or ""
    )
    assert ds.count("upload_policy") == 0 and ds.count("video_synthesis") == 0


async def test_the_strict_fake_refuses_what_wan_refuses(
    ds: FakeDashScope, tmp_path: Path, clock: Clock
) -> None:
    provider = DashScopeVideoGen(settings(ds.base_url, KEY))
    raw = tmp_path / "raw.jpg"
    raw.write_bytes(photo(orientation=1))
    small = tmp_path / "small.png"
    small.write_bytes(png(size=(300, 300)))
    try:
        refused = [
            VideoGenRequest(model="wan2.2-i2v-plus", prompt="p", image=str(raw), resolution="480P"),
            VideoGenRequest(model="wan2.2-i2v-plus", prompt="p", image=str(small), resolution="480P"),
            VideoGenRequest(model="wan2.2-i2v-plus", prompt="p", image="https://x/a.png", resolution="720P"),
            VideoGenRequest(model="wan2.2-t2v-plus", prompt="p", size="1280*720"),
            VideoGenRequest(model="wan2.2-t2v-plus", prompt="p", duration=10),
            VideoGenRequest(model="wan9-t2v", prompt="p"),
        ]
        messages = []
        for request in refused:
            with pytest.raises(PermanentError) as err:
                await provider.submit(request)
            assert (err.value.status, err.value.code) == (400, "InvalidParameter")
            messages.append(err.value.message)
        assert "4032x3024" in messages[0] and "300x300" in messages[1] and "720P" in messages[2]
        assert not ds.tasks
        # asked for nothing, the service makes (and bills) its largest tier: why dropflow always asks
        task = await provider.submit(VideoGenRequest(model="wan2.2-t2v-plus", prompt="p"))
        clock.advance(DONE)
        done = await provider.fetch(task.task_id)
        assert done.usage == {"video_duration": 5, "video_ratio": "1920*1080", "video_count": 1}
    finally:
        await provider.aclose()


# --- 2. + 3. per-model params, explicit defaults, what was paid for ------------------------------------------


async def test_params_the_model_does_not_take_fail_before_anything_is_paid(
    tmp_path: Path, ds: FakeDashScope
) -> None:
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "shot.png", png())
        drop(d.cfg, "shot.yaml", "prompt: dolly in\nimage: shot.png\nresolution: 720P\n")
        job = await job_where(d, lambda j: j.status == "failed")
    assert job.error_kind == "input"
    assert "shot.yaml: wan2.2-i2v-plus does not make resolution 720P (from shot.yaml)" in (
        job.error_message or ""
    )
    assert "it allows resolution 480P, 1080P; duration 5 s" in (job.error_message or "")
    assert ds.count("upload_policy") == 0 and ds.count("video_synthesis") == 0


async def test_the_cheapest_tier_is_sent_explicitly_and_the_record_says_what_was_paid(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "fox.txt", "a red fox in snow")
        job = await job_where(d, following("PENDING"))
        assert ds.last("video_synthesis").json["parameters"] == {"size": "832*480"}
        assert "832*480" in job.progress_message or "PENDING" in job.progress_message
        # while the task runs, the job already says what it will be billed for
        assert {k: job.usage[k] for k in ("model", "resolution", "video_seconds", "reported")} == {
            "model": "wan2.2-t2v-plus",
            "resolution": "480P",
            "video_seconds": 5,
            "reported": False,
        }
        clock.advance(DONE)
        job = await status(d, job.id, "succeeded")
        usage = record(d, "fox.json")["usage"]
    assert usage == {
        "model": "wan2.2-t2v-plus",
        "resolution": "480P",
        "size": "832*480",
        "video_seconds": 5,
        "video_count": 1,
        "reported": True,
        "provider_usage": {"video_duration": 5, "video_ratio": "832*480", "video_count": 1},
    }
    assert job.usage == {**usage, "offline": False}


async def test_a_model_dropflow_does_not_know_is_sent_with_a_warning(
    tmp_path: Path, ds: FakeDashScope
) -> None:
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "new.yaml", "prompt: a boat\nmodel: wan9-t2v\n")
        job = await job_where(d, lambda j: j.status == "failed")
        events = await history(d, job.id)
    assert any("model wan9-t2v is not in dropflow's table of wan models" in m for m in events)
    assert ds.last("video_synthesis").json["parameters"] == {}, "nothing invented for an unknown model"
    assert "Model not exist." in (job.error_message or "") and not ds.tasks


# --- 6. usage in the wan2.5+ shape ----------------------------------------------------------------------------


async def test_wan25_usage_is_recorded_never_as_zero(tmp_path: Path, ds: FakeDashScope, clock: Clock) -> None:
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "city.yaml", "prompt: a city at night\nmodel: wan2.5-t2v-preview\nduration: 10\n")
        job = await job_where(d, following("PENDING"))
        assert ds.last("video_synthesis").json["parameters"] == {"size": "832*480", "duration": 10}
        clock.advance(DONE)
        job = await status(d, job.id, "succeeded")
        usage = record(d, "city.json")["usage"]
    assert isinstance(usage, dict)
    assert (usage["video_seconds"], usage["resolution"], usage["reported"]) == (10, "480P", True)
    raw = usage["provider_usage"]
    assert raw["SR"] == 480 and raw["output_video_duration"] == 10 and raw["ratio"] == "16:9"
    assert "video_duration" not in raw, "the SDK's filled-in 0 is not recorded"
    assert job.usage["video_seconds"] == 10


# --- 10. garbled answers; a paid task is never abandoned ----------------------------------------------------


async def test_garbled_answers_while_polling_are_retried(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    ds.inject(Fault.html(200, endpoint="task_get"))
    ds.inject(Fault.drop(endpoint="task_get"))
    ds.inject(Fault.cut('{"request_id": "x", "output": {"task_id": "', endpoint="task_get"))
    for body in (
        "",
        '{"request_id": "x", "output": {"task_id": "',
        "{}",
        '{"output": {"task_status": "SUCCEEDED"}}',
    ):
        ds.inject(Fault.body(body, endpoint="task_get"))
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "g.txt", "garbled")
        job = await job_where(d, lambda j: bool(j.remote_task_id))

        async def all_garbled_seen() -> bool:
            return ds.count("task_get") >= 9 and ds.pending_faults() == 0

        from tests.conftest import wait_for

        await wait_for(all_garbled_seen)
        job = await job_where(d, lambda j: j.id == job.id)
        assert job.status == "waiting" and job.error_kind is None, "a garbled answer is no reason to fail"
        clock.advance(DONE)
        job = await status(d, job.id, "succeeded")
    assert ds.count("video_synthesis") == 1 and job.attempts <= 1


async def test_a_succeeded_task_ends_with_its_video_whatever_fails_on_the_way(
    tmp_path: Path, clock: Clock
) -> None:
    # signed URLs that expire at once: every try first refreshes the URL through a status check
    with FakeDashScope(
        api_key=KEY, pending_seconds=PENDING, running_seconds=RUNNING, clock=clock, video_url_ttl=1.0
    ) as ds:
        async with started(tmp_path / "p", ds, params={"download_retries": 0}) as d:
            drop(d.cfg, "w.txt", "a wave breaking")
            job = await job_where(d, following("PENDING"))
            ds.fail_downloads(6)  # more failed runs than the job has attempts (5)
            ds.inject(
                Fault.body("<html>gateway</html>", content_type="text/html", endpoint="task_get"), times=2
            )
            ds.inject(Fault.error(503, endpoint="task_get"), times=2)
            clock.advance(DONE)
            job = await status(d, job.id, "succeeded", timeout=60)
            events = await history(d, job.id)
        assert (outputs(d) / "w.mp4").read_bytes()[4:8] == b"ftyp"
    assert ds.count("video_synthesis") == 1 and ds.count("download") == 7
    assert job.attempts <= 1, "waiting out a paid video's download uses no attempts"
    assert sum("download of task" in m for m in events) >= 6


async def test_a_garbled_answer_to_the_create_call_is_not_sent_again(
    tmp_path: Path, ds: FakeDashScope
) -> None:
    ds.garble_create_replies(b'{"output": {"task_id": "12')
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "x.txt", "maybe created")
        job = await job_where(d, lambda j: j.status == "failed")
    assert job.error_kind == "permanent" and "may have been created" in (job.error_message or "")
    assert ds.count("video_synthesis") == 1 and len(ds.tasks) == 1, "the task exists: not paid twice"


async def test_provider_reports_garbled_status_replies_as_retryable(ds: FakeDashScope) -> None:
    provider = DashScopeVideoGen(settings(ds.base_url, KEY))
    try:
        task = await provider.submit(VideoGenRequest(model="wan2.2-t2v-plus", prompt="p", size="832*480"))
        for body in ("", '{"output": {"task_', "{}"):
            ds.inject(Fault.body(body, endpoint="task_get"))
            with pytest.raises(RetryableError) as err:
                await provider.fetch(task.task_id)
            assert err.value.code == "MalformedResponse"
        ds.inject(Fault.html(200, endpoint="task_get"))
        with pytest.raises(RetryableError):
            await provider.fetch(task.task_id)
        assert (await provider.fetch(task.task_id)).status == "PENDING"
    finally:
        await provider.aclose()


# --- 11. prompts the service would cut ---------------------------------------------------------------------


async def test_long_prompts_are_cut_warned_about_and_recorded(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    prompt, negative = "a slow pan over hills " * 45, "blur, " * 100  # 990 and 600 characters
    job_file = json.dumps({"prompt": prompt, "negative_prompt": negative})
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "long.yaml", job_file)
        job = await job_where(d, following("PENDING"))
        body = ds.last("video_synthesis").json["input"]
        assert body["prompt"] == prompt.strip()[:800] and body["negative_prompt"] == negative[:500]
        clock.advance(DONE)
        job = await status(d, job.id, "succeeded")
        events = await history(d, job.id)
        meta = record(d, "long.json")
    assert any("the prompt is 989 characters; wan2.2-t2v-plus reads the first 800" in m for m in events)
    assert any("the negative prompt is 600 characters" in m for m in events)
    assert meta["prompt"] == prompt.strip() and meta["actual_prompt"] == prompt.strip()[:800]
    assert meta["prompt_truncated"] == [
        {"field": "prompt", "length": 989, "limit": 800},
        {"field": "negative_prompt", "length": 600, "limit": 500},
    ]


# --- issue 12.5: an edited file is a new job; a retry never pays for it twice ----------------------------------


async def test_an_edited_job_file_is_a_new_job_and_retrying_the_old_one_pays_nothing(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "fox.yaml", "prompt: a fox\ncolour: red\n")
        first = await job_where(d, lambda j: j.status == "failed")
        drop(d.cfg, "fox.yaml", "prompt: a fox in the snow\n")  # fixed: new content, a new job
        second = await job_where(d, lambda j: j.id != first.id and bool(j.remote_task_id))
        assert await d.store.retry(first.id) == "queued"  # as the first one's error file suggests
        first = await job_where(
            d, lambda j: j.id == first.id and j.status == "failed" and "edited" in (j.error_message or "")
        )
        assert f"an edited file is a new job (job {second.id})" in (first.error_message or "")
        clock.advance(DONE)
        await status(d, second.id, "succeeded")
        videos = sorted(p.name for p in outputs(d).glob("fox*.mp4"))
    assert ds.count("video_synthesis") == 1 and videos == ["fox.mp4"]


async def test_a_retry_submits_the_jobs_own_content_not_the_edited_file(
    tmp_path: Path, ds: FakeDashScope, clock: Clock
) -> None:
    ds.fail_next_tasks(1)  # a FAILED task is not billed: the retry may submit again
    async with started(tmp_path / "p", ds) as d:
        drop(d.cfg, "owl.txt", "an owl blinks")
        first = await job_where(d, following("PENDING"))
        clock.advance(DONE)
        first = await status(d, first.id, "failed")
        drop(d.cfg, "owl.txt", "an owl flies away")
        second = await job_where(d, lambda j: j.id != first.id and bool(j.remote_task_id))
        assert await d.store.retry(first.id) == "queued"
        await job_where(
            d,
            lambda j: j.id == first.id and j.status == "waiting" and j.remote_task_id != first.remote_task_id,
        )
        clock.advance(DONE)
        await status(d, first.id, "succeeded")
        await status(d, second.id, "succeeded")
    prompts = [r.json["input"]["prompt"] for r in ds.requests("video_synthesis")]
    assert prompts == ["an owl blinks", "an owl flies away", "an owl blinks"]
