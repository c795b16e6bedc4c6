"""Issue 13: the trained model's system turn is a choice (`record_system`, none by default, the
same in every format), and the user prompt varies per item (`user_prompts`, `user_prompts_file`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dropflow.engine.dataset import prompts
from dropflow.engine.dataset.folder import DatasetFolder
from dropflow.engine.dataset.formats import RenderOptions
from dropflow.engine.dataset.params import DatasetParams
from dropflow.engine.errors import ConfigError
from tests.conftest import running_daemon
from tests.test_dataset_engine import drop, image_bytes, project, records, settled, train_rows
from tests.test_dataset_formats import SYSTEM, build, read_jsonl

ALL: list[Any] = ["llamafactory", "swift", "llava", "qwen", "openai", "imagefolder"]


def first_turns(folder: DatasetFolder) -> dict[str, Any]:
    """What each format says before the user's question, for the first train row."""
    llava = json.loads((folder.root / "llava_train.json").read_text())[0]
    return {
        "llamafactory": read_jsonl(folder.root / "train.jsonl")[0]["messages"][0],
        "swift": read_jsonl(folder.root / "swift_train.jsonl")[0]["messages"][0],
        "openai": read_jsonl(folder.root / "openai_train.jsonl")[0]["messages"][0],
        "qwen": read_jsonl(folder.root / "qwen_train.jsonl")[0]["messages"][0],
        "llava": llava.get("system"),
        "imagefolder": read_jsonl(folder.root / "imagefolder" / "train" / "metadata.jsonl")[0].get("system"),
    }


def test_no_format_carries_the_captioning_prompt_by_default(tmp_path: Path) -> None:
    folder = build(tmp_path, 3)  # every record keeps the captioning prompt it was described with
    assert all(r.system == SYSTEM for r in folder.records())
    folder.render(ALL, RenderOptions("pets", folder.root, offline_in_openai=True))
    for path in folder.root.rglob("*.json*"):
        if not path.is_relative_to(folder.root / ".records") and path.name != "summary.json":
            assert SYSTEM not in path.read_text(), path
    turns = first_turns(folder)
    assert {k: v["role"] for k, v in turns.items() if isinstance(v, dict)} == dict.fromkeys(
        ("llamafactory", "swift", "openai", "qwen"), "user"
    )
    assert turns["llava"] is None and turns["imagefolder"] is None


def test_record_system_goes_into_every_format_alike(tmp_path: Path) -> None:
    folder = build(tmp_path, 3)
    mine = "You are a careful describer of pets."
    folder.render(ALL, RenderOptions("pets", folder.root, offline_in_openai=True, system=mine))
    turns = first_turns(folder)
    for fmt in ("llamafactory", "swift", "openai"):
        assert turns[fmt] == {"role": "system", "content": mine}, fmt
    assert turns["qwen"] == {"role": "system", "content": [{"type": "text", "text": mine}]}
    assert turns["llava"] == mine and turns["imagefolder"] == mine


def test_record_system_param() -> None:
    assert DatasetParams().record_system is None
    assert DatasetParams(record_system="  Be kind. ").record_system == "Be kind."
    with pytest.raises(ValidationError):
        DatasetParams(record_system="see <image>")
    with pytest.raises(ValidationError):  # the old switch is gone: a config naming it says so
        DatasetParams.model_validate({"system_in_records": True})


def test_user_prompts_are_picked_per_item_by_content_hash(tmp_path: Path) -> None:
    (tmp_path / "questions.txt").write_text("# one per line\nWhat is in the picture?\n\nWhat colour is it?\n")
    p = DatasetParams(user_prompts=["Describe it."], user_prompts_file="questions.txt")
    choices = prompts.user_prompts(tmp_path, p)
    assert choices == ["Describe it.", "What is in the picture?", "What colour is it?"]
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(60)]
    picked = [prompts.pick(choices, h) for h in hashes]
    assert set(picked) == set(choices)  # all are used
    assert picked == [prompts.pick(choices, h) for h in hashes]  # and always the same per item
    assert prompts.user_prompts(tmp_path, DatasetParams()) == ["Describe this image in detail."]
    with pytest.raises(ConfigError):
        prompts.user_prompts(tmp_path, DatasetParams(user_prompts_file="missing.txt"))
    with pytest.raises(ValidationError):
        DatasetParams(user_prompts=["<image> what?"])
    with pytest.raises(ValidationError):
        DatasetParams(user_prompts_file="../outside.txt")


async def test_dropped_images_get_varied_prompts(tmp_path: Path) -> None:
    asks = ["What is this?", "Describe the colours.", "What would you title it?"]
    cfg = project(tmp_path / "proj", params={"user_prompts": asks})
    async with running_daemon(cfg) as d:
        for i in range(8):
            drop(cfg, f"qs/{i}.jpg", image_bytes(40 + i))
        await settled(d, 8)
        rows = await train_rows(cfg, "qs", 8)
    by_hash = {r["hash"]: r["prompt"] for r in records(cfg, "qs")}
    assert all(by_hash[h] == prompts.pick(asks, h) for h in by_hash)
    assert len(set(by_hash.values())) > 1
    assert {r["messages"][0]["content"].removeprefix("<image>") for r in rows} == set(by_hash.values())
