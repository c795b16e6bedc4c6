"""What a fake answers: a provider-neutral `Prompt` and the deterministic text and token usage for it.

Each fake parses its provider's request into a `Prompt`; the same request always gets the same answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Prompt:
    """A provider-neutral summary of one chat request, from which fakes derive their answer."""

    texts: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # URLs / data URLs / base64 payloads
    frames: list[str] = field(default_factory=list)
    audios: list[str] = field(default_factory=list)  # data URLs / URLs / base64 payloads of audio parts
    fps: float | None = None
    system: str | None = None
    json_mode: bool = False
    model: str = ""

    def digest(self) -> str:
        fields: list[Any] = [self.system, self.texts, self.images, self.frames, self.fps]
        if self.audios:  # only when present, so digests of requests without audio stay as they were
            fields.append(self.audios)
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def default_answer(provider: str, prompt: Prompt) -> str:
    """Deterministic: the same request always gets the same words (and the digest echoes it)."""
    head = " ".join(" ".join(prompt.texts).split())[:60]
    summary = (
        f"fake {provider} answer from {prompt.model or 'model'}: {len(prompt.images)} image(s), "
        f"{len(prompt.frames)} frame(s)"
    )
    if prompt.fps is not None:
        summary += f" at {prompt.fps:g} fps"
    if prompt.audios:
        summary += f", {len(prompt.audios)} audio clip(s)"
    summary += f"; digest {prompt.digest()}; prompt: {head}"
    if prompt.json_mode:
        return json.dumps(
            {
                "caption": summary,
                "images": len(prompt.images),
                "frames": len(prompt.frames),
                "digest": prompt.digest(),
            }
        )
    return summary


def token_usage(prompt: Prompt, answer: str) -> dict[str, int]:
    """Token counts derived from the content: ~4 characters per text token, fixed costs per picture."""
    text_tokens = sum(len(t) for t in prompt.texts) // 4 + len(prompt.system or "") // 4 + 1
    image_tokens = 256 * len(prompt.images)
    video_tokens = 64 * len(prompt.frames)
    audio_tokens = 128 * len(prompt.audios)
    return {
        "text_tokens": text_tokens,
        "image_tokens": image_tokens,
        "video_tokens": video_tokens,
        "audio_tokens": audio_tokens,
        "input_tokens": text_tokens + image_tokens + video_tokens + audio_tokens,
        "output_tokens": max(1, len(answer.split())),
    }
