"""DashScope as the real service behaves (issue 11): the strict fake's limits, billing, partial and
stream-only answers, account errors, regions and malformed replies, each driven through the real
SDK by the provider."""

from __future__ import annotations

import io
import math
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from dropflow.daemon.core import config as cfgmod
from dropflow.daemon.core.config import DashScopeSettings, Providers, ProviderSettings
from dropflow.engine.errors import AuthError, ConfigError, PermanentError, RetryableError
from dropflow.engine.fakes import FakeDashScope, Fault
from dropflow.engine.fakes.answers import Prompt
from dropflow.engine.providers.base import AudioPart, ImagePart, TextPart, VideoPart, VisionRequest
from dropflow.engine.providers.dashscope_vision import DashScopeVision
from dropflow.engine.providers.dashscope_wire import BEIJING, SINGAPORE, base_url

# the SDK posts its JSON as one bytes object, and aiohttp warns above 1 MiB (a ResourceWarning,
# silent outside tests): requests this large are what these tests are about
pytestmark = pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")

KEY = "sk-limits-0123456789abcdef"
MM = "/services/aigc/multimodal-generation/generation"


def jpeg(w: int, h: int, seed: int = 0, *, noise: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    img = (
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if noise else np.full((h, w, 3), seed % 255, np.uint8)
    )
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def wav(seconds: float, rate: int = 16000, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x01" * width * int(rate * seconds))
    return buf.getvalue()


async def post_raw(ds: FakeDashScope, body: object, path: str = MM) -> httpx.Response:
    """The fake's own answer to `body`, as the wire carries it (the SDK hides some of it)."""
    async with httpx.AsyncClient() as client:
        return await client.post(ds.base_url + path, json=body, headers={"Authorization": f"Bearer {KEY}"})


def settings(url: str | None, **kw: object) -> ProviderSettings:
    return ProviderSettings.model_validate({"api_key": KEY, "base_url": url, "timeout_seconds": 10, **kw})


@pytest.fixture
def ds() -> Iterator[FakeDashScope]:
    with FakeDashScope(api_key=KEY) as srv:
        yield srv


@pytest.fixture
async def vision(ds: FakeDashScope) -> AsyncIterator[DashScopeVision]:
    provider = DashScopeVision(settings(ds.base_url))
    yield provider
    await provider.aclose()


def frames_request(model: str, frames: list[bytes], **kw: object) -> VisionRequest:
    return VisionRequest(
        model=model, parts=[VideoPart(frames=frames, fps=1.0), TextPart("what happens?")], **kw
    )


# --- 5. frames per request and request size: the fake refuses what the service refuses ------------


async def test_the_fake_refuses_frame_lists_data_uris_and_bodies_over_the_limits(
    ds: FakeDashScope, vision: DashScopeVision
) -> None:
    small = [jpeg(64, 48, i) for i in range(81)]
    with pytest.raises(PermanentError, match="4 to 80 images, got 81"):
        await vision.generate(frames_request("qwen-vl-v1", small))
    await vision.generate(frames_request("qwen-vl-v1", small[:80]))
    many = [jpeg(64, 48, i) for i in range(251)]
    with pytest.raises(PermanentError, match="Exceeded limit on max data-uri per request: 250"):
        await vision.generate(frames_request("qwen3-vl-plus", many))
    big = [jpeg(768, 432, i, noise=True) for i in range(40)]  # ~ 10 MB of base64
    with pytest.raises(PermanentError, match="Request body too large"):
        await vision.generate(frames_request("qwen-vl-max-latest", big))
    assert all(r.status == 400 for r in ds.requests("multimodal")[2:])


# --- 6. token accounting as the service counts ---------------------------------------------------


async def test_video_and_image_tokens_follow_the_frame_size_and_the_model_family(
    ds: FakeDashScope, vision: DashScopeVision
) -> None:
    frames = [jpeg(768, 432, i) for i in range(4)]
    plain = await vision.generate(frames_request("qwen-vl-max-latest", frames))
    # Qwen2.5-VL: 28 px per token, 432x768 -> 15x27 per pair of frames, +2 per video
    assert plain.usage.video_tokens == 2 * 15 * 27 + 2
    raw = await post_raw(ds, ds.last().json)
    assert raw.json()["usage"]["video_tokens"] == plain.usage.video_tokens
    newer = await vision.generate(frames_request("qwen3-vl-plus", frames))
    # Qwen3-VL: 32 px per token (432 rounds to 448): 14x24 per pair; reported under input_tokens_details
    assert newer.usage.video_tokens == 2 * 14 * 24 + 2
    raw = await post_raw(ds, ds.last().json)
    assert raw.json()["usage"]["input_tokens_details"]["video_tokens"] == newer.usage.video_tokens
    assert newer.usage.input_tokens > newer.usage.video_tokens
    image = await vision.generate(
        VisionRequest(model="qwen-vl-max-latest", parts=[ImagePart(data=jpeg(768, 432)), TextPart("hi")])
    )
    assert image.usage.image_tokens == 15 * 27 + 2


async def test_speech_recognition_usage_is_seconds_and_output_tokens(
    ds: FakeDashScope, vision: DashScopeVision
) -> None:
    result = await vision.generate(
        VisionRequest(
            model="qwen3-asr-flash", parts=[AudioPart(data=wav(7.2))], temperature=0.0, max_tokens=2000
        )
    )
    body = ds.last("multimodal")
    raw = (await post_raw(ds, body.json)).json()
    assert set(raw["usage"]) == {"input_tokens_details", "output_tokens_details", "seconds"}
    assert raw["output"]["choices"][0]["message"]["annotations"][0]["type"] == "audio_info"
    assert result.usage.audio_seconds == math.ceil(7.2) == raw["usage"]["seconds"]
    assert result.usage.output_tokens == raw["usage"]["output_tokens_details"]["text_tokens"] > 0
    assert result.usage.as_dict()["audio_seconds"] == 8


async def test_audio_over_five_minutes_is_refused(vision: DashScopeVision) -> None:
    with pytest.raises(PermanentError, match="too long"):
        # 8 kHz 8-bit: five minutes still fit the request body
        await vision.generate(
            VisionRequest(model="qwen3-asr-flash", parts=[AudioPart(data=wav(301, 8000, 1))])
        )


# --- 7. partial and truncated answers; client timeout above the 180 s call cap --------------------


async def test_budget_and_180_s_cuts_are_reported_as_incomplete(
    ds: FakeDashScope, vision: DashScopeVision
) -> None:
    ds.responder = lambda p: " ".join(f"word{i}" for i in range(400))
    frames = [jpeg(64, 48, i) for i in range(4)]
    short = await vision.generate(frames_request("qwen-vl-max-latest", frames, max_tokens=50))
    assert short.finish_reason == "length" and not short.complete and not short.partial
    ds.answer_seconds = lambda p: 400.0
    cut = await vision.generate(frames_request("qwen-vl-max-latest", frames))
    assert cut.partial and not cut.complete and len(cut.text) < len(ds.responder(Prompt()))
    assert ds.last().status == 200
    streamed = await vision.generate(frames_request("qwen-vl-max-latest", frames, stream=True))
    assert streamed.complete and streamed.text == ds.responder(Prompt())
    assert ds.last().headers["x-dashscope-sse"] == "enable"


async def test_a_budget_over_the_models_output_limit_is_asked_as_the_limit(
    ds: FakeDashScope, vision: DashScopeVision
) -> None:
    frames = [jpeg(64, 48, i) for i in range(4)]
    await vision.generate(frames_request("qwen-vl-max-latest", frames, max_tokens=20000))
    assert ds.last().json["parameters"]["max_tokens"] == 8192
    raw = dict(ds.last().json)
    raw["parameters"] = {"max_tokens": 20000}
    r = await post_raw(ds, raw)
    assert (r.status_code, r.json()["message"]) == (400, "Range of max_tokens should be [1, 8192]")


def test_dashscope_calls_may_run_past_the_180_s_cap(tmp_path: Path) -> None:
    assert Providers().dashscope.timeout_seconds > 180
    path = tmp_path / "config.yaml"
    path.write_text("providers:\n  dashscope: {api_key: k}\n")
    assert cfgmod.load(path).providers.dashscope.timeout_seconds > 180


# --- 8. stream-only models -----------------------------------------------------------------------


async def test_stream_only_models_are_called_streaming(ds: FakeDashScope, vision: DashScopeVision) -> None:
    frames = [jpeg(64, 48, i) for i in range(4)]
    body = {
        "model": "qvq-max",
        "input": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
        "parameters": {},
    }
    r = await post_raw(ds, body)
    assert r.status_code == 400 and "only support stream mode" in r.json()["message"]
    seen = await vision.generate(frames_request("qvq-max", frames))
    assert seen.complete and "4 frame(s)" in seen.text and seen.usage.output_tokens > 0
    assert ds.last("multimodal").headers["x-dashscope-sse"] == "enable"
    text = await vision.generate(VisionRequest(model="qwq-plus", parts=[TextPart("think about it")]))
    assert text.model == "qwq-plus" and "think about it" in text.text and text.finish_reason == "stop"
    assert ds.last("text").headers["x-dashscope-sse"] == "enable"


# --- 9. errors that tell the truth; region-bound keys ---------------------------------------------


async def test_quota_and_arrears_are_not_an_invalid_key(ds: FakeDashScope, vision: DashScopeVision) -> None:
    request = frames_request("qwen-vl-max-latest", [jpeg(64, 48, i) for i in range(4)])
    cases = [
        (403, "AllocationQuota.FreeTierOnly", "free quota", "use free quota only"),
        (400, "Arrearage", "arrears", "top up"),
        (403, "AccessDenied", "denied access", "region and workspace"),
    ]
    for status, code, said, fix in cases:
        ds.inject(Fault.error(status, code, "The free tier of the model has been exhausted."))
        with pytest.raises(PermanentError) as info:
            await vision.generate(request)
        assert not isinstance(info.value, AuthError), code
        assert info.value.code == code and said in info.value.message and fix in info.value.hint
        assert "invalid API key" not in info.value.message
    ds.inject(Fault.error(401, "InvalidApiKey", "Invalid API-key provided."))
    with pytest.raises(AuthError) as bad:
        await vision.generate(request)
    assert "invalid API key" in bad.value.message and "region-bound" in bad.value.hint


def test_the_key_region_picks_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_API_REGION", "DASHSCOPE_WORKSPACE_ID"):
        monkeypatch.delenv(var, raising=False)
    assert base_url(DashScopeSettings()) == BEIJING
    assert base_url(DashScopeSettings(region="singapore")) == SINGAPORE
    assert base_url(DashScopeSettings(region="us-east-1", workspace="ws1")) == (
        "https://ws1.us-east-1.maas.aliyuncs.com/api/v1"
    )
    with pytest.raises(ConfigError, match="workspace"):
        base_url(DashScopeSettings(region="eu-central-1"))
    # the SDK's own variables, as its common/env.py reads them
    env = {"DASHSCOPE_API_REGION": "ap-southeast-1", "DASHSCOPE_WORKSPACE_ID": "ws2"}
    assert base_url(DashScopeSettings(), env) == "https://ws2.ap-southeast-1.maas.aliyuncs.com/api/v1"
    assert base_url(DashScopeSettings(), {"DASHSCOPE_HTTP_BASE_URL": "http://h/api/v1/"}) == "http://h/api/v1"
    assert (
        base_url(DashScopeSettings(base_url="http://x/api/v1", region="singapore"), env) == "http://x/api/v1"
    )


def test_an_unknown_region_names_the_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("providers:\n  dashscope:\n    region: mars\n")
    with pytest.raises(ConfigError, match=r"config.yaml:3: providers.dashscope.region"):
        cfgmod.load(path)


async def test_without_a_base_url_the_sdks_variable_is_honoured(
    ds: FakeDashScope, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", ds.base_url)
    provider = DashScopeVision(settings(None))
    try:
        result = await provider.generate(VisionRequest(model="qwen-plus", parts=[TextPart("hello")]))
    finally:
        await provider.aclose()
    assert result.request_id == ds.last("text").request_id


async def test_a_workspace_is_sent_with_every_call(ds: FakeDashScope) -> None:
    provider = DashScopeVision(DashScopeSettings(api_key=KEY, base_url=ds.base_url, workspace="ws-7"))
    try:
        await provider.generate(VisionRequest(model="qwen-plus", parts=[TextPart("hello")]))
    finally:
        await provider.aclose()
    assert ds.last("text").headers["x-dashscope-workspace"] == "ws-7"


# --- 10. malformed replies are retryable ---------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault.body(""),
        Fault.body('{"output": {"choices": [{"finish_re'),
        Fault.body("[]"),
        Fault.body('{"request_id": "x"}'),
        Fault.body("<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
        Fault.body('{"message": "no code"}', status=400),
        Fault.cut(),
    ],
    ids=["empty", "truncated", "not-an-object", "no-output", "html-200", "error-without-code", "reset"],
)
async def test_malformed_replies_are_retryable(
    ds: FakeDashScope, vision: DashScopeVision, fault: Fault
) -> None:
    for request in (
        frames_request("qwen-vl-max-latest", [jpeg(64, 48, i) for i in range(4)]),
        VisionRequest(model="qwen-max", parts=[TextPart("summarise")]),
    ):
        ds.inject(fault)
        with pytest.raises(RetryableError) as info:
            await vision.generate(request)
        assert info.value.code in ("MalformedResponse", "ClientPayloadError"), info.value.code
        assert ds.pending_faults() == 0
        await vision.generate(request)  # and the next call is fine
