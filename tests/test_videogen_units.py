"""The video-gen engine's parts: units and job files, params, limits, task validity, the downloader."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from dropflow.daemon.core.jobs import Job
from dropflow.engine.base import JobContext, Wait
from dropflow.engine.errors import InputError, PermanentError, RetryableError
from dropflow.engine.providers.base import VideoGenRequest, VideoTask
from dropflow.engine.videogen.download import (
    DownloadFailed,
    VideoTooLarge,
    download_with_retries,
    fetch_video,
    url_expires_at,
)
from dropflow.engine.videogen.engine import VideoGenEngine
from dropflow.engine.videogen.job import VideoSpec, load_job_file, read_spec, unit_inputs
from dropflow.engine.videogen.params import VideoGenParams, build_request
from dropflow.engine.videogen.submit import _never_created
from tests.test_videogen import png

MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200


def touch(folder: Path, name: str, data: bytes | str = b"x") -> Path:
    p = folder / name
    if isinstance(data, str):
        p.write_text(data, encoding="utf-8")
    else:
        p.write_bytes(data)
    return p


# --- units ----------------------------------------------------------------------------------------


def test_units_by_name(tmp_path: Path) -> None:
    lone = touch(tmp_path, "lone.txt", "a prompt")
    assert unit_inputs(lone) == [lone]

    img, txt = touch(tmp_path, "cat.png", png()), touch(tmp_path, "cat.txt", "a cat")
    assert unit_inputs(img) == [img, txt]
    assert unit_inputs(txt) is None, "the prompt of an image is not a unit of its own"

    upper, its_txt = touch(tmp_path, "DOG.JPG", png()), touch(tmp_path, "DOG.txt", "a dog")
    assert unit_inputs(upper) == [upper, its_txt] and unit_inputs(its_txt) is None

    alone = touch(tmp_path, "bird.webp", png(fmt="WEBP"))
    assert unit_inputs(alone) == [alone]

    assert unit_inputs(touch(tmp_path, "notes.md", "x")) is None


def test_a_prompt_dropped_after_its_image_failed_completes_the_pair(tmp_path: Path) -> None:
    img = touch(tmp_path, "late.jpg", png())
    txt = touch(tmp_path, "late.txt", "now with a prompt")
    with pytest.raises(InputError) as err:
        read_spec([img])
    sidecar = touch(
        tmp_path, "late.jpg.error.txt", f"dropflow could not process late.jpg\n\n{err.value.message}\n"
    )
    assert unit_inputs(txt) == [txt, img]
    # an image whose pair failed for another reason (say, the task FAILED) keeps its prompt to itself
    sidecar.write_text("dropflow could not process late.jpg\n\nerror (permanent): task x FAILED\n")
    assert unit_inputs(txt) is None


def test_job_file_owns_its_same_named_image_only(tmp_path: Path) -> None:
    shot_png = touch(tmp_path, "shot.png", png())
    shot = touch(tmp_path, "shot.yaml", "prompt: p\nimage: shot.png\n")
    assert unit_inputs(shot) == [shot, shot_png]
    assert unit_inputs(shot_png) is None, "the job file's image is not a unit of its own"

    elsewhere = tmp_path / "frames"
    elsewhere.mkdir()
    far = touch(elsewhere, "first.png", png())
    other = touch(tmp_path, "other.yaml", f"prompt: p\nimage: {far}\n")
    assert unit_inputs(other) == [other], "an image elsewhere is read where it lies, never moved"
    remote = touch(tmp_path, "remote.yaml", "prompt: p\nimage: https://example.com/a.png\n")
    assert unit_inputs(remote) == [remote]
    broken = touch(tmp_path, "broken.yaml", "prompt: [unclosed\n")
    assert unit_inputs(broken) == [broken], "a broken job file is still a unit: its run says what is wrong"


# --- reading a unit --------------------------------------------------------------------------------


def test_read_spec_prompt_and_pair(tmp_path: Path) -> None:
    txt = touch(tmp_path, "a.txt", "\ufeff  a red fox  \n")
    assert read_spec([txt]) == VideoSpec(kind="t2v", prompt="a red fox")
    img = touch(tmp_path, "b.png", png())
    spec = read_spec([img], default_prompt="the scene comes alive")
    assert (spec.kind, spec.prompt, spec.image) == ("i2v", "the scene comes alive", str(img))


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("empty.txt", "  \n", "empty.txt is empty"),
        ("latin.txt", "caf\xe9".encode("latin-1"), "not UTF-8 text"),
        ("huge.txt", "x" * 300_000, "at most"),
    ],
)
def test_read_spec_rejects_bad_prompts(tmp_path: Path, name: str, data: str | bytes, error: str) -> None:
    with pytest.raises(InputError, match=error):
        read_spec([touch(tmp_path, name, data)])


def test_read_spec_rejects_an_image_that_is_not_one(tmp_path: Path) -> None:
    bad = touch(tmp_path, "bad.png", b"\x89PNG\r\n\x1a\n truncated")
    txt = touch(tmp_path, "bad.txt", "prompt")
    with pytest.raises(InputError, match=r"bad\.png"):
        read_spec([bad, txt])


def test_image_alone_without_default_prompt_says_how_to_fix(tmp_path: Path) -> None:
    img = touch(tmp_path, "solo.png", png())
    with pytest.raises(InputError) as err:
        read_spec([img])
    assert "solo.png has no prompt" in err.value.message
    assert "solo.txt" in err.value.hint and "default_prompt" in err.value.hint


def test_job_file_fields_and_relative_image(tmp_path: Path) -> None:
    sub = tmp_path / "frames"
    sub.mkdir()
    touch(sub, "f.png", png())
    job = touch(
        tmp_path,
        "j.yaml",
        "prompt: dolly in\nimage: frames/f.png\nresolution: 1080p\nduration: 4\nseed: 3\nprompt_extend: false\n"
        "negative_prompt: text\nmodel: wan2.2-i2v-plus\n",
    )
    spec = read_spec([job])
    assert spec.kind == "i2v" and spec.image == str((sub / "f.png").resolve())
    assert (spec.resolution, spec.duration, spec.seed, spec.prompt_extend) == ("1080P", 4, 3, False)
    assert (spec.negative_prompt, spec.model, spec.job_file) == ("text", "wan2.2-i2v-plus", "j.yaml")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("prompt: a\nsize: 1280*720\ncolour: red\n", r"j\.yaml:3: colour: unknown key"),
        ("prompt: a\nduration: 600\n", r"j\.yaml:2: duration: Input should be less than or equal to 60"),
        ("prompt: a\nsize: wide\n", r"j\.yaml:2: size: Value error, must be WIDTH\*HEIGHT"),
        ("prompt: [a\n", r"j\.yaml:\d+: not valid YAML"),
        ("- a\n- b\n", "a job file is a mapping"),
        ("image: missing.png\n", "does not exist"),
        ("seed: 3\n", "neither a prompt nor an image"),
        ("prompt: a\nsize: 1280*720\nresolution: 720P\n", "sets both size and resolution"),
    ],
)
def test_job_file_errors_name_file_line_and_key(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(InputError, match=error):
        read_spec([touch(tmp_path, "j.yaml", text)])


def test_job_file_never_expands_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-secret-value-123456")
    job = load_job_file(touch(tmp_path, "env.yaml", "prompt: show ${DASHSCOPE_API_KEY}\n"))
    assert job.prompt == "show ${DASHSCOPE_API_KEY}"


# --- params and the request --------------------------------------------------------------------------


def test_params_normalize_and_validate() -> None:
    p = VideoGenParams.model_validate({"size": "1280 x 720", "resolution": "720p"})
    assert (p.size, p.resolution) == ("1280*720", "720P")
    for bad in (
        {"poll_first_seconds": 30, "poll_max_seconds": 10},
        {"deadline_minutes": 2000},
        {"modle": "x"},
    ):
        with pytest.raises(ValidationError):
            VideoGenParams.model_validate(bad)


def test_route_defaults_fill_what_the_unit_leaves_open() -> None:
    p = VideoGenParams(size="1280*720", resolution="480P", duration=5, seed=1, negative_prompt="blur")
    t2v = build_request(VideoSpec(kind="t2v", prompt="x"), p)
    assert (t2v.model, t2v.size, t2v.resolution, t2v.duration, t2v.seed) == (
        "wan2.2-t2v-plus",
        "1280*720",
        None,
        5,
        1,
    )
    assert t2v.negative_prompt == "blur"
    i2v = build_request(VideoSpec(kind="i2v", prompt="x", image="/a.png", seed=9, negative_prompt=""), p)
    assert (i2v.model, i2v.size, i2v.resolution, i2v.seed, i2v.negative_prompt) == (
        "wan2.2-i2v-plus",
        None,
        "480P",
        9,
        "",
    )
    own = build_request(VideoSpec(kind="i2v", prompt="x", image="/a.png", size="832*480"), p)
    assert (own.size, own.resolution) == ("832*480", None), "a job file's own choice wins over both defaults"


def test_only_answered_or_unsent_create_calls_count_as_not_created() -> None:
    def err(status: int | None, code: str = "") -> RetryableError:
        return RetryableError("x", status=status, code=code)

    assert _never_created(err(429, "Throttling")) and _never_created(err(400)) and _never_created(err(500))
    assert _never_created(err(None, "ClientConnectorError")) and _never_created(InputError("x"))
    assert not _never_created(err(None, "TimeoutError")) and not _never_created(
        err(None, "ServerDisconnectedError")
    )
    assert not _never_created(err(504)) and not _never_created(err(502))


def test_url_expiry_is_read_from_the_signed_url() -> None:
    assert url_expires_at("https://oss/x.mp4?Expires=1700000000&Signature=abc") == 1_700_000_000
    assert url_expires_at("https://oss/x.mp4") is None and url_expires_at("file:///tmp/x.mp4") is None


# --- runs with a stub provider ----------------------------------------------------------------------


class StubProvider:
    name: ClassVar[str] = "stub"
    offline: ClassVar[bool] = False
    model_family: ClassVar[str] = "wan"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def prepare(self, request: VideoGenRequest) -> VideoGenRequest:
        return request

    async def submit(self, request: VideoGenRequest) -> VideoTask:
        self.calls.append("submit")
        return VideoTask(task_id=f"t{len(self.calls)}", status="PENDING")

    async def fetch(self, task_id: str) -> VideoTask:
        self.calls.append("fetch")
        return VideoTask(task_id=task_id, status="RUNNING")

    async def cancel(self, task_id: str) -> bool:
        self.calls.append("cancel")
        return False

    async def aclose(self) -> None:
        return None


class StubProviders:
    def __init__(self, provider: StubProvider) -> None:
        self.provider = provider
        self.asked: list[str | None] = []

    def vision(self, name: str | None) -> Any:
        raise AssertionError("not used")

    def videogen(self, name: str | None) -> StubProvider:
        self.asked.append(name)
        return self.provider


def make_job(
    input_path: Path, *, job_id: int = 1, checkpoint: dict[str, Any] | None = None, **params: Any
) -> Job:
    now = time.time()
    return Job(
        id=job_id, engine="video-gen", route="video-gen", batch="", source="inbox", input_path=str(input_path),
        input_paths=[str(input_path)], content_hash="h", forced=False, provider=None, params=params, priority=0,
        status="running", control=None, attempts=1, max_attempts=5, next_attempt_at=None, lease_owner="me",
        lease_expires_at=None, progress=0.0, progress_message="", outputs=[], error_kind=None, error_message=None,
        error_hint=None, remote_task_id=(checkpoint or {}).get("task_id"), checkpoint=dict(checkpoint or {}),
        usage={}, tokens_in=0, tokens_out=0, archived_path=None, created_at=now, updated_at=now, started_at=now,
        finished_at=None,
    )  # fmt: skip


def make_ctx(job: Job, provider: StubProvider, tmp_path: Path, saved: list[dict[str, Any]]) -> JobContext:
    async def report(fraction: float, message: str) -> None:
        return None

    async def checkpoint(data: dict[str, Any], remote_task_id: str | None) -> None:
        saved.append(dict(data))
        job.checkpoint = data

    return JobContext(
        job=job, output_dir=tmp_path / "out", prompts_dir=tmp_path, state_dir=tmp_path,
        providers=StubProviders(provider), logger=logging.getLogger("test"), report=report, checkpoint=checkpoint,
    )  # fmt: skip


async def test_a_task_older_than_24h_is_not_polled(tmp_path: Path) -> None:
    provider = StubProvider()
    old = time.time() - 25 * 3600
    cp = {
        "phase": "remote",
        "task_id": "t-old",
        "submitted_at": old,
        "deadline_from": old,
        "model": "m",
        "provider": "offline",
    }
    job = make_job(touch(tmp_path, "a.txt", "p"), checkpoint=cp)
    saved: list[dict[str, Any]] = []
    ctx = make_ctx(job, provider, tmp_path, saved)
    with pytest.raises(PermanentError) as err:
        await VideoGenEngine().run(job, ctx)
    assert isinstance(ctx.providers, StubProviders)
    assert ctx.providers.asked == ["offline"], "a task is followed through the provider that made it"
    assert err.value.code == "TaskExpired" and "24 h" in err.value.message
    assert provider.calls == [], "an id the provider has forgotten is not polled (nor resubmitted)"
    assert saved[-1]["phase"] == "retired"


async def test_polling_interval_grows_from_the_first_delay_to_the_cap(tmp_path: Path) -> None:
    provider = StubProvider()
    engine = VideoGenEngine()
    params: dict[str, Any] = {"poll_first_seconds": 10, "poll_growth": 2, "poll_max_seconds": 50}
    job = make_job(touch(tmp_path, "a.txt", "a prompt"), **params)
    delays, messages = [], []
    for _ in range(5):
        result = await engine.run(job, make_ctx(job, provider, tmp_path, []))
        assert isinstance(result, Wait)
        delays.append(result.seconds)
        messages.append(result.message)
    assert delays == [10, 20, 40, 50, 50]
    assert provider.calls == ["submit", "fetch", "fetch", "fetch", "fetch"]
    assert messages[0].startswith("submitted: task t1") and messages[1].startswith("task t1 RUNNING (")


async def test_submissions_are_spaced_and_a_long_queue_gives_the_worker_back(tmp_path: Path) -> None:
    engine = VideoGenEngine()
    provider = StubProvider()
    params = VideoGenParams(submissions_per_second=2, max_concurrent_tasks=10)
    gate = engine.gate("stub", "m")
    jobs = [make_job(touch(tmp_path, f"{i}.txt", "p"), job_id=i + 1) for i in range(4)]
    started = time.monotonic()
    results = await asyncio.gather(
        *(gate.admit(make_ctx(job, provider, tmp_path, []), job, params) for job in jobs)
    )
    elapsed = time.monotonic() - started
    assert results[:3] == [None, None, None] and isinstance(results[3], Wait)
    assert "limited to 2/s" in results[3].message and results[3].seconds > 1.0
    assert elapsed >= 0.95, "the third submission came no sooner than 1 s after the first"
    assert gate.reserved == {1, 2, 3}


async def test_concurrency_without_a_store_counts_this_daemons_tasks(tmp_path: Path) -> None:
    engine = VideoGenEngine()
    provider = StubProvider()
    params = VideoGenParams(max_concurrent_tasks=1)
    gate = engine.gate("stub", "m")
    gate.active.add(7)  # another job's task is in flight
    job = make_job(touch(tmp_path, "a.txt", "p"))
    waiting = await gate.admit(make_ctx(job, provider, tmp_path, []), job, params)
    assert isinstance(waiting, Wait) and "queued: 1 of 1 m tasks in flight" in waiting.message


# --- the downloader --------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/ok.mp4":
            self._send(200, MP4)
        elif self.path == "/page":
            self._send(200, b"<html>expired</html>", "text/html")
        elif self.path == "/forbidden":
            self._send(403, b"<Error>AccessDenied</Error>")
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", str(len(MP4) * 4))
            self.end_headers()
            self.wfile.write(MP4)  # then the connection closes: a truncated body
        else:
            self._send(404, b"")

    def _send(self, status: int, body: bytes, ctype: str = "video/mp4") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def web() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def never() -> bool:
    return False


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_streams_to_the_final_name(web: str, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "v.mp4"
    assert fetch_video(f"{web}/ok.mp4", dest, max_bytes=10_000, stop=never) == len(MP4)
    assert dest.read_bytes() == MP4 and leftovers(dest.parent) == ["v.mp4"]


@pytest.mark.parametrize(
    ("path", "reason", "expired"),
    [
        ("/page", "not an mp4", False),
        ("/short", "RemoteProtocolError", False),
        ("/forbidden", "HTTP 403", True),
        ("/missing", "HTTP 404", False),
    ],
)
def test_download_failures_leave_nothing_behind(
    web: str, tmp_path: Path, path: str, reason: str, expired: bool
) -> None:
    dest = tmp_path / "out" / "v.mp4"
    with pytest.raises(DownloadFailed) as err:
        fetch_video(f"{web}{path}", dest, max_bytes=10_000, stop=never)
    assert reason in err.value.reason and err.value.expired is expired
    assert leftovers(dest.parent) == []


def test_download_size_cap(web: str, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "v.mp4"
    with pytest.raises(VideoTooLarge):
        fetch_video(f"{web}/ok.mp4", dest, max_bytes=100, stop=never)
    assert leftovers(dest.parent) == []


def test_download_retries_but_not_a_refused_url(web: str, tmp_path: Path) -> None:
    calls: list[int] = []

    def counting() -> bool:
        calls.append(1)
        return False

    with pytest.raises(DownloadFailed):
        download_with_retries(f"{web}/missing", tmp_path / "v.mp4", max_bytes=1000, retries=1, stop=counting)
    assert calls, "it paused (checking for a stop) between the two tries"
    calls.clear()
    with pytest.raises(DownloadFailed) as err:
        download_with_retries(
            f"{web}/forbidden", tmp_path / "v.mp4", max_bytes=1000, retries=3, stop=counting
        )
    assert err.value.expired and not calls, "a refused (expired) URL needs a fresh one, not another try"


def test_offline_file_urls_are_copied(tmp_path: Path) -> None:
    src = touch(tmp_path, "cache.mp4", MP4)
    dest = tmp_path / "out" / "v.mp4"
    assert fetch_video(src.as_uri(), dest, max_bytes=10_000, stop=never) == len(MP4)
    assert dest.read_bytes() == MP4


async def test_a_job_files_image_in_the_inbox_that_links_out_is_not_read(tmp_path: Path) -> None:
    from dropflow.engine import files
    from dropflow.engine.videogen.models import ImageLimits
    from dropflow.engine.videogen.plan import _image

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    secret = tmp_path / "private.png"
    secret.write_bytes(png())
    (inbox / "shot.png").symlink_to(secret)

    class _Ctx:
        read_roots = (inbox, tmp_path / "state", tmp_path / "prompts")
        state_dir = tmp_path / "state"

        def check_readable(self, path: Path, *, what: str = "") -> None:
            files.check_inside(path, *self.read_roots, what=what)

    class _Run:
        cp: ClassVar[dict[str, Any]] = {}
        ctx = _Ctx()
        job = type("J", (), {"id": 7})()

    with pytest.raises(InputError, match="outside the inbox"):
        await _image(_Run(), inbox / "shot.png", ImageLimits(), "wan2.2-i2v-plus")  # type: ignore[arg-type]
