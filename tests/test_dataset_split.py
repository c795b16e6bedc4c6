"""Issue 13: the validation split exists whenever val_ratio > 0, follows the ratio, and an item
never moves between splits as the dataset grows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dropflow.engine.dataset.folder import DatasetFolder
from dropflow.engine.dataset.formats import RenderOptions
from dropflow.engine.dataset.records import ItemRecord
from dropflow.engine.dataset.split import assign, val_target
from tests.test_dataset_formats import build, jpeg, read_jsonl


def sides(folder: DatasetFolder) -> dict[str, str]:
    out = {}
    for name, split in (("train.jsonl", "train"), ("val.jsonl", "validation")):
        for row in read_jsonl(folder.root / name) if (folder.root / name).stat().st_size else []:
            out[row["images"][0]] = split
    return out


def test_val_entry_exists_even_when_no_item_would_fall_in_validation(tmp_path: Path) -> None:
    folder = build(tmp_path, 1)
    folder.render(["llamafactory", "swift"], RenderOptions("pets", folder.root, val_ratio=0.1))
    info = json.loads((folder.root.parent / "dataset_info.json").read_text())
    assert "pets_val" in info
    assert (folder.root / "val.jsonl").exists() and (folder.root / "swift_val.jsonl").exists()
    folder = build(tmp_path, 2)  # two items and a small ratio: still one in validation
    result = folder.render(["llamafactory"], RenderOptions("pets", folder.root, val_ratio=0.1))
    assert (result.summary["train"], result.summary["validation"]) == (1, 1)
    assert len(read_jsonl(folder.root / "val.jsonl")) == 1


def test_items_never_move_as_the_dataset_grows(tmp_path: Path) -> None:
    before: dict[str, str] = {}
    for n in (2, 3, 5, 9, 10, 17, 30):
        folder = build(tmp_path, n)
        result = folder.render(["llamafactory"], RenderOptions("pets", folder.root, val_ratio=0.2))
        now = sides(folder)
        assert {k: now[k] for k in before} == before
        assert result.summary["validation"] == val_target(n, 0.2)
        before = now
    assert val_target(30, 0.2) == 6


def test_a_late_record_with_an_early_timestamp_moves_nobody(tmp_path: Path) -> None:
    folder = build(tmp_path, 10)
    folder.render(["llamafactory"], RenderOptions("pets", folder.root, val_ratio=0.3))
    before = sides(folder)
    data = jpeg(99)
    digest = hashlib.sha256(data).hexdigest()
    rec = ItemRecord(digest, "late.jpg", folder.image_rel(digest, ".jpg"), "Describe.", "A.", created=1.0)
    folder.write_item(rec, data)  # written after the render, stamped before every other item
    folder.render(["llamafactory"], RenderOptions("pets", folder.root, val_ratio=0.3))
    after = sides(folder)
    assert {k: after[k] for k in before} == before and len(after) == 11


def test_assign_keeps_known_items_and_follows_the_ratio() -> None:
    hashes = [f"{i:064x}" for i in range(100)]
    first = assign(hashes[:40], 0.1)
    assert sum(s == "validation" for s in first.values()) == 4
    second = assign(hashes, 0.1, first)
    assert {h: second[h] for h in first} == first
    assert sum(s == "validation" for s in second.values()) == 10
    assert set(assign(hashes, 0.0).values()) == {"train"}
    assert val_target(1, 0.5) == 0 and val_target(2, 0.01) == 1 and val_target(3, 0.5) == 2
