"""The dataset engine end to end: a real daemon (in-process), real files, real SQLite, and each
provider through its real client against its loopback fake."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import itertools
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dropflow.daemon.cli import main as cli_main
from dropflow.daemon.core import config as config_mod
from dropflow.daemon.core.config import Config
from dropflow.daemon.core.jobs import Job
from dropflow.engine.dataset.formats import OFFLINE_MARKER, check_sharegpt
from dropflow.engine.dataset.params import DEFAULT_MODELS
from dropflow.engine.dataset.unzip import ZIP_SOURCE
from dropflow.engine.fakes import FakeAnthropic, FakeDashScope, FakeOpenAI, Fault, Prompt
from dropflow.engine.fakes.server import FakeServer
from tests.conftest import REPO, RunningDaemon, running_daemon, wait_for

KEY = "sk-dataset-test-7c1d2e3f4a5b6c7d8e9f"

CONFIG = """
paths: {{inbox: inbox, outputs: outputs, archive: archive, prompts: prompts, state: state}}
watch: {{settle_seconds: 0.2, rescan_seconds: 2, check_seconds: 0.05}}
scheduler:
  max_concurrency: 8
  engine_concurrency: {{dataset: 8}}
  lease_seconds: 5
  max_attempts: 4
  backoff_base_seconds: 0.05
  backoff_max_seconds: 0.3
  shutdown_grace_seconds: 2
  tick_seconds: 0.05
providers:
  default: {default}
{providers}
routes:
  - name: dataset
    folder: dataset
    engine: dataset
    params: {params}
"""


def project(
    root: Path, *, default: str = "offline", providers: str = "", params: dict[str, Any] | None = None
) -> Config:
    root.mkdir(parents=True, exist_ok=True)
    (root / "prompts").mkdir(exist_ok=True)
    for p in (REPO / "prompts").glob("dataset*.txt"):
        (root / "prompts" / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    text = CONFIG.format(default=default, providers=providers, params=json.dumps(params or {}))
    (root / "config.yaml").write_text(text)
    return config_mod.load(root / "config.yaml")


def provider_block(name: str, srv: FakeServer, **extra: Any) -> str:
    settings = {"api_key": KEY, "base_url": srv.base_url, "timeout_seconds": 10, **extra}
    return f"  {name}: {json.dumps(settings)}"


def image_bytes(seed: int, size: tuple[int, int] = (48, 36), fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    from PIL import Image

    colour = tuple((seed * k) % 256 for k in (37, 91, 53, 17))[: len(mode)]
    im = Image.new(mode, size, colour)
    im.putpixel((seed % size[0], seed % size[1]), (255,) * len(mode))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def drop(cfg: Config, rel: str, data: bytes) -> Path:
    """Write elsewhere, then rename into the inbox: what a careful producer does."""
    dst = cfg.paths.inbox / "dataset" / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.paths.inbox.parent / f".drop-{os.getpid()}-{dst.name}"
    tmp.write_bytes(data)
    os.replace(tmp, dst)
    return dst


def ds_dir(cfg: Config, name: str) -> Path:
    return cfg.paths.outputs / "dataset" / name


def rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def records(cfg: Config, name: str) -> list[dict[str, Any]]:
    folder = ds_dir(cfg, name) / ".records"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


async def settled(d: RunningDaemon, n: int, *, timeout: float = 30.0) -> list[Job]:
    return await d.wait_status(n, ("succeeded", "failed", "cancelled"), timeout=timeout)


async def train_rows(cfg: Config, name: str, n: int) -> list[dict[str, Any]]:
    async def ready() -> list[dict[str, Any]] | None:
        found = rows(ds_dir(cfg, name) / "train.jsonl")
        return found if len(found) >= n else None

    return await wait_for(ready, timeout=30)


class Script:
    """A fake's answers in order (the last one repeats); thread-safe, as the fake runs in a thread."""

    def __init__(self, *answers: str) -> None:
        self._answers = itertools.chain(answers, itertools.repeat(answers[-1]))
        self._lock = threading.Lock()
        self.prompts: list[Prompt] = []

    def __call__(self, prompt: Prompt) -> str:
        with self._lock:
            self.prompts.append(prompt)
            return next(self._answers)


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as srv:
        yield srv


def openai_project(
    tmp_path: Path, srv: FakeOpenAI, params: dict[str, Any] | None = None, **extra: Any
) -> Config:
    return project(
        tmp_path / "proj", default="openai", providers=provider_block("openai", srv, **extra), params=params
    )


# --- offline: the whole flow on a machine with no key ----------------------------------------------


async def test_dropped_images_become_a_dataset_exactly_once(tmp_path: Path) -> None:
    cfg = project(tmp_path / "proj", params={"val_ratio": 0.0})
    async with running_daemon(cfg) as d:
        srcs = [drop(cfg, f"cats/c{i}.jpg", image_bytes(i)) for i in range(3)]
        jobs = await settled(d, 3)
        assert {j.status for j in jobs} == {"succeeded"}
        assert {j.batch for j in jobs} == {"cats"}
        train = await train_rows(cfg, "cats", 3)
        recs = records(cfg, "cats")
        assert len(train) == 3 and len(recs) == 3
        for row in train:
            assert check_sharegpt(row) == []
            assert (ds_dir(cfg, "cats").parent / row["images"][0]).is_file()
            assert row[OFFLINE_MARKER] is True  # a placeholder row says so, for whoever trains on it
        for rec in recs:
            assert (
                rec["offline"] is True
                and rec["provider"] == "offline"
                and rec["model"] == DEFAULT_MODELS["offline"]
            )
            assert rec["system"] and rec["usage"]["input_tokens"] > 0
        stored = {hashlib.sha256((ds_dir(cfg, "cats") / r["image"]).read_bytes()).hexdigest() for r in recs}
        assert stored == {hashlib.sha256(image_bytes(i)).hexdigest() for i in range(3)}  # copied as they were
        assert not any(s.exists() for s in srcs), "inputs are archived after success"
        info = json.loads((ds_dir(cfg, "cats").parent / "dataset_info.json").read_text())
        assert info["cats"]["file_name"] == "cats/train.jsonl"
        # the same content again, under another name: nothing is added, the copy is archived as a duplicate
        again = drop(cfg, "cats/copy-of-c0.jpg", image_bytes(0))
        await wait_for(lambda: _gone(again))
        # a later image extends the same dataset
        drop(cfg, "cats/c9.jpg", image_bytes(9))
        jobs = await settled(d, 4)
        assert len(jobs) == 4
        train = await train_rows(cfg, "cats", 4)
    assert len(train) == 4 and len(records(cfg, "cats")) == 4
    summary = json.loads((ds_dir(cfg, "cats") / "summary.json").read_text())
    assert summary["items"] == 4 and summary["failed"] == 0 and summary["offline_items"] == 4
    assert summary["provider"] == "offline" and summary["format"] == ["llamafactory"]
    assert summary["tokens"]["input"] == sum(r["usage"]["input_tokens"] for r in records(cfg, "cats"))
    assert list((cfg.paths.archive / "dataset").rglob("copy-of-c0.jpg"))


async def _gone(p: Path) -> bool:
    return not p.exists()


async def test_a_job_succeeds_only_once_its_record_is_in_the_files(tmp_path: Path) -> None:
    cfg = project(tmp_path / "proj")
    async with running_daemon(cfg) as d:
        for i in range(6):
            drop(cfg, f"dogs/d{i}.jpg", image_bytes(100 + i))
        jobs = await settled(d, 6)
        # no waiting for the render: the files already hold every succeeded item
        train = rows(ds_dir(cfg, "dogs") / "train.jsonl")
    in_files = {Path(r["images"][0]).stem for r in train}
    assert {j.content_hash for j in jobs if j.status == "succeeded"} <= in_files
    assert len(in_files) == 6


async def test_zip_is_unpacked_safely_and_its_images_become_items(tmp_path: Path) -> None:
    cfg = project(tmp_path / "proj")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.jpg", image_bytes(1))
        zf.writestr("sub/b.png", image_bytes(2, fmt="PNG"))
        zf.writestr("notes.txt", b"not an image")
        zf.writestr("__MACOSX/._a.jpg", b"resource fork")
    async with running_daemon(cfg) as d:
        drop(cfg, "birds/c0.jpg", image_bytes(1))  # the same content as a.jpg: one item only
        await settled(d, 1)
        z = drop(cfg, "birds/batch.zip", buf.getvalue())
        jobs = await settled(d, 3)  # c0.jpg, the ZIP, and b.png: a.jpg is c0.jpg's content
        await train_rows(cfg, "birds", 2)
    assert {j.source for j in jobs} == {"inbox", ZIP_SOURCE}
    zip_job = next(j for j in jobs if j.input_path == str(z))
    assert zip_job.status == "succeeded" and "1 queued" in zip_job.progress_message
    [item] = [j for j in jobs if j.source == ZIP_SOURCE]
    assert Path(item.input_path).name == "b.png" and item.batch == "birds" and item.status == "succeeded"
    recs = records(cfg, "birds")
    assert len(recs) == 2 and {r["source"] for r in recs} == {"c0.jpg", "batch.zip:sub/b.png"}
    assert not z.exists() and list(cfg.paths.archive.rglob("batch.zip")), "the ZIP itself is archived"
    staged = cfg.paths.state / "dataset-unzipped"
    assert not [p for p in staged.rglob("*") if p.is_file()], "staged copies are removed once used"


async def test_zip_dropped_at_the_top_level_becomes_a_dataset_named_after_it(tmp_path: Path) -> None:
    cfg = project(tmp_path / "proj")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(3):
            zf.writestr(f"img{i}.jpg", image_bytes(40 + i))
    async with running_daemon(cfg) as d:
        drop(cfg, "holiday.zip", buf.getvalue())
        await settled(d, 4)
        await train_rows(cfg, "holiday", 3)


async def test_unsafe_zip_fails_naming_the_file_and_queues_nothing(tmp_path: Path) -> None:
    cfg = project(tmp_path / "proj")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.jpg", image_bytes(1))
        zf.writestr("../../escape.jpg", image_bytes(2))
    async with running_daemon(cfg) as d:
        z = drop(cfg, "evil/evil.zip", buf.getvalue())
        [job] = await settled(d, 1)
    assert job.status == "failed" and job.error_kind == "input"
    assert "evil.zip" in (job.error_message or "") and ".." in (job.error_message or "")
    assert z.exists() and z.with_name("evil.zip.error.txt").exists()
    assert not (tmp_path / "proj" / "escape.jpg").exists() and not records(cfg, "evil")


async def test_unreadable_image_fails_alone_and_big_images_are_shrunk(tmp_path: Path) -> None:
    cfg = project(tmp_path / "proj", params={"max_image_side": 512})
    async with running_daemon(cfg) as d:
        bad = drop(cfg, "mixed/broken.jpg", image_bytes(1)[:40])
        drop(cfg, "mixed/wide.png", image_bytes(2, size=(1600, 400), fmt="PNG", mode="RGBA"))
        drop(cfg, "mixed/fine.jpg", image_bytes(3))
        jobs = await settled(d, 3)
        await train_rows(cfg, "mixed", 2)
    failed = [j for j in jobs if j.status == "failed"]
    assert [Path(j.input_path).name for j in failed] == ["broken.jpg"]
    assert failed[0].error_kind == "input" and "broken.jpg" in (failed[0].error_message or "")
    assert bad.exists() and bad.with_name("broken.jpg.error.txt").exists()
    wide = next(r for r in records(cfg, "mixed") if r["source"] == "wide.png")
    assert (
        wide["converted"] and wide["mime"] == "image/jpeg" and (wide["width"], wide["height"]) == (512, 128)
    )
    from PIL import Image

    with Image.open(ds_dir(cfg, "mixed") / wide["image"]) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (512, 128)
    summary = json.loads((ds_dir(cfg, "mixed") / "summary.json").read_text())
    assert summary["items"] == 2 and summary["failed"] == 1
    assert (
        summary["failed_items"][0]["source"] == "broken.jpg" and summary["failed_items"][0]["kind"] == "input"
    )


# --- the providers, each through its real client against its fake -----------------------------------


def _inline_image(provider: str, prompt: Prompt) -> bytes:
    raw = prompt.images[0]
    return base64.b64decode(raw.split(",", 1)[1] if raw.startswith("data:") else raw)


@pytest.mark.parametrize("provider", ["dashscope", "openai", "anthropic"])
async def test_each_provider_through_its_real_client(tmp_path: Path, provider: str) -> None:
    fake_cls: type[FakeServer] = {
        "dashscope": FakeDashScope,
        "openai": FakeOpenAI,
        "anthropic": FakeAnthropic,
    }[provider]
    with fake_cls(api_key=KEY) as srv:
        script = Script(f"A green square seen by {provider}.")
        srv.responder = script
        cfg = project(tmp_path / "proj", default=provider, providers=provider_block(provider, srv))
        async with running_daemon(cfg) as d:
            drop(cfg, "sq/x.jpg", image_bytes(5))
            [job] = await settled(d, 1)
            [row] = await train_rows(cfg, "sq", 1)
    assert job.status == "succeeded", job.error_message
    [rec] = records(cfg, "sq")
    assert rec["provider"] == provider and rec["model"] == DEFAULT_MODELS[provider] and not rec["offline"]
    assert rec["answer"] == f"A green square seen by {provider}."
    assert row["messages"][-1]["content"] == rec["answer"]
    [prompt] = script.prompts
    assert _inline_image(provider, prompt) == image_bytes(5), "the image reached the model inline"
    assert prompt.system and prompt.system.startswith("You write training data")
    assert prompt.texts == ["Describe this image in detail."]
    assert rec["usage"]["input_tokens"] > 0 and rec["usage"]["output_tokens"] > 0
    assert job.usage["input_tokens"] == rec["usage"]["input_tokens"]
    assert KEY not in json.dumps(rec) and KEY not in (ds_dir(cfg, "sq") / "summary.json").read_text()


async def test_refusal_is_retried_and_every_call_is_counted(tmp_path: Path, openai_fake: FakeOpenAI) -> None:
    script = Script("I'm sorry, but I can't see the image.", "", "A red square on white.")
    openai_fake.responder = script
    cfg = openai_project(tmp_path, openai_fake)
    async with running_daemon(cfg) as d:
        drop(cfg, "r/x.jpg", image_bytes(7))
        [job] = await settled(d, 1)
        await train_rows(cfg, "r", 1)
    assert job.status == "succeeded"
    [rec] = records(cfg, "r")
    assert rec["answer"] == "A red square on white." and rec["calls"] == 3
    assert [r["reason"] for r in rec["rejected"]] == ["refusal", "empty"]
    assert openai_fake.count("chat") == 3
    # the fake bills one token per word answered and 256 per image: all three calls are counted
    assert rec["usage"]["output_tokens"] == 8 + 1 + 5
    assert rec["usage"]["image_tokens"] == 3 * 256 and job.usage["output_tokens"] == 14
    temps = [r.json["temperature"] for r in openai_fake.requests("chat")]
    assert temps[0] < temps[1] < temps[2], "a retry is not the same request again"


async def test_persistent_refusal_fails_with_the_reason_and_the_spend_is_kept(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    openai_fake.responder = Script("I cannot see the image you attached.")
    cfg = openai_project(tmp_path, openai_fake, params={"answer_retries": 1})
    async with running_daemon(cfg) as d:
        drop(cfg, "no/x.jpg", image_bytes(8))
        drop(cfg, "no/y.jpg", image_bytes(9))
        jobs = await settled(d, 2)

        async def summary_ready() -> dict[str, Any] | None:
            p = ds_dir(cfg, "no") / "summary.json"
            data = json.loads(p.read_text()) if p.exists() else None
            return data if data and data["failed"] == 2 else None

        summary = await wait_for(summary_ready)
    assert {j.status for j in jobs} == {"failed"} and {j.error_kind for j in jobs} == {"permanent"}
    assert all("refused or did not see the image" in (j.error_message or "") for j in jobs)
    assert openai_fake.count("chat") == 4  # 1 + answer_retries, per image
    assert summary["items"] == 0 and {f["source"] for f in summary["failed_items"]} == {"x.jpg", "y.jpg"}
    assert (
        summary["tokens"]["failed_input"] > 0
        and summary["tokens"]["input"] == summary["tokens"]["failed_input"]
    )
    assert summary["calls"] == 4
    assert not rows(ds_dir(cfg, "no") / "train.jsonl")
    # the job rows show the spend too
    assert all(j.tokens_in > 0 and j.usage["input_tokens"] == j.tokens_in for j in jobs)
    assert sum(j.tokens_in for j in jobs) == summary["tokens"]["failed_input"]


async def test_json_mode_asks_for_json_and_retries_invalid_json(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    openai_fake.responder = Script(
        "Sure! Here it is: {caption: a cat", '```json\n{"caption": "a <image> of a cat"}\n```'
    )
    cfg = openai_project(
        tmp_path, openai_fake, params={"json_mode": True, "formats": ["llamafactory", "imagefolder"]}
    )
    async with running_daemon(cfg) as d:
        drop(cfg, "j/x.jpg", image_bytes(11))
        [job] = await settled(d, 1)
        [row] = await train_rows(cfg, "j", 1)
    assert job.status == "succeeded"
    requests = openai_fake.requests("chat")
    assert len(requests) == 2
    assert all(r.json["response_format"] == {"type": "json_object"} for r in requests)
    user_text = requests[0].json["messages"][-1]["content"][-1]["text"]
    assert "JSON" in user_text
    answer = row["messages"][-1]["content"]
    assert json.loads(answer) == {"caption": "a [image] of a cat"}
    assert check_sharegpt(row) == []
    [meta] = rows(ds_dir(cfg, "j") / "imagefolder" / "train" / "metadata.jsonl")
    assert json.loads(meta["text"]) == {"caption": "a [image] of a cat"}


async def test_literal_image_token_can_be_rejected(tmp_path: Path, openai_fake: FakeOpenAI) -> None:
    openai_fake.responder = Script("Here is an <image> of a dog.")
    cfg = openai_project(tmp_path, openai_fake, params={"image_token": "reject", "answer_retries": 0})
    async with running_daemon(cfg) as d:
        drop(cfg, "t/x.jpg", image_bytes(12))
        [job] = await settled(d, 1)
    assert job.status == "failed" and "<image>" in (job.error_message or "")


async def test_rate_limited_calls_back_off_and_succeed(tmp_path: Path, openai_fake: FakeOpenAI) -> None:
    openai_fake.inject(Fault.error(429, retry_after=0.05), times=2)
    cfg = openai_project(tmp_path, openai_fake)
    async with running_daemon(cfg) as d:
        drop(cfg, "rl/x.jpg", image_bytes(13))
        [job] = await settled(d, 1)
        await train_rows(cfg, "rl", 1)
        events = await d.store.events(job.id)
    assert job.status == "succeeded" and job.attempts == 3
    assert sum("retry at" in e.message for e in events) == 2
    [rec] = records(cfg, "rl")
    assert rec["calls"] == 1, "a 429 is not an answer"


async def test_provider_concurrency_cap_holds_across_jobs(tmp_path: Path) -> None:
    with FakeOpenAI(api_key=KEY, latency=0.15) as srv:
        cfg = openai_project(tmp_path, srv, concurrency=2)
        async with running_daemon(cfg) as d:
            for i in range(8):
                drop(cfg, f"c/{i}.jpg", image_bytes(200 + i))
            jobs = await settled(d, 8)
            await train_rows(cfg, "c", 8)
        assert {j.status for j in jobs} == {"succeeded"}
        assert srv.max_in_flight == 2, "eight jobs ran at once, but never more than two requests"


# --- settings per dataset, and export --------------------------------------------------------------


async def test_folder_settings_choose_provider_prompts_and_formats(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    script = Script("A blue square.")
    openai_fake.responder = script
    cfg = project(tmp_path / "proj", default="offline", providers=provider_block("openai", openai_fake))
    (cfg.paths.prompts / "terse.txt").write_text("Be terse.\n")
    folder = cfg.paths.inbox / "dataset" / "tuned"
    folder.mkdir(parents=True)
    (folder / "dropflow.yaml").write_text(
        "provider: openai\n"
        "params:\n"
        "  model: my-vlm\n  system_prompt_file: terse.txt\n  user_prompt: What colour is it?\n"
        "  temperature: 0.7\n  max_tokens: 99\n  formats: [llava, openai]\n  record_system: You name colours.\n"
    )
    async with running_daemon(cfg) as d:
        drop(cfg, "tuned/x.jpg", image_bytes(14))
        drop(cfg, "plain/y.jpg", image_bytes(15))  # another dataset: offline, defaults
        await settled(d, 2)

        async def both() -> bool:
            return (ds_dir(cfg, "tuned") / "llava_train.json").exists() and bool(
                rows(ds_dir(cfg, "plain") / "train.jsonl")
            )

        await wait_for(both)
    [req] = openai_fake.requests("chat")
    assert req.json["model"] == "my-vlm" and req.json["temperature"] == 0.7 and req.json["max_tokens"] == 99
    assert req.json["messages"][0] == {"role": "system", "content": "Be terse."}
    [item] = json.loads((ds_dir(cfg, "tuned") / "llava_train.json").read_text())
    assert item["conversations"][0]["value"] == "<image>\nWhat colour is it?"
    assert item["system"] == "You name colours."  # record_system, not the captioning prompt
    [orow] = rows(ds_dir(cfg, "tuned") / "openai_train.jsonl")
    assert orow["messages"][0] == {"role": "system", "content": "You name colours."}
    [prow] = rows(ds_dir(cfg, "plain") / "train.jsonl")
    assert [m["role"] for m in prow["messages"]] == ["user", "assistant"]  # no system turn by default
    assert not (ds_dir(cfg, "tuned") / "train.jsonl").exists()
    [plain] = records(cfg, "plain")
    assert plain["offline"] and plain["provider"] == "offline"


async def test_export_renders_another_format_without_calling_the_model(
    tmp_path: Path, openai_fake: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = openai_project(tmp_path, openai_fake)
    async with running_daemon(cfg) as d:
        for i in range(3):
            drop(cfg, f"ex/{i}.jpg", image_bytes(300 + i))
        await settled(d, 3)
        await train_rows(cfg, "ex", 3)
    calls = openai_fake.count()
    argv = [
        "--config",
        str(cfg.source),
        "dataset",
        "export",
        "ex",
        "--format",
        "openai",
        "--format",
        "imagefolder",
    ]
    assert await asyncio.to_thread(cli_main, argv) == 0
    assert "no model called" in capsys.readouterr().out
    assert openai_fake.count() == calls
    exported = rows(ds_dir(cfg, "ex") / "openai_train.jsonl")
    stored = {(ds_dir(cfg, "ex") / r["image"]).read_bytes() for r in records(cfg, "ex")}
    assert len(exported) == 3
    for row in exported:
        url = row["messages"][-2]["content"][1]["image_url"]["url"]
        assert base64.b64decode(url.split(",", 1)[1]) in stored
    assert len(rows(ds_dir(cfg, "ex") / "imagefolder" / "train" / "metadata.jsonl")) == 3
    summary = json.loads((ds_dir(cfg, "ex") / "summary.json").read_text())
    assert summary["format"] == ["llamafactory", "openai", "imagefolder"]
    assert await asyncio.to_thread(cli_main, ["--config", str(cfg.source), "dataset", "show", "ex"]) == 0
    out = capsys.readouterr().out
    assert "items:    3" in out and "openai_train.jsonl" in out
    assert await asyncio.to_thread(cli_main, ["--config", str(cfg.source), "dataset", "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["name"] == "ex" and listed["items"] == 3 and listed["pending"] == 0
    assert (
        await asyncio.to_thread(
            cli_main, ["--config", str(cfg.source), "dataset", "export", "nope", "-f", "llava"]
        )
        == 4
    )


async def test_forced_submit_describes_again_and_replaces_the_record(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    openai_fake.responder = Script("First description.", "First description.", "Second description.")
    cfg = openai_project(tmp_path, openai_fake)
    folder = tmp_path / "elsewhere" / "fresh"
    folder.mkdir(parents=True)
    for i in range(2):
        (folder / f"{i}.jpg").write_bytes(image_bytes(400 + i))
    argv = ["--config", str(cfg.source), "submit", str(folder), "--engine", "dataset"]
    async with running_daemon(cfg) as d:
        assert await asyncio.to_thread(cli_main, argv) == 0
        await settled(d, 2)
        await train_rows(cfg, "fresh", 2)
        assert await asyncio.to_thread(cli_main, [*argv, "--force"]) == 0
        jobs = await settled(d, 4)

        async def second() -> list[dict[str, Any]] | None:
            found = rows(ds_dir(cfg, "fresh") / "train.jsonl")
            answers = {r["messages"][-1]["content"] for r in found}
            return found if answers == {"Second description."} else None

        train = await wait_for(second)
    assert {j.status for j in jobs} == {"succeeded"} and sum(j.forced for j in jobs) == 2
    assert len(train) == 2 and len(records(cfg, "fresh")) == 2, "replaced, not added"
    assert openai_fake.count("chat") == 4
    assert all((folder / f"{i}.jpg").exists() for i in range(2)), "submitted files are left where they are"


async def test_rows_lean_on_one_guard_that_finishes_only_after_their_render(tmp_path: Path) -> None:
    from dropflow.engine.dataset.coalescer import RenderCoalescer
    from dropflow.engine.dataset.folder import DatasetFolder
    from dropflow.engine.dataset.formats import RenderOptions
    from dropflow.engine.dataset.records import ItemRecord

    folder = DatasetFolder(tmp_path / "g")
    opts = RenderOptions("g", folder.root)
    co = RenderCoalescer(folder, max_delay=60)  # renders only when nothing is in flight

    def write(i: int) -> ItemRecord:
        data = image_bytes(500 + i)
        digest = hashlib.sha256(data).hexdigest()
        rec = ItemRecord(
            digest, f"{i}.jpg", folder.image_rel(digest, ".jpg"), "p", f"answer {i}", created=i + 1.0
        )
        folder.write_item(rec, data)
        return rec

    for _ in range(3):
        co.begin()
    a = write(1)
    co.end(wrote=True)
    assert await co.settle(1, a, ["llamafactory"], opts) is False, "the first to finish guards"
    b = write(2)
    co.end(wrote=True)
    assert await co.settle(2, b, ["llamafactory"], opts) is True, "the next leans on the guard"
    assert co.renders == 0 and not (folder.root / "train.jsonl").exists()
    assert await co.settle(1, a, ["llamafactory"], opts) is False, "the guard waits for the render"
    co.end(wrote=False)  # nothing left in flight: the pending render runs
    await wait_for(lambda: _true(co.renders == 1))
    assert len(rows(folder.root / "train.jsonl")) == 2
    assert await co.settle(1, a, ["llamafactory"], opts) is True
    # a row finishing alone is rendered on the spot
    co.begin()
    c = write(3)
    co.end(wrote=True)
    assert await co.settle(3, c, ["llamafactory"], opts) is True
    assert len(rows(folder.root / "train.jsonl")) == 3


async def _true(value: bool) -> bool:
    return value


async def test_renders_take_at_most_a_share_of_the_time(tmp_path: Path) -> None:
    """A dataset fed faster than it renders (thousands of rows, a fast provider) must not render
    at every lull: the next render starts no sooner than `spacing` (its cost / RENDER_SHARE) after
    the last one ended, and the rows finishing meanwhile lean on a guard until it has."""
    import time

    from dropflow.engine.dataset.coalescer import RENDER_SHARE, RenderCoalescer
    from dropflow.engine.dataset.folder import DatasetFolder
    from dropflow.engine.dataset.formats import RenderOptions
    from dropflow.engine.dataset.records import ItemRecord

    class SlowFolder(DatasetFolder):
        def render(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            time.sleep(0.05)  # a large dataset's render
            return super().render(*args, **kwargs)

    folder = SlowFolder(tmp_path / "s")
    opts = RenderOptions("s", folder.root)
    co = RenderCoalescer(folder, max_delay=0.01)

    async def lone(i: int) -> tuple[ItemRecord, bool]:
        data = image_bytes(700 + i)
        digest = hashlib.sha256(data).hexdigest()
        rec = ItemRecord(digest, f"{i}.jpg", folder.image_rel(digest, ".jpg"), "p", f"a{i}", created=i + 1.0)
        co.begin()
        folder.write_item(rec, data)
        co.end(wrote=True)
        return rec, await co.settle(i, rec, ["llamafactory"], opts)

    _, done = await lone(1)
    assert done and co.renders == 1, "the first lone row is rendered on the spot"
    ended = time.monotonic()
    assert co.spacing == pytest.approx(co.render_seconds / RENDER_SHARE) and co.spacing >= 0.5
    b, done = await lone(2)
    assert not done and co.renders == 1, "too soon after the last render: it waits, as a guard"
    await wait_for(lambda: _true(co.renders == 2), timeout=10)
    assert time.monotonic() - ended >= co.spacing * 0.9  # (the render's own cost changes it a little)
    assert await co.settle(2, b, ["llamafactory"], opts) is True
    assert len(rows(folder.root / "train.jsonl")) == 2
