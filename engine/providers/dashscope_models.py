"""What dropflow knows of DashScope's models: the limits a request must keep, per model family.

The engines size their requests from these (`limits`), so that the service never refuses a request
after others of the same job were paid. One entry per model family, matched by the longest name
prefix (``qwen-vl-max`` covers ``qwen-vl-max-latest`` and its dated snapshots); a model no entry
names gets the limits every DashScope request keeps.

Sources: ``reference/dashscope-limits.md`` (Model Studio docs, mirrors and users' reports). The
fake server keeps its own table of the same facts (`engine/fakes/dashscope_models.py`): a test
then checks this one against the service's rules, not against itself.

Also here: the Qwen tokenizer the SDK ships (`count_tokens`), to measure text before it is sent.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from dropflow.engine.providers.base import ModelLimits

MAX_DATA_URIS = 250  # "Exceeded limit on max data-uri per request: 250" (reported)
MAX_REQUEST_BYTES = 6 * 1024 * 1024  # request body cap reported on some routes
MIN_FRAMES = 4  # a frame list (`{"video": [images]}`) holds at least 4 images (vision docs)
CALL_SECONDS = 180  # a non-streaming call is cut here, answered partially (vision docs)

_COMMON = ModelLimits(max_inline_media=MAX_DATA_URIS, max_request_bytes=MAX_REQUEST_BYTES)


def _vision(max_frames: int, max_output: int, *, stream_only: bool = False) -> ModelLimits:
    return dataclasses.replace(
        _COMMON,
        min_frames=MIN_FRAMES,
        max_frames=max_frames,
        max_output_tokens=max_output,
        stream_only=stream_only,
    )


def _text(max_input: int | None, max_output: int, *, stream_only: bool = False) -> ModelLimits:
    return dataclasses.replace(
        _COMMON, max_input_tokens=max_input, max_output_tokens=max_output, stream_only=stream_only
    )


MODELS: dict[str, ModelLimits] = {
    # frame lists: 4-80 images for the older qwen-vl models, 4-512 for the Qwen2.5-VL family
    # (qwen-vl-max, qwen-vl-plus), 4-2000 for qwen3-vl (Model Studio vision docs)
    "qwen-vl-v1": _vision(80, 1500),
    "qwen-vl-chat-v1": _vision(80, 1500),
    "qwen2-vl": _vision(80, 2048),
    "qwen-vl-max": _vision(512, 8192),
    "qwen-vl-plus": _vision(512, 8192),
    "qwen2.5-vl": _vision(512, 8192),
    "qwen3-vl": _vision(2000, 32768),
    # stream-only: qvq, the omni models and thinking models answer streamed requests only
    "qvq": _vision(512, 8192, stream_only=True),
    "qwen-omni": _vision(80, 2048, stream_only=True),
    "qwen2.5-omni": _vision(80, 2048, stream_only=True),
    "qwen3-omni": _vision(80, 16384, stream_only=True),
    "qwen3-vl-235b-a22b-thinking": _vision(2000, 32768, stream_only=True),
    # text: qwen-max takes at most 30,720 input tokens ("Range of input length should be
    # [1, 30720]", reported); qwen-plus 129,024 (model list)
    "qwen-max": _text(30720, 8192),
    "qwen-plus": _text(129024, 8192),
    "qwen-turbo": _text(None, 8192),
    "qwq": _text(98304, 8192, stream_only=True),
    "qwen3-235b-a22b-thinking": _text(126976, 32768, stream_only=True),
    # speech recognition: one clip at most 10 MB and 5 minutes (qwen-asr docs)
    "qwen3-asr-flash": dataclasses.replace(_COMMON, max_audio_seconds=300.0),
}


def limits(model: str) -> ModelLimits:
    """The limits of `model` (the longest matching entry), or those every request keeps."""
    name = model.lower()
    best = ""
    for prefix in MODELS:
        if name.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return MODELS[best] if best else _COMMON


_tokenizer_lock = threading.Lock()
_tokenizer: Any = None


def count_tokens(text: str) -> int:
    """Qwen tokens in `text`, as DashScope counts them (blocking: the first call loads the SDK's
    vocabulary, about 0.6 s)."""
    global _tokenizer
    if not text:
        return 0
    with _tokenizer_lock:
        if _tokenizer is None:
            from dashscope.tokenizers import get_tokenizer

            _tokenizer = get_tokenizer("qwen-max")
    return len(_tokenizer.encode(text))
