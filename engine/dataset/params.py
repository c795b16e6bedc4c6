"""What a dataset is configured with: `DatasetParams` (route params, or `params:` in the dataset
folder's dropflow.yaml) and the defaults behind its empty fields (prompts, models per provider).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from dropflow.engine.base import Params
from dropflow.engine.dataset.formats import FORMAT_NAMES, FormatName
from dropflow.engine.dataset.records import has_placeholder

DEFAULT_SYSTEM_PROMPT_FILE = "dataset_caption_system.txt"
# Used only when the default prompt file is missing from a project's prompts/ (made by an older
# `dropflow init`); tests check it matches prompts/dataset_caption_system.txt.
DEFAULT_SYSTEM_PROMPT = """You write training data for a vision-language model. Describe the image you are given.

Cover, in this order: the main subjects and what they are doing; the setting and the lighting;
notable objects, their colours and positions; any legible text, quoted exactly.

Be factual and specific. Say "unclear" instead of guessing, and describe only what is visible.
Do not mention that you are an AI or that this is a description task, and do not start with
"This image shows". Answer in plain prose, one or two short paragraphs."""
DEFAULT_USER_PROMPT = "Describe this image in detail."

DEFAULT_VIDEO_SYSTEM_PROMPT_FILE = "dataset_video_caption_system.txt"
# as DEFAULT_SYSTEM_PROMPT, for prompts/dataset_video_caption_system.txt
DEFAULT_VIDEO_SYSTEM_PROMPT = """You write training data for a vision-language model. You are given frames sampled in order from
one video; describe the video.

Cover, in this order: who or what is in it and what happens, in the order it happens; the setting
and the lighting; how the camera moves and where the shot changes; any legible text, quoted exactly.

Be factual and specific. Say "unclear" instead of guessing, and describe only what is visible.
Do not mention frames, that you are an AI or that this is a description task, and do not start
with "This video shows". Answer in plain prose, one or two short paragraphs."""
DEFAULT_VIDEO_USER_PROMPT = "Describe this video in detail."

DEFAULT_MODELS = {
    "dashscope": "qwen-vl-max-latest",
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-5",
    "offline": "offline-vision",
}


class DatasetParams(Params):
    """Per dataset: route params, or `params:` in the dataset folder's dropflow.yaml.

    The provider itself is chosen by the route's (or dropflow.yaml's) `provider:` key.
    """

    model: str | None = Field(None, description="Vision model; empty = the provider's default.")
    system_prompt_file: str | None = Field(
        DEFAULT_SYSTEM_PROMPT_FILE, description="System prompt file in prompts/; empty = no system prompt."
    )
    user_prompt: str = Field(DEFAULT_USER_PROMPT, min_length=1, description="The question asked per image.")
    user_prompts: list[str] | None = Field(
        None,
        description="Several questions; each image gets one, chosen by its content hash (replaces user_prompt).",
    )
    user_prompts_file: str | None = Field(
        None, description="A file in prompts/ with one question per line (added to user_prompts)."
    )
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(1024, ge=16, le=32768, description="Longest answer, in tokens.")
    max_image_side: int = Field(
        2048,
        ge=64,
        le=8192,
        description="Longest image side sent and stored (capped by the provider's limit).",
    )
    formats: list[FormatName] = Field(
        default_factory=lambda: list[FormatName](["llamafactory"]),
        min_length=1,
        description=f"Output formats: {', '.join(FORMAT_NAMES)}.",
    )
    val_ratio: float = Field(0.0, ge=0, le=0.5, description="Share of items in the validation split.")
    json_mode: bool = Field(False, description="Ask for a JSON object; invalid JSON is retried.")
    answer_retries: int = Field(
        2, ge=0, le=5, description="Extra calls when an answer is empty, a refusal or invalid JSON."
    )
    image_token: Literal["escape", "reject"] = Field(
        "escape", description="A literal <image> in an answer: escape it as [image], or reject the answer."
    )
    record_system: str | None = Field(
        None,
        description="The trained model's system turn, written into every record of every format; "
        "empty = none. The captioning system prompt (system_prompt_file) instructs the describing "
        "model only and never goes into the records.",
    )

    # --- video items (mp4, mov, avi, webm, mkv dropped beside the images) ---
    video_system_prompt_file: str | None = Field(
        DEFAULT_VIDEO_SYSTEM_PROMPT_FILE,
        description="System prompt file in prompts/ for videos; empty = no system prompt.",
    )
    video_user_prompt: str = Field(
        DEFAULT_VIDEO_USER_PROMPT, min_length=1, description="The question asked per video."
    )
    video_user_prompts: list[str] | None = Field(
        None,
        description="Several questions; each video gets one, chosen by its content hash "
        "(replaces video_user_prompt).",
    )
    video_fps: float = Field(1.0, ge=0.01, le=10.0, description="Frames sampled per second of video.")
    video_interval: float | None = Field(
        None, ge=0.1, le=600.0, description="Seconds between sampled frames; overrides video_fps when set."
    )
    video_max_frames: int = Field(
        32,
        ge=1,
        le=768,
        description="Frames sent per video at most (also capped by the model): a longer video is "
        "sampled more sparsely, over its whole length.",
    )
    video_max_side: int = Field(768, ge=64, le=2048, description="Longest side of a frame sent, in pixels.")
    video_dedup: bool = Field(
        True, description="Drop near-duplicate consecutive frames (static shots) before sending."
    )
    video_dedup_threshold: int = Field(
        3, ge=0, le=64, description="Hash bits (of 256) that may differ for a frame to count as a repeat."
    )
    cache: bool = Field(
        True, description="Reuse answers already paid for (a video's same frames, prompts and model)."
    )

    @property
    def video_rate(self) -> float:
        """Frames per second sampled (before `video_max_frames` spreads them out)."""
        return 1.0 / self.video_interval if self.video_interval else self.video_fps

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return list(dict.fromkeys(value))
        return value

    @field_validator("user_prompts", "video_user_prompts")
    @classmethod
    def _prompt_list(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = [v.strip() for v in value if v.strip()]
        if any(has_placeholder(v) for v in out):
            raise ValueError(
                "must not contain <image>/<video>/<audio>: dropflow places the image token itself"
            )
        return out or None

    @field_validator("system_prompt_file", "user_prompts_file", "video_system_prompt_file")
    @classmethod
    def _inside_prompts(cls, value: str | None) -> str | None:
        if value and (Path(value).is_absolute() or ".." in Path(value).parts):
            raise ValueError("must name a file inside prompts/ (no absolute path, no '..')")
        return value or None

    @field_validator("record_system")
    @classmethod
    def _system_text(cls, value: str | None) -> str | None:
        if value and has_placeholder(value):
            raise ValueError("must not contain <image>/<video>/<audio>")
        return (value or "").strip() or None

    @field_validator("user_prompt", "video_user_prompt")
    @classmethod
    def _no_placeholder(cls, value: str) -> str:
        if has_placeholder(value):
            raise ValueError(
                "must not contain <image>/<video>/<audio>: dropflow places the image token itself"
            )
        return value
