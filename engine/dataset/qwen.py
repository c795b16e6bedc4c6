"""Qwen2.5-VL chat rows: `messages` whose contents are lists of typed parts, the shape
`transformers`' `Qwen2_5_VLProcessor.apply_chat_template` and `qwen_vl_utils.process_vision_info`
read. Pure; `formats` renders the files.

    {"messages": [
      {"role": "system", "content": [{"type": "text", "text": "..."}]},          (record_system only)
      {"role": "user", "content": [{"type": "image", "image": "cats/images/ab/<sha256>.jpg"},
                                   {"type": "text", "text": "<prompt>"}]},
      {"role": "assistant", "content": [{"type": "text", "text": "<answer>"}]}]}

A video item's media part is `{"type": "video", "video": "clips/videos/ab/<sha256>.mp4",
"fps": <rate>}`. No `<image>` / `<video>` token goes into the text: the part is the placeholder,
and the chat template writes Qwen's own vision tokens where it stands.

Paths are relative to the datasets root (outputs/dataset/), as in the other formats: qwen_vl_utils
opens a plain path (not only `file://` or a URL), so relative ones open from the working
directory and survive a copy of the root; `file://` needs an absolute path, which would not.

Read back through `datasets`: 5.x keeps each part as written. 3.x gives every part every key any
part of the file has, the absent ones None, and Qwen's chat template takes `'image' in part` for an
image part: drop the None keys before `apply_chat_template` / `process_vision_info`. 3.x also types
the parts from the file's beginning and fails at the first video part further down, so a file
holding both kinds starts with one row of each (`sharegpt.mixed_order`).
"""

from __future__ import annotations

from typing import Any

from dropflow.engine.dataset.records import ItemRecord
from dropflow.engine.dataset.sharegpt import shared_path


def text_part(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def media_part(rec: ItemRecord, dataset: str) -> dict[str, Any]:
    """The image or video part of `rec`'s user turn."""
    path = shared_path(rec, dataset)
    if not rec.is_video:
        return {"type": "image", "image": path}
    part: dict[str, Any] = {"type": "video", "video": path}
    if rec.fps > 0:
        # qwen_vl_utils samples a video part at its `fps` (2.0 when absent: more, or fewer, frames
        # than the describing model saw, which the answer never described). The rate the model was
        # told keeps the two alike, over the whole length as dropflow spread them. It excludes
        # `nframes` in the same part (qwen_vl_utils asserts one or the other); transformers' own
        # video loading ignores it and takes `fps` / `num_frames` from apply_chat_template instead.
        part["fps"] = rec.fps
    return part


def qwen_row(rec: ItemRecord, dataset: str, *, system: str | None = None) -> dict[str, Any]:
    """The row of `rec`: media part before the text, as Qwen's own examples put it.

    Every content is a list, the system's and the assistant's too: the chat template takes a plain
    string as well, but `datasets` 3.x (what many trainers pin) refuses a file where one `content`
    is a string and another a list ("cannot mix list and non-list").
    """
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [text_part(system)]})
    messages.append({"role": "user", "content": [media_part(rec, dataset), text_part(rec.prompt)]})
    messages.append({"role": "assistant", "content": [text_part(rec.answer)]})
    return {"messages": messages}
