"""Dataset formats and answer checks, read back by consumers that did not come from us.

The Hugging Face `datasets` library loads the JSONL files and the imagefolder layout offline;
LLaMA-Factory's documented sharegpt constraints are asserted row by row.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dropflow.engine.dataset.answers import check_answer
from dropflow.engine.dataset.folder import DatasetFolder
from dropflow.engine.dataset.formats import (
    OFFLINE_MARKER,
    OPENAI_MAX_IMAGE_BYTES,
    OPENAI_MAX_IMAGES,
    RenderOptions,
    check_sharegpt,
    jsonl_line,
)
from dropflow.engine.dataset.params import DEFAULT_SYSTEM_PROMPT, DEFAULT_SYSTEM_PROMPT_FILE, DatasetParams
from dropflow.engine.dataset.records import FailedItem, ItemRecord
from tests.conftest import REPO

SYSTEM = "You describe images for training data."


def jpeg(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    from PIL import Image

    im = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    im.putpixel((seed % size[0], 0), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return buf.getvalue()


def build(
    root: Path, n: int, *, answers: list[str] | None = None, offline: bool | list[bool] = True
) -> DatasetFolder:
    """A dataset folder with `n` items written the way the engine writes them (by the offline
    provider unless `offline` says otherwise, for all items or per item)."""
    folder = DatasetFolder(root / "pets")
    for i in range(n):
        by_model = not (offline if isinstance(offline, bool) else offline[i])
        data = jpeg(i)
        digest = hashlib.sha256(data).hexdigest()
        answer = answers[i] if answers else f"A small square, colour number {i}.\nSecond line\u2028same item."
        folder.write_item(
            ItemRecord(
                hash=digest,
                source=f"p{i}.jpg",
                image=folder.image_rel(digest, ".jpg"),
                prompt="Describe this image.",
                answer=answer,
                system=SYSTEM,
                width=40,
                height=30,
                provider="openai" if by_model else "offline",
                model="gpt-4o-mini" if by_model else "offline-vision",
                offline=not by_model,
                usage={"input_tokens": 300, "output_tokens": 20, "image_tokens": 256},
                created=1000.0 + i,
            ),
            data,
        )
    return folder


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# --- answer checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n ",
        "I'm sorry, but I can't see the image you provided.",
        "I cannot view images.",
        "Unfortunately no image was provided in your message.",
        "As an AI language model, I can't describe pictures.",
        "抱歉，我无法查看图片。",
    ],
)
def test_empty_answers_and_refusals_are_rejected(text: str) -> None:
    _, rejection = check_answer(text)
    assert rejection is not None and rejection.code in ("empty", "refusal")


def test_a_description_quoting_refusal_words_late_is_kept() -> None:
    text = "A street at dusk. " * 20 + "A poster reads: I can't see the image of you anymore."
    answer, rejection = check_answer(text)
    assert rejection is None and answer == text.strip()


def test_json_mode_strips_fences_and_rejects_invalid_json() -> None:
    answer, rejection = check_answer('```json\n{"caption": "a cat",  "n": 1}\n```', json_mode=True)
    assert rejection is None and json.loads(answer) == {"caption": "a cat", "n": 1}
    _, rejection = check_answer('{"caption": "a cat"', json_mode=True)
    assert rejection is not None and rejection.code == "invalid_json"
    _, rejection = check_answer('"just a string"', json_mode=True)
    assert rejection is not None and rejection.code == "invalid_json"


def test_literal_image_token_is_escaped_or_rejected() -> None:
    answer, rejection = check_answer("An <image> inside a <video> frame.")
    assert rejection is None and answer == "An [image] inside a [video] frame."
    _, rejection = check_answer("An <image> here.", image_token="reject")
    assert rejection is not None and rejection.code == "media_token"
    answer, rejection = check_answer('{"caption": "an <image>"}', json_mode=True)
    assert rejection is None and json.loads(answer) == {"caption": "an [image]"}
    # Qwen-VL's tokenizer reads its special tokens in plain text: quoted, they would end the turn
    answer, rejection = check_answer("Caption: <|vision_start|><|image_pad|><|vision_end|> then <|im_end|>")
    assert (
        rejection is None and answer == "Caption: [|vision_start|][|image_pad|][|vision_end|] then [|im_end|]"
    )
    _, rejection = check_answer("ends <|im_end|>", image_token="reject")
    assert rejection is not None and rejection.code == "media_token" and "Qwen" in rejection.detail


def test_params_refuse_a_placeholder_in_the_user_prompt_and_accept_a_format_string() -> None:
    with pytest.raises(ValidationError, match="image token"):
        DatasetParams(user_prompt="<image> What is this?")
    with pytest.raises(ValidationError):
        DatasetParams(formats=["parquet"])
    with pytest.raises(ValidationError):
        DatasetParams(system_prompt_file="../secrets.txt")
    assert DatasetParams.model_validate({"formats": "openai, llamafactory"}).formats == [
        "openai",
        "llamafactory",
    ]


def test_builtin_system_prompt_matches_the_shipped_prompt_file() -> None:
    shipped = (REPO / "prompts" / DEFAULT_SYSTEM_PROMPT_FILE).read_text(encoding="utf-8").strip()
    assert shipped == DEFAULT_SYSTEM_PROMPT


# --- layout and split -------------------------------------------------------------------------------


def test_jsonl_lines_never_break_on_unicode_line_separators() -> None:
    line = jsonl_line({"t": "a\nb\u2028c\u2029d"})
    assert line.count("\n") == 1 and len(line.splitlines()) == 1
    assert json.loads(line) == {"t": "a\nb\u2028c\u2029d"}


def test_sharegpt_rows_meet_llamafactory_constraints(tmp_path: Path) -> None:
    folder = build(tmp_path, 12)
    result = folder.render(
        ["llamafactory"], RenderOptions("pets", folder.root, val_ratio=0.25, system=SYSTEM)
    )
    train = read_jsonl(folder.root / "train.jsonl")
    val = read_jsonl(folder.root / "val.jsonl")
    assert len(train) + len(val) == 12 and train and val
    assert result.covered == {r.hash: r.created for r in folder.records()}
    for row in train + val:
        assert check_sharegpt(row) == []
        assert isinstance(row["images"], list) and len(row["images"]) == 1
        msgs = row["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
        assert msgs[1]["content"].count("<image>") == 1
        assert (folder.root.parent / row["images"][0]).is_file()
    info = json.loads((folder.root.parent / "dataset_info.json").read_text())
    assert (
        info["pets"]["file_name"] == "pets/train.jsonl" and info["pets_val"]["file_name"] == "pets/val.jsonl"
    )
    for entry in info.values():
        assert entry["formatting"] == "sharegpt"
        assert entry["columns"] == {"messages": "messages", "images": "images"}
        assert entry["tags"]["system_tag"] == "system" and entry["tags"]["assistant_tag"] == "assistant"
    # train and validation never share an item, and the rows come in the order items were added
    assert not {r["images"][0] for r in train} & {r["images"][0] for r in val}


def test_sharegpt_checker_catches_the_three_classic_mistakes() -> None:
    user = {"role": "user", "content": "<image>Hi"}
    answer = {"role": "assistant", "content": "A cat."}
    ok: dict[str, Any] = {
        "messages": [user, answer],
        "images": ["a.jpg"],
    }
    assert check_sharegpt(ok) == []
    assert check_sharegpt({**ok, "images": "a.jpg"})  # not a list
    assert check_sharegpt({**ok, "images": ["a.jpg", "b.jpg"]})  # token count != images
    bad_answer = {
        "messages": [user, {"role": "assistant", "content": "An <image> tag"}],
        "images": ["a.jpg"],
    }
    assert check_sharegpt(bad_answer)
    assert check_sharegpt({"messages": [answer, user], "images": ["a.jpg"]})  # roles out of order


def test_val_file_and_entry_disappear_when_the_ratio_goes_back_to_zero(tmp_path: Path) -> None:
    folder = build(tmp_path, 10)
    folder.render(["llamafactory", "imagefolder"], RenderOptions("pets", folder.root, val_ratio=0.5))
    assert (folder.root / "val.jsonl").exists()
    folder.render(["llamafactory"], RenderOptions("pets", folder.root, val_ratio=0.0))
    assert not (folder.root / "val.jsonl").exists()
    assert not (folder.root / "imagefolder" / "validation" / "metadata.jsonl").exists()
    assert list(json.loads((folder.root.parent / "dataset_info.json").read_text())) == ["pets"]
    assert len(read_jsonl(folder.root / "train.jsonl")) == 10
    # imagefolder was rendered once, so it is kept up to date by later renders
    assert len(read_jsonl(folder.root / "imagefolder" / "train" / "metadata.jsonl")) == 10
    assert not list((folder.root / "imagefolder" / "validation").rglob("*.jpg"))


def test_llava_swift_and_openai_files(tmp_path: Path) -> None:
    folder = build(tmp_path, 4, offline=False)
    folder.render(["llava", "swift", "openai"], RenderOptions("pets", folder.root, system=SYSTEM))
    llava = json.loads((folder.root / "llava_train.json").read_text())
    assert isinstance(llava, list) and len(llava) == 4
    for item in llava:
        assert isinstance(item["image"], str) and (folder.root.parent / item["image"]).is_file()
        human, gpt = item["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert gpt["from"] == "gpt" and "<image>" not in gpt["value"]
    for row in read_jsonl(folder.root / "swift_train.jsonl"):
        path = Path(row["images"][0])  # relative to the datasets root: survives a copy of it
        assert not path.is_absolute() and (folder.root.parent / path).is_file()
        assert check_sharegpt(row) == []
    stored = {r.hash: (folder.root / r.image).read_bytes() for r in folder.records()}
    assert len(read_jsonl(folder.root / "openai_train.jsonl")) == 4
    for row in read_jsonl(folder.root / "openai_train.jsonl"):
        msgs = row["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
        assert isinstance(msgs[2]["content"], str)  # no images in assistant turns
        images = [p for p in msgs[1]["content"] if p["type"] == "image_url"]
        assert 1 <= len(images) <= OPENAI_MAX_IMAGES
        url = images[0]["image_url"]["url"]
        head, b64 = url.split(",", 1)
        assert head == "data:image/jpeg;base64"
        data = base64.b64decode(b64)
        assert len(data) <= OPENAI_MAX_IMAGE_BYTES and hashlib.sha256(data).hexdigest() in stored


def test_qwen_rows_are_typed_parts_with_and_without_the_system_turn(tmp_path: Path) -> None:
    folder = build(tmp_path, 3, offline=[True, False, False])
    recs = {f"pets/{r.image}": r for r in folder.records()}
    for system in (None, SYSTEM):
        folder.render(["qwen"], RenderOptions("pets", folder.root, val_ratio=0.25, system=system))
        rows = read_jsonl(folder.root / "qwen_train.jsonl") + read_jsonl(folder.root / "qwen_val.jsonl")
        assert len(rows) == 3
        for row in rows:
            assert set(row) == {"messages", OFFLINE_MARKER}
            *head, user, assistant = row["messages"]
            path = user["content"][0]["image"]
            rec = recs[path]
            assert head == (
                [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]}] if system else []
            )
            # the part is the placeholder: no <image> token in the text, and the path from the root
            assert user == {
                "role": "user",
                "content": [{"type": "image", "image": path}, {"type": "text", "text": rec.prompt}],
            }
            assert assistant == {"role": "assistant", "content": [{"type": "text", "text": rec.answer}]}
            assert (folder.root.parent / path).is_file()
            assert row[OFFLINE_MARKER] is rec.offline  # the placeholder says so, the others say not


def test_openai_skips_what_breaks_its_limits_and_says_so(tmp_path: Path) -> None:
    folder = build(tmp_path, 2, offline=False)
    [first, second] = sorted(folder.records(), key=lambda r: r.created)
    big = folder.root / first.image
    big.write_bytes(big.read_bytes() + b"\0" * (OPENAI_MAX_IMAGE_BYTES + 1))
    result = folder.render(["openai", "llamafactory"], RenderOptions("pets", folder.root))
    assert len(read_jsonl(folder.root / "openai_train.jsonl")) == 1
    assert len(read_jsonl(folder.root / "train.jsonl")) == 2
    [skip] = result.summary["skipped"]["openai"]
    assert skip["source"] == first.source and "10,485,760" in skip["reason"]
    assert set(result.covered) == {first.hash, second.hash}  # settled, even the one left out


def test_summary_counts_items_failures_and_their_spend(tmp_path: Path) -> None:
    folder = build(tmp_path, 3)
    folder.write_failure(
        FailedItem(
            hash="f" * 64,
            source="bad.jpg",
            kind="permanent",
            reason="the model refused",
            usage={"input_tokens": 50, "output_tokens": 7},
            calls=3,
        )
    )
    summary = folder.render(["llamafactory"], RenderOptions("pets", folder.root)).summary
    assert summary["items"] == 3 and summary["failed"] == 1
    assert summary["failed_items"][0]["reason"] == "the model refused"
    assert summary["tokens"]["input"] == 3 * 300 + 50 and summary["tokens"]["output"] == 3 * 20 + 7
    assert summary["tokens"]["failed_input"] == 50 and summary["calls"] == 3 + 3
    assert summary["provider"] == "offline" and summary["model"] == "offline-vision"
    assert summary["offline_items"] == 3 and summary["format"] == ["llamafactory"]
    assert json.loads((folder.root / "summary.json").read_text()) == summary


# --- a consumer that did not come from us -----------------------------------------------------------


@pytest.fixture
def hf_datasets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import datasets

    # the variables are read when `datasets` is first imported, maybe by an earlier test
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    datasets.disable_progress_bars()
    return datasets


def test_hugging_face_datasets_loads_every_jsonl_and_the_imagefolder(
    hf_datasets: Any, tmp_path: Path
) -> None:
    # half of them offline placeholders: their marker is a column like any other for `datasets`
    folder = build(tmp_path, 8, offline=[i % 2 == 0 for i in range(8)])
    folder.render(
        ["llamafactory", "swift", "llava", "qwen", "openai", "imagefolder"],
        RenderOptions("pets", folder.root, val_ratio=0.25, offline_in_openai=True, system=SYSTEM),
    )
    cache = str(tmp_path / "hf-cache")
    answers = {r.hash[:16]: r.answer for r in folder.records()}
    offline = {r.hash[:16]: r.offline for r in folder.records()}

    sharegpt = hf_datasets.load_dataset(
        "json",
        data_files={"train": str(folder.root / "train.jsonl"), "validation": str(folder.root / "val.jsonl")},
        cache_dir=cache,
    )
    assert sharegpt["train"].num_rows + sharegpt["validation"].num_rows == 8
    row = sharegpt["train"][0]
    assert row["messages"][1]["content"].startswith("<image>") and len(row["images"]) == 1

    for name in ("swift_train.jsonl", "openai_train.jsonl", "llava_train.json", "qwen_train.jsonl"):
        loaded = hf_datasets.load_dataset("json", data_files=str(folder.root / name), cache_dir=cache)[
            "train"
        ]
        assert loaded.num_rows == sharegpt["train"].num_rows, name

    images = hf_datasets.load_dataset(
        "imagefolder", data_dir=str(folder.root / "imagefolder"), cache_dir=cache
    )
    assert set(images) == {"train", "validation"}
    assert images["train"].num_rows == sharegpt["train"].num_rows
    for split in images.values():
        for item in split:
            assert item["image"].size == (40, 30)  # decoded by PIL through `datasets`
            assert item["text"] == answers[item["id"]]
            assert item[OFFLINE_MARKER] is offline[item["id"]]
