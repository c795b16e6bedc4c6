"""Video datasets: videos dropped beside (or instead of) images become video fine-tuning rows.

The frames sent (the shared sampler, repeats dropped, spread within the model's limits), each
format's row shape for a video and for a mixed dataset, `datasets` reading them back, and the engine
end to end: offline placeholders marked, a real client against its loopback fake, the answer cache.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from dropflow.engine.dataset.answers import check_answer
from dropflow.engine.dataset.folder import DatasetFolder
from dropflow.engine.dataset.formats import OFFLINE_MARKER, OPENAI_NO_VIDEO, RenderOptions, check_sharegpt
from dropflow.engine.dataset.params import DEFAULT_VIDEO_SYSTEM_PROMPT, DatasetParams
from dropflow.engine.dataset.records import ItemRecord
from dropflow.engine.dataset.video import frame_bytes, prepare_video
from dropflow.engine.fakes import FakeOpenAI
from dropflow.engine.providers import vision_limits
from dropflow.engine.providers.base import ModelLimits
from tests import test_dataset_formats as _formats
from tests.conftest import REPO, running_daemon
from tests.test_dataset_engine import (
    Script,
    drop,
    ds_dir,
    image_bytes,
    openai_project,
    project,
    records,
    rows,
    settled,
    train_rows,
)
from tests.test_dataset_formats import jpeg, read_jsonl
from tests.videos import make_video

SYSTEM = "You are a helpful assistant."
hf_datasets = _formats.hf_datasets  # the fixture: `datasets`, offline


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {
        "moving": make_video(root / "moving.mp4", seconds=6.0, fps=10.0),
        "static": make_video(root / "static.mp4", seconds=6.0, fps=10.0, cuts=(), static=(0.0, 99.0)),
        "long": make_video(root / "long.mp4", seconds=20.0, fps=5.0, size=(160, 120)),
    }


# --- the frames sent ---------------------------------------------------------------------------------


def test_a_static_shot_sends_fewer_frames_than_a_moving_one(clips: dict[str, Path]) -> None:
    p = DatasetParams()
    moving = prepare_video(clips["moving"], "moving.mp4", p, ModelLimits(), text_bytes=100)
    static = prepare_video(clips["static"], "static.mp4", p, ModelLimits(), text_bytes=100)
    assert moving.sampled == static.sampled == 6  # 1 fps over 6 s
    assert len(moving.frames) == moving.kept == 6 and moving.note == ""  # every second, nothing to explain
    assert len(static.frames) == static.kept == 1  # the repeats were never going to be paid for
    assert "did not change" in static.note
    assert moving.mime == "video/mp4" and (moving.width, moving.height) == (320, 240)
    assert moving.duration == pytest.approx(6.0, abs=0.2)
    # off, every sampled frame goes
    assert (
        len(
            prepare_video(
                clips["static"], "s", DatasetParams(video_dedup=False), ModelLimits(), text_bytes=0
            ).frames
        )
        == 6
    )


def test_a_long_video_is_spread_over_its_length_within_the_models_limits(clips: dict[str, Path]) -> None:
    p = DatasetParams(video_max_frames=5)
    video = prepare_video(clips["long"], "long.mp4", p, ModelLimits(), text_bytes=100)
    assert len(video.frames) == 5 and video.times[-1] >= 15.0  # not the first five seconds
    assert video.fps == pytest.approx(0.25, abs=0.01)
    # DashScope: a frame list of at least 4 (a static shot's one frame is repeated), at most the
    # model's frames, and a request body of at most 6 MiB
    limits = vision_limits("dashscope", "qwen-vl-max-latest")
    static = prepare_video(clips["static"], "static.mp4", DatasetParams(), limits, text_bytes=100)
    assert len(static.frames) == 4 and len(set(static.frames)) == 1
    assert (
        len(
            prepare_video(
                clips["moving"], "m", DatasetParams(), ModelLimits(max_frames=3), text_bytes=0
            ).frames
        )
        == 3
    )
    small = ModelLimits(max_request_bytes=16 * 1024 + 1024 + 3 * frame_bytes(len(static.frames[0])) + 200)
    fitted = prepare_video(clips["moving"], "m", DatasetParams(), small, text_bytes=0)
    assert 1 <= len(fitted.frames) < 6
    # thinned: the rate the model is told is that of the frames it gets
    assert fitted.fps == pytest.approx(len(fitted.frames) / 6.0)


# --- the rows of each format ---------------------------------------------------------------------------


def build_mixed(
    root: Path, clips: dict[str, Path], *, images: int = 3, offline: bool = True
) -> DatasetFolder:
    """A dataset folder with the moving and static videos and `images` images, written the way the
    engine writes them."""
    folder = DatasetFolder(root / "mix")
    for i, name in enumerate(("moving", "static")):
        digest = hashlib.sha256(clips[name].read_bytes()).hexdigest()
        folder.write_video_item(
            ItemRecord(
                hash=digest,
                source=f"{name}.mp4",
                image="",
                prompt="Describe this video in detail.",
                answer=f"A {name} shot of shapes.",
                mime="video/mp4",
                width=320,
                height=240,
                provider="offline" if offline else "openai",
                offline=offline,
                created=1000.0 + 10 * i,
                video=folder.video_rel(digest, ".mp4"),
                duration=6.0,
                fps=1.0,
                frames=6,
                sampled=6,
            ),
            clips[name],
        )
    for i in range(images):
        data = jpeg(i)
        digest = hashlib.sha256(data).hexdigest()
        folder.write_item(
            ItemRecord(
                hash=digest,
                source=f"p{i}.jpg",
                image=folder.image_rel(digest, ".jpg"),
                prompt="Describe this image.",
                answer=f"A square, colour {i}.",
                width=40,
                height=30,
                provider="offline" if offline else "openai",
                offline=offline,
                created=1001.0 + 10 * i,
            ),
            data,
        )
    return folder


def test_a_video_only_dataset_has_only_the_videos_column(tmp_path: Path, clips: dict[str, Path]) -> None:
    folder = build_mixed(tmp_path, clips, images=0)
    folder.render(["llamafactory", "swift"], RenderOptions("mix", folder.root, system=SYSTEM))
    for name in ("train.jsonl", "swift_train.jsonl"):
        for row in read_jsonl(folder.root / name):
            assert set(row) == {"messages", "videos", OFFLINE_MARKER} and row[OFFLINE_MARKER] is True
            assert check_sharegpt(row) == []
            assert row["messages"][1]["content"] == "<video>Describe this video in detail."
            [path] = row["videos"]
            assert path.startswith("mix/videos/") and (folder.root.parent / path).is_file()
    info = json.loads((folder.root.parent / "dataset_info.json").read_text())
    assert info["mix"]["columns"] == {"messages": "messages", "videos": "videos"}
    stored = {hashlib.sha256((folder.root / r.video).read_bytes()).hexdigest() for r in folder.records()}
    assert stored == {r.hash for r in folder.records()}  # copied as they were dropped


def test_a_mixed_dataset_puts_both_kinds_in_the_same_files(tmp_path: Path, clips: dict[str, Path]) -> None:
    folder = build_mixed(tmp_path, clips, images=6)
    summary = folder.render(
        ["llamafactory", "swift", "llava", "qwen", "openai", "imagefolder"],
        RenderOptions("mix", folder.root, val_ratio=0.25, system=SYSTEM, offline_in_openai=True),
    ).summary
    train, val = read_jsonl(folder.root / "train.jsonl"), read_jsonl(folder.root / "val.jsonl")
    assert len(train) + len(val) == 8
    for row in train + val:
        assert check_sharegpt(row) == [] and set(row) >= {"images", "videos"}
        kind = "videos" if row["videos"] else "images"
        assert len(row[kind]) == 1 and row["images" if kind == "videos" else "videos"] == []
        assert row["messages"][1]["content"].startswith("<video>" if kind == "videos" else "<image>")
    # the first rows hold one of each kind: `datasets` types the columns from a file's beginning
    assert {bool(r["videos"]) for r in train[:2]} == {True, False}
    info = json.loads((folder.root.parent / "dataset_info.json").read_text())
    assert (
        info["mix"]["columns"]
        == info["mix_val"]["columns"]
        == {
            "messages": "messages",
            "images": "images",
            "videos": "videos",
        }
    )
    assert read_jsonl(folder.root / "swift_train.jsonl") == train
    llava = json.loads((folder.root / "llava_train.json").read_text())
    for item in llava:
        key = "video" if "video" in item else "image"
        assert (folder.root.parent / item[key]).is_file()
        assert item["conversations"][0]["value"].startswith(f"<{key}>\n")
    assert (
        sum("video" in item for item in llava)
        + sum("video" in r for r in json.loads((folder.root / "llava_val.json").read_text()))
        == 2
    )
    # OpenAI's fine-tuning takes no video: left out, and summary.json says why
    openai_rows = read_jsonl(folder.root / "openai_train.jsonl") + read_jsonl(
        folder.root / "openai_val.jsonl"
    )
    assert len(openai_rows) == 6
    assert {s["source"] for s in summary["skipped"]["openai"]} == {"moving.mp4", "static.mp4"}
    assert {s["reason"] for s in summary["skipped"]["openai"]} == {OPENAI_NO_VIDEO}
    # Hugging Face: images in imagefolder/, videos in videofolder/, each beside its metadata
    for tree, ext, n in (("imagefolder", ".jpg", 6), ("videofolder", ".mp4", 2)):
        found = 0
        for split in ("train", "validation"):
            for row in rows(folder.root / tree / split / "metadata.jsonl"):
                assert (
                    row["file_name"].endswith(ext)
                    and (folder.root / tree / split / row["file_name"]).is_file()
                )
                assert row[OFFLINE_MARKER] is True
                found += 1
        assert found == n, tree


def test_hugging_face_datasets_loads_the_mixed_files_and_the_videofolder(
    hf_datasets: Any, tmp_path: Path, clips: dict[str, Path]
) -> None:
    folder = build_mixed(tmp_path, clips, images=3, offline=False)
    folder.render(["llamafactory", "swift", "imagefolder"], RenderOptions("mix", folder.root))
    cache = str(tmp_path / "hf-cache")
    for name in ("train.jsonl", "swift_train.jsonl"):
        loaded = hf_datasets.load_dataset("json", data_files=str(folder.root / name), cache_dir=cache)[
            "train"
        ]
        assert loaded.num_rows == 5
        assert sorted(len(v) for v in loaded["videos"]) == [0, 0, 0, 1, 1]
        assert sorted(len(v) for v in loaded["images"]) == [0, 0, 1, 1, 1]
    videos = hf_datasets.load_dataset(
        "videofolder", data_dir=str(folder.root / "videofolder"), cache_dir=cache
    )
    train = videos["train"].cast_column("video", hf_datasets.Video(decode=False))  # no torchcodec here
    assert train.num_rows == 2
    answers = {r.hash[:16]: r.answer for r in folder.records()}
    for item in train:
        assert Path(item["video"]["path"]).is_file() and item["text"] == answers[item["id"]]


def qwen_parts(part: dict[str, Any]) -> dict[str, Any]:
    """A part as written: `datasets` 3.x gives every part every key of its file, the absent ones None
    (5.x keeps them as written); the README tells users to drop them the same way."""
    return {k: v for k, v in part.items() if v is not None}


def test_qwen_rows_put_a_video_part_where_the_image_would_be(tmp_path: Path, clips: dict[str, Path]) -> None:
    folder = build_mixed(tmp_path, clips, images=1)
    recs = {f"mix/{r.media}": r for r in folder.records()}
    for system in (None, SYSTEM):
        folder.render(["qwen"], RenderOptions("mix", folder.root, system=system))
        rows = read_jsonl(folder.root / "qwen_train.jsonl")
        assert len(rows) == 3 and not (folder.root / "qwen_val.jsonl").exists()
        for row in rows:
            *head, user, assistant = row["messages"]
            assert head == (
                [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]}] if system else []
            )
            media, text = user["content"]
            rec = recs[media.get("video") or media["image"]]
            want = (
                {"type": "video", "video": f"mix/{rec.video}", "fps": 1.0}  # the rate the model was told
                if rec.is_video
                else {"type": "image", "image": f"mix/{rec.image}"}
            )
            assert media == want and text == {"type": "text", "text": rec.prompt}
            assert assistant == {"role": "assistant", "content": [{"type": "text", "text": rec.answer}]}
            assert row[OFFLINE_MARKER] is True
        # the first rows hold one of each kind, as in the sharegpt files
        assert {m["type"] for r in rows[:2] for m in r["messages"][-2]["content"][:1]} == {"image", "video"}


def test_hugging_face_datasets_loads_a_mixed_qwen_file_and_its_paths_resolve_from_the_root(
    hf_datasets: Any, tmp_path: Path, clips: dict[str, Path]
) -> None:
    folder = build_mixed(tmp_path / "outputs", clips, images=3, offline=False)
    folder.render(["qwen"], RenderOptions("mix", folder.root, system=SYSTEM))
    written = read_jsonl(folder.root / "qwen_train.jsonl")
    # the GPU machine: the datasets root copied elsewhere, the original gone; the tool runs from there
    moved = tmp_path / "gpu" / "data"
    shutil.copytree(folder.root.parent, moved)
    shutil.rmtree(folder.root.parent)
    loaded = hf_datasets.load_dataset(
        "json", data_files=str(moved / "mix" / "qwen_train.jsonl"), cache_dir=str(tmp_path / "hf-cache")
    )["train"]
    assert loaded.num_rows == 5 and OFFLINE_MARKER not in loaded.column_names
    kinds = []
    for row, want in zip(loaded, written, strict=True):
        messages = [{**m, "content": [qwen_parts(p) for p in m["content"]]} for m in row["messages"]]
        assert messages == want["messages"]
        system, user, assistant = messages
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert system["content"] == [{"type": "text", "text": SYSTEM}]
        media, text = user["content"]
        kinds.append(media["type"])
        assert text["type"] == "text" and assistant["content"][0]["type"] == "text"
        path = Path(media[media["type"]])
        assert not path.is_absolute() and (moved / path).is_file()
        if media["type"] == "video":
            assert set(media) == {"type", "video", "fps"} and path.suffix == ".mp4"
        else:
            assert set(media) == {"type", "image"} and path.suffix == ".jpg"
    assert sorted(kinds) == ["image", "image", "image", "video", "video"]


# --- the engine, end to end ----------------------------------------------------------------------------


async def test_dropped_videos_and_images_become_one_dataset_offline(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    cfg = project(tmp_path / "proj", params={"formats": ["llamafactory", "imagefolder"]})
    async with running_daemon(cfg) as d:
        drop(cfg, "mix/moving.mp4", clips["moving"].read_bytes())
        drop(cfg, "mix/static.mp4", clips["static"].read_bytes())
        drop(cfg, "mix/a.jpg", image_bytes(1))
        jobs = await settled(d, 3, timeout=60)
        assert {j.status for j in jobs} == {"succeeded"}, [j.error_message for j in jobs]
        train = await train_rows(cfg, "mix", 3)
    for row in train:
        assert check_sharegpt(row) == [] and row[OFFLINE_MARKER] is True  # placeholders say so
    video_rows = [r for r in train if r["videos"]]
    assert len(video_rows) == 2 and all(r["images"] == [] for r in video_rows)
    recs = {r["source"]: r for r in records(cfg, "mix")}
    moving, static = recs["moving.mp4"], recs["static.mp4"]
    for rec in (moving, static):
        assert rec["offline"] is True and rec["video"].startswith("videos/") and rec["image"] == ""
        assert rec["system"] == DEFAULT_VIDEO_SYSTEM_PROMPT
        assert rec["prompt"] == "Describe this video in detail."
        assert "[offline placeholder" in rec["answer"]
        stored = (ds_dir(cfg, "mix") / rec["video"]).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == rec["hash"]
    assert moving["frames"] == 6 and static["frames"] == 1 and static["sampled"] == 6
    assert "1 frame(s)" in static["answer"] and "6 frame(s)" in moving["answer"]
    video_job = next(j for j in jobs if j.input_path.endswith("moving.mp4"))
    assert video_job.usage["frames_sent"] == 6 and video_job.usage["frames_sampled"] == 6
    meta = rows(ds_dir(cfg, "mix") / "videofolder" / "train" / "metadata.jsonl")
    assert len(meta) == 2 and all(m[OFFLINE_MARKER] is True for m in meta)
    summary = json.loads((ds_dir(cfg, "mix") / "summary.json").read_text())
    assert summary["items"] == 3 and summary["videos"] == 2 and summary["offline_items"] == 3
    assert summary["tokens"]["video"] > 0 and summary["cached_items"] == 0  # offline answers are not cached


async def test_a_video_is_paid_for_once_through_the_answer_cache(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with FakeOpenAI(api_key="sk-dataset-test-7c1d2e3f4a5b6c7d8e9f") as srv:
        script = Script("Shapes glide across a changing background.")
        srv.responder = script
        cfg = openai_project(tmp_path, srv, params={"formats": ["llamafactory", "swift"]})
        async with running_daemon(cfg) as d:
            drop(cfg, "a/moving.mp4", clips["moving"].read_bytes())
            [job] = await settled(d, 1, timeout=60)
            assert job.status == "succeeded", job.error_message
            assert len(script.prompts) == 1
            # the same video in another dataset: the same request, answered from the cache
            drop(cfg, "b/copy.mp4", clips["moving"].read_bytes())
            jobs = await settled(d, 2, timeout=60)
            assert {j.status for j in jobs} == {"succeeded"}
            [row] = await train_rows(cfg, "b", 1)
    assert len(script.prompts) == 1, "the second dataset paid for the same answer again"
    [prompt] = script.prompts
    # the frames reached the model inline, as one video part (a frame list)
    assert len(prompt.frames) == 6 and not prompt.images
    first = base64.b64decode(prompt.frames[0].split(",", 1)[1])
    assert first[:2] == b"\xff\xd8"  # a JPEG frame
    assert prompt.system is not None and "describe the video" in prompt.system
    assert prompt.texts == ["Describe this video in detail."]
    [paid] = records(cfg, "a")
    [cached] = records(cfg, "b")
    assert paid["cached"] is False and paid["calls"] == 1 and paid["usage"]["input_tokens"] > 0
    assert cached["cached"] is True and cached["calls"] == 0 and not cached["usage"]
    assert cached["answer"] == paid["answer"] == "Shapes glide across a changing background."
    assert row["videos"] == [f"b/{cached['video']}"] and OFFLINE_MARKER not in row
    assert check_sharegpt(row) == []
    summary = json.loads((ds_dir(cfg, "b") / "summary.json").read_text())
    assert summary["cached_items"] == 1 and summary["calls"] == 0 and summary["tokens"]["input"] == 0


def test_video_system_prompt_default_matches_the_prompts_file() -> None:
    text = (REPO / "prompts" / "dataset_video_caption_system.txt").read_text(encoding="utf-8")
    assert text.strip() == DEFAULT_VIDEO_SYSTEM_PROMPT.strip()


def test_adding_a_video_to_an_image_dataset_updates_its_entry_and_keeps_the_split(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    folder = build_mixed(tmp_path, clips, images=4)
    videos = [r for r in folder.records() if r.is_video]
    for rec in videos:  # start as an image-only dataset: the videos come later
        folder.record_path(rec.hash).unlink()
    info_path = folder.root.parent / "dataset_info.json"
    info_path.write_text(json.dumps({"mine": {"file_name": "mine.json"}}))
    opts = RenderOptions("mix", folder.root, val_ratio=0.25)
    folder.render(["llamafactory"], opts)
    before = {r["images"][0] for r in read_jsonl(folder.root / "val.jsonl")}
    assert json.loads(info_path.read_text())["mix"]["columns"] == {"messages": "messages", "images": "images"}
    for rec in videos:
        folder.write_video_item(rec, clips[rec.source.removesuffix(".mp4")])
    folder.render(["llamafactory"], opts)
    info = json.loads(info_path.read_text())
    assert info["mine"] == {"file_name": "mine.json"}  # the user's entry stays
    assert info["mix"]["columns"] == {"messages": "messages", "images": "images", "videos": "videos"}
    val = read_jsonl(folder.root / "val.jsonl")
    assert before <= {p for r in val for p in r["images"]}  # no image moved between splits
    assert len(read_jsonl(folder.root / "train.jsonl")) + len(val) == 6


def test_video_rows_and_answers_are_checked_like_image_ones() -> None:
    user = {"role": "user", "content": "<video>What happens?"}
    answer = {"role": "assistant", "content": "A ball rolls."}
    assert check_sharegpt({"messages": [user, answer], "videos": ["a.mp4"]}) == []
    assert check_sharegpt({"messages": [user, answer], "images": [], "videos": ["a.mp4"]}) == []
    assert check_sharegpt({"messages": [user, answer], "images": ["a.jpg"]})  # token and list disagree
    assert check_sharegpt({"messages": [user, answer], "videos": "a.mp4"})  # not a list
    assert check_sharegpt({"messages": [user, answer], "videos": ["a.mp4", "b.mp4"]})
    for refusal in (
        "I can't see the video you shared.",
        "No video was provided.",
        "抱歉，我无法查看该视频。",
    ):
        assert check_answer(refusal)[1] is not None, refusal
    assert check_answer("A <video> of a cat.")[0] == "A [video] of a cat."
