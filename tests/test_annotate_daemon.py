"""The annotate engine end to end: files dropped into inbox/annotate/ of a running daemon (real
watcher, SQLite store, scheduler) against the fake DashScope server driven by the real SDK."""

from __future__ import annotations

import asyncio
import json
import shutil
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dropflow.daemon.cli import main as cli_main
from dropflow.daemon.core import config as config_mod
from dropflow.daemon.core.store import Store
from dropflow.daemon.daemon import Daemon
from dropflow.daemon.logs import Redactor
from dropflow.engine.fakes import FakeDashScope, Fault
from tests.conftest import DaemonProcess, RunningDaemon, wait_for
from tests.videos import make_video

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-daemon-annotate-5f1e2d3c4b5a6978"

CONFIG = """
paths: {{inbox: inbox, outputs: outputs, archive: archive, prompts: prompts, state: state}}
watch: {{settle_seconds: 0.2, rescan_seconds: 2, check_seconds: 0.1}}
scheduler:
  max_concurrency: 4
  engine_concurrency: {{annotate: 2}}
  lease_seconds: 5
  backoff_base_seconds: 0.1
  backoff_max_seconds: 0.3
  shutdown_grace_seconds: 2
  tick_seconds: 0.05
providers:
  default: {default}
  dashscope: {{api_key: "{key}", base_url: "{url}", timeout_seconds: 20}}
routes:
  - name: annotate
    folder: annotate
    engine: annotate
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "short": make_video(d / "short.mp4", seconds=4, fps=10),
        "talk": make_video(d / "talk.mkv", seconds=6, fps=5, tones=[(0.5, 5.5, 440)]),
    }


@pytest.fixture
def ds() -> Iterator[FakeDashScope]:
    with FakeDashScope(api_key=KEY) as srv:
        yield srv


def write_project(root: Path, *, url: str, key: str = KEY, default: str = "dashscope") -> Path:
    (root / "inbox" / "annotate").mkdir(parents=True)
    shutil.copytree(REPO / "prompts", root / "prompts")
    path = root / "config.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(url=url, key=key, default=default)))
    return path


async def start(config: Path) -> tuple[RunningDaemon, Store, object]:
    cfg = config_mod.load(config)
    d = Daemon(cfg, Redactor(cfg.secrets()))
    task = asyncio.create_task(d.run(install_signals=False))
    opened = Store.open(cfg.paths.database)
    store = await opened.__aenter__()
    return RunningDaemon(cfg, d, task, store), store, opened


@pytest.fixture
async def running(tmp_path: Path, ds: FakeDashScope) -> AsyncIterator[RunningDaemon]:
    rd, _, opened = await start(write_project(tmp_path / "proj", url=ds.base_url))
    try:
        yield rd
    finally:
        if not rd.task.done():
            await rd.stop()
        await opened.__aexit__(None, None, None)  # type: ignore[attr-defined]


def drop(rd: RunningDaemon, src: Path, name: str | None = None) -> Path:
    dst = rd.cfg.paths.inbox / "annotate" / (name or src.name)
    tmp = dst.with_name(dst.name + ".part")  # a producer writing, then renaming into place
    shutil.copy(src, tmp)
    tmp.rename(dst)
    return dst


async def test_dropped_video_with_sidecars_is_annotated_and_archived(
    running: RunningDaemon, ds: FakeDashScope, clips: dict[str, Path]
) -> None:
    inbox = running.cfg.paths.inbox / "annotate"
    (inbox / "talk.mkv.roles.yaml").write_text("- name: Ana\n  description: the speaker\n")
    (inbox / "talk.extra.txt").write_text("A keynote.\n")
    (inbox / "dropflow.yaml").write_text("params: {mode: two_stage, asr_chunk_seconds: 5}\n")
    video = drop(running, clips["talk"])
    [job] = await running.wait_status(1, ("succeeded",), timeout=60)
    assert [Path(p).name for p in job.input_paths] == ["talk.mkv", "talk.mkv.roles.yaml", "talk.extra.txt"]
    out_json, out_txt = (Path(p) for p in job.outputs)
    assert out_json == running.cfg.paths.outputs / "annotate" / "talk.json" and out_txt.suffix == ".txt"
    doc = json.loads(out_json.read_text())
    assert (
        doc["mode"] == "two_stage" and doc["roles"][0]["name"] == "Ana" and doc["extra_info"] == "A keynote."
    )
    assert doc["asr"]["status"] == "transcribed"
    assert ds.count("text") == 1 and ds.count("multimodal") == len(doc["request_ids"]) - 1
    assert job.usage["requests"] == len(doc["request_ids"]) and job.tokens_in == doc["usage"]["input_tokens"]
    # the video and both sidecars left the inbox together
    await wait_for(lambda: _gone(video, inbox / "talk.mkv.roles.yaml", inbox / "talk.extra.txt"))
    archived = sorted(p.name for p in running.cfg.paths.archive.rglob("*") if p.is_file())
    assert archived == ["talk.extra.txt", "talk.mkv", "talk.mkv.roles.yaml"]


async def _gone(*paths: Path) -> bool:
    return not any(p.exists() for p in paths)


async def test_429_is_retried_without_paying_twice(
    running: RunningDaemon, ds: FakeDashScope, clips: dict[str, Path]
) -> None:
    ds.inject(Fault.error(429, "Throttling.RateQuota", endpoint="multimodal"))
    drop(running, clips["short"])
    [job] = await running.wait_status(1, ("succeeded",), timeout=60)
    assert job.attempts == 2
    assert [r.status for r in ds.requests("multimodal")] == [429, 200]
    events = await running.store.events(job.id)
    assert any("429" in e.message or "busy" in e.message for e in events)


async def test_a_failed_job_still_shows_what_it_spent(
    running: RunningDaemon, ds: FakeDashScope, clips: dict[str, Path]
) -> None:
    """Segments answered and paid for, then the summary is refused: the failed job's row carries
    the spend, as a succeeded one would."""
    inbox = running.cfg.paths.inbox / "annotate"
    (inbox / "dropflow.yaml").write_text(
        "params: {mode: two_stage, asr: false, fps: 2, max_frames_per_segment: 4}\n"
    )
    ds.inject(
        Fault.error(
            400, "DataInspectionFailed", "Output data may contain inappropriate content.", endpoint="text"
        )
    )
    drop(running, clips["short"])
    [job] = await running.wait_status(1, ("failed",), timeout=60)
    segments = ds.count("multimodal")
    assert segments >= 2 and ds.count("text") == 1
    assert job.error_kind == "permanent" and "DataInspectionFailed" in (job.error_message or "")
    assert job.usage["requests"] == segments and job.tokens_in > 0 and job.tokens_out > 0
    assert job.tokens_in == job.usage["input_tokens"]


async def test_401_fails_at_once_with_the_fix_beside_the_video(
    tmp_path: Path, ds: FakeDashScope, clips: dict[str, Path]
) -> None:
    rd, _, opened = await start(
        write_project(tmp_path / "p", url=ds.base_url, key="sk-not-the-right-one-123456")
    )
    try:
        video = drop(rd, clips["short"])
        [job] = await rd.wait_status(1, ("failed",), timeout=60)
        await rd.stop()
    finally:
        await opened.__aexit__(None, None, None)  # type: ignore[attr-defined]
    assert job.attempts == 1 and job.error_kind == "permanent"
    assert (job.error_message or "").startswith("invalid API key: set DASHSCOPE_API_KEY")
    assert ds.count("multimodal") == 1
    assert video.exists(), "a failed input stays where it was dropped"
    sidecar = video.with_name(video.name + ".error.txt")
    assert "invalid API key: set DASHSCOPE_API_KEY" in sidecar.read_text()
    assert "sk-not-the-right-one" not in sidecar.read_text() + (job.error_message or "")


async def test_no_key_runs_offline_end_to_end(tmp_path: Path, clips: dict[str, Path]) -> None:
    rd, _, opened = await start(
        write_project(tmp_path / "p", url="http://127.0.0.1:9/api/v1", key="", default="auto")
    )
    try:
        (rd.cfg.paths.inbox / "annotate" / "dropflow.yaml").write_text("params: {mode: two_stage}\n")
        drop(rd, clips["talk"])
        [job] = await rd.wait_status(1, ("succeeded",), timeout=60)
        await rd.stop()
    finally:
        await opened.__aexit__(None, None, None)  # type: ignore[attr-defined]
    doc = json.loads(Path(job.outputs[0]).read_text())
    assert (
        doc["offline"] is True and doc["mode"] == "two_stage" and "offline placeholder" in doc["annotation"]
    )
    assert doc["asr"]["status"] == "transcribed"
    txt = Path(next(o for o in job.outputs if o.endswith(".txt"))).read_text().splitlines()
    assert txt[1].startswith("Model: offline placeholder"), "the model line does not claim a model wrote it"
    assert job.provider == "offline", "the queue says the job runs offline, not 'default'"


async def test_cli_submit_with_set_overrides(
    tmp_path: Path, ds: FakeDashScope, clips: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_project(tmp_path / "p", url=ds.base_url)
    video = tmp_path / "elsewhere" / "clip.mp4"
    video.parent.mkdir()
    shutil.copy(clips["short"], video)
    sets = ["--set", "fps=2.0", "--set", "temperature=0.5", "--set", "prompt=segment_analysis.txt"]
    # a sync CLI in a worker thread, as a user would run it beside the daemon
    code = await asyncio.to_thread(
        cli_main, ["--config", str(config), "submit", str(video), "--engine", "annotate", *sets]
    )
    assert code == 0 and "queued" in capsys.readouterr().out
    rd, _, opened = await start(config)
    try:
        [job] = await rd.wait_status(1, ("succeeded",), timeout=60)
        await rd.stop()
    finally:
        await opened.__aexit__(None, None, None)  # type: ignore[attr-defined]
    body = ds.last("multimodal").json
    assert body["parameters"]["temperature"] == 0.5
    [msg] = body["input"]["messages"]
    video_part, text_part = msg["content"]
    assert video_part["fps"] == 2.0 and len(video_part["video"]) == 8
    assert text_part["text"].startswith("You are analysing one segment")
    assert json.loads(Path(job.outputs[0]).read_text())["fps"] == 2.0
    assert video.exists(), "a submitted file is not moved"


async def test_sigkill_mid_video_then_restart_never_pays_twice(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """Killed while a 4-segment video is half answered: the restarted daemon sends only the rest."""
    # one answer per second: the kill, sent once two answers are kept, lands before the fourth
    with FakeDashScope(api_key=KEY, latency=1.0) as srv:
        config = write_project(tmp_path / "p", url=srv.base_url)
        cfg = config_mod.load(config)
        inbox = cfg.paths.inbox / "annotate"
        (inbox / "dropflow.yaml").write_text(
            "params: {max_frames_per_segment: 4, dedup: false, concurrency: 1}\n"
        )
        make_video(inbox / "long.mp4", seconds=16, fps=5)
        answers = cfg.paths.state / "answers"

        def kept() -> int:  # answers the daemon has stored durably
            return len(list(answers.glob("*/*.json"))) if answers.exists() else 0

        with DaemonProcess(config) as first:

            async def half_done() -> bool:
                return kept() >= 2

            await wait_for(half_done, timeout=60)
            first.kill()
        paid = kept()  # nothing writes any more: these answers were received and kept
        sent = [_frames_key(r.json) for r in srv.requests("multimodal")]

        with DaemonProcess(config) as second:

            async def done() -> bool:
                async with Store.open(cfg.paths.database) as store:
                    return [j.status for j in await store.list()] == ["succeeded"]

            await wait_for(done, timeout=60)
            assert second.terminate() == 0

        after = [_frames_key(r.json) for r in srv.requests("multimodal")[len(sent) :]]
    # one request at a time, in order: the first `paid` segments were answered and kept
    assert 2 <= paid < 4 and len(after) == 4 - paid
    assert not set(sent[:paid]) & set(after), "an answer already paid for was bought again"
    assert len(set(sent) | set(after)) == 4
    doc = json.loads((cfg.paths.outputs / "annotate" / "long.json").read_text())
    assert [s["cached"] for s in doc["segments"]] == [True] * paid + [False] * (4 - paid)
    assert doc["usage"]["requests"] == 4


def _frames_key(body: dict[str, object]) -> str:
    [msg] = body["input"]["messages"]  # type: ignore[index]
    return json.dumps(msg["content"][0]["video"][:1])  # type: ignore[index]
