"""LLaMA-Factory's sharegpt rows (ms-swift reads the same shape): the row, its checks, and the
`dataset_info.json` entries that register a dataset. Pure; `formats` renders the files.
"""

from __future__ import annotations

from typing import Any

from dropflow.engine.dataset.records import ItemRecord, has_placeholder

IMAGE_TOKEN = "<image>"

SHAREGPT_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def shared_path(rec: ItemRecord, dataset: str) -> str:
    """The stored image, relative to the datasets root (the parent of the dataset folder)."""
    return f"{dataset}/{rec.image}"


def sharegpt_row(rec: ItemRecord, dataset: str, *, system: str | None = None) -> dict[str, Any]:
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": IMAGE_TOKEN + rec.prompt})
    messages.append({"role": "assistant", "content": rec.answer})
    return {"messages": messages, "images": [shared_path(rec, dataset)]}


def check_sharegpt(row: dict[str, Any], tags: dict[str, str] = SHAREGPT_TAGS) -> list[str]:
    """LLaMA-Factory's documented sharegpt constraints; returns the problems (empty when fine).

    `images` is a list; the number of `<image>` tokens equals len(images); after an optional
    leading system message, roles alternate user / assistant and end with the assistant.
    """
    problems: list[str] = []
    images = row.get("images")
    if not isinstance(images, list):
        problems.append(f"'images' must be a list, not {type(images).__name__}")
        images = []
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
    tokens = sum(str(m.get(content, "")).count(IMAGE_TOKEN) for m in row["messages"])
    if tokens != len(images):
        problems.append(f"{tokens} {IMAGE_TOKEN} token(s) for {len(images)} image(s)")
    for m in messages[1::2]:
        if has_placeholder(str(m.get(content, ""))):
            problems.append("an assistant answer holds a literal media placeholder")
    return problems


def dataset_info(name: str, *, has_val: bool) -> dict[str, Any]:
    """The `dataset_info.json` entries LLaMA-Factory needs for train (and validation), for a
    `dataset_info.json` in the datasets root (file names relative to it)."""

    def entry(file_name: str) -> dict[str, Any]:
        return {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": dict(SHAREGPT_TAGS),
        }

    info = {name: entry(f"{name}/train.jsonl")}
    if has_val:
        info[f"{name}_val"] = entry(f"{name}/val.jsonl")
    return info
