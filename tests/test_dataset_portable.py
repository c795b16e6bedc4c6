"""Issue 13: dataset_info.json keeps what users added, and every path in the rows resolves from
the datasets root, so a copy of it trains anywhere and several datasets combine in one run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from dropflow.engine.dataset.folder import DatasetFolder
from dropflow.engine.dataset.formats import RenderOptions
from tests.test_dataset_formats import build, read_jsonl

ALL: list[Any] = ["llamafactory", "swift", "llava", "qwen", "imagefolder"]


def two_datasets(root: Path) -> tuple[DatasetFolder, DatasetFolder]:
    pets = build(root, 4)
    cats = DatasetFolder(root / "cats")
    shutil.copytree(pets.root, cats.root)  # same images, a second dataset beside the first
    for folder in (pets, cats):
        folder.render(ALL, RenderOptions(folder.name, folder.root, val_ratio=0.25))
    return pets, cats


def test_user_entries_in_dataset_info_survive_every_render(tmp_path: Path) -> None:
    info = tmp_path / "dataset_info.json"
    mine = {"file_name": "mine.json", "formatting": "alpaca"}
    info.write_text(json.dumps({"my_own": mine, "pets": {"file_name": "stale"}}))
    folder = build(tmp_path, 4)
    folder.render(["llamafactory"], RenderOptions("pets", folder.root, val_ratio=0.25))
    data = json.loads(info.read_text())
    assert data["my_own"] == mine and data["pets"]["file_name"] == "pets/train.jsonl" and "pets_val" in data
    folder.render(["llamafactory"], RenderOptions("pets", folder.root, val_ratio=0.0))
    data = json.loads(info.read_text())
    assert data["my_own"] == mine and "pets_val" not in data  # ours went, theirs stayed


def test_a_corrupt_dataset_info_is_moved_aside_not_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    info = tmp_path / "dataset_info.json"
    info.write_text('{"my_own": {"file_name": "mine.json"},')  # a half-edited file
    folder = build(tmp_path, 2)
    folder.render(["llamafactory"], RenderOptions("pets", folder.root))
    assert list(json.loads(info.read_text())) == ["pets"]
    aside = list(tmp_path.glob("dataset_info.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == '{"my_own": {"file_name": "mine.json"},'
    assert "moved aside" in caplog.text


def test_an_old_per_dataset_info_file_loses_only_our_entries(tmp_path: Path) -> None:
    folder = build(tmp_path, 2)
    legacy = folder.root / "dataset_info.json"
    legacy.write_text(json.dumps({"pets": {"file_name": "train.jsonl"}}))
    folder.render(["llamafactory"], RenderOptions("pets", folder.root))
    assert not legacy.exists()
    legacy.write_text(json.dumps({"pets": {"file_name": "train.jsonl"}, "theirs": {"file_name": "t.json"}}))
    folder.render(["llamafactory"], RenderOptions("pets", folder.root))
    assert json.loads(legacy.read_text()) == {"theirs": {"file_name": "t.json"}}


def test_two_datasets_resolve_from_one_dataset_dir_after_a_copy(tmp_path: Path) -> None:
    two_datasets(tmp_path / "outputs")
    # the GPU machine: the datasets root copied somewhere else, the original gone
    moved = tmp_path / "gpu" / "data"
    shutil.copytree(tmp_path / "outputs", moved)
    shutil.rmtree(tmp_path / "outputs")
    info = json.loads((moved / "dataset_info.json").read_text())
    assert set(info) == {"pets", "pets_val", "cats", "cats_val"}
    checked = 0
    for entry in info.values():
        # LLaMA-Factory: dataset_dir=<root>, dataset: pets,cats; file_name and images from dataset_dir
        for row in read_jsonl(moved / entry["file_name"]):
            assert all((moved / p).is_file() for p in row["images"])
            checked += 1
    assert checked == 8
    for name in ("pets", "cats"):
        # ms-swift run from the root; LLaVA / Qwen-VL with image_folder=<root>
        for row in read_jsonl(moved / name / "swift_train.jsonl") + read_jsonl(
            moved / name / "swift_val.jsonl"
        ):
            assert all(not Path(p).is_absolute() and (moved / p).is_file() for p in row["images"])
        # qwen_vl_utils run from the root (it opens a plain path from the working directory)
        for row in read_jsonl(moved / name / "qwen_train.jsonl") + read_jsonl(
            moved / name / "qwen_val.jsonl"
        ):
            [media] = [p for p in row["messages"][-2]["content"] if p["type"] == "image"]
            assert not Path(media["image"]).is_absolute() and (moved / media["image"]).is_file()
        for split in ("llava_train.json", "llava_val.json"):
            for item in json.loads((moved / name / split).read_text()):
                assert (moved / item["image"]).is_file()
        # imagefolder: file_name beside the metadata
        meta = moved / name / "imagefolder" / "train" / "metadata.jsonl"
        assert all((meta.parent / r["file_name"]).is_file() for r in read_jsonl(meta))
