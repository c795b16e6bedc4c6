"""The prompts of a dataset item: the user prompt asked of it (one of several, chosen by the
item's content hash) and the captioning system prompt, read from prompts/; a video item has its
own of both (`video=True`).

Why several user prompts: a dataset whose every row asks the same question teaches the trained
model one question. The choice is a pure function of the content hash, so a retried, resumed or
re-rendered item keeps its prompt, and adding prompts to the list reshuffles only new answers.
"""

from __future__ import annotations

from pathlib import Path

from dropflow.engine.dataset.params import (
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_SYSTEM_PROMPT_FILE,
    DEFAULT_VIDEO_SYSTEM_PROMPT,
    DEFAULT_VIDEO_SYSTEM_PROMPT_FILE,
    DatasetParams,
)
from dropflow.engine.dataset.records import has_placeholder
from dropflow.engine.errors import ConfigError


def _read(prompts_dir: Path, name: str) -> str:
    """Raises FileNotFoundError; ConfigError for an unreadable file or one with a media placeholder."""
    path = prompts_dir / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="check its permissions") from exc
    if has_placeholder(text):
        raise ConfigError(
            f"{path} contains <image>/<video>/<audio>",
            hint="remove it: dropflow places the image token itself",
        )
    return text


def system_prompt(prompts_dir: Path, p: DatasetParams, *, video: bool = False) -> str | None:
    """The captioning system prompt of an image (of a video: `video`), None when turned off.

    Raises ConfigError when the named file is missing or holds a media placeholder.
    """
    name, key, default_name, default = (
        (
            p.video_system_prompt_file,
            "video_system_prompt_file",
            DEFAULT_VIDEO_SYSTEM_PROMPT_FILE,
            DEFAULT_VIDEO_SYSTEM_PROMPT,
        )
        if video
        else (p.system_prompt_file, "system_prompt_file", DEFAULT_SYSTEM_PROMPT_FILE, DEFAULT_SYSTEM_PROMPT)
    )
    if not name:
        return None
    try:
        text = _read(prompts_dir, name).strip()
    except FileNotFoundError:
        if name == default_name:
            return default
        raise ConfigError(
            f"the system prompt file {prompts_dir / name} does not exist",
            hint=f"create it, or set params.{key} to a file in {prompts_dir}",
        ) from None
    return text or None


def user_prompts(prompts_dir: Path, p: DatasetParams, *, video: bool = False) -> list[str]:
    """`user_prompts`, then the lines of `user_prompts_file` (blank lines and `#` comments
    skipped); `[user_prompt]` when both are empty. For a video: `video_user_prompts`, else
    `[video_user_prompt]`.

    Raises ConfigError when the file is missing, unreadable or holds a media placeholder.
    """
    if video:
        return list(dict.fromkeys(p.video_user_prompts or [])) or [p.video_user_prompt]
    out = list(p.user_prompts or [])
    if p.user_prompts_file:
        try:
            text = _read(prompts_dir, p.user_prompts_file)
        except FileNotFoundError:
            raise ConfigError(
                f"the user prompts file {prompts_dir / p.user_prompts_file} does not exist",
                hint=f"create it (one prompt per line), or unset params.user_prompts_file in {prompts_dir}",
            ) from None
        out += [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]
    return list(dict.fromkeys(out)) or [p.user_prompt]


def pick(prompts: list[str], content_hash: str) -> str:
    """The item's prompt: the same for the same image (or video) whenever it is asked."""
    return prompts[int(content_hash[:16], 16) % len(prompts)]
