"""Each provider through its real client (dashscope SDK, httpx) against its loopback fake."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from dropflow.daemon.core.config import OfflineSettings, Providers, ProviderSettings
from dropflow.engine.errors import AuthError, ConfigError, PermanentError, RetryableError
from dropflow.engine.fakes import FakeAnthropic, FakeDashScope, FakeOpenAI, Fault
from dropflow.engine.providers import (
    OFFLINE_ANNOUNCEMENT,
    ProviderPool,
    build_videogen,
    build_vision,
    resolve_default,
)
from dropflow.engine.providers.anthropic import AnthropicVision
from dropflow.engine.providers.base import (
    ImagePart,
    RateLimiter,
    TextPart,
    VideoGenProvider,
    VideoGenRequest,
    VideoPart,
    VisionProvider,
    VisionRequest,
)
from dropflow.engine.providers.dashscope import DashScopeVideoGen, DashScopeVision
from dropflow.engine.providers.offline import OfflineVideoGen, OfflineVision
from dropflow.engine.providers.openai_compat import OpenAICompatVision

KEY = "sk-test-5f1e2d3c4b5a69788796a5b4"
FRAMES = [b"\xff\xd8frame-one", b"\xff\xd8frame-two", b"\xff\xd8frame-three"]
JPEG = b"\xff\xd8\xff\xe0not-really-a-jpeg"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def settings(base_url: str, key: str = KEY, **kw: object) -> ProviderSettings:
    return ProviderSettings.model_validate(
        {"api_key": key, "base_url": base_url, "timeout_seconds": 10, **kw}
    )


def video_request(**kw: object) -> VisionRequest:
    parts = [VideoPart(frames=FRAMES, fps=2.0), TextPart("What happens in this clip?")]
    return VisionRequest(model="qwen-vl-max-latest", parts=parts, system="You annotate videos.", **kw)


def assert_no_key(exc: BaseException) -> None:
    blob = f"{exc} {exc!r} {getattr(exc, 'hint', '')} {getattr(exc, 'payload', dict)()}"
    assert KEY not in blob and KEY[:8] not in blob and KEY[-8:] not in blob


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


# --- DashScope: vision ---------------------------------------------------------------------------


@pytest.fixture
def ds() -> Iterator[FakeDashScope]:
    with FakeDashScope(api_key=KEY, pending_seconds=0, running_seconds=0) as srv:
        yield srv


@pytest.fixture
async def ds_vision(ds: FakeDashScope) -> AsyncIterator[DashScopeVision]:
    provider = DashScopeVision(settings(ds.base_url))
    yield provider
    await provider.aclose()


async def test_dashscope_sends_frames_fps_parameters_and_system(
    ds: FakeDashScope, ds_vision: DashScopeVision
) -> None:
    result = await ds_vision.generate(video_request(temperature=0.2, max_tokens=321))
    body = ds.last("multimodal").json
    assert body["model"] == "qwen-vl-max-latest"
    assert body["parameters"]["temperature"] == 0.2 and body["parameters"]["max_tokens"] == 321
    system, user = body["input"]["messages"]
    assert system == {"role": "system", "content": [{"text": "You annotate videos."}]}
    video, text = user["content"]
    assert video["fps"] == 2.0
    assert video["video"][0] == "data:image/jpeg;base64," + base64.b64encode(FRAMES[0]).decode()
    assert len(video["video"]) == 4  # three frames, one repeated: a frame list holds at least 4
    assert text == {"text": "What happens in this clip?"}
    assert "4 frame(s) at 2 fps" in result.text
    assert result.usage.video_tokens == 4 * 64 and result.usage.image_tokens == 0  # stand-in bytes
    assert result.usage.input_tokens > result.usage.video_tokens and result.usage.output_tokens > 0
    assert result.request_id == ds.last().request_id and result.provider == "dashscope" and not result.offline


async def test_dashscope_images_and_json_mode(ds: FakeDashScope, ds_vision: DashScopeVision) -> None:
    request = VisionRequest(
        model="qwen-vl-plus-latest",
        parts=[ImagePart(data=JPEG), ImagePart(url="https://example.com/a.jpg"), TextPart("caption")],
        json_mode=True,
    )
    result = await ds_vision.generate(request)
    content = ds.last("multimodal").json["input"]["messages"][0]["content"]
    assert content[0]["image"].startswith("data:image/jpeg;base64,")
    assert content[1] == {"image": "https://example.com/a.jpg"}
    assert ds.last().json["parameters"]["response_format"] == {"type": "json_object"}
    assert json.loads(result.text)["images"] == 2
    assert result.usage.image_tokens == 2 * 256


async def test_dashscope_text_only_goes_to_a_text_model(
    ds: FakeDashScope, ds_vision: DashScopeVision
) -> None:
    result = await ds_vision.generate(
        VisionRequest(model="qwen-vl-max-latest", parts=[TextPart("Summarise: a, b")], system="Be brief.")
    )
    body = ds.last("text").json
    assert body["model"] == "qwen-plus"  # a VL model name is swapped for the text model
    assert body["parameters"]["result_format"] == "message"
    assert body["input"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarise: a, b"},
    ]
    assert result.model == "qwen-plus" and "Summarise" in result.text
    assert ds.count("multimodal") == 0


async def test_dashscope_rate_limit_is_retryable() -> None:
    with FakeDashScope(api_key=KEY, rate_limit=1, rate_window=60) as srv:
        provider = DashScopeVision(settings(srv.base_url))
        try:
            await provider.generate(video_request())
            with pytest.raises(RetryableError) as info:
                await provider.generate(video_request())
        finally:
            await provider.aclose()
    assert info.value.code == "Throttling.RateQuota" and info.value.status == 429
    assert info.value.retry_after is None  # the fake, like DashScope, sends no Retry-After
    assert info.value.request_id


async def test_dashscope_wrong_key_is_an_auth_error_without_the_key(ds: FakeDashScope) -> None:
    wrong = "sk-wrong-aaaabbbbccccddddeeee"
    provider = DashScopeVision(settings(ds.base_url, key=wrong))
    try:
        with pytest.raises(AuthError) as info:
            await provider.generate(video_request())
    finally:
        await provider.aclose()
    assert "DASHSCOPE_API_KEY" in str(info.value) and info.value.code == "InvalidApiKey"
    assert wrong not in f"{info.value!r} {info.value.hint} {info.value.payload()}"


async def test_dashscope_moderation_is_permanent_with_code(
    ds: FakeDashScope, ds_vision: DashScopeVision
) -> None:
    ds.inject(Fault.error(400, "DataInspectionFailed", "Input data may contain inappropriate content."))
    with pytest.raises(PermanentError) as info:
        await ds_vision.generate(video_request())
    assert not isinstance(info.value, AuthError)
    assert info.value.code == "DataInspectionFailed" and "moderation" in info.value.message
    assert_no_key(info.value)


async def test_dashscope_html_500_and_dropped_connection_are_retryable(
    ds: FakeDashScope, ds_vision: DashScopeVision
) -> None:
    ds.inject(Fault.html(500))
    with pytest.raises(RetryableError) as info:
        await ds_vision.generate(video_request())
    assert info.value.code == "Unknown" and info.value.status == 500
    # the SDK resends once on a dropped pooled connection, so it takes two drops to surface one
    ds.inject(Fault.drop(), times=2)
    with pytest.raises(RetryableError):
        await ds_vision.generate(video_request())
    assert ds.pending_faults() == 0
    assert ds.count("multimodal") == 3


async def test_dashscope_timeout_is_retryable(ds: FakeDashScope) -> None:
    provider = DashScopeVision(settings(ds.base_url, timeout_seconds=0.5))
    ds.inject(Fault.stall(5))
    try:
        with pytest.raises(RetryableError) as info:
            await provider.generate(video_request())
    finally:
        await provider.aclose()
    assert "timed out" in info.value.message


async def test_dashscope_fake_sse_stream_works_with_the_sdk(
    ds: FakeDashScope, ds_vision: DashScopeVision
) -> None:
    import dashscope
    from dashscope.api_entities.aio_session import close_shared_aio_session

    plain = await ds_vision.generate(video_request())
    messages = DashScopeVision.messages(video_request())
    dashscope.base_http_api_url = ds.base_url
    stream = await dashscope.AioMultiModalConversation.call(
        model="qwen-vl-max-latest", messages=messages, api_key=KEY, stream=True, incremental_output=True
    )
    chunks = [c async for c in stream]  # type: ignore[union-attr]
    await close_shared_aio_session()
    text = "".join(c.output.choices[0].message.content[0]["text"] for c in chunks)
    assert len(chunks) == 2 and text == plain.text


# --- DashScope: video synthesis ------------------------------------------------------------------


@pytest.fixture
async def ds_video(ds: FakeDashScope) -> AsyncIterator[DashScopeVideoGen]:
    provider = DashScopeVideoGen(settings(ds.base_url))
    yield provider
    await provider.aclose()


async def test_dashscope_t2v_submit_fetch_succeeded(ds: FakeDashScope, ds_video: DashScopeVideoGen) -> None:
    task = await ds_video.submit(
        VideoGenRequest(
            model="wan2.1-t2v-turbo", prompt="a red fox in snow", size="1280*720", duration=5, seed=7
        )
    )
    assert task.status == "PENDING" and task.task_id
    rec = ds.last("video_synthesis")
    assert rec.headers["x-dashscope-async"] == "enable"
    assert rec.json["input"]["prompt"] == "a red fox in snow"
    assert rec.json["parameters"] == {"size": "1280*720", "duration": 5, "seed": 7}
    done = await ds_video.fetch(task.task_id)
    assert done.status == "SUCCEEDED" and done.done
    assert done.usage["video_count"] == 1 and done.orig_prompt == "a red fox in snow"
    assert done.video_url is not None
    async with httpx.AsyncClient() as client:
        video = await client.get(done.video_url)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert ds.count("video_synthesis") == 1  # submitted exactly once


async def test_dashscope_failed_and_unknown_tasks(ds: FakeDashScope, ds_video: DashScopeVideoGen) -> None:
    ds.fail_next_tasks(1, code="InternalError.Algo", message="Video generation failed.")
    task = await ds_video.submit(VideoGenRequest(model="wan2.1-t2v-turbo", prompt="x"))
    failed = await ds_video.fetch(task.task_id)
    assert (failed.status, failed.code, failed.message) == (
        "FAILED",
        "InternalError.Algo",
        "Video generation failed.",
    )
    unknown = await ds_video.fetch("0000-no-such-task")
    assert unknown.status == "UNKNOWN" and unknown.task_id == "0000-no-such-task"


async def test_dashscope_cancel_only_while_pending() -> None:
    clock = Clock()
    with FakeDashScope(api_key=KEY, pending_seconds=10, running_seconds=60, clock=clock) as srv:
        provider = DashScopeVideoGen(settings(srv.base_url))
        try:
            pending = await provider.submit(VideoGenRequest(model="wan2.1-t2v-turbo", prompt="a"))
            assert await provider.cancel(pending.task_id) is True
            assert (await provider.fetch(pending.task_id)).status == "CANCELED"
            running = await provider.submit(VideoGenRequest(model="wan2.1-t2v-turbo", prompt="b"))
            clock.now += 15
            assert (await provider.fetch(running.task_id)).status == "RUNNING"
            assert await provider.cancel(running.task_id) is False
            assert srv.count("task_cancel") == 2
        finally:
            await provider.aclose()


async def test_dashscope_i2v_uploads_the_local_image(
    ds: FakeDashScope, ds_video: DashScopeVideoGen, tmp_path: Path
) -> None:
    image = tmp_path / "start frame.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"pixels" * 50)
    task = await ds_video.submit(
        VideoGenRequest(model="wan2.2-i2v-plus", prompt="make it move", image=str(image), resolution="480P")
    )
    assert task.status == "PENDING"
    assert ds.count("upload_policy") == 1 and ds.last("upload_policy").query["model"] == "wan2.2-i2v-plus"
    (key, data), *_ = ds.uploads.items()
    assert data == image.read_bytes() and key.endswith("/start frame.png")
    upload = ds.last("oss_upload")
    assert "authorization" not in upload.headers  # the OSS form post carries no Bearer key
    assert upload.form["file"]["size"] == len(data) and upload.form["x-oss-content-type"] == "image/png"
    create = ds.last("video_synthesis")
    assert create.json["input"]["img_url"] == f"oss://{key}"
    assert create.headers["x-dashscope-ossresourceresolve"] == "enable"
    assert create.json["parameters"]["resolution"] == "480P"


async def test_dashscope_video_errors_are_mapped(ds: FakeDashScope, ds_video: DashScopeVideoGen) -> None:
    ds.inject(Fault.error(401))
    with pytest.raises(AuthError) as auth:
        await ds_video.submit(VideoGenRequest(model="wan2.1-t2v-turbo", prompt="a"))
    assert_no_key(auth.value)
    ds.inject(Fault.error(429, "Throttling.AllocationQuota", endpoint="task_get"))
    with pytest.raises(RetryableError):
        await ds_video.fetch("any")
    ds.inject(Fault.error(400, "InvalidParameter", "size is not supported"))
    with pytest.raises(PermanentError) as bad:
        await ds_video.submit(VideoGenRequest(model="wan2.1-t2v-turbo", prompt="a", size="1*1"))
    assert bad.value.code == "InvalidParameter" and "size is not supported" in bad.value.message
    assert ds.tasks == {}  # nothing was created by the failed submissions


async def test_dashscope_create_call_is_never_resent_behind_our_back(
    ds: FakeDashScope, ds_video: DashScopeVideoGen
) -> None:
    # a vision request dropped once is silently resent by the SDK; a create call is not: its
    # outcome is unknown, and the error says so (the video-gen engine then refuses to resubmit)
    ds.inject(Fault.drop(endpoint="video_synthesis"))
    with pytest.raises(RetryableError) as lost:
        await ds_video.submit(VideoGenRequest(model="wan2.1-t2v-turbo", prompt="a"))
    assert lost.value.code == "CreateOutcomeUnknown" and ds.count("video_synthesis") == 1
    # each create uses a connection of its own: no stale pooled connection to drop the next one
    await ds_video.submit(VideoGenRequest(model="wan2.1-t2v-turbo", prompt="b"))
    await ds_video.submit(VideoGenRequest(model="wan2.1-t2v-turbo", prompt="c"))
    creates = ds.requests("video_synthesis")
    assert all(r.headers.get("connection", "").lower() == "close" for r in creates)
    assert len(ds.tasks) == 2


async def test_dashscope_create_call_that_cannot_connect_is_safe_to_repeat() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1"
    provider = DashScopeVideoGen(settings(url))
    try:
        with pytest.raises(RetryableError) as refused:
            await provider.submit(VideoGenRequest(model="wan2.1-t2v-turbo", prompt="a"))
    finally:
        await provider.aclose()
    assert refused.value.code.startswith("ClientConnector")  # the engine resubmits only these


async def test_dashscope_calls_go_through_the_proxy_the_environment_names(
    ds: FakeDashScope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY and NO_PROXY are honoured as the SDK's own session would (read once, not per
    request). The fake stands in for the proxy: a host that does not resolve is reached through it."""
    monkeypatch.setenv("HTTP_PROXY", ds.base_url.rsplit("/api/", 1)[0])
    for proxy_var in ("http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy_var, raising=False)
    provider = DashScopeVision(settings("http://dashscope.invalid/api/v1"))
    try:
        result = await provider.generate(video_request())
    finally:
        await provider.aclose()
    assert result.text and ds.count("multimodal") == 1
    assert ds.last("multimodal").headers["host"] == "dashscope.invalid"

    for no_proxy in ("NO_PROXY", "no_proxy"):  # bypassed: the name must resolve, and can't
        monkeypatch.setenv(no_proxy, "dashscope.invalid")
    provider = DashScopeVision(settings("http://dashscope.invalid/api/v1"))
    try:
        with pytest.raises(RetryableError) as direct:
            await provider.generate(video_request())
    finally:
        await provider.aclose()
    assert direct.value.code.startswith("ClientConnector") and ds.count("multimodal") == 1


# --- OpenAI-compatible ---------------------------------------------------------------------------


@pytest.fixture
def oa() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as srv:
        yield srv


@pytest.fixture
async def oa_vision(oa: FakeOpenAI) -> AsyncIterator[OpenAICompatVision]:
    provider = OpenAICompatVision(settings(oa.base_url))
    yield provider
    await provider.aclose()


async def test_openai_parts_json_mode_and_usage(oa: FakeOpenAI, oa_vision: OpenAICompatVision) -> None:
    request = VisionRequest(
        model="qwen-vl-max-latest",
        parts=[ImagePart(data=JPEG), VideoPart(frames=FRAMES, fps=1.5), TextPart("describe")],
        system="sys prompt",
        json_mode=True,
    )
    result = await oa_vision.generate(request)
    rec = oa.last("chat")
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    body = rec.json
    assert body["messages"][0] == {"role": "system", "content": "sys prompt"}
    image, video, text = body["messages"][1]["content"]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert video["type"] == "video" and len(video["video"]) == 3 and video["fps"] == 1.5
    assert text == {"type": "text", "text": "describe"}
    assert body["response_format"] == {"type": "json_object"}
    assert json.loads(result.text)["frames"] == 3
    assert result.usage.image_tokens == 256 and result.usage.video_tokens == 3 * 64
    assert result.request_id == rec.request_id  # from the x-request-id header


async def test_openai_frames_as_images_flag(oa: FakeOpenAI) -> None:
    provider = OpenAICompatVision(settings(oa.base_url), video_as_frames=False)
    try:
        await provider.generate(video_request())
    finally:
        await provider.aclose()
    content = oa.last("chat").json["messages"][1]["content"]
    assert [p["type"] for p in content] == ["image_url"] * 3 + ["text"]


async def test_openai_429_honours_retry_after(oa: FakeOpenAI, oa_vision: OpenAICompatVision) -> None:
    oa.inject(Fault.error(429, retry_after=2.5))
    with pytest.raises(RetryableError) as info:
        await oa_vision.generate(video_request())
    assert info.value.retry_after == 2.5 and info.value.code == "rate_limit_exceeded"


async def test_openai_401_never_echoes_the_key(oa: FakeOpenAI, oa_vision: OpenAICompatVision) -> None:
    # real servers echo a masked key in the message; our error must not carry any of it
    oa.inject(Fault.error(401, "invalid_api_key", f"Incorrect API key provided: {KEY[:8]}***{KEY[-8:]}"))
    with pytest.raises(AuthError) as info:
        await oa_vision.generate(video_request())
    assert "OPENAI_API_KEY" in info.value.message
    assert_no_key(info.value)


async def test_openai_errors_map_to_kinds(oa: FakeOpenAI, oa_vision: OpenAICompatVision) -> None:
    oa.inject(Fault.error(400, "data_inspection_failed", "Input data may contain inappropriate content."))
    with pytest.raises(PermanentError) as moderated:
        await oa_vision.generate(video_request())
    assert moderated.value.code == "data_inspection_failed"
    oa.inject(Fault.html(500))
    with pytest.raises(RetryableError) as html:
        await oa_vision.generate(video_request())
    assert html.value.code == "Unknown"
    oa.inject(Fault.drop())
    with pytest.raises(RetryableError):
        await oa_vision.generate(video_request())
    assert oa.count("chat") == 3


# --- Anthropic -----------------------------------------------------------------------------------


@pytest.fixture
def an() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as srv:
        yield srv


@pytest.fixture
async def an_vision(an: FakeAnthropic) -> AsyncIterator[AnthropicVision]:
    provider = AnthropicVision(settings(an.base_url))
    yield provider
    await provider.aclose()


async def test_anthropic_blocks_and_headers(an: FakeAnthropic, an_vision: AnthropicVision) -> None:
    request = VisionRequest(
        model="claude-sonnet-4",
        parts=[ImagePart(data=JPEG), VideoPart(frames=FRAMES[:2], fps=1.0), TextPart("hi")],
    )
    result = await an_vision.generate(VisionRequest(**{**vars(request), "system": "be terse"}))
    rec = an.last("messages")
    assert rec.headers["x-api-key"] == KEY and rec.headers["anthropic-version"]
    assert "authorization" not in rec.headers
    body = rec.json
    assert body["system"] == "be terse" and body["max_tokens"] == 4000
    blocks = body["messages"][0]["content"]
    assert blocks[0] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": base64.b64encode(JPEG).decode()},
    }
    assert blocks[1]["type"] == "text" and "2 video frames" in blocks[1]["text"]
    assert [b["type"] for b in blocks[2:]] == ["image", "image", "text"]
    assert "3 image(s)" in result.text
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.request_id == rec.request_id and result.finish_reason == "end_turn"


async def test_anthropic_overloaded_rate_limited_and_auth(
    an: FakeAnthropic, an_vision: AnthropicVision
) -> None:
    an.inject(Fault.error(529))
    with pytest.raises(RetryableError) as overloaded:
        await an_vision.generate(video_request())
    assert overloaded.value.code == "overloaded_error" and overloaded.value.status == 529
    an.inject(Fault.error(429, retry_after=7))
    with pytest.raises(RetryableError) as limited:
        await an_vision.generate(video_request())
    assert limited.value.retry_after == 7
    an.inject(Fault.error(401))
    with pytest.raises(AuthError) as auth:
        await an_vision.generate(video_request())
    assert "ANTHROPIC_API_KEY" in auth.value.message
    assert_no_key(auth.value)


# --- offline -------------------------------------------------------------------------------------


async def test_offline_vision_is_deterministic_and_marked() -> None:
    provider = OfflineVision(OfflineSettings())
    a = await provider.generate(video_request())
    b = await provider.generate(video_request())
    c = await provider.generate(VisionRequest(model="m", parts=[VideoPart(frames=FRAMES[:1], fps=2.0)]))
    assert a == b and a.text != c.text
    assert a.offline and a.provider == "offline" and "offline placeholder" in a.text
    assert "3 frame(s)" in a.text and a.usage.video_tokens == 3 * 64
    as_json = await provider.generate(video_request(json_mode=True))
    assert json.loads(as_json.text)["offline"] is True
    assert isinstance(provider, VisionProvider)


async def test_offline_videogen_timeline_restart_and_cancel(tmp_path: Path) -> None:
    clock = Clock()
    cfg = OfflineSettings(video_seconds=10)
    gen = OfflineVideoGen(cfg, cache_dir=tmp_path, clock=clock)
    assert isinstance(gen, VideoGenProvider)
    task = await gen.submit(VideoGenRequest(model="wan2.1-t2v-turbo", prompt="a lighthouse at dusk"))
    assert task.task_id.startswith("offline-") and task.status == "PENDING"
    assert (await gen.fetch(task.task_id)).status == "PENDING"
    clock.now += 5
    assert (await gen.fetch(task.task_id)).status == "RUNNING"
    assert await gen.cancel(task.task_id) is False  # only while pending
    clock.now += 6
    # a new instance (a restarted daemon) resumes the same task from its id and the cache
    restarted = OfflineVideoGen(cfg, cache_dir=tmp_path, clock=clock)
    done = await restarted.fetch(task.task_id)
    assert done.status == "SUCCEEDED" and done.video_url and done.video_url.startswith("file://")
    video = Path(done.video_url.removeprefix("file://"))
    data = await asyncio.to_thread(video.read_bytes)
    assert data[4:8] == b"ftyp" and done.orig_prompt == "a lighthouse at dusk"
    again = await restarted.fetch(task.task_id)
    assert again.video_url == done.video_url
    assert await asyncio.to_thread(video.read_bytes) == data  # rendered once, reused

    other = await gen.submit(VideoGenRequest(model="wan2.1-t2v-turbo", prompt="second"))
    assert other.task_id != task.task_id
    assert await gen.cancel(other.task_id) is True
    assert (await restarted.fetch(other.task_id)).status == "CANCELED"
    assert (await gen.fetch("offline-0000000000000-abcdef0123")).status == "UNKNOWN"
    assert (await gen.fetch("not-an-offline-id")).status == "UNKNOWN"


# --- factory -------------------------------------------------------------------------------------


def test_resolve_default(monkeypatch: pytest.MonkeyPatch) -> None:
    name, note = resolve_default(Providers())
    assert (name, note) == ("offline", OFFLINE_ANNOUNCEMENT) and "DASHSCOPE_API_KEY" in OFFLINE_ANNOUNCEMENT
    with_key = Providers.model_validate({"dashscope": {"api_key": KEY}})
    assert resolve_default(with_key) == ("dashscope", None)
    assert resolve_default(Providers(default="openai")) == ("openai", None)


async def test_build_providers(tmp_path: Path) -> None:
    assert isinstance(build_vision("auto", Providers(), state_dir=tmp_path), OfflineVision)
    assert isinstance(build_videogen("offline", Providers(), state_dir=tmp_path), OfflineVideoGen)
    with pytest.raises(AuthError) as missing:
        build_vision("dashscope", Providers(), state_dir=tmp_path)
    assert "DASHSCOPE_API_KEY" in missing.value.message
    with pytest.raises(AuthError, match="ANTHROPIC_API_KEY"):
        build_vision("anthropic", Providers(), state_dir=tmp_path)
    with pytest.raises(ConfigError):
        build_videogen("openai", Providers(), state_dir=tmp_path)
    keyed = Providers.model_validate(
        {"default": "auto", "dashscope": {"api_key": KEY}, "openai": {"api_key": KEY}}
    )
    pool = ProviderPool(keyed, state_dir=tmp_path)
    vision = pool.vision()
    assert isinstance(vision, DashScopeVision) and pool.vision("dashscope") is vision  # one shared instance
    assert isinstance(pool.videogen(), DashScopeVideoGen)
    assert isinstance(pool.vision("openai"), OpenAICompatVision)
    await pool.aclose()


# --- rate limiting -------------------------------------------------------------------------------


async def test_provider_concurrency_cap_is_enforced_at_the_server() -> None:
    with FakeOpenAI(api_key=KEY, latency=0.2) as srv:
        provider = OpenAICompatVision(settings(srv.base_url, concurrency=2))
        try:
            await asyncio.gather(*(provider.generate(video_request()) for _ in range(6)))
        finally:
            await provider.aclose()
        assert srv.count("chat") == 6
        assert srv.max_in_flight == 2


async def test_rate_limiter_paces_requests() -> None:
    limiter = RateLimiter(requests_per_minute=120)  # 2 per second, a burst of at most 2
    stamps: list[float] = []
    start = time.monotonic()

    async def one() -> None:
        async with limiter:
            stamps.append(time.monotonic() - start)

    await asyncio.gather(*(one() for _ in range(4)))
    stamps.sort()
    assert len(stamps) == 4
    # the third and fourth must wait for tokens: lower bounds only, so a slow machine cannot flake
    assert stamps[2] >= 0.4 and stamps[3] >= 0.9
