"""How the fake DashScope applies its model table (`dashscope_models.py`) to one generation call:
what it refuses, what it bills, and how an answer ends.

- `refusal`: the 400s the real service sends for a request over its limits (body size, data URIs,
  frames per list, stream-only models, output budget, input length, audio length).
- `usage`: the usage block as the service reports it: text counted with the Qwen tokenizer the SDK
  ships, images and frames from their pixel size, speech recognition in seconds.
- `ending`: an answer over `max_tokens` is cut there (`finish_reason: length`); a non-streaming call
  that would run past 180 s answers with what it has and the partial-response header.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import threading
import wave
from dataclasses import dataclass
from typing import Any

from dropflow.engine.fakes.answers import Prompt
from dropflow.engine.fakes.dashscope_models import (
    CALL_SECONDS,
    MAX_BODY_BYTES,
    MAX_DATA_URIS,
    ModelRule,
)

MESSAGE_TOKENS = 4  # per message: <|im_start|>, the role, a newline, <|im_end|>
REPLY_TOKENS = 3  # <|im_start|>assistant and a newline, before the answer
UNREADABLE_IMAGE, UNREADABLE_FRAME = 256, 64  # stand-in bytes (tests) that are no image: flat rates


# --- text ----------------------------------------------------------------------------------------

_lock = threading.Lock()
_tokenizer: Any = None


def _tok() -> Any:
    global _tokenizer
    with _lock:
        if _tokenizer is None:
            from dashscope.tokenizers import get_tokenizer  # Qwen's BPE vocabulary, shipped by the SDK

            _tokenizer = get_tokenizer("qwen-max")
    return _tokenizer


def preload() -> None:
    """Load the tokenizer now (it is loaded once per process)."""
    _tok()


def tokens(text: str) -> int:
    return len(_tok().encode(text)) if text else 0


def cut(text: str, n: int) -> str:
    """The first `n` tokens of `text`."""
    ids = _tok().encode(text)
    return str(_tok().decode(ids[:n])) if len(ids) > n else text


# --- media ---------------------------------------------------------------------------------------


def payload(url: str) -> bytes | None:
    """The bytes of a data URL, or None for a remote URL (or a broken data URL)."""
    if not url.startswith("data:") or "," not in url:
        return None
    try:
        return base64.b64decode(url.split(",", 1)[1], validate=False)
    except (binascii.Error, ValueError):
        return None


def head(url: str, chars: int = 96 * 1024) -> bytes | None:
    """The first bytes of a data URL (a JPEG's frame header lies in its first segments): decoding
    a whole multi-megabyte image per request made the fake, not the code under test, the slow part
    of the pipeline benches."""
    if not url.startswith("data:") or "," not in url:
        return None
    start = url.index(",") + 1
    text = url[start : start + chars - chars % 4]
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return None


def image_size(data: bytes | None) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header, without decoding; None when it is neither."""
    if not data:
        return None
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def visual_tokens(size: tuple[int, int], patch: int, bounds: tuple[int, int]) -> int:
    """Tokens of one picture: resized to a multiple of `patch` within `bounds` (in tokens) keeping
    its aspect, one token per patch x patch (Qwen's `smart_resize`)."""
    w, h = size
    lo, hi = bounds[0] * patch * patch, bounds[1] * patch * patch
    hb, wb = max(patch, round(h / patch) * patch), max(patch, round(w / patch) * patch)
    if hb * wb > hi:
        beta = math.sqrt(h * w / hi)
        hb, wb = math.floor(h / beta / patch) * patch, math.floor(w / beta / patch) * patch
    elif hb * wb < lo:
        beta = math.sqrt(lo / (h * w))
        hb, wb = math.ceil(h * beta / patch) * patch, math.ceil(w * beta / patch) * patch
    return (hb // patch) * (wb // patch)


def image_tokens(rule: ModelRule, url: str) -> int:
    size = image_size(head(url))
    return visual_tokens(size, rule.patch, rule.image_tokens) + 2 if size else UNREADABLE_IMAGE


def video_tokens(rule: ModelRule, frames: list[str]) -> int:
    """Two consecutive frames share one set of tokens: ceil(n/2) x (tokens of a frame) + 2."""
    size = image_size(head(frames[0])) if frames else None
    if size is None:
        return UNREADABLE_FRAME * len(frames)
    return math.ceil(len(frames) / 2) * visual_tokens(size, rule.patch, rule.frame_tokens) + 2


def audio_seconds(url: str) -> float:
    data = payload(url)
    if not data:
        return 0.0
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / float(w.getframerate() or 1)
    except (wave.Error, EOFError):
        return len(data) / 32000.0  # not a WAV: as if 16 kHz mono 16-bit


# --- the rules -----------------------------------------------------------------------------------


def text_tokens(prompt: Prompt) -> int:
    messages = (1 if prompt.system else 0) + 1
    body = tokens(prompt.system or "") + sum(tokens(t) for t in prompt.texts)
    return body + messages * MESSAGE_TOKENS + REPLY_TOKENS


def input_tokens(rule: ModelRule, prompt: Prompt) -> dict[str, int]:
    out = {"text_tokens": text_tokens(prompt)}
    if prompt.images:
        out["image_tokens"] = sum(image_tokens(rule, u) for u in prompt.images)
    if prompt.frames:
        out["video_tokens"] = video_tokens(rule, prompt.frames)
    return out


def refusal(
    rule: ModelRule, prompt: Prompt, params: dict[str, Any], *, body_bytes: int, stream: bool
) -> tuple[str, str] | None:
    """(code, message) of the 400 the service answers this request with, or None."""
    if body_bytes > MAX_BODY_BYTES:
        return "InvalidParameter", f"Request body too large: {body_bytes} bytes, at most {MAX_BODY_BYTES}."
    uris = sum(u.startswith("data:") for u in (*prompt.images, *prompt.frames, *prompt.audios))
    if uris > MAX_DATA_URIS:
        return "InvalidParameter", f"Exceeded limit on max data-uri per request: {MAX_DATA_URIS}"
    if prompt.frames and rule.frames is not None:
        lo, hi = rule.frames
        if not lo <= len(prompt.frames) <= hi:  # wording unconfirmed
            return (
                "InvalidParameter",
                f"The video image list must hold {lo} to {hi} images, got {len(prompt.frames)}.",
            )
    if rule.stream_only and not stream:
        return (
            "InvalidParameter",
            "This model only support stream mode, please enable the stream parameter to access the model.",
        )
    budget = params.get("max_tokens")
    if isinstance(budget, int) and not 1 <= budget <= rule.max_output_tokens:
        return "InvalidParameter", f"Range of max_tokens should be [1, {rule.max_output_tokens}]"
    for url in prompt.audios:
        data = payload(url) or b""
        if rule.max_audio_bytes and len(data) > rule.max_audio_bytes:
            return "InvalidParameter", "The audio file is too large."  # wording unconfirmed
        if rule.max_audio_seconds and audio_seconds(url) > rule.max_audio_seconds:
            return "InvalidParameter", "The audio is too long."  # wording unconfirmed
    if rule.max_input_tokens is not None:
        total = sum(input_tokens(rule, prompt).values())
        if total > rule.max_input_tokens:
            return "InvalidParameter", f"Range of input length should be [1, {rule.max_input_tokens}]"
    return None


@dataclass(frozen=True)
class Ending:
    text: str
    finish_reason: str  # "stop", "length", or "null" for a partial answer
    partial: bool


def ending(text: str, params: dict[str, Any], *, stream: bool, seconds: float, rule: ModelRule) -> Ending:
    """How the answer `text` comes out: cut at `max_tokens`; cut at 180 s when not streamed and
    the model would take `seconds`."""
    budget = params.get("max_tokens")
    limit = budget if isinstance(budget, int) else rule.max_output_tokens
    if not stream and seconds > CALL_SECONDS:
        share = max(1, int(tokens(text) * CALL_SECONDS / seconds))
        return Ending(cut(text, min(share, limit)), "null", True)
    if tokens(text) > limit:
        return Ending(cut(text, limit), "length", False)
    return Ending(text, "stop", False)


def usage(rule: ModelRule, prompt: Prompt, answer: str) -> dict[str, Any]:
    """The usage block the service reports for this call, in the model's own shape."""
    out_tokens = tokens(answer)
    if rule.kind == "asr":
        seconds = sum(audio_seconds(u) for u in prompt.audios)
        return {
            "input_tokens_details": {"text_tokens": 0},
            "output_tokens_details": {"text_tokens": out_tokens},
            "seconds": max(1, math.ceil(seconds)),
        }
    parts = input_tokens(rule, prompt)
    total_in = sum(parts.values())
    block: dict[str, Any] = {
        "input_tokens": total_in,
        "output_tokens": out_tokens,
        "total_tokens": total_in + out_tokens,
    }
    media = {k: v for k, v in parts.items() if k != "text_tokens"}
    if rule.details:
        block["input_tokens_details"] = parts
        block["output_tokens_details"] = {"text_tokens": out_tokens}
    else:
        block.update(media)
    return block
