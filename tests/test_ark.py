"""Doubao Seedance through Volcengine Ark, end to end: a real daemon in-process, real SQLite and
files, the official `volcenginesdkarkruntime` SDK against the loopback fake Ark (whose clock the
tests move), and the provider itself against the fake's refusals and faults."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr

from dropflow.daemon.core import config as cfgmod
from dropflow.daemon.core.config import ArkSettings
from dropflow.engine.errors import AuthError, InputError, PermanentError, RetryableError
from dropflow.engine.fakes import FakeArk, Fault
from dropflow.engine.providers.ark import ArkVideoGen
from dropflow.engine.providers.base import VideoGenRequest
from dropflow.engine.videogen.download import url_expires_at
from dropflow.engine.videogen.job import VideoSpec
from dropflow.engine.videogen.models import Origin
from dropflow.engine.videogen.params import VideoGenParams, build_request
from dropflow.engine.videogen.seedance import SEEDANCE
from tests.conftest import RunningDaemon, running_daemon, subprocess_env
from tests.test_videogen import Clock, drop, following, history, job_where, png, status

KEY = "ark-test-0123456789abcdef"
PENDING, RUNNING = 5.0, 20.0
LITE_T2V, LITE_I2V = "doubao-seedance-1-0-lite-t2v-250428", "doubao-seedance-1-0-lite-i2v-250428"
PRO, PRO_FAST = "doubao-seedance-1-0-pro-250528", "doubao-seedance-1-0-pro-fast-251015"

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
  shutdown_grace_seconds: 2
  tick_seconds: 0.05
providers:
  default: offline
  ark: {{api_key: {key}, base_url: "{base_url}", timeout_seconds: 10}}
routes:
  - name: seedance
    folder: video-gen
    engine: video-gen
    provider: ark
    params:
      poll_first_seconds: 0.1
      poll_growth: 1.5
      poll_max_seconds: 0.3
{params}
"""


def write_project(root: Path, base_url: str, params: dict[str, object] | None = None, key: str = KEY) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"      {k}: {json.dumps(v)}\n" for k, v in (params or {}).items())
    path = root / "config.yaml"
    path.write_text(CONFIG.format(base_url=base_url, params=lines, key=key))
    (root / "inbox" / "video-gen").mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeArk]:
    with FakeArk(api_key=KEY, pending_seconds=PENDING, running_seconds=RUNNING, clock=clock) as srv:
        yield srv


@asynccontextmanager
async def started(root: Path, fake: FakeArk, **kw: object) -> AsyncIterator[RunningDaemon]:
    cfg = cfgmod.load(write_project(root, fake.base_url, **kw))  # type: ignore[arg-type]
    async with running_daemon(cfg) as d:
        yield d


def provider(fake: FakeArk, key: str = KEY) -> ArkVideoGen:
    return ArkVideoGen(ArkSettings(api_key=SecretStr(key), base_url=fake.base_url, timeout_seconds=5))


# --- text-to-video, through the daemon --------------------------------------------------------------


async def test_t2v_submits_once_follows_downloads_and_records_the_spend(
    tmp_path: Path, fake: FakeArk, clock: Clock
) -> None:
    async with started(tmp_path / "p", fake, params={"seed": 11, "watermark": True}) as d:
        drop(d.cfg, "fox.txt", "a red fox in snow\n")
        job = await job_where(d, following("PENDING"))
        create = fake.last("create")
        assert create.headers["authorization"] == f"Bearer {KEY}"
        body = {k: v for k, v in create.json.items() if v is not None}
        assert body == {
            "model": LITE_T2V,  # the provider's default text-to-video model
            "content": [{"type": "text", "text": "a red fox in snow"}],
            "ratio": "16:9",  # every cost-bearing choice made explicit: the cheapest resolution, 5 s
            "resolution": "480p",
            "duration": 5,
            "seed": 11,
            "watermark": True,
        }
        assert job.checkpoint["task_id"] == job.remote_task_id and job.remote_task_id.startswith("cgt-")
        clock.advance(PENDING + 1)
        await job_where(d, following("RUNNING"))
        clock.advance(RUNNING)
        job = await status(d, job.id, "succeeded")
        events = await history(d, job.id)

    assert fake.count("create") == 1
    video = tmp_path / "p" / "outputs" / "video-gen" / "fox.mp4"
    record = json.loads(video.with_suffix(".json").read_text())
    assert video.read_bytes()[4:8] == b"ftyp"
    assert (record["provider"], record["model"], record["kind"]) == ("ark", LITE_T2V, "text-to-video")
    assert record["params"] == {
        "size": None,
        "resolution": "480P",
        "duration": 5,
        "seed": 11,
        "prompt_extend": None,
        "ratio": "16:9",
        "watermark": True,
    }
    tokens = 864 * 480 * 24 * 5 // 1024  # Ark bills width * height * fps * seconds / 1024
    assert record["usage"] == {
        "model": LITE_T2V,
        "resolution": "480P",
        "ratio": "16:9",
        "size": "864*480",
        "video_seconds": 5,
        "video_count": 1,
        "tokens": tokens,
        "output_tokens": tokens,
        "cost_cny": round(tokens * 10 / 1e6, 4),
        "reported": True,
        "provider_usage": {
            "completion_tokens": tokens,
            "total_tokens": tokens,
            "duration": 5,
            "resolution": "480p",
            "ratio": "16:9",
            "framespersecond": 24,
        },
    }
    assert all(record["times"][k] for k in ("submitted", "provider_submit_time", "provider_end_time"))
    assert job.usage == {**record["usage"], "offline": False}
    assert job.tokens_out == tokens, "the billed tokens count in the store's token columns"
    assert f"remote task {job.remote_task_id}: SUCCEEDED" in events
    for path in (video.with_suffix(".json"), tmp_path / "p" / "state" / "dropflow.db"):
        assert KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"

    # `dropflow job N` and its JSON show the model, the times and the spend as for other providers
    cli = [sys.executable, "-m", "dropflow.daemon", "--config", str(tmp_path / "p" / "config.yaml"), "job"]
    shown = subprocess.run(
        [*cli, str(job.id)], env=subprocess_env(), capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert f'"model": "{LITE_T2V}"' in shown.stdout and f'"tokens": {tokens}' in shown.stdout
    assert '"cost_cny"' in shown.stdout and "provider ark" in shown.stdout
    as_json = subprocess.run(
        [*cli, str(job.id), "--json"], env=subprocess_env(), capture_output=True, text=True, timeout=60
    )
    data = json.loads(as_json.stdout)
    assert data["usage"]["tokens"] == tokens and data["usage"]["model"] == LITE_T2V
    assert data["finished_at"] and data["remote_task_id"] == job.remote_task_id


# --- image-to-video -------------------------------------------------------------------------------


async def test_i2v_pair_sends_the_first_frame_inline(tmp_path: Path, fake: FakeArk, clock: Clock) -> None:
    async with started(tmp_path / "p", fake) as d:
        drop(d.cfg, "boat.txt", "the boat drifts away")
        drop(d.cfg, "boat.png", png(size=(640, 480)))
        job = await job_where(d, following("PENDING"))
        body = fake.last("create").json
        assert body["model"] == LITE_I2V and body["ratio"] == "adaptive" and body["resolution"] == "480p"
        text, image = body["content"]
        assert text == {"type": "text", "text": "the boat drifts away"}
        assert image["role"] == "first_frame" and image["image_url"]["url"].startswith(
            "data:image/png;base64,"
        )
        clock.advance(PENDING + RUNNING + 1)
        job = await status(d, job.id, "succeeded")
    record = json.loads((tmp_path / "p" / "outputs" / "video-gen" / "boat.json").read_text())
    assert record["kind"] == "image-to-video" and record["image"] == "boat.png"
    assert record["usage"]["ratio"] == "4:3" and record["usage"]["size"] == "736*544"  # the image decided


async def test_yaml_job_with_first_and_last_frame_and_options(
    tmp_path: Path, fake: FakeArk, clock: Clock
) -> None:
    async with started(tmp_path / "p", fake) as d:
        end = tmp_path / "frames" / "end.png"  # named by the job file, read where it lies
        end.parent.mkdir()
        end.write_bytes(png((10, 10, 200), size=(800, 450)))
        drop(d.cfg, "shot.png", png(size=(800, 450)))
        drop(
            d.cfg,
            "shot.yaml",
            f"prompt: a door opens\nimage: shot.png\nlast_image: {end}\nmodel: {PRO}\n"
            "ratio: 16:9\nresolution: 720p\nduration: 6\ncamera_fixed: true\nseed: 3\n",
        )
        job = await job_where(d, lambda j: j.input_path.endswith("shot.yaml") and bool(j.remote_task_id))
        body = {k: v for k, v in fake.last("create").json.items() if v is not None}
        roles = [p.get("role") for p in body["content"]]
        assert roles == [None, "first_frame", "last_frame"]
        assert {k: body[k] for k in ("model", "ratio", "resolution", "duration", "camera_fixed", "seed")} == {
            "model": PRO,
            "ratio": "16:9",
            "resolution": "720p",
            "duration": 6,
            "camera_fixed": True,
            "seed": 3,
        }
        clock.advance(PENDING + RUNNING + 1)
        await status(d, job.id, "succeeded")
    record = json.loads((tmp_path / "p" / "outputs" / "video-gen" / "shot.json").read_text())
    assert record["last_image"] == "end.png" and record["last_image_sent"]["width"] == 800
    assert record["usage"]["tokens"] == 1248 * 704 * 24 * 6 // 1024
    assert record["usage"]["cost_cny"] == round(record["usage"]["tokens"] * 15 / 1e6, 4)


async def test_refusals_fail_before_anything_is_paid(tmp_path: Path, fake: FakeArk) -> None:
    async with started(tmp_path / "p", fake) as d:
        # a last frame on a model that takes none: dropflow's table says so before any call
        drop(d.cfg, "a.png", png(size=(800, 450)))
        drop(d.cfg, "b.png", png(size=(800, 450)))
        drop(d.cfg, "fast.yaml", f"prompt: x\nimage: a.png\nlast_image: b.png\nmodel: {PRO_FAST}\n")
        drop(d.cfg, "long.yaml", "prompt: a long one\nduration: 30\n")
        drop(d.cfg, "cmd.txt", "a fox --dur 10")
        drop(d.cfg, "wide.yaml", "prompt: x\nratio: 2:1\n")
        failed = {}
        for name in ("fast.yaml", "long.yaml", "cmd.txt", "wide.yaml"):
            job = await job_where(d, lambda j, n=name: j.input_path.endswith(n) and j.status == "failed")
            failed[name] = job
    assert fake.count("create") == 0
    assert "takes a first frame but no last frame" in (failed["fast.yaml"].error_message or "")
    assert "does not make 30 s videos" in (failed["long.yaml"].error_message or "")
    assert "text command '--dur'" in (failed["cmd.txt"].error_message or "")
    assert "does not make ratio 2:1" in (failed["wide.yaml"].error_message or "")
    assert all(j.error_kind == "input" for j in failed.values())


async def test_a_bad_key_fails_clearly_and_never_shows_the_key(tmp_path: Path, fake: FakeArk) -> None:
    wrong = "ark-wrong-key-0123456789"
    cfg = cfgmod.load(write_project(tmp_path / "p", fake.base_url, key=wrong))
    async with running_daemon(cfg) as d:
        drop(d.cfg, "fox.txt", "a fox")
        job = await job_where(d, lambda j: j.status == "failed")
    assert "ARK_API_KEY" in (job.error_message or "") and wrong not in (job.error_message or "")
    assert wrong[:8] not in json.dumps(job.as_dict())
    assert fake.last("create").status == 401


async def test_moderation_of_the_output_fails_the_task_with_its_code(
    tmp_path: Path, fake: FakeArk, clock: Clock
) -> None:
    fake.fail_next_tasks(1)
    async with started(tmp_path / "p", fake) as d:
        drop(d.cfg, "fox.txt", "a fox")
        job = await job_where(d, following("PENDING"))
        clock.advance(PENDING + RUNNING + 1)
        job = await status(d, job.id, "failed")
    assert job.error_kind == "permanent" and "OutputVideoSensitiveContentDetected" in (
        job.error_message or ""
    )


async def test_cancel_while_queued_cancels_the_remote_task(tmp_path: Path, fake: FakeArk) -> None:
    async with started(tmp_path / "p", fake) as d:
        drop(d.cfg, "fox.txt", "a fox")
        job = await job_where(d, following("PENDING"))
        await d.store.cancel(job.id)
        job = await status(d, job.id, "cancelled")
    assert fake.task_status(job.remote_task_id or "") == "cancelled"
    assert [r.method for r in fake.requests("task_delete")] == ["DELETE"]
    assert "nothing billed" in json.dumps(job.as_dict())


# --- the provider against the fake ------------------------------------------------------------------


async def test_provider_maps_ark_errors_and_malformed_replies(fake: FakeArk, clock: Clock) -> None:
    p = provider(fake)
    try:
        task = await p.submit(VideoGenRequest(model=LITE_T2V, prompt="a fox", resolution="480P", duration=5))
        assert task.status == "PENDING"
        bad = provider(fake, "ark-bad-key-000000000000")
        with pytest.raises(AuthError, match="ARK_API_KEY"):
            await bad.fetch(task.task_id)
        await bad.aclose()
        for fault in (
            Fault.body(""),
            Fault.html(200),
            Fault.cut('{"id": "cg'),
            Fault.error(429),
            Fault.error(500),
        ):
            fake.inject(fault, times=1)
            with pytest.raises(RetryableError):
                await p.fetch(task.task_id)
        fake.inject(Fault.error(429, "SetLimitExceeded", "limit reached"))
        with pytest.raises(PermanentError, match="inference limit") as err:
            await p.fetch(task.task_id)
        assert not isinstance(err.value, RetryableError)
        fake.refused_words.add("forbidden")
        with pytest.raises(PermanentError, match="moderation refused the prompt"):
            await p.submit(VideoGenRequest(model=LITE_T2V, prompt="a forbidden thing", resolution="480P"))
        with pytest.raises(PermanentError, match="duration"):
            await p.submit(VideoGenRequest(model=LITE_T2V, prompt="a fox", duration=30))
        assert (await p.fetch("cgt-20250101000000-none")).status == "UNKNOWN"
        # cancel: only while queued; a finished task is never sent the DELETE (which would delete it)
        clock.advance(PENDING + RUNNING + 1)
        assert (await p.fetch(task.task_id)).status == "SUCCEEDED"
        assert await p.cancel(task.task_id) is False and fake.count("task_delete") == 0
        fresh = await p.submit(VideoGenRequest(model=LITE_T2V, prompt="a fox", resolution="480P"))
        assert await p.cancel(fresh.task_id) is True and (await p.fetch(fresh.task_id)).status == "CANCELED"
    finally:
        await p.aclose()


async def test_garbled_create_reply_is_not_resubmitted(tmp_path: Path, fake: FakeArk) -> None:
    fake.garble_create_replies(b"")
    async with started(tmp_path / "p", fake) as d:
        drop(d.cfg, "fox.txt", "a fox")
        job = await job_where(d, lambda j: j.status == "failed")
        await asyncio.sleep(0.5)
    assert fake.count("create") == 1 and len(fake.tasks) == 1
    assert "may have been created and may bill" in (job.error_message or "")


def test_seedance_checks_and_route_params() -> None:
    request = build_request(
        VideoSpec(kind="t2v", prompt="a fox"), VideoGenParams(resolution="720p"), SEEDANCE
    )
    checked, _ = SEEDANCE.check(request, Origin("fox.txt"))
    assert (checked.model, checked.resolution, checked.ratio, checked.duration) == (
        LITE_T2V,
        "720P",
        "16:9",
        5,
    )
    with pytest.raises(InputError, match=r"takes no a size \(from the route's params\.size\)"):
        SEEDANCE.check(
            build_request(VideoSpec(kind="t2v", prompt="x"), VideoGenParams(size="832*480"), SEEDANCE),
            Origin("x.txt"),
        )
    with pytest.raises(InputError, match="text-to-video model and takes no image"):
        SEEDANCE.check(VideoGenRequest(model=LITE_T2V, prompt="x", image="/a.png"), Origin("x.yaml"))


def test_tos_signed_url_expiry_is_read() -> None:
    url = "https://x.tos-cn-beijing.volces.com/v.mp4?X-Tos-Date=20250101T000000Z&X-Tos-Expires=86400&X-Tos-Signature=s"
    assert url_expires_at(url) == 1735689600 + 86400
