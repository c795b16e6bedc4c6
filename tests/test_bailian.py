"""`mode: bailian`: the annotate engine through the real QuanMiao and OSS SDKs against their
loopback fakes (`engine/fakes/quanmiao.py`, `engine/fakes/oss.py`): upload or `.url` sidecar,
submit, poll, outputs; restarts; refusals; cancels; secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dropflow.daemon.core.config import BailianSettings
from dropflow.daemon.core.jobs import Job
from dropflow.engine.annotate.engine import AnnotateEngine
from dropflow.engine.base import Done, JobContext, Wait
from dropflow.engine.errors import (
    AuthError,
    ConfigError,
    InputError,
    JobCancelled,
    PermanentError,
    RetryableError,
)
from dropflow.engine.fakes import FakeOSS, FakeQuanMiao, Fault
from dropflow.engine.providers.bailian import BailianAnalysis
from tests.test_annotate import make_job, project
from tests.videos import make_video

KEY_ID, SECRET = "LTAI5tDropflowTest", "s3cr3t-Bailian-0123456789abcdef"
ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}
FAST = {"mode": "bailian", "bailian": {"poll_first_seconds": 0.05, "poll_max_seconds": 0.1}}
# the top level of a local (single / two-stage) mode's <name>.json (engine/annotate/output.py)
LOCAL_KEYS = {
    "video", "model", "fps", "processing_time", "timestamp", "annotation", "mode", "provider", "offline",
    "prompt", "source", "content_hash", "job_id", "duration", "width", "height", "frames_sampled",
    "frames_sent", "frames_dropped_as_repeats", "segments", "summary", "asr", "roles", "extra_info",
    "language", "usage", "request_ids", "warnings", "params",
}  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("videos") / "clip.mp4", seconds=12, fps=10)


@pytest.fixture
def qm() -> Iterator[FakeQuanMiao]:
    with FakeQuanMiao(access_keys={KEY_ID: SECRET}, pending_seconds=0.05, running_seconds=0.05) as srv:
        yield srv


@pytest.fixture
def oss() -> Iterator[FakeOSS]:
    with FakeOSS(access_key_id=KEY_ID) as srv:
        yield srv


class Providers:
    def __init__(self, service: BailianAnalysis) -> None:
        self.service = service

    def vision(self, name: str | None) -> Any:
        raise AssertionError("mode: bailian asks no chat model")

    def video_analysis(self) -> BailianAnalysis:
        return self.service

    def videogen(self, name: str | None) -> Any:
        raise AssertionError("annotate never makes videos")


class Harness:
    def __init__(self, root: Path, qm: FakeQuanMiao, oss: FakeOSS, env: dict[str, str] | None = None) -> None:
        self.root = project(root)
        self.settings = BailianSettings(
            workspace_id=qm.workspace, endpoint=qm.endpoint, oss_endpoint=oss.url, oss_bucket=oss.bucket
        )
        self.env = dict(ENV if env is None else env)
        self.notes: list[str] = []

    @property
    def inbox(self) -> Path:
        return self.root / "inbox" / "annotate"

    def drop(self, src: Path, name: str | None = None) -> Path:
        dst = self.inbox / (name or src.name)
        dst.write_bytes(src.read_bytes())
        return dst

    def job(self, video: Path, params: dict[str, Any] | None = None, **kw: Any) -> Job:
        merged = {**FAST, **(params or {})}
        merged["bailian"] = {**FAST["bailian"], **(params or {}).get("bailian", {})}
        inputs = [video, *(p for p in [video.with_name(video.name + ".url")] if p.exists())]
        return make_job(video, merged, inputs=inputs, **kw)

    async def step(self, job: Job, cancel: str | None = None, cancel_on: str = "") -> Done | Wait:
        """One run, as a freshly started daemon would do it (new engine, new provider).

        `cancel`: the user's request ('cancel' / 'pause'), there from the start, or only once the
        run reports a progress message starting with `cancel_on` (a request arriving mid-run)."""

        async def report(fraction: float, message: str) -> None:
            if cancel_on and message.startswith(cancel_on):
                ctx.cancel_reason = cancel

        async def checkpoint(data: dict[str, Any], remote_task_id: str | None) -> None:
            job.checkpoint = json.loads(json.dumps(data))  # what the store keeps: JSON
            if remote_task_id:
                job.remote_task_id = remote_task_id

        ctx = JobContext(
            job=job,
            output_dir=self.root / "outputs" / "annotate",
            prompts_dir=self.root / "prompts",
            state_dir=self.root / "state",
            providers=Providers(BailianAnalysis(self.settings, self.env)),
            logger=logging.getLogger("test.bailian"),
            report=report,
            checkpoint=checkpoint,
        )
        if not cancel_on:
            ctx.cancel_reason = cancel
        return await AnnotateEngine().run(job, ctx)

    async def until_done(self, job: Job, steps: int = 60) -> Done:
        for _ in range(steps):
            result = await self.step(job)
            if isinstance(result, Done):
                return result
            await asyncio.sleep(min(result.seconds, 0.1))
        raise AssertionError("the task never finished")


@pytest.fixture
def h(tmp_path: Path, qm: FakeQuanMiao, oss: FakeOSS) -> Harness:
    return Harness(tmp_path / "proj", qm, oss)


def outputs(done: Done) -> tuple[dict[str, Any], str]:
    out_json, out_txt = (Path(p) for p in done.outputs)
    return json.loads(out_json.read_text()), out_txt.read_text()


# --- the way through ------------------------------------------------------------------------------


async def test_upload_submit_poll_outputs(h: Harness, qm: FakeQuanMiao, oss: FakeOSS, clip: Path) -> None:
    video = h.drop(clip)
    (h.inbox / "clip.mp4.extra.txt").write_text("a kitchen, filmed on a phone")
    params = {
        "interval": 2,
        "max_side": 448,
        "language": "English",
        "bailian": {"generate_options": ["videoAnalysis", "videoGenerate", "videoTitleGenerate"]},
    }
    job = h.job(video, params)
    first = await h.step(job)
    assert isinstance(first, Wait) and job.remote_task_id and job.checkpoint["phase"] == "remote"
    done = await h.until_done(job)
    doc, txt = outputs(done)

    # one upload, signed with an expiry; one submission carrying every option
    [key] = oss.objects()
    assert (
        key == f"dropflow/annotate/{job.content_hash[:16]}/clip.mp4"
        and oss.objects()[key] == video.stat().st_size
    )
    [sent] = qm.submitted()
    assert (
        sent["videoUrl"].startswith(f"{oss.url}/{oss.bucket}/{key}?")
        and "x-oss-expires=21600" in sent["videoUrl"]
    )
    assert sent["frameSampleMethod"] == {"methodName": "standard", "interval": 2.0, "pixel": 448}
    assert sent["videoModelId"] == "qwen-vl-max-latest" and sent["modelId"] == "qwen-max"
    assert "{videoAsrText}" in sent["videoModelCustomPromptTemplate"]
    assert "{videoAnalysisText}" in sent["modelCustomPromptTemplate"]
    assert sent["language"] == "english" and sent["videoExtraInfo"] == "a kitchen, filmed on a phone"
    assert sent["generateOptions"] == ["videoAnalysis", "videoGenerate", "videoTitleGenerate"]
    assert qm.count("submit") == 1

    # the local modes' shape, plus the service's own results
    assert set(doc) == LOCAL_KEYS | {"bailian"}
    assert (doc["mode"], doc["provider"], doc["offline"], doc["model"]) == (
        "bailian",
        "bailian",
        False,
        "qwen-vl-max-latest",
    )
    assert doc["duration"] == pytest.approx(12.0, abs=0.2) and doc["fps"] == 0.5
    assert doc["frames_sent"] == doc["frames_sampled"] == 6
    assert [(s["start"], s["end"]) for s in doc["segments"]] == [(0.0, 10.0), (10.0, 12.0)]
    assert doc["segments"][0]["text"].startswith("fake quanmiao shot 00:00:00-00:00:10 by qwen-vl-max-latest")
    assert (
        doc["summary"]["text"].startswith("fake quanmiao summary by qwen-max")
        and "in english" in doc["summary"]["text"]
    )
    assert doc["annotation"] == doc["summary"]["text"]
    assert doc["asr"]["chunks"][0] == {
        "start": 0.0,
        "end": 10.0,
        "text": "fake caption 1",
        "speaker": "speaker 1",
    }
    b = doc["bailian"]
    assert b["task_id"] == job.remote_task_id and b["status"] == "SUCCESSED"
    assert b["video"] == f"{oss.url}/{oss.bucket}/{key}"  # the object, not the signed URL
    assert set(b["results"]) >= {"videoAnalysisResult", "videoGenerateResult", "videoTitleGenerateResult"}
    assert b["usage"]["inputTokens"] == doc["usage"]["input_tokens"] > 0 and b["estimated_cost_cny"] > 0
    # what `dropflow job N` shows, the same keys as a local job's
    assert done.usage["mode"] == "bailian" and done.usage["frames_sent"] == 6 and done.usage["requests"] == 1
    assert done.usage["input_tokens"] > 0 and done.usage["processing_seconds"] >= 0
    lines = txt.splitlines()
    assert lines[0] == "Video: clip.mp4" and lines[1].startswith("Model: qwen-vl-max-latest (Bailian")
    assert "--- Title ---" in lines and "--- Segment analysis ---" in lines
    assert SECRET not in json.dumps(doc) + txt + json.dumps(job.checkpoint)
    assert "x-oss-signature" not in json.dumps(doc) + json.dumps(job.checkpoint)


async def test_url_sidecar_is_used_as_is_without_an_upload(
    h: Harness, qm: FakeQuanMiao, oss: FakeOSS, clip: Path
) -> None:
    oss.put("elsewhere/clip.mp4", clip.read_bytes())
    url = BailianAnalysis(h.settings, h.env).sign("elsewhere/clip.mp4", 600)
    video = h.drop(clip)
    (h.inbox / "clip.mp4.url").write_text(f"[InternetShortcut]\nURL={url}\n")
    assert AnnotateEngine().inputs_for(video) == [video, h.inbox / "clip.mp4.url"]
    done = await h.until_done(h.job(video))
    doc, _ = outputs(done)
    assert qm.submitted()[0]["videoUrl"] == url
    assert oss.count("put_object") == 0 and oss.count("head_object") == 0
    assert doc["bailian"]["url_source"] == "sidecar" and "x-oss-signature" not in doc["bailian"]["video"]


# --- never twice ----------------------------------------------------------------------------------


async def test_a_restart_mid_wait_resumes_polling_without_a_second_submission(
    h: Harness, qm: FakeQuanMiao, oss: FakeOSS, clip: Path
) -> None:
    qm.pending_seconds = 0.4
    job = h.job(h.drop(clip))
    assert isinstance(await h.step(job), Wait)
    task_id = job.remote_task_id
    assert isinstance(await h.step(job), Wait)  # still PENDING: each step is a new engine and provider
    done = await h.until_done(job)
    assert qm.count("submit") == 1 and oss.count("put_object") == 1 and job.remote_task_id == task_id
    assert outputs(done)[0]["bailian"]["task_id"] == task_id


async def test_an_upload_done_is_not_repeated_after_a_failed_submission(
    h: Harness, qm: FakeQuanMiao, oss: FakeOSS, clip: Path
) -> None:
    qm.inject(Fault.error(500, "InternalError", endpoint="submit"))
    job = h.job(h.drop(clip))
    with pytest.raises(RetryableError):
        await h.step(job)
    assert job.checkpoint["uploaded"] is True and job.checkpoint["phase"] == "idle"
    await h.until_done(job)
    assert oss.count("put_object") == 1 and qm.count("submit") == 2 and len(qm.submitted()) == 1


async def test_an_interrupted_submission_fails_instead_of_paying_twice(
    h: Harness, qm: FakeQuanMiao, oss: FakeOSS, clip: Path
) -> None:
    job = h.job(h.drop(clip))
    job.checkpoint = {"phase": "submitting", "since": 1.0}
    with pytest.raises(PermanentError) as err:
        await h.step(job)
    assert err.value.code == "SubmissionUnresolved" and "dropflow retry" in err.value.hint
    assert qm.count("submit") == 0
    # the user's retry submits anew
    await h.until_done(job)
    assert qm.count("submit") == 1


async def test_a_garbled_reply_is_retried(h: Harness, qm: FakeQuanMiao, clip: Path) -> None:
    job = h.job(h.drop(clip))
    assert isinstance(await h.step(job), Wait)
    qm.inject(Fault.body('{"requestId": "x", "data": {"taskSt', endpoint="get"))
    qm.inject(Fault.body("", endpoint="get"))
    waited = await h.step(job)
    assert isinstance(waited, Wait) and "status check failed" in waited.message
    await h.until_done(job)
    # a garbled answer to the submission may hide a task: not submitted again on its own
    other = h.job(h.drop(clip, "other.mp4"), job_id=2, content_hash="ab" * 32)
    qm.inject(Fault.body('{"requestId": "x", "data": {"taskId', endpoint="submit"))
    with pytest.raises(PermanentError) as err:
        await h.step(other)
    assert err.value.code == "SubmissionUnresolved"


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["secret", "id"])
async def test_a_bad_key_is_a_clear_auth_error(
    tmp_path: Path, qm: FakeQuanMiao, oss: FakeOSS, clip: Path, which: str
) -> None:
    wrong = {**ENV, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "wrong-" + SECRET} if which == "secret" else {
        **ENV, "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tUnknown"}  # fmt: skip
    h = Harness(tmp_path / "proj", qm, oss, wrong)
    job = h.job(h.drop(clip))
    with pytest.raises(AuthError) as err:
        await h.step(job)
    e = err.value
    assert e.message.startswith("clip.mp4: ") and "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in e.hint
    code = "SignatureDoesNotMatch" if which == "secret" else "InvalidAccessKeyId"
    assert e.code.startswith(code)
    assert SECRET not in e.message + e.hint and "wrong-" not in e.message + e.hint
    assert qm.submitted() == [] and job.remote_task_id is None


async def test_no_key_at_all(tmp_path: Path, qm: FakeQuanMiao, oss: FakeOSS, clip: Path) -> None:
    h = Harness(tmp_path / "proj", qm, oss, {})
    with pytest.raises(
        AuthError, match="ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET not set"
    ):
        await h.step(h.job(h.drop(clip)))
    assert oss.count() == 0 and qm.count() == 0


async def test_a_frame_interval_the_service_refuses_fails_before_anything_is_sent(
    h: Harness, qm: FakeQuanMiao, oss: FakeOSS, clip: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        await h.step(h.job(h.drop(clip), {"fps": 2.0}))
    assert "one frame every 1-5 s" in err.value.message and "params.interval" in err.value.hint
    assert oss.count() == 0 and qm.count() == 0
    # and the service itself refuses it too (the fake holds the SDK to the same table)
    service = BailianAnalysis(h.settings, h.env)
    with pytest.raises(PermanentError) as refused:
        await service.submit(
            {"videoUrl": "https://x/v.mp4", "frameSampleMethod": {"interval": 9, "pixel": 448}}
        )
    assert refused.value.code == "InvalidParameter" and "frameSampleMethod.interval" in refused.value.message
    with pytest.raises(PermanentError, match="pixel"):
        await service.submit(
            {"videoUrl": "https://x/v.mp4", "frameSampleMethod": {"interval": 2, "pixel": 1024}}
        )


async def test_an_oversized_video_fails_before_the_upload(h: Harness, oss: FakeOSS, qm: FakeQuanMiao) -> None:
    big = h.inbox / "big.mp4"
    with big.open("wb") as f:  # sparse: over the cap without writing a gigabyte
        f.truncate(1024**3 + 1)
    with pytest.raises(InputError) as err:
        await h.step(h.job(big))
    assert "big.mp4 is 1.00 GB" in err.value.message and "split it" in err.value.hint
    assert oss.count() == 0 and qm.count() == 0


async def test_refused_content_names_the_file(h: Harness, qm: FakeQuanMiao, clip: Path) -> None:
    qm.refuse_content = True
    job = h.job(h.drop(clip))
    with pytest.raises(PermanentError) as err:
        await h.until_done(job)
    assert err.value.code == "ViolationOfSecurityPolicy" and err.value.message.startswith(
        "clip.mp4: Bailian refused"
    )
    assert qm.count("submit") == 1


async def test_an_expired_link_fails_the_task_with_the_reason(
    h: Harness, qm: FakeQuanMiao, oss: FakeOSS, clip: Path
) -> None:
    oss.put("old/clip.mp4", clip.read_bytes())
    url = BailianAnalysis(h.settings, h.env).sign("old/clip.mp4", 1)
    video = h.drop(clip)
    (h.inbox / "clip.mp4.url").write_text(url)
    await asyncio.sleep(1.1)
    with pytest.raises(PermanentError) as err:
        await h.until_done(h.job(video))
    assert err.value.code == "VideoDownloadFailed" and "Request has expired" in err.value.message
    assert "dropflow retry" in err.value.hint


# --- cancel ---------------------------------------------------------------------------------------


async def test_a_cancel_while_pending_cancels_the_task_and_bills_nothing(
    h: Harness, qm: FakeQuanMiao, oss: FakeOSS, clip: Path
) -> None:
    qm.pending_seconds = 60
    job = h.job(h.drop(clip))
    assert isinstance(await h.step(job), Wait)
    task_id = job.remote_task_id
    assert task_id
    with pytest.raises(JobCancelled, match=r"^paused"):  # a pause leaves the task alone
        await h.step(job, cancel="pause")
    assert qm.count("update") == 0
    with pytest.raises(JobCancelled) as err:
        await h.step(job, cancel="cancel")
    assert err.value.message == (
        f"cancelled; Bailian task {task_id} was cancelled at the service while PENDING (nothing billed)"
    )
    assert qm.count("update") == 1 and qm.task(task_id).status == "CANCELED"
    # the service's own poll says so; it never fetched the video nor made (or billed) a result
    polled = await BailianAnalysis(h.settings, h.env).fetch(task_id)
    assert (polled.status, polled.output, polled.usage) == ("CANCELED", {}, {})
    assert oss.count("get_object") == 0
    assert job.checkpoint["phase"] == "retired" and "nothing billed" in job.checkpoint["cancelled"]["message"]
    assert qm.count("submit") == 1


async def test_a_cancel_once_running_is_refused_and_says_the_task_may_bill(
    h: Harness, qm: FakeQuanMiao, clip: Path
) -> None:
    qm.pending_seconds, qm.running_seconds = 0.05, 60
    job = h.job(h.drop(clip))
    assert isinstance(await h.step(job), Wait)
    task_id = job.remote_task_id
    assert task_id
    await asyncio.sleep(0.1)
    assert isinstance(await h.step(job), Wait) and job.checkpoint["status"] == "RUNNING"
    with pytest.raises(JobCancelled) as err:
        await h.step(job, cancel="cancel")
    message = err.value.message
    assert message.startswith(f"cancelled; Bailian task {task_id} could not be cancelled (Bailian would not")
    assert "task status RUNNING cannot be canceled" in message
    assert "it may still complete and bill" in message and f"dropflow retry {job.id}" in message
    assert qm.count("update") == 1 and qm.task(task_id).status == "RUNNING"
    # `dropflow retry` follows the same task to its end: nothing submitted twice
    qm.running_seconds = 0
    done = await h.until_done(job)
    assert qm.count("submit") == 1 and outputs(done)[0]["bailian"]["task_id"] == task_id


@pytest.mark.parametrize("when", ["at the start", "during the upload"])
async def test_a_cancel_before_the_submission_submits_nothing(
    h: Harness, qm: FakeQuanMiao, oss: FakeOSS, clip: Path, when: str
) -> None:
    job = h.job(h.drop(clip))
    cancel_on = "uploading" if when == "during the upload" else ""
    with pytest.raises(JobCancelled, match=r"^cancelled before anything was submitted \(nothing billed\)$"):
        await h.step(job, cancel="cancel", cancel_on=cancel_on)
    assert qm.count() == 0 and job.remote_task_id is None
    assert oss.count("put_object") == (1 if cancel_on else 0)


async def test_the_service_refuses_to_cancel_a_task_it_does_not_know(h: Harness, qm: FakeQuanMiao) -> None:
    with pytest.raises(PermanentError) as err:
        await BailianAnalysis(h.settings, h.env).cancel("no-such-task")
    assert err.value.code == "DataNotExists" and qm.count("update") == 1


# --- through the daemon ---------------------------------------------------------------------------


def daemon_project(tmp_path: Path, qm: FakeQuanMiao, oss: FakeOSS) -> tuple[Path, Path]:
    """A project whose `annotate` route runs `mode: bailian` against the fakes: (root, config path)."""
    root = project(tmp_path / "proj")
    path = root / "config.yaml"
    path.write_text(
        f"""
paths: {{inbox: inbox, outputs: outputs, archive: archive, prompts: prompts, state: state}}
watch: {{settle_seconds: 0.2, rescan_seconds: 1, check_seconds: 0.1}}
scheduler: {{lease_seconds: 3, backoff_base_seconds: 0.1, tick_seconds: 0.05}}
providers:
  default: offline
  bailian:
    workspace_id: {qm.workspace}
    endpoint: {qm.endpoint}
    oss_endpoint: {oss.url}
    oss_bucket: {oss.bucket}
routes:
  - name: annotate
    folder: annotate
    engine: annotate
    params: {{mode: bailian, interval: 2, bailian: {{poll_first_seconds: 0.1, poll_max_seconds: 0.2}}}}
"""
    )
    return root, path


async def test_dropflow_cancel_of_a_waiting_job_cancels_its_pending_task(
    tmp_path: Path, qm: FakeQuanMiao, oss: FakeOSS, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dropflow.daemon.core import config as config_mod
    from tests.conftest import running_daemon, wait_for

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    qm.pending_seconds = 60
    root, path = daemon_project(tmp_path, qm, oss)
    async with running_daemon(config_mod.load(path)) as d:
        (root / "inbox" / "annotate" / "clip.mp4").write_bytes(clip.read_bytes())

        async def submitted() -> Job | None:
            jobs = await d.store.list()
            return jobs[0] if jobs and jobs[0].remote_task_id and jobs[0].status == "waiting" else None

        job = await wait_for(submitted, timeout=30)
        assert await d.store.cancel(job.id) == "requested"  # what `dropflow cancel N` asks
        [job] = await d.wait_status(1, ("cancelled", "failed", "succeeded"), timeout=30)
    assert job.status == "cancelled" and job.remote_task_id
    assert "cancelled at the service while PENDING (nothing billed)" in job.progress_message
    assert qm.task(job.remote_task_id).status == "CANCELED" and qm.count("submit") == 1


async def test_through_the_daemon_job_rows_hold_no_secret(
    tmp_path: Path, qm: FakeQuanMiao, oss: FakeOSS, clip: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from dropflow.daemon.cli import main
    from dropflow.daemon.core import config as config_mod
    from tests.conftest import running_daemon

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    root, path = daemon_project(tmp_path, qm, oss)
    cfg = config_mod.load(path)
    assert SECRET in cfg.secrets()
    async with running_daemon(cfg) as d:
        (root / "inbox" / "annotate" / "clip.mp4").write_bytes(clip.read_bytes())
        [job] = await d.wait_status(1, ("succeeded", "failed"), timeout=60)
        events = await d.store.events(job.id)
    assert job.status == "succeeded", job.error
    assert job.remote_task_id and qm.count("submit") == 1
    row = json.dumps(job.as_dict()) + json.dumps([e.message for e in events])
    assert SECRET not in row and "x-oss-signature" not in row
    code = await asyncio.to_thread(main, ["--config", str(path), "job", str(job.id)])  # it runs its own loop
    shown = capsys.readouterr().out
    assert code == 0
    assert "model:    qwen-vl-max-latest (bailian; summary qwen-max)" in shown
    assert "frames:   6 sent of 6 sampled" in shown and "spend:" in shown and "time:" in shown
    assert SECRET not in shown
    assert os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] == SECRET  # read from the environment only
