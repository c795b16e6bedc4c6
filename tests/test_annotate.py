"""The annotate engine run directly (a real JobContext, real files) against the fake DashScope server
driven by the real SDK, the fake OpenAI-compatible server, and the offline provider."""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dropflow.daemon.core.config import ProviderSettings
from dropflow.daemon.core.jobs import Job
from dropflow.engine import frames
from dropflow.engine.annotate import run as annotate_run
from dropflow.engine.annotate.engine import AnnotateEngine
from dropflow.engine.annotate.params import AnnotateParams
from dropflow.engine.base import Done, JobContext
from dropflow.engine.errors import AuthError, ConfigError, InputError, RetryableError
from dropflow.engine.fakes import FakeAnthropic, FakeDashScope, FakeOpenAI, Fault, Prompt
from dropflow.engine.providers.anthropic import AnthropicVision
from dropflow.engine.providers.base import VisionProvider
from dropflow.engine.providers.dashscope import DashScopeVision
from dropflow.engine.providers.offline import OfflineVision
from dropflow.engine.providers.openai_compat import OpenAICompatVision
from tests.videos import make_video, time_code

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-annotate-test-0123456789abcdef"


# --- harness -------------------------------------------------------------------------------------


def make_job(
    video: Path,
    params: dict[str, Any] | None = None,
    *,
    job_id: int = 1,
    inputs: list[Path] | None = None,
    content_hash: str = "c0ffee" * 10 + "abcd",
    batch: str = "",
    attempts: int = 1,
) -> Job:
    return Job(
        id=job_id,
        engine="annotate",
        route="annotate",
        batch=batch,
        source="inbox",
        input_path=str(video),
        input_paths=[str(p) for p in (inputs or [video])],
        content_hash=content_hash,
        forced=False,
        provider=None,
        params=AnnotateParams.model_validate(params or {}).model_dump(mode="json"),
        priority=0,
        status="running",
        control=None,
        attempts=attempts,
        max_attempts=5,
        next_attempt_at=None,
        lease_owner="test",
        lease_expires_at=None,
        progress=0.0,
        progress_message="",
        outputs=[],
        error_kind=None,
        error_message=None,
        error_hint=None,
        remote_task_id=None,
        checkpoint={},
        usage={},
        tokens_in=0,
        tokens_out=0,
        archived_path=None,
        created_at=0.0,
        updated_at=0.0,
        started_at=None,
        finished_at=None,
    )


class OneProvider:
    def __init__(self, provider: VisionProvider) -> None:
        self.provider = provider

    def vision(self, name: str | None) -> VisionProvider:
        return self.provider

    def videogen(self, name: str | None) -> Any:
        raise AssertionError("annotate never makes videos")


@dataclass
class Harness:
    root: Path
    provider: VisionProvider
    progress: list[tuple[float, str]] = field(default_factory=list)

    @property
    def prompts(self) -> Path:
        return self.root / "prompts"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox" / "annotate"

    @property
    def out(self) -> Path:
        return self.root / "outputs" / "annotate"

    @property
    def state(self) -> Path:
        return self.root / "state"

    async def run(self, job: Job) -> Done:
        async def report(fraction: float, message: str) -> None:
            self.progress.append((fraction, message))

        async def checkpoint(data: dict[str, Any], remote_task_id: str | None) -> None:
            job.checkpoint = data

        ctx = JobContext(
            job=job,
            output_dir=self.out,
            prompts_dir=self.prompts,
            state_dir=self.state,
            providers=OneProvider(self.provider),
            logger=logging.getLogger("test.annotate"),
            report=report,
            checkpoint=checkpoint,
        )
        return await AnnotateEngine().run(job, ctx)

    async def annotate(
        self, video: Path, params: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[Done, dict[str, Any], str]:
        done = await self.run(make_job(video, params, **kw))
        out_json, out_txt = (Path(p) for p in done.outputs)
        return done, json.loads(out_json.read_text()), out_txt.read_text()


def project(root: Path) -> Path:
    prompts = root / "prompts"
    prompts.mkdir(parents=True)
    for p in (REPO / "prompts").glob("*.txt"):
        shutil.copy(p, prompts / p.name)
    (root / "inbox" / "annotate").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Videos made once for the module: copy one into a test's inbox with `drop`."""
    d = tmp_path_factory.mktemp("videos")
    return {
        "short": make_video(d / "clip.mp4", seconds=6, fps=10),
        "long": make_video(d / "long.mp4", seconds=12, fps=10, cuts=(3.0, 6.0, 9.0)),
        "static": make_video(d / "static.mp4", seconds=10, fps=10, static=(3.0, 8.0)),
        "talk": make_video(d / "talk.mkv", seconds=10, fps=5, tones=[(0.5, 4.0, 440), (6.0, 9.5, 300)]),
    }


def drop(h: Harness, src: Path, name: str | None = None) -> Path:
    dst = h.inbox / (name or src.name)
    shutil.copy(src, dst)
    return dst


@pytest.fixture
def ds() -> Iterator[FakeDashScope]:
    with FakeDashScope(api_key=KEY) as srv:
        yield srv


def dashscope(srv: FakeDashScope, key: str = KEY) -> DashScopeVision:
    return DashScopeVision(
        ProviderSettings.model_validate({"api_key": key, "base_url": srv.base_url, "timeout_seconds": 20})
    )


@pytest.fixture
async def h(tmp_path: Path, ds: FakeDashScope) -> AsyncIterator[Harness]:
    provider = dashscope(ds)
    yield Harness(project(tmp_path / "proj"), provider)
    await provider.aclose()


def user_content(body: dict[str, Any]) -> list[dict[str, Any]]:
    [msg] = [m for m in body["input"]["messages"] if m["role"] == "user"]
    return msg["content"]  # type: ignore[no-any-return]


def frames_of(part: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(u.split(",", 1)[1]) for u in part["video"]]


# --- single mode ---------------------------------------------------------------------------------


async def test_request_shape_outputs_and_progress(
    h: Harness, ds: FakeDashScope, library: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a short clip samples in milliseconds: report often, and let each frame take a little while,
    # so that the sampling stage is seen in flight
    monkeypatch.setattr(annotate_run, "PROGRESS_SECONDS", 0.001)
    real_sample = frames.sample_frames

    def slow_sample(path: Path, spec: frames.SampleSpec, **kw: Any) -> frames.Sampling:
        report = kw.pop("progress")

        def progress(k: int, n: int) -> None:
            report(k, n)
            time.sleep(0.01)

        return real_sample(path, spec, progress=progress, **kw)

    monkeypatch.setattr(frames, "sample_frames", slow_sample)
    video = drop(h, library["short"])
    done, doc, txt = await h.annotate(video)

    [req] = ds.requests("multimodal")
    body = req.json
    assert body["model"] == "qwen-vl-max-latest"
    assert body["parameters"] == {"temperature": 0.3, "max_tokens": 4000}
    video_part, text_part = user_content(body)
    assert video_part["fps"] == 1.0
    assert all(u.startswith("data:image/jpeg;base64,") for u in video_part["video"])
    # six frames, one per second, each showing its own time
    assert [time_code(f) for f in frames_of(video_part)] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    # the default prompt, verbatim: an evenly sampled one-segment video needs no added context
    assert text_part == {"text": (h.prompts / "pov_annotation_prompt.txt").read_text().strip()}

    answer = "fake dashscope answer from qwen-vl-max-latest: 0 image(s), 6 frame(s) at 1 fps"
    assert doc["video"] == "clip.mp4" and doc["model"] == "qwen-vl-max-latest" and doc["fps"] == 1.0
    assert doc["annotation"].startswith(answer)
    assert isinstance(doc["processing_time"], float) and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", doc["timestamp"]
    )
    assert doc["provider"] == "dashscope" and doc["offline"] is False
    assert (doc["frames_sampled"], doc["frames_sent"]) == (6, 6)
    [seg] = doc["segments"]
    assert (seg["start"], seg["end"], seg["frames_sent"]) == (0.0, 6.0, 6)
    assert seg["request_id"] == req.request_id and doc["request_ids"] == [req.request_id]
    # as the service bills 320x240 frames: 9x11 tokens of 28 px per pair of frames, +2 per video
    assert seg["usage"]["video_tokens"] == 3 * 9 * 11 + 2 == doc["usage"]["video_tokens"]
    assert done.usage["input_tokens"] == doc["usage"]["input_tokens"] > 0 and done.usage["requests"] == 1

    lines = txt.splitlines()
    assert lines[0] == "Video: clip.mp4"
    assert lines[1] == "Model: qwen-vl-max-latest"
    assert lines[2] == "FPS: 1.0"
    assert re.fullmatch(r"Processing time: \d+\.\d\d seconds", lines[3])
    assert re.fullmatch(r"Date: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lines[4])
    assert lines[5:7] == ["", "--- Annotation ---"]
    assert "\n".join(lines[7:]).strip() == doc["annotation"]
    assert [Path(p).name for p in done.outputs] == ["clip.json", "clip.txt"]

    messages = [m for _, m in h.progress]
    assert any(re.fullmatch(r"sampling [1-5]/6 frames", m) for m in messages)
    assert "segment 0/1" in messages and "segment 1/1" in messages and messages[-1] == "writing outputs"
    assert [f for f, _ in h.progress] == sorted(f for f, _ in h.progress)


async def test_per_job_overrides(h: Harness, ds: FakeDashScope, library: dict[str, Path]) -> None:
    (h.prompts / "birds.txt").write_text("Count the birds.\n")
    own = h.root / "elsewhere" / "mine.txt"
    own.parent.mkdir()
    own.write_text("Describe the colours.")
    video = drop(h, library["short"])
    await h.annotate(video, {"fps": 2.0, "temperature": 0.5, "max_tokens": 300, "prompt": "birds.txt"})
    body = ds.last("multimodal").json
    assert body["parameters"] == {"temperature": 0.5, "max_tokens": 300}
    video_part, text_part = user_content(body)
    assert video_part["fps"] == 2.0 and len(video_part["video"]) == 12
    assert text_part["text"] == "Count the birds."

    await h.annotate(video, {"interval": 2.5, "model": "qwen-vl-plus-latest", "prompt": str(own)})
    body = ds.last("multimodal").json
    video_part, text_part = user_content(body)
    assert body["model"] == "qwen-vl-plus-latest" and video_part["fps"] == 0.4
    # three frames (0, 2.5, 5 s) padded to DashScope's minimum of four
    assert [round(time_code(f), 1) for f in frames_of(video_part)] == [0.0, 0.0, 2.5, 5.0]
    assert text_part["text"].startswith("Describe the colours.")
    # uneven after padding: the time of every frame sent is spelled out
    assert "(seconds from the start of the video): 0.0, 0.0, 2.5, 5.0." in text_part["text"]
    assert "did not change" not in text_part["text"]  # nothing was dropped


async def test_missing_prompt_is_a_config_error_naming_it(
    h: Harness, ds: FakeDashScope, library: dict[str, Path]
) -> None:
    video = drop(h, library["short"])
    with pytest.raises(ConfigError, match=r"prompt file 'nope\.txt' \(param prompt\) not found") as err:
        await h.annotate(video, {"prompt": "nope.txt"})
    assert str(h.prompts) in err.value.message
    assert ds.count() == 0


def test_params_are_validated() -> None:
    assert AnnotateParams().model_dump()["fps"] == 1.0
    for bad in (
        {"fps": 20},
        {"fps": 0.05},
        {"max_side": 1024},
        {"max_side": 200},
        {"temperature": 1.5},
        {"colour": "red"},
    ):
        with pytest.raises(ValidationError):
            AnnotateParams.model_validate(bad)


def test_unit_includes_sidecars(tmp_path: Path) -> None:
    engine = AnnotateEngine()
    video = tmp_path / "clip.MP4"
    video.write_bytes(b"x")
    assert engine.inputs_for(video) == [video]
    roles = tmp_path / "clip.MP4.roles.yaml"
    extra = tmp_path / "clip.extra.txt"
    roles.write_text("[]")
    extra.write_text("x")
    assert engine.inputs_for(video) == [video, roles, extra]
    assert engine.inputs_for(extra) is None and engine.inputs_for(roles) is None
    assert engine.inputs_for(tmp_path / "photo.jpg") is None


# --- long videos ---------------------------------------------------------------------------------


async def test_long_video_is_split_into_timed_segments(
    h: Harness, ds: FakeDashScope, library: dict[str, Path]
) -> None:
    ds.responder = lambda p: "seen " + re.findall(r"from \d\d:\d\d to \d\d:\d\d", p.texts[-1])[0]
    video = drop(h, library["long"])
    _, doc, txt = await h.annotate(video, {"max_frames_per_segment": 4, "dedup": False})

    reqs = sorted(ds.requests("multimodal"), key=lambda r: time_code(frames_of(user_content(r.json)[0])[0]))
    assert len(reqs) == 3
    for k, req in enumerate(reqs):
        video_part, text_part = user_content(req.json)
        assert [time_code(f) for f in frames_of(video_part)] == [4.0 * k + i for i in range(4)]
        assert f"This is part {k + 1} of 3 of the video" in text_part["text"]
    assert [(s["start"], s["end"], s["frames_sent"]) for s in doc["segments"]] == [
        (0.0, 4.0, 4),
        (4.0, 8.0, 4),
        (8.0, 12.0, 4),
    ]
    assert [s["text"] for s in doc["segments"]] == [
        "seen from 00:00 to 00:04",
        "seen from 00:04 to 00:08",
        "seen from 00:08 to 00:12",
    ]
    assert "[00:04-00:08]\nseen from 00:04 to 00:08" in doc["annotation"]
    assert doc["annotation"] in txt


async def test_static_stretch_is_not_sent(h: Harness, ds: FakeDashScope, library: dict[str, Path]) -> None:
    video = drop(h, library["static"])
    _, doc, _ = await h.annotate(video)
    video_part, text_part = user_content(ds.last("multimodal").json)
    # 10 sampled; 4-7 s repeat the frozen picture of 3 s
    assert [time_code(f) for f in frames_of(video_part)] == [0.0, 1.0, 2.0, 3.0, 8.0, 9.0]
    assert (doc["frames_sampled"], doc["frames_sent"], doc["frames_dropped_as_repeats"]) == (10, 6, 4)
    assert "0.0, 1.0, 2.0, 3.0, 8.0, 9.0" in text_part["text"] and "did not change" in text_part["text"]


# --- two-stage -----------------------------------------------------------------------------------


def scripted(p: Prompt) -> str:
    """Answers that say what they were given, so the next stage's prompt can be checked."""
    if p.audios:
        return f"words {len(p.audios[0]) // 1000}k"
    if p.frames:
        return f"analysis of {len(p.frames)} frames"
    return "THE SUMMARY"


async def test_two_stage_fills_templates_with_asr_roles_and_extra_info(
    h: Harness, ds: FakeDashScope, library: dict[str, Path], tmp_path: Path
) -> None:
    ds.responder = scripted
    video = drop(h, library["talk"])
    photo = h.inbox / "alice.png"
    from PIL import Image

    Image.new("RGB", (640, 480), (200, 30, 30)).save(photo)
    roles = h.inbox / "talk.mkv.roles.yaml"
    roles.write_text(
        "- name: Alice\n  description: the presenter in red\n  photos: [alice.png]\n- name: Bob\n"
    )
    extra = h.inbox / "talk.extra.txt"
    extra.write_text("Recorded at the 2024 robotics fair.\n")
    job = make_job(
        video,
        {
            "mode": "two_stage",
            "max_frames_per_segment": 5,
            "dedup": False,
            "asr_chunk_seconds": 5,
            "language": "English",
        },
        inputs=[video, roles, extra],
    )
    done = await h.run(job)
    doc = json.loads(Path(done.outputs[0]).read_text())

    asr = [r for r in ds.requests("multimodal") if "audio" in user_content(r.json)[0]]
    segs = [r for r in ds.requests("multimodal") if r not in asr]
    assert {r.json["model"] for r in asr} == {"qwen3-asr-flash"}
    assert all(user_content(r.json)[0]["audio"].startswith("data:audio/wav;base64,") for r in asr)
    assert len(asr) == 2 and len(segs) == 2  # speech in both 5 s chunks; 5 frames per segment
    by_start = {}
    for req in segs:
        content = user_content(req.json)
        texts = [c["text"] for c in content if "text" in c]
        # roles first, with Alice's reference photo (shrunk to max_side) before the video
        assert texts[0].startswith("Characters (call them by these names, consistently):")
        assert "- Alice: the presenter in red (1 reference photo below)" in texts[0] and "- Bob" in texts[0]
        assert texts[1] == "Reference photo of Alice:"
        assert [next(iter(c)) for c in content] == ["text", "text", "image", "video", "text"]
        prompt = texts[-1]
        assert prompt.startswith("You are analysing one segment of a longer video.")
        assert "Write your answer in English." in prompt
        by_start[time_code(frames_of(content[3])[0])] = prompt
    # {videoAsrText} holds the transcript lines of that segment's time range only
    assert re.search(r"\[00:00-00:05\] words \d+k", by_start[0.0])
    assert re.search(r"\[00:05-00:10\] words \d+k", by_start[5.0])
    assert "[00:00-00:05]" not in by_start[5.0]

    [summary] = ds.requests("text")
    assert summary.json["model"] == "qwen-max"
    text = summary.json["input"]["messages"][-1]["content"]
    assert "[00:00-00:05]\nanalysis of 5 frames" in text and "[00:05-00:10]\nanalysis of 5 frames" in text
    assert re.search(r"\[00:00-00:0\d\] words \d+k\n\[00:0\d-00:10\] words \d+k", text)
    assert "Recorded at the 2024 robotics fair." in text
    assert "- Alice: the presenter in red" in text and "Write your answer in English." in text
    assert "{" not in text.replace("{}", "")

    assert doc["annotation"] == "THE SUMMARY" and doc["mode"] == "two_stage"
    assert doc["summary"]["model"] == "qwen-max" and doc["summary"]["request_id"] == summary.request_id
    assert [s["text"] for s in doc["segments"]] == ["analysis of 5 frames"] * 2
    assert doc["asr"]["status"] == "transcribed" and len(doc["asr"]["chunks"]) == 2
    assert [r["name"] for r in doc["roles"]] == ["Alice", "Bob"]
    assert doc["extra_info"] == "Recorded at the 2024 robotics fair."
    assert len(doc["request_ids"]) == 5 and done.usage["requests"] == 5
    txt = Path(done.outputs[1]).read_text()
    assert "--- Annotation ---\nTHE SUMMARY" in txt and "--- Segment analysis ---" in txt
    assert "summary" in [m for _, m in h.progress] and any(m.startswith("speech 2/2") for _, m in h.progress)


async def test_no_audio_track_leaves_asr_text_empty(
    h: Harness, ds: FakeDashScope, library: dict[str, Path]
) -> None:
    ds.responder = scripted
    video = drop(h, library["short"])
    _, doc, _ = await h.annotate(video, {"mode": "two_stage"})
    assert doc["asr"] == {"status": "no audio track", "model": None, "chunks": []}
    text = ds.last("text").json["input"]["messages"][-1]["content"]
    assert "Transcript (mm:ss timestamps):\n\n" in text
    # ASR off: not even extracted, and nothing sent
    ds.reset()
    talk = drop(h, library["talk"])
    _, doc, _ = await h.annotate(talk, {"mode": "two_stage", "asr": False})
    assert doc["asr"]["status"] == "off (asr: false)"
    assert not [r for r in ds.requests("multimodal") if "audio" in user_content(r.json)[0]]


async def test_summary_template_must_take_the_analysis(h: Harness, library: dict[str, Path]) -> None:
    (h.prompts / "bad.txt").write_text("Summarise {videoAsrText}")
    with pytest.raises(ConfigError, match=r"has no \{videoAnalysisText\}"):
        await h.annotate(drop(h, library["short"]), {"mode": "two_stage", "summary_prompt": "bad.txt"})


async def test_bad_roles_sidecar_names_file_and_line(h: Harness, library: dict[str, Path]) -> None:
    video = drop(h, library["short"])
    roles = h.inbox / "clip.roles.yaml"
    roles.write_text("roles:\n  - name: Alice\n    colour: red\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(roles))}:3: roles\.0\.colour"):
        await h.annotate(video, inputs=[video, roles])
    roles.write_text("- name: Alice\n  photos: [missing.jpg]\n")
    with pytest.raises(InputError, match=r"reference photo 'missing\.jpg' of role 'Alice' not found"):
        await h.annotate(video, inputs=[video, roles])


# --- spend ---------------------------------------------------------------------------------------


async def test_same_content_same_params_is_never_sent_twice(
    h: Harness, ds: FakeDashScope, library: dict[str, Path]
) -> None:
    video = drop(h, library["long"])
    params = {"max_frames_per_segment": 4, "dedup": False}
    _, first, _ = await h.annotate(video, params)
    assert ds.count("multimodal") == 3 and first["usage"]["requests"] == 3
    # the same job again (a retry, a restart): nothing is sent, the spend is still its own
    _, again, _ = await h.annotate(video, params)
    assert ds.count("multimodal") == 3
    assert all(s["cached"] for s in again["segments"]) and again["annotation"] == first["annotation"]
    assert again["usage"]["input_tokens"] == first["usage"]["input_tokens"]
    # another job with the same video (dropped elsewhere): reused, and not counted as its spend
    other = drop(h, library["long"], "copy.mp4")
    done, reused, _ = await h.annotate(other, params, job_id=2)
    assert ds.count("multimodal") == 3
    assert reused["usage"]["requests"] == 0 and reused["usage"]["reused_from_other_jobs"] == 3
    assert done.usage["input_tokens"] == 0
    # different params are a different request
    await h.annotate(video, {**params, "temperature": 0.9})
    assert ds.count("multimodal") == 6


async def test_429_mid_job_then_retry_pays_only_what_is_missing(
    h: Harness, ds: FakeDashScope, library: dict[str, Path]
) -> None:
    video = drop(h, library["long"])
    params = {"max_frames_per_segment": 4, "dedup": False, "concurrency": 1}

    def first_answer_then_throttle(p: Prompt) -> str:
        if ds.count("multimodal") == 1:  # answering the first request: the next one gets a 429
            ds.inject(Fault.error(429, "Throttling.RateQuota"))
        return "answer"

    ds.responder = first_answer_then_throttle
    with pytest.raises(RetryableError) as err:
        await h.annotate(video, params)
    assert err.value.status == 429
    assert ds.count("multimodal") == 2  # one answered, one throttled, the third held back
    # the scheduler's retry: only the two unanswered segments go out
    _, doc, _ = await h.annotate(video, params, attempts=2)
    assert ds.count("multimodal") == 4
    assert [s["cached"] for s in doc["segments"]] == [True, False, False]
    assert doc["usage"]["requests"] == 3  # three answers paid for, all by this job


async def test_401_is_permanent_and_says_how_to_fix(
    tmp_path: Path, ds: FakeDashScope, library: dict[str, Path]
) -> None:
    provider = dashscope(ds, key="sk-wrong-key-000000000000")
    h = Harness(project(tmp_path / "p"), provider)
    try:
        with pytest.raises(AuthError) as err:
            await h.annotate(drop(h, library["long"]), {"max_frames_per_segment": 4, "concurrency": 1})
    finally:
        await provider.aclose()
    assert err.value.message.startswith("invalid API key: set DASHSCOPE_API_KEY")
    assert err.value.kind == "permanent" and err.value.status == 401
    assert "sk-wrong" not in f"{err.value.message} {err.value.hint}"
    assert ds.count("multimodal") == 1  # after a 401 no further segment is sent


# --- other providers -----------------------------------------------------------------------------


async def test_offline_provider_runs_the_whole_flow(tmp_path: Path, library: dict[str, Path]) -> None:
    h = Harness(project(tmp_path / "p"), OfflineVision())
    _done, doc, txt = await h.annotate(
        drop(h, library["talk"]), {"mode": "two_stage", "max_frames_per_segment": 5}
    )
    assert doc["offline"] is True and doc["provider"] == "offline"
    assert "offline placeholder" in doc["annotation"] and len(doc["segments"]) == 2
    assert (
        doc["asr"]["status"] == "transcribed"
        and "offline placeholder transcript" in doc["asr"]["chunks"][0]["text"]
    )
    assert not (h.state / "answers").exists()  # free placeholders are not cached
    assert "--- Annotation ---" in txt


async def test_openai_compatible_server(tmp_path: Path, library: dict[str, Path]) -> None:
    model = "Qwen/Qwen2.5-Omni-7B"  # a local vLLM serving one model for every stage
    with FakeOpenAI(api_key=KEY) as srv:
        provider = OpenAICompatVision(
            ProviderSettings.model_validate({"api_key": KEY, "base_url": srv.base_url})
        )
        h = Harness(project(tmp_path / "p"), provider)
        try:
            _, doc, _ = await h.annotate(drop(h, library["short"]), {"model": model})
            body = srv.last("chat").json
            srv.reset()
            params = {"model": model, "summary_model": model, "asr_model": model, "mode": "two_stage"}
            _, two, _ = await h.annotate(drop(h, library["talk"]), params)
            bodies = [r.json for r in srv.requests("chat")]
        finally:
            await provider.aclose()
    [msg] = body["messages"]
    video_part, text_part = msg["content"]
    assert video_part["type"] == "video" and video_part["fps"] == 1.0 and len(video_part["video"]) == 6
    assert text_part["type"] == "text" and body["temperature"] == 0.3 and body["max_tokens"] == 4000
    assert doc["provider"] == "openai" and doc["annotation"].startswith("fake openai answer")
    # speech goes as chat-completions audio parts (WAV, base64), one per chunk
    audio = [b for b in bodies if b["messages"][0]["content"][0]["type"] == "input_audio"]
    assert len(audio) == len(two["asr"]["chunks"]) >= 1
    assert all(b["messages"][0]["content"][0]["input_audio"]["format"] == "wav" for b in audio)
    assert two["asr"]["status"] == "transcribed" and two["summary"]["model"] == model


async def test_provider_without_speech_recognition_leaves_the_transcript_empty(
    tmp_path: Path, library: dict[str, Path]
) -> None:
    with FakeAnthropic(api_key=KEY) as srv:
        provider = AnthropicVision(ProviderSettings.model_validate({"api_key": KEY, "base_url": srv.url}))
        h = Harness(project(tmp_path / "p"), provider)
        try:
            params = {"model": "claude-x", "summary_model": "claude-x", "mode": "two_stage"}
            _, doc, _ = await h.annotate(drop(h, library["talk"]), params)
        finally:
            await provider.aclose()
        assert srv.count("messages") == 2  # one segment, one summary: no audio was sent
    assert doc["asr"]["status"] == "provider anthropic has no speech recognition"
    assert any("cannot transcribe audio" in w for w in doc["warnings"])


# --- inputs and outputs --------------------------------------------------------------------------


async def test_unreadable_and_oversized_videos_are_input_errors(h: Harness, ds: FakeDashScope) -> None:
    junk = h.inbox / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 500)
    with pytest.raises(InputError, match=r"junk\.mp4 cannot be opened as a video"):
        await h.annotate(junk)
    huge = h.inbox / "huge.mov"
    with open(huge, "wb") as fh:
        fh.truncate(1024**3 + 1)  # sparse: no disk used
    with pytest.raises(InputError, match=r"huge\.mov is 1\.00 GB, over the 1 GB cap"):
        await h.annotate(huge)
    zero = h.inbox / "zero.mp4"
    zero.write_bytes(b"")
    with pytest.raises(InputError, match=r"zero\.mp4 is empty \(0 bytes\)"):
        await h.annotate(zero)
    assert ds.count() == 0


async def test_outputs_of_different_videos_never_overwrite_each_other(
    h: Harness, ds: FakeDashScope, library: dict[str, Path]
) -> None:
    a = drop(h, library["short"], "same.mp4")
    b = drop(h, library["talk"], "same.mkv")
    done_a = await h.run(make_job(a, content_hash="a" * 64))
    done_b = await h.run(make_job(b, content_hash="b" * 64, job_id=2))
    assert [Path(p).name for p in done_b.outputs] == ["same (2).json", "same (2).txt"]
    again = await h.run(make_job(a, content_hash="a" * 64))  # a rerun replaces its own result
    assert again.outputs == done_a.outputs
    batch = await h.run(make_job(a, content_hash="a" * 64, batch="trip"))
    assert Path(batch.outputs[0]) == h.out / "trip" / "same.json"
