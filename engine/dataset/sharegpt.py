"""LLaMA-Factory's sharegpt rows (ms-swift reads the same shape): the row, its checks, and the
`dataset_info.json` entries that register a dataset. Pure; `formats` renders the files.

An image item is `{"messages": [user "<image>prompt", ...], "images": [path]}`, a video item
`{"messages": [user "<video>prompt", ...], "videos": [path]}`. A dataset holding both kinds
keeps them in the same files, every row with both lists (one empty), and registers both columns:
LLaMA-Factory reads an empty list as no media, and `datasets` wants the same columns in every
row (see `media_columns` and `mixed_order`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from dropflow.engine.dataset.records import ItemRecord, has_placeholder

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"

MediaColumn = Literal["images", "videos"]
TOKENS: dict[MediaColumn, str] = {"images": IMAGE_TOKEN, "videos": VIDEO_TOKEN}

SHAREGPT_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def shared_path(rec: ItemRecord, dataset: str) -> str:
    """The stored image or video, relative to the datasets root (the parent of the dataset folder)."""
    return f"{dataset}/{rec.media}"


def column(rec: ItemRecord) -> MediaColumn:
    return "videos" if rec.is_video else "images"


def media_columns(records: Sequence[ItemRecord]) -> tuple[MediaColumn, ...]:
    """The media columns of a file of `records`: the kinds it holds (`images` when it holds none).

    An image-only dataset's rows stay exactly as they were before videos were possible.
    """
    kinds = {column(r) for r in records}
    return tuple(c for c in ("images", "videos") if c in kinds) or ("images",)


def mixed_order(records: Sequence[ItemRecord]) -> list[ItemRecord]:
    """`records` (in the order they were added), with the first item of each kind moved to the top
    when both kinds are present.

    `datasets` (which LLaMA-Factory and ms-swift load JSONL with) infers each column's type from
    the first 10 MB of a file: a file whose first 10 MB held only videos types `images` as a list
    of nulls, and fails to load at the first image further down. Trainers shuffle rows anyway.
    """
    firsts: dict[MediaColumn, ItemRecord] = {}
    for rec in records:
        firsts.setdefault(column(rec), rec)
    if len(firsts) < 2:
        return list(records)
    head = sorted(firsts.values(), key=lambda r: (r.created, r.hash))
    return head + [r for r in records if r not in head]


def sharegpt_row(
    rec: ItemRecord,
    dataset: str,
    *,
    system: str | None = None,
    columns: Sequence[MediaColumn] | None = None,
) -> dict[str, Any]:
    """The row of `rec`, with the media `columns` of its file (default: its own kind's only)."""
    own = column(rec)
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": TOKENS[own] + rec.prompt})
    messages.append({"role": "assistant", "content": rec.answer})
    row: dict[str, Any] = {"messages": messages}
    for col in columns or (own,):
        row[col] = [shared_path(rec, dataset)] if col == own else []
    return row


def check_sharegpt(row: dict[str, Any], tags: dict[str, str] = SHAREGPT_TAGS) -> list[str]:
    """LLaMA-Factory's documented sharegpt constraints; returns the problems (empty when fine).

    `images` (and `videos`, where present) is a list; the number of `<image>` (`<video>`) tokens
    equals len(images) (len(videos)); there is at least one of them; after an optional leading
    system message, roles alternate user / assistant and end with the assistant.
    """
    problems: list[str] = []
    media: dict[MediaColumn, list[Any]] = {}
    for col in ("images", "videos"):
        if col not in row:
            continue
        value = row[col]
        if not isinstance(value, list):
            problems.append(f"'{col}' must be a list, not {type(value).__name__}")
            value = []
        media[col] = value
    if not media:
        problems.append("the row has neither 'images' nor 'videos' (each a list)")
    elif not any(media.values()):
        problems.append("the row has no image and no video")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "'messages' must be a non-empty list"]
    role, content = tags["role_tag"], tags["content_tag"]
    if messages[0].get(role) == tags.get("system_tag"):
        messages = messages[1:]
    if not messages or len(messages) % 2:
        problems.append("messages must be user/assistant pairs")
    for i, msg in enumerate(messages):
        want = tags["user_tag"] if i % 2 == 0 else tags["assistant_tag"]
        if msg.get(role) != want:
            problems.append(f"message {i} has role {msg.get(role)!r}, expected {want!r}")
        if not isinstance(msg.get(content), str):
            problems.append(f"message {i} content must be a string")
    for col, token in TOKENS.items():
        count = sum(str(m.get(content, "")).count(token) for m in row["messages"])
        if count != len(media.get(col, [])):
            problems.append(f"{count} {token} token(s) for {len(media.get(col, []))} {col[:-1]}(s)")
    for m in messages[1::2]:
        if has_placeholder(str(m.get(content, ""))):
            problems.append("an assistant answer holds a literal media placeholder")
    return problems


def dataset_info(name: str, *, has_val: bool, columns: Sequence[MediaColumn] = ("images",)) -> dict[str, Any]:
    """The `dataset_info.json` entries LLaMA-Factory needs for train (and validation), for a
    `dataset_info.json` in the datasets root (file names relative to it). `columns`: the media
    columns the rows have (LLaMA-Factory reads a mapped column from every row)."""

    def entry(file_name: str) -> dict[str, Any]:
        return {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", **{c: c for c in columns}},
            "tags": dict(SHAREGPT_TAGS),
        }

    info = {name: entry(f"{name}/train.jsonl")}
    if has_val:
        info[f"{name}_val"] = entry(f"{name}/val.jsonl")
    return info
