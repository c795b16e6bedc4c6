"""The annotate engine within DashScope's real limits (issue 11), against the strict fake through the
real SDK: summaries that fit the text model, segments that fit a request, billing as reported,
answers cut off by the budget or the 180 s cap, malformed replies."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from dropflow.daemon.core.config import ProviderSettings
from dropflow.engine.annotate.asr import fit_chunk_seconds
from dropflow.engine.annotate.engine import AnnotateEngine
from dropflow.engine.base import Done, JobContext
from dropflow.engine.errors import ConfigError, RetryableError
from dropflow.engine.fakes import FakeDashScope, Fault, Prompt
from dropflow.engine.fakes.dashscope_rules import tokens
from dropflow.engine.providers.dashscope_models import limits
from dropflow.engine.providers.dashscope_vision import DashScopeVision
from tests.test_annotate import OneProvider, make_job, project
from tests.videos import make_video

# the SDK posts its JSON as one bytes object, and aiohttp warns above 1 MiB (a ResourceWarning,
# silent outside tests): requests this large are what these tests are about
pytestmark = pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")

KEY = "sk-annotate-limits-0123456789"
SIX_MIB = 6 * 1024 * 1024


class Run:
    """One project folder, the fake, a provider, and the warnings jobs leave in their history."""

    def __init__(self, root: Path, srv: FakeDashScope) -> None:
        self.root = project(root)
        self.srv = srv
        self.provider = DashScopeVision(
            ProviderSettings.model_validate({"api_key": KEY, "base_url": srv.base_url, "timeout_seconds": 30})
        )
        self.notes: list[tuple[str, str]] = []

    async def __call__(
        self, video: Path, params: dict[str, Any] | None = None
    ) -> tuple[Done, dict[str, Any]]:
        job = make_job(video, params)

        async def report(fraction: float, message: str) -> None:
            pass

        async def checkpoint(data: dict[str, Any], remote_task_id: str | None) -> None:
            pass

        async def note(kind: str, message: str) -> None:
            self.notes.append((kind, message))

        ctx = JobContext(
            job=job,
            output_dir=self.root / "outputs" / "annotate",
            prompts_dir=self.root / "prompts",
            state_dir=self.root / "state",
            providers=OneProvider(self.provider),
            logger=logging.getLogger("test.annotate.limits"),
            report=report,
            checkpoint=checkpoint,
            note=note,
        )
        done = await AnnotateEngine().run(job, ctx)
        return done, json.loads(Path(done.outputs[0]).read_text())

    def drop(self, src: Path) -> Path:
        dst = self.root / "inbox" / "annotate" / src.name
        shutil.copy(src, dst)
        return dst


@pytest.fixture
def ds() -> Iterator[FakeDashScope]:
    with FakeDashScope(api_key=KEY) as srv:
        yield srv


@pytest.fixture
async def run(tmp_path: Path, ds: FakeDashScope) -> AsyncIterator[Run]:
    r = Run(tmp_path / "proj", ds)
    yield r
    await r.provider.aclose()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    noise = d / "noise.mp4"  # frames that JPEG cannot shrink: ~170 KB each at 768x432
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(noise), cv2.VideoWriter_fourcc(*"mp4v"), 1, (768, 432))
    for _ in range(40):
        writer.write(rng.integers(0, 256, (432, 768, 3), dtype=np.uint8))
    writer.release()
    return {
        "twelve": make_video(d / "twelve.mp4", seconds=12, fps=10),
        "thirty": make_video(d / "thirty.mp4", seconds=30, fps=10),
        "noise": noise,
        "talk": make_video(d / "talk.mkv", seconds=10, fps=5, tones=[(0.5, 4.0, 440), (6.0, 9.5, 300)]),
        "long_talk": make_video(d / "long_talk.mkv", seconds=150, fps=1, tones=[(0.0, 150.0, 440)]),
    }


def frame_counts(srv: FakeDashScope) -> list[int]:
    out = []
    for r in srv.requests("multimodal"):
        [user] = [m for m in r.json["input"]["messages"] if m["role"] == "user"]
        out += [len(c["video"]) for c in user["content"] if "video" in c]
    return out


# --- 4. the summary fits the text model's input ---------------------------------------------------


async def test_a_summary_too_long_for_qwen_max_is_made_in_groups(
    run: Run, ds: FakeDashScope, videos: dict[str, Path]
) -> None:
    long_answer = " ".join(f"event{i} happens" for i in range(900))  # ~2,700 tokens per segment

    def answer(p: Prompt) -> str:
        if p.frames:
            return long_answer
        return "PART SUMMARY" if "summarise this part only" in p.texts[-1] else "THE SUMMARY"

    ds.responder = answer
    video = run.drop(videos["twelve"])
    _, doc = await run(video, {"mode": "two_stage", "segment_seconds": 1.0, "dedup": False})
    assert len(doc["segments"]) == 12
    summaries = ds.requests("text")
    assert all(r.status == 200 for r in summaries) and len(summaries) >= 3
    for r in summaries:  # each request within qwen-max's 30,720 input tokens
        assert tokens(r.json["input"]["messages"][-1]["content"]) < 30720
    assert doc["annotation"] == "THE SUMMARY"
    parts = doc["summary"]["parts"]
    assert len(parts) == len(summaries) - 1 and {p["text"] for p in parts} == {"PART SUMMARY"}
    assert parts[0]["start"] == 0.0 and parts[-1]["end"] == doc["segments"][-1]["end"]
    final = summaries[-1].json["input"]["messages"][-1]["content"]
    assert final.count("PART SUMMARY") == len(parts) and long_answer not in final


async def test_a_summary_prompt_that_cannot_fit_fails_before_anything_is_paid(
    run: Run, ds: FakeDashScope, videos: dict[str, Path]
) -> None:
    video = run.drop(videos["twelve"])
    extra = " ".join(f"fact{i}" for i in range(16000))  # ~32,000 tokens of extra information
    with pytest.raises(ConfigError, match="summary prompt takes"):
        await run(video, {"mode": "two_stage", "extra_info": extra})
    assert ds.count() == 0


# --- 5. segments sized to the frame-list limit, the data-URI cap and the body cap ----------------


@pytest.mark.parametrize(
    ("model", "clip", "fps", "most"),
    [("qwen-vl-max-latest", "thirty", 10.0, 250), ("qwen2-vl-72b-instruct", "twelve", 10.0, 80)],
    ids=["250-data-uris", "80-frame-model"],
)
async def test_segments_never_hold_more_frames_than_the_service_takes(
    run: Run, ds: FakeDashScope, videos: dict[str, Path], model: str, clip: str, fps: float, most: int
) -> None:
    video = run.drop(videos[clip])
    _, doc = await run(video, {"model": model, "fps": fps, "dedup": False, "max_frames_per_segment": 768})
    counts = frame_counts(ds)
    assert max(counts) == most and sum(counts) == doc["frames_sent"]
    assert all(r.status == 200 for r in ds.requests())
    assert any(f"at most {most} frames" in w for w in doc["warnings"])


async def test_large_frames_are_split_under_the_request_body_cap(
    run: Run, ds: FakeDashScope, videos: dict[str, Path]
) -> None:
    video = run.drop(videos["noise"])
    await run(video, {"dedup": False})
    requests = ds.requests("multimodal")
    assert len(requests) >= 2 and sum(frame_counts(ds)) == 40
    assert all(r.status == 200 for r in requests)
    assert all(int(r.headers["content-length"]) <= SIX_MIB for r in requests)


# --- 6. billing as the service reports it: speech in seconds --------------------------------------


async def test_speech_recognition_is_billed_in_seconds_in_the_jobs_usage(
    run: Run, ds: FakeDashScope, videos: dict[str, Path]
) -> None:
    video = run.drop(videos["talk"])
    done, doc = await run(video, {"mode": "two_stage", "asr_chunk_seconds": 5})
    chunks = doc["asr"]["chunks"]
    assert len(chunks) == 2
    expected = sum(math.ceil(c["end"] - c["start"] - 1e-6) for c in chunks)
    assert done.usage["audio_seconds"] == doc["usage"]["audio_seconds"] == expected > 0
    asr = [r for r in ds.requests("multimodal") if r.json["model"] == "qwen3-asr-flash"]
    assert len(asr) == 2 and done.usage["output_tokens"] > 0


async def test_speech_chunks_fit_the_request_body(
    run: Run, ds: FakeDashScope, videos: dict[str, Path]
) -> None:
    asr = limits("qwen3-asr-flash")
    assert fit_chunk_seconds(30, asr) == 30 and fit_chunk_seconds(180, asr) * 1.25 * 32000 * 4 / 3 < SIX_MIB
    video = run.drop(videos["long_talk"])
    _, doc = await run(video, {"mode": "two_stage", "asr_chunk_seconds": 180, "fps": 0.1})
    assert all(r.status == 200 for r in ds.requests())
    assert len(doc["asr"]["chunks"]) == 2 and any("speech is sent in chunks" in w for w in doc["warnings"])


# --- 7. answers cut off by the budget or the 180 s cap ---------------------------------------------


async def test_an_answer_cut_at_its_budget_is_asked_again_with_more(
    run: Run, ds: FakeDashScope, videos: dict[str, Path]
) -> None:
    full = "river " * 599 + "river"  # 600 tokens
    ds.responder = lambda p: full
    video = run.drop(videos["twelve"])
    done, doc = await run(video, {"max_tokens": 200})
    budgets = [r.json["parameters"]["max_tokens"] for r in ds.requests("multimodal")]
    assert budgets == [200, 400, 800]
    assert doc["annotation"] == full and doc["segments"][0]["complete"] is True
    assert done.usage["requests"] == 3 and not run.notes  # all three were paid; the last one is used
    ds.reset()
    await run(video, {"max_tokens": 200})  # the complete answer was cached under the first request
    assert ds.count() == 0


async def test_an_answer_that_stays_cut_off_is_used_with_a_warning_and_never_cached(
    run: Run, ds: FakeDashScope, videos: dict[str, Path]
) -> None:
    ds.responder = lambda p: "river " * 9000  # 9,000 tokens: over qwen-vl-max's 8,192
    video = run.drop(videos["twelve"])
    _, doc = await run(video, {"max_tokens": 4000})
    assert [r.json["parameters"]["max_tokens"] for r in ds.requests("multimodal")] == [4000, 8000, 8192]
    assert doc["segments"][0]["complete"] is False
    assert any("incomplete" in w and "budget of 8192 tokens" in w for w in doc["warnings"])
    assert [k for k, m in run.notes if "incomplete" in m] == ["warning"]
    ds.reset()
    await run(video, {"max_tokens": 4000})
    assert ds.count("multimodal") == 3  # asked again: a cut-off answer is never final


async def test_a_call_cut_at_180_s_is_asked_again_streamed(
    run: Run, ds: FakeDashScope, videos: dict[str, Path]
) -> None:
    full = " ".join(f"slow{i}" for i in range(200))
    ds.responder = lambda p: full
    ds.answer_seconds = lambda p: 300.0
    video = run.drop(videos["twelve"])
    _, doc = await run(video)
    first, second = ds.requests("multimodal")
    assert "x-dashscope-sse" not in first.headers and second.headers["x-dashscope-sse"] == "enable"
    assert doc["annotation"] == full and doc["segments"][0]["complete"] is True


# --- 10. a malformed reply is a retryable error, not a crash ---------------------------------------


async def test_a_malformed_reply_fails_the_attempt_as_retryable(
    run: Run, ds: FakeDashScope, videos: dict[str, Path]
) -> None:
    ds.inject(Fault.body('{"output": {"choi'))
    video = run.drop(videos["twelve"])
    with pytest.raises(RetryableError) as info:
        await run(video)
    assert info.value.code == "MalformedResponse"
    _, doc = await run(video)  # the retry
    assert doc["annotation"]
