"""The fake DashScope's model table: what the real service accepts and bills, one entry per model.

A new model is one entry in `MODELS`. Names match by the longest prefix (``qwen-vl-max`` covers
``qwen-vl-max-latest`` and its dated snapshots). A model no entry names is served by the rule of
its endpoint (`DEFAULT_VISION`, `DEFAULT_TEXT`), so tests with made-up names keep working.

Every rule cites its source; "(reported)" = seen in users' reports, "(mirror)" = a copy of the
vendor's docs, "(unconfirmed)" = the wording of a message is ours. See
``reference/dashscope-limits.md``. This table is the fake's own, kept apart from the provider's
(`engine/providers/dashscope_models.py`) on purpose: tests check the client against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# --- limits of every request ---------------------------------------------------------------------
MAX_DATA_URIS = 250  # "Exceeded limit on max data-uri per request: 250" (reported)
MAX_BODY_BYTES = 6 * 1024 * 1024  # a 6 MiB body cap (reported on some routes; message unconfirmed)
CALL_SECONDS = 180.0  # a non-streaming call runs at most this long, then answers partially with
#                      the header `x-dashscope-partialresponse: true` (vision docs)
PARTIAL_HEADER = "x-dashscope-partialresponse"


@dataclass(frozen=True)
class ModelRule:
    """What one model accepts and how it bills. Pixel bounds are in visual tokens (patch x patch)."""

    kind: Literal["vision", "text", "asr"]
    frames: tuple[int, int] | None = None  # images in one frame list (`{"video": [...]}`)
    patch: int = 28  # pixels per visual token side (ViT patch after the 2x2 merge)
    image_tokens: tuple[int, int] = (4, 1280)  # an image is resized into this many tokens
    frame_tokens: tuple[int, int] = (4, 768)  # a video frame likewise
    max_input_tokens: int | None = None
    max_output_tokens: int = 8192
    stream_only: bool = False
    details: bool = False  # usage in `input_tokens_details` (newer models) instead of flat keys
    max_audio_seconds: float | None = None
    max_audio_bytes: int | None = None


def _vl(
    frames: int,
    *,
    patch: int = 28,
    out: int = 8192,
    max_input_tokens: int | None = None,
    stream_only: bool = False,
    details: bool = False,
    image_tokens: tuple[int, int] = (4, 1280),
) -> ModelRule:
    return ModelRule(
        "vision",
        frames=(4, frames),
        patch=patch,
        image_tokens=image_tokens,
        max_input_tokens=max_input_tokens,
        max_output_tokens=out,
        stream_only=stream_only,
        details=details,
    )


# Vision. Frame lists: 4-80 images for older qwen-vl models, 4-512 for the Qwen2.5-VL family
# incl. qwen-vl-max, 4-2000 for qwen3-vl-plus (Model Studio vision docs). Tokens: 28 px per token
# for Qwen2.5-VL (14 px patches merged 2x2), 32 px for Qwen3-VL (16 px, 2x2); an image at most
# 1280 tokens by default, a frame 768; two frames share one set of tokens, plus 2 per video
# (vision docs' token table; Qwen's `smart_resize`). Output caps: model list (mirror).
DEFAULT_VISION = _vl(512)
DEFAULT_TEXT = ModelRule("text")
MODELS: dict[str, ModelRule] = {
    "qwen-vl-v1": _vl(80, out=1500),
    "qwen-vl-chat-v1": _vl(80, out=1500),
    "qwen2-vl": _vl(80, out=2048),
    "qwen-vl-max": _vl(512, max_input_tokens=129024),
    "qwen-vl-plus": _vl(512, max_input_tokens=129024),
    "qwen2.5-vl": _vl(512, max_input_tokens=129024),
    "qwen3-vl": _vl(2000, patch=32, out=32768, max_input_tokens=258048, details=True, image_tokens=(4, 2560)),
    # stream-only: qvq, the omni models and thinking models refuse non-streaming calls (docs, mirror)
    "qvq": _vl(512, stream_only=True, max_input_tokens=106496),
    "qwen-omni": _vl(80, out=2048, stream_only=True),
    "qwen2.5-omni": _vl(80, out=2048, stream_only=True),
    "qwen3-omni": _vl(80, patch=32, out=16384, stream_only=True, details=True),
    "qwen3-vl-235b-a22b-thinking": _vl(2000, patch=32, out=32768, stream_only=True, details=True),
    # Text. qwen-max: 400 "Range of input length should be [1, 30720]" above 30,720 input tokens
    # (reported); qwen-plus 129,024 (model list, mirror)
    "qwen-max": ModelRule("text", max_input_tokens=30720),
    "qwen-plus": ModelRule("text", max_input_tokens=129024),
    "qwen-turbo": ModelRule("text"),
    "qwq": ModelRule("text", max_input_tokens=98304, stream_only=True),
    "qwen3-235b-a22b-thinking": ModelRule(
        "text", max_input_tokens=126976, max_output_tokens=32768, stream_only=True
    ),
    # Speech recognition: audio at most 10 MB and 5 minutes; usage `{input_tokens_details,
    # output_tokens_details, seconds}` and `annotations` beside the text (qwen-asr docs)
    "qwen3-asr-flash": ModelRule("asr", max_audio_seconds=300.0, max_audio_bytes=10 * 1024 * 1024),
}


def rule_for(model: str, endpoint: Literal["multimodal", "text"]) -> ModelRule:
    """The rule of `model` (longest matching prefix), else the endpoint's default."""
    name = model.lower()
    best = max((p for p in MODELS if name.startswith(p)), key=len, default="")
    if best:
        return MODELS[best]
    return DEFAULT_VISION if endpoint == "multimodal" else DEFAULT_TEXT
