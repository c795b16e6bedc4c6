"""Item records: what one finished (or failed) image or video leaves behind, and the pure helpers
every format and the summary agree on.

An `ItemRecord` holds the model's answer plus everything needed to re-render it into any format
(an item is an image, or a video when `video` names its stored file);
a `FailedItem` holds why an item failed for good and what it cost. `by_split` groups records by
the split `split.assign` gives them, so every format puts an item on the same side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dropflow.engine.dataset.split import Split, assign

# LLaMA-Factory (and ms-swift) count these placeholders in the text to match them with the
# media lists; a literal one inside an answer shifts every image of the batch.
# What a trainer reads as media or turn markup when it is in a turn's text: LLaMA-Factory's and
# ms-swift's media tokens, and the special tokens of the Qwen2-VL / Qwen2.5-VL chat template
# (their tokenizers match them in plain text, so a caption that quotes one corrupts its sample)
PLACEHOLDERS = (
    "<image>",
    "<video>",
    "<audio>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
)


@dataclass(frozen=True)
class ItemRecord:
    """One finished item: what was asked, what came back, and what it cost. Stored as JSON."""

    hash: str  # sha256 of the dropped file's bytes: the item's identity
    source: str  # what the user dropped (file name, or zip/member), for humans
    image: str  # the stored image, relative to the dataset folder (posix); "" for a video item
    prompt: str
    answer: str  # already checked and escaped
    system: str | None = None
    mime: str = "image/jpeg"
    width: int = 0
    height: int = 0
    converted: bool = False  # re-encoded (resized / RGB JPEG) rather than copied
    provider: str = ""
    model: str = ""
    offline: bool = False  # the offline provider's placeholder, not a model's answer
    json_mode: bool = False
    request_id: str = ""
    finish_reason: str = ""
    usage: dict[str, int] = field(default_factory=dict)  # every call for this item, rejected ones too
    calls: int = 1
    rejected: list[dict[str, str]] = field(default_factory=list)  # answers that failed the checks
    created: float = 0.0  # epoch seconds; rows are ordered by it so that new items go last
    version: int = 1
    # a video item: the stored video (relative to the dataset folder), and how it was shown to the
    # model (seconds, frames per second sampled, frames sent, frames sampled before repeats went)
    video: str = ""
    duration: float = 0.0
    fps: float = 0.0
    frames: int = 0
    sampled: int = 0
    cached: bool = False  # the answer came from the answer cache: nothing was paid for it here

    @property
    def is_video(self) -> bool:
        return bool(self.video)

    @property
    def media(self) -> str:
        """The stored image or video, relative to the dataset folder."""
        return self.video or self.image

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ItemRecord:
        """Build from stored JSON, ignoring keys a newer version may have added.

        Raises KeyError / TypeError when a required key is missing or malformed.
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class FailedItem:
    """An item that failed for good, with the reason and what the attempts cost."""

    hash: str
    source: str
    kind: str
    reason: str
    hint: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    provider: str = ""
    model: str = ""
    at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FailedItem:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# --- shared helpers --------------------------------------------------------------------------------


def escape_placeholders(text: str) -> str:
    """`<image>` -> `[image]`, `<|im_end|>` -> `[|im_end|]` (every one of `PLACEHOLDERS`): the
    words stay, the trainer's token goes."""
    for token in PLACEHOLDERS:
        text = text.replace(token, "[" + token[1:-1] + "]")
    return text


def has_placeholder(text: str) -> bool:
    return any(token in text for token in PLACEHOLDERS)


def ordered(records: Iterable[ItemRecord]) -> list[ItemRecord]:
    return sorted(records, key=lambda r: (r.created, r.hash))


def by_split(
    records: Sequence[ItemRecord], val_ratio: float, known: Mapping[str, Split] | None = None
) -> dict[Split, list[ItemRecord]]:
    """Records by split, in the order they were added (see `split.assign`)."""
    recs = ordered(records)
    splits = assign([r.hash for r in recs], val_ratio, known)
    out: dict[Split, list[ItemRecord]] = {"train": [], "validation": []}
    for rec in recs:
        out[splits[rec.hash]].append(rec)
    return out
