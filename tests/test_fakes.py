"""The loopback fakes themselves: wire shapes, faults, rate limits, the request log, the task timeline."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from dropflow.engine.fakes import FakeAnthropic, FakeDashScope, FakeOpenAI, Fault
from dropflow.engine.fakes.answers import Prompt, default_answer

KEY = "sk-fake-0123456789abcdef"
MM = "/services/aigc/multimodal-generation/generation"
SYNTH = "/services/aigc/video-generation/video-synthesis"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ds(clock: Clock) -> Iterator[FakeDashScope]:
    with FakeDashScope(api_key=KEY, pending_seconds=10, running_seconds=20, clock=clock) as srv:
        yield srv


def ds_headers(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}", **extra}


def mm_body(text: str = "describe", frames: int = 4) -> dict[str, object]:  # a frame list holds 4+
    return {
        "model": "qwen-vl-max-latest",
        "input": {
            "messages": [
                {
                    "role": "user",
                    "content": [{"video": ["data:image/jpeg;base64,AA"] * frames, "fps": 2}, {"text": text}],
                }
            ]
        },
        "parameters": {},
    }


def test_dashscope_rejects_a_wrong_key_with_its_error_shape(ds: FakeDashScope) -> None:
    r = httpx.post(ds.base_url + MM, json=mm_body(), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["code"] == "InvalidApiKey"
    assert body["request_id"] == r.headers["X-Request-ID"]
    assert ds.count("multimodal") == 1


def test_dashscope_answer_is_deterministic_and_counts_frames(ds: FakeDashScope) -> None:
    a = httpx.post(ds.base_url + MM, json=mm_body(frames=5), headers=ds_headers()).json()
    b = httpx.post(ds.base_url + MM, json=mm_body(frames=5), headers=ds_headers()).json()
    c = httpx.post(ds.base_url + MM, json=mm_body("other", frames=5), headers=ds_headers()).json()
    text = a["output"]["choices"][0]["message"]["content"][0]["text"]
    assert text == b["output"]["choices"][0]["message"]["content"][0]["text"]
    assert text != c["output"]["choices"][0]["message"]["content"][0]["text"]
    assert "5 frame(s) at 2 fps" in text
    assert a["usage"]["video_tokens"] == 5 * 64  # stand-in bytes, no image: a flat rate per frame
    assert "image_tokens" not in a["usage"]


def test_request_log_records_bodies_headers_and_counts(ds: FakeDashScope) -> None:
    httpx.post(ds.base_url + MM, json=mm_body("hello"), headers=ds_headers(**{"X-Custom": "1"}))
    rec = ds.last("multimodal")
    assert rec.method == "POST" and rec.path == "/api/v1" + MM
    assert rec.headers["x-custom"] == "1"
    assert rec.json["input"]["messages"][0]["content"][1] == {"text": "hello"}
    assert rec.status == 200
    assert ds.counts() == {"multimodal": 1}


def test_faults_are_consumed_in_order_and_can_target_an_endpoint(ds: FakeDashScope) -> None:
    ds.inject(Fault.error(500, endpoint="task_get"))
    ds.inject(Fault.error(400, "DataInspectionFailed", "Input data may contain inappropriate content."))
    ds.inject(Fault.html(502))
    assert ds.pending_faults() == 3
    r1 = httpx.post(ds.base_url + MM, json=mm_body(), headers=ds_headers())
    r2 = httpx.post(ds.base_url + MM, json=mm_body(), headers=ds_headers())
    r3 = httpx.post(ds.base_url + MM, json=mm_body(), headers=ds_headers())
    assert (r1.status_code, r1.json()["code"]) == (400, "DataInspectionFailed")
    assert r2.status_code == 502 and r2.headers["content-type"].startswith("text/html")
    assert r3.status_code == 200  # the task_get fault is still waiting for its endpoint
    assert ds.pending_faults() == 1
    r4 = httpx.get(ds.base_url + "/tasks/whatever", headers=ds_headers())
    assert (r4.status_code, r4.json()["code"]) == (500, "InternalError")


def test_dropped_connection_fault_closes_without_a_response(ds: FakeDashScope) -> None:
    ds.inject(Fault.drop())
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(ds.base_url + MM, json=mm_body(), headers=ds_headers())
    assert httpx.post(ds.base_url + MM, json=mm_body(), headers=ds_headers()).status_code == 200


def test_rate_limit_answers_429_with_each_providers_code() -> None:
    with FakeDashScope(api_key=KEY, rate_limit=2, rate_window=60) as ds:
        codes = [
            httpx.post(ds.base_url + MM, json=mm_body(), headers=ds_headers()).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        r = httpx.post(ds.base_url + MM, json=mm_body(), headers=ds_headers())
        assert r.json()["code"] == "Throttling.RateQuota"
        assert "retry-after" not in r.headers  # DashScope is not known to send one
    with FakeOpenAI(api_key=KEY, rate_limit=1, rate_window=60) as oa:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        httpx.post(oa.base_url + "/chat/completions", json=body, headers=ds_headers())
        r = httpx.post(oa.base_url + "/chat/completions", json=body, headers=ds_headers())
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        assert r.headers["retry-after"] == "1"


async def test_latency_and_concurrency_are_observable() -> None:
    with FakeOpenAI(api_key=KEY, latency=0.3) as oa:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient() as client:
            start = time.monotonic()
            replies = await asyncio.gather(
                *(
                    client.post(oa.base_url + "/chat/completions", json=body, headers=ds_headers())
                    for _ in range(4)
                )
            )
            elapsed = time.monotonic() - start
        assert all(r.status_code == 200 for r in replies)
        assert elapsed >= 0.3  # latency is a lower bound; no upper bound on a noisy machine
        assert oa.count("chat") == 4
        assert oa.max_in_flight >= 2  # the fake itself serves requests concurrently


def test_video_synthesis_needs_the_async_header(ds: FakeDashScope) -> None:
    body = {"model": "wan2.1-t2v-turbo", "input": {"prompt": "a cat"}, "parameters": {}}
    r = httpx.post(ds.base_url + SYNTH, json=body, headers=ds_headers())
    assert (r.status_code, r.json()["code"]) == (403, "AccessDenied")
    assert ds.tasks == {}


def test_task_timeline_cancel_and_download(ds: FakeDashScope, clock: Clock) -> None:
    body = {"model": "wan2.1-t2v-turbo", "input": {"prompt": "a cat"}, "parameters": {"size": "1280*720"}}
    created = httpx.post(
        ds.base_url + SYNTH, json=body, headers=ds_headers(**{"X-DashScope-Async": "enable"})
    )
    task_id = created.json()["output"]["task_id"]
    assert created.json()["output"]["task_status"] == "PENDING"

    def status() -> str:
        return str(
            httpx.get(f"{ds.base_url}/tasks/{task_id}", headers=ds_headers()).json()["output"]["task_status"]
        )

    assert status() == "PENDING"
    clock.now += 11
    assert status() == "RUNNING"
    r = httpx.post(f"{ds.base_url}/tasks/{task_id}/cancel", headers=ds_headers())
    assert (r.status_code, r.json()["code"]) == (400, "UnsupportedOperation")
    clock.now += 20
    done = httpx.get(f"{ds.base_url}/tasks/{task_id}", headers=ds_headers()).json()
    assert done["output"]["task_status"] == "SUCCEEDED"
    assert done["usage"] == {"video_duration": 5, "video_ratio": "1280*720", "video_count": 1}
    url = done["output"]["video_url"]
    assert "Signature=" in url and "Expires=" in url

    ds.fail_downloads(2)
    assert [httpx.get(url).status_code for _ in range(3)] == [503, 503, 200]
    video = httpx.get(url)
    assert video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"
    clock.now += 86400 * 2
    assert httpx.get(url).status_code == 403  # the signed URL expired
    unknown = httpx.get(f"{ds.base_url}/tasks/no-such-task", headers=ds_headers()).json()
    assert unknown["output"] == {"task_id": "no-such-task", "task_status": "UNKNOWN"}


def test_failed_tasks_report_code_and_message(ds: FakeDashScope, clock: Clock) -> None:
    ds.fail_next_tasks(
        1, code="DataInspectionFailed", message="Output data may contain inappropriate content."
    )
    body = {"model": "wan2.1-t2v-turbo", "input": {"prompt": "x"}, "parameters": {}}
    hdrs = ds_headers(**{"X-DashScope-Async": "enable"})
    first = httpx.post(ds.base_url + SYNTH, json=body, headers=hdrs).json()["output"]["task_id"]
    second = httpx.post(ds.base_url + SYNTH, json=body, headers=hdrs).json()["output"]["task_id"]
    clock.now += 31
    out = httpx.get(f"{ds.base_url}/tasks/{first}", headers=ds_headers()).json()["output"]
    assert (out["task_status"], out["code"]) == ("FAILED", "DataInspectionFailed")
    assert ds.task_status(second) == "SUCCEEDED"


def test_anthropic_fake_requires_version_header_and_uses_its_error_shape() -> None:
    with FakeAnthropic(api_key=KEY) as an:
        body = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(an.url + "/v1/messages", json=body, headers={"x-api-key": KEY})
        assert r.status_code == 400 and r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "invalid_request_error"
        r = httpx.post(
            an.url + "/v1/messages", json=body, headers={"x-api-key": "bad", "anthropic-version": "x"}
        )
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert r.headers["request-id"]
        an.inject(Fault.error(529))
        r = httpx.post(
            an.url + "/v1/messages", json=body, headers={"x-api-key": KEY, "anthropic-version": "x"}
        )
        assert (r.status_code, r.json()["error"]["type"]) == (529, "overloaded_error")


def test_default_answer_mentions_counts_and_json_mode() -> None:
    prompt = Prompt(texts=["hi"], images=["a", "b"], model="m", json_mode=True)
    import json

    data = json.loads(default_answer("x", prompt))
    assert data["images"] == 2 and data["frames"] == 0 and data["digest"] == prompt.digest()


def test_subprocess_cli_prints_its_url_and_serves() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "dropflow.engine.fakes", "openai", "--port", "0", "--api-key", KEY],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            r = httpx.post(url + "/chat/completions", json=body, headers=ds_headers(), timeout=10)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith(
                "fake openai"
            )
        finally:
            proc.terminate()
            assert proc.wait(timeout=10) == 0
