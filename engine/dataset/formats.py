"""Fine-tuning dataset formats: pure functions from item records to the files trainers read.

One `ItemRecord` per image or video (the model's answer plus everything needed to re-render it)
can be rendered into each format; nothing here calls a model or writes a file. A `Plan` lists the
files (as lazily generated text chunks) and the media links a format needs; `folder` writes
them atomically. The records themselves are in `records`, the summary.json built beside these
files in `summary`.

| format        | files (relative to the dataset folder)                     | media paths          |
|---------------|------------------------------------------------------------|----------------------|
| llamafactory  | train.jsonl, val.jsonl; entries in ../dataset_info.json    | from the datasets root |
| swift         | swift_train.jsonl, swift_val.jsonl                         | from the datasets root |
| llava         | llava_train.json, llava_val.json (JSON arrays; Qwen-VL too) | from the datasets root |
| qwen          | qwen_train.jsonl, qwen_val.jsonl (Qwen2.5-VL typed parts)  | from the datasets root |
| openai        | openai_train.jsonl, openai_val.jsonl (images only)         | inline data URLs     |
| imagefolder   | imagefolder/{train,validation}/metadata.jsonl + images,    | beside the metadata  |
|               | videofolder/{train,validation}/metadata.jsonl + videos     |                      |

Videos: `<video>` and `videos` in llamafactory and swift rows (both kinds share the files, see
`sharegpt`), `video` and `<video>` in llava rows (what Qwen2.5-VL's finetune scripts read), a
`{"type": "video"}` part in qwen rows (what its processor and qwen_vl_utils read, see `qwen`),
`videofolder/` for Hugging Face (`imagefolder` cannot hold videos); OpenAI's fine-tuning takes no
video, so video items are listed under `skipped` of the openai format.

Image paths are relative to the datasets root (outputs/dataset/, the parent of every dataset
folder): `cats/images/ab/<sha256>.jpg`. They survive a copy of that root to a training machine, and
several datasets combine under one LLaMA-Factory `dataset_dir` (whose `dataset_info.json`, shared
by them, `info` merges into), one swift or qwen working directory or one LLaVA `image_folder`.

The train/validation split is decided once per item and remembered (`split`); every format
gets the same assignment through `RenderOptions.splits`, so all agree on it. With `val_ratio > 0`
the validation files and the `<name>_val` entry always exist (empty while there is one item).

Items the offline provider answered (`ItemRecord.offline`: a placeholder, no model called) are
marked with `OFFLINE_MARKER` in every format that tolerates an extra key, and left out of the
OpenAI file, which has no room for one, unless `RenderOptions.offline_in_openai` asks for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dropflow.engine.dataset.qwen import qwen_row
from dropflow.engine.dataset.records import ItemRecord, by_split
from dropflow.engine.dataset.sharegpt import (
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    check_sharegpt,
    dataset_info,
    media_columns,
    mixed_order,
    shared_path,
    sharegpt_row,
)
from dropflow.engine.dataset.split import Split

# the sharegpt helpers moved to `sharegpt` and stay importable from here
__all__ = ["IMAGE_TOKEN", "VIDEO_TOKEN", "check_sharegpt", "dataset_info", "shared_path", "sharegpt_row"]

FormatName = Literal["llamafactory", "swift", "llava", "qwen", "openai", "imagefolder"]
FORMAT_NAMES: tuple[FormatName, ...] = ("llamafactory", "swift", "llava", "qwen", "openai", "imagefolder")

# OpenAI chat fine-tuning: at most 10 images per example, 10 MB each, JPEG/PNG/WEBP.
OPENAI_MAX_IMAGE_BYTES = 10 * 1024 * 1024
OPENAI_MAX_IMAGES = 10
OPENAI_MIMES = frozenset({"image/jpeg", "image/png", "image/webp"})

# every file a format may own: a file of the format that is not in the current plan is stale
# (e.g. val.jsonl after val_ratio went back to 0) and is removed by the writer
FORMAT_FILES: dict[FormatName, tuple[str, ...]] = {
    "llamafactory": ("train.jsonl", "val.jsonl"),
    "swift": ("swift_train.jsonl", "swift_val.jsonl"),
    "llava": ("llava_train.json", "llava_val.json"),
    "qwen": ("qwen_train.jsonl", "qwen_val.jsonl"),
    "openai": ("openai_train.jsonl", "openai_val.jsonl"),
    "imagefolder": (
        "imagefolder/train/metadata.jsonl",
        "imagefolder/validation/metadata.jsonl",
        "videofolder/train/metadata.jsonl",
        "videofolder/validation/metadata.jsonl",
    ),
}
IMAGEFOLDER_DIR = "imagefolder"
VIDEOFOLDER_DIR = "videofolder"  # the imagefolder format's video items: `datasets`' videofolder
OPENAI_NO_VIDEO = "a video: OpenAI fine-tuning files take images only"

# A top-level key the trainers ignore: LLaMA-Factory and ms-swift keep only the columns they map,
# LLaVA / Qwen-VL read only `image` and `conversations`, qwen's readers only `messages`; `datasets`
# makes it a column. OpenAI's fine-tuning validator is strict about keys, so its rows do not carry
# it (see `_openai`).
OFFLINE_MARKER = "dropflow_offline"


@dataclass(frozen=True)
class RenderOptions:
    name: str  # the dataset's name (its folder): the key in dataset_info.json
    root: Path  # the dataset folder: absolute paths (swift) and image bytes (openai) come from it
    val_ratio: float = 0.0
    # the trained model's system turn in every row (`record_system`); None: rows have none. Never
    # the captioning prompt kept in `ItemRecord.system`: that instructed the describing model
    system: str | None = None
    offline_in_openai: bool = False  # offline placeholder rows go into the openai file, unmarked
    # content hash -> split, as stored by the dataset folder; items missing here are assigned afresh
    splits: Mapping[str, Split] | None = None


@dataclass(frozen=True)
class OutputFile:
    path: str  # relative to the dataset folder
    chunks: Callable[[], Iterable[str]]  # generated when written: openai lines hold whole images


@dataclass(frozen=True)
class ImageLink:
    path: str  # where the format wants the image (or video), relative to the dataset folder
    target: str  # the stored image (or video), relative to the dataset folder


@dataclass
class Plan:
    format: FormatName
    files: list[OutputFile] = field(default_factory=list)
    links: list[ImageLink] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # split -> rows written
    skipped: list[dict[str, str]] = field(default_factory=list)  # items a format's limits exclude
    offline_left_out: int = 0  # offline placeholder items kept out of a format that cannot mark them
    # entries to merge into the datasets root's dataset_info.json, and our keys to remove from it
    info: dict[str, Any] | None = None
    info_drop: list[str] = field(default_factory=list)


# --- shared helpers --------------------------------------------------------------------------------


def jsonl_line(row: Any) -> str:
    """One JSON document on one line.

    json.dumps escapes newlines, but with ensure_ascii=False it leaves U+2028 / U+2029 raw, and
    `str.splitlines()` (and some JSONL readers) break lines there: escape them as well.
    """
    text = json.dumps(row, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def marks_offline(records: Sequence[ItemRecord]) -> bool:
    """Whether the rows of `records` carry `OFFLINE_MARKER`: all of them, or none.

    The key goes into every row of every file (False for a model's answer) as soon as one item is
    offline: `datasets` wants the same columns in every row of a JSON file, and imagefolder the
    same in each split's metadata file.
    """
    return any(r.offline for r in records)


def _marked(row: dict[str, Any], rec: ItemRecord, marks: bool) -> dict[str, Any]:
    if marks:
        row[OFFLINE_MARKER] = rec.offline
    return row


def _jsonl(rows: list[dict[str, Any]]) -> Callable[[], Iterator[str]]:
    def gen() -> Iterator[str]:
        for row in rows:
            yield jsonl_line(row)

    return gen


# --- LLaMA-Factory sharegpt (rows and checks in `sharegpt`) ----------------------------------------


def _written_splits(
    records: Sequence[ItemRecord], opts: RenderOptions
) -> Iterator[tuple[str, list[ItemRecord]]]:
    """The splits a format writes: validation only when `val_ratio` asks for one."""
    for split, recs in by_split(records, opts.val_ratio, opts.splits).items():
        if split != "validation" or opts.val_ratio > 0:
            yield split, recs


def _one_file_per_split(
    fmt: FormatName,
    names: dict[str, str],
    records: Sequence[ItemRecord],
    opts: RenderOptions,
    row: Callable[..., dict[str, Any]],
    write: Callable[[list[dict[str, Any]]], Callable[[], Iterator[str]]],
) -> Plan:
    """A format whose split is one file of rows made by `row(rec, dataset, system=...)`."""
    plan = Plan(fmt)
    marks = marks_offline(records)
    for split, recs in _written_splits(records, opts):
        rows = [_marked(row(r, opts.root.name, system=opts.system), r, marks) for r in mixed_order(recs)]
        plan.files.append(OutputFile(names[split], write(rows)))
        plan.rows[split] = len(rows)
    return plan


def _llamafactory(records: Sequence[ItemRecord], opts: RenderOptions) -> Plan:
    plan = Plan("llamafactory")
    names = {"train": "train.jsonl", "validation": "val.jsonl"}
    marks = marks_offline(records)
    # over the whole dataset: train and validation rows, and both entries, have the same columns
    columns = media_columns(records)
    for split, recs in _written_splits(records, opts):
        rows = []
        for rec in mixed_order(recs):
            row = sharegpt_row(rec, opts.root.name, system=opts.system, columns=columns)
            problems = check_sharegpt(row)
            if problems:  # the engine's checks make this unreachable; never ship a row that breaks training
                plan.skipped.append({"hash": rec.hash, "source": rec.source, "reason": "; ".join(problems)})
                continue
            rows.append(_marked(row, rec, marks))
        plan.files.append(OutputFile(names[split], _jsonl(rows)))
        plan.rows[split] = len(rows)
    plan.info = dataset_info(opts.root.name, has_val="validation" in plan.rows, columns=columns)
    plan.info_drop = [f"{opts.root.name}_val"]  # ours, when val_ratio went back to 0
    return plan


# --- ms-swift --------------------------------------------------------------------------------------


def swift_row(
    rec: ItemRecord, dataset: str, *, system: str | None = None, columns: Sequence[Any] | None = None
) -> dict[str, Any]:
    """ms-swift's messages + images (or videos). Its docs prefer absolute paths, but those break
    once the folder is copied to a GPU machine: these are relative to the datasets root, so swift
    runs there (it opens a relative path from its working directory)."""
    return sharegpt_row(rec, dataset, system=system, columns=columns)


def _swift(records: Sequence[ItemRecord], opts: RenderOptions) -> Plan:
    names = {"train": "swift_train.jsonl", "validation": "swift_val.jsonl"}
    columns = media_columns(records)

    def row(rec: ItemRecord, dataset: str, *, system: str | None = None) -> dict[str, Any]:
        return swift_row(rec, dataset, system=system, columns=columns)

    return _one_file_per_split("swift", names, records, opts, row, _jsonl)


# --- LLaVA / Qwen-VL finetune scripts ------------------------------------------------------------


def llava_item(rec: ItemRecord, dataset: str, *, system: str | None = None) -> dict[str, Any]:
    """LLaVA's conversations have no system turn (its template supplies one): a `system` key
    beside them carries ours, for scripts that read it and for humans. A video item has `video`
    and `<video>` instead (Qwen2.5-VL's finetune scripts turn them into a video part; LLaVA
    itself takes images only)."""
    key, token = ("video", VIDEO_TOKEN) if rec.is_video else ("image", IMAGE_TOKEN)
    item: dict[str, Any] = {
        "id": rec.hash[:16],
        key: shared_path(rec, dataset),
        "conversations": [
            {"from": "human", "value": f"{token}\n{rec.prompt}"},
            {"from": "gpt", "value": rec.answer},
        ],
    }
    if system:
        item["system"] = system
    return item


def _json_array(items: list[dict[str, Any]]) -> Callable[[], Iterator[str]]:
    def gen() -> Iterator[str]:
        yield "["
        for i, item in enumerate(items):
            yield ("\n" if i == 0 else ",\n") + json.dumps(item, ensure_ascii=False)
        yield "\n]\n"

    return gen


def _llava(records: Sequence[ItemRecord], opts: RenderOptions) -> Plan:
    names = {"train": "llava_train.json", "validation": "llava_val.json"}
    return _one_file_per_split("llava", names, records, opts, llava_item, _json_array)


# --- Qwen2.5-VL chat messages (rows in `qwen`) ------------------------------------------------------


def _qwen(records: Sequence[ItemRecord], opts: RenderOptions) -> Plan:
    names = {"train": "qwen_train.jsonl", "validation": "qwen_val.jsonl"}
    return _one_file_per_split("qwen", names, records, opts, qwen_row, _jsonl)


# --- OpenAI chat fine-tuning ---------------------------------------------------------------------


def openai_row(rec: ItemRecord, data_url: str, *, system: str | None = None) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": rec.prompt},
                {"type": "image_url", "image_url": {"url": data_url}},
            ],
        }
    )
    messages.append({"role": "assistant", "content": rec.answer})
    return {"messages": messages}


def openai_problem(rec: ItemRecord, size: int) -> str | None:
    """Why an item cannot go into an OpenAI fine-tuning file, or None."""
    if rec.mime not in OPENAI_MIMES:
        return f"{rec.mime} is not one of JPEG/PNG/WEBP"
    if size > OPENAI_MAX_IMAGE_BYTES:
        return f"the image is {size:,} bytes, over OpenAI's {OPENAI_MAX_IMAGE_BYTES:,} byte limit"
    return None


def _openai(records: Sequence[ItemRecord], opts: RenderOptions) -> Plan:
    from dropflow.engine.providers.common import data_url

    plan = Plan("openai")
    names = {"train": "openai_train.jsonl", "validation": "openai_val.jsonl"}
    for split, recs in by_split(records, opts.val_ratio, opts.splits).items():
        keep: list[ItemRecord] = []
        for rec in recs:
            if rec.is_video:
                # frames as images would not be the video the other formats train on, and they are
                # not kept: the item is left out, and says why
                plan.skipped.append({"hash": rec.hash, "source": rec.source, "reason": OPENAI_NO_VIDEO})
                continue
            if rec.offline and not opts.offline_in_openai:
                # a row here cannot say it is a placeholder, and this file is paid to train on
                plan.offline_left_out += 1
                continue
            try:
                size = (opts.root / rec.image).stat().st_size
            except OSError as exc:
                plan.skipped.append(
                    {"hash": rec.hash, "source": rec.source, "reason": f"image missing: {exc}"}
                )
                continue
            problem = openai_problem(rec, size)
            if problem:
                plan.skipped.append({"hash": rec.hash, "source": rec.source, "reason": problem})
                continue
            keep.append(rec)
        if split == "validation" and opts.val_ratio <= 0:
            continue

        def gen(keep: list[ItemRecord] = keep) -> Iterator[str]:
            # one image in memory at a time: these files hold every image, base64-encoded
            for rec in keep:
                url = data_url((opts.root / rec.image).read_bytes(), rec.mime)
                yield jsonl_line(openai_row(rec, url, system=opts.system))

        plan.files.append(OutputFile(names[split], gen))
        plan.rows[split] = len(keep)
    return plan


# --- Hugging Face imagefolder ----------------------------------------------------------------------


def imagefolder_row(rec: ItemRecord, *, system: str | None = None) -> dict[str, Any]:
    """A row of `imagefolder` (or, for a video item, `videofolder`) metadata."""
    row = {"file_name": rec.media, "text": rec.answer, "prompt": rec.prompt, "id": rec.hash[:16]}
    if system:  # a column of its own (every row has it, as `datasets` wants)
        row["system"] = system
    return row


def _imagefolder(records: Sequence[ItemRecord], opts: RenderOptions) -> Plan:
    plan = Plan("imagefolder")
    marks = marks_offline(records)
    # `datasets` loads images with "imagefolder" and videos with "videofolder": one tree each, and
    # only the trees of the kinds the dataset holds (an image dataset looks as it always did)
    trees = [(IMAGEFOLDER_DIR, False)] if any(not r.is_video for r in records) or not records else []
    trees += [(VIDEOFOLDER_DIR, True)] if any(r.is_video for r in records) else []
    for split, recs in _written_splits(records, opts):
        for tree, video in trees:
            # the metadata file must sit inside the split folder (or `datasets` silently ignores
            # it), and `file_name` may not leave that folder: the media are linked in beside it
            base = f"{tree}/{split}"
            kind = [r for r in recs if r.is_video == video]
            plan.links.extend(ImageLink(f"{base}/{r.media}", r.media) for r in kind)
            rows = [_marked(imagefolder_row(r, system=opts.system), r, marks) for r in kind]
            plan.files.append(OutputFile(f"{base}/metadata.jsonl", _jsonl(rows)))
        plan.rows[split] = len(recs)
    return plan


_RENDERERS: dict[FormatName, Callable[[Sequence[ItemRecord], RenderOptions], Plan]] = {
    "llamafactory": _llamafactory,
    "swift": _swift,
    "llava": _llava,
    "qwen": _qwen,
    "openai": _openai,
    "imagefolder": _imagefolder,
}


def render(fmt: FormatName, records: Sequence[ItemRecord], opts: RenderOptions) -> Plan:
    """The files (and image links) `fmt` needs for `records`.

    Raises KeyError for an unknown format name.
    """
    return _RENDERERS[fmt](records, opts)
