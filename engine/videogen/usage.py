"""What a video task is billed for, in one shape whatever the model reports.

wan models report usage in two shapes: the older ``{video_duration, video_ratio, video_count}``
and, from wan2.5 on, ``{duration, SR, ratio, output_video_duration, fps}``. The SDK reads both
into its ``VideoSynthesisUsage``, which then shows ``video_duration: 0`` for the newer shape, so
taking one key at face value records a paid video as free. dropflow's usage keys (job usage, the
`usage` of `<name>.json`, the TUI's job detail):

    model           the model billed
    resolution      the tier billed: 480P / 720P / 1080P
    size            WIDTH*HEIGHT when known (text-to-video, or the older usage shape)
    video_seconds   seconds billed
    video_count     videos billed (1)
    reported        True: from the provider's usage; False: what was asked (no usage seen yet)
    provider_usage  the provider's usage as it came (older or newer shape)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dropflow.engine.providers.base import VideoGenRequest
from dropflow.engine.videogen.models import expected_resolution, expected_seconds, lookup, tier_of_size


def _number(value: Any) -> float | None:
    try:
        n = float(value)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def _whole(n: float) -> int | float:
    return int(n) if n == int(n) else n


def paid_usage(raw: Mapping[str, Any] | None, request: VideoGenRequest) -> dict[str, Any]:
    """dropflow's usage keys from the provider's usage (either shape) and the request sent."""
    raw = dict(raw or {})
    model = lookup(request.model)
    seconds = next(
        (
            n
            for key in ("output_video_duration", "duration", "video_duration")
            if (n := _number(raw.get(key))) is not None
        ),
        None,
    )
    reported = seconds is not None
    if seconds is None:
        asked = expected_seconds(request, model)
        seconds = float(asked) if asked is not None else None
    size = request.size
    ratio = str(raw.get("video_ratio") or "")
    if "*" in ratio or "x" in ratio.lower():
        size = ratio  # the older shape names the size made
    sr = _number(raw.get("SR"))
    if sr is not None:
        resolution: str | None = f"{int(sr)}P"
    elif size:
        resolution = tier_of_size(size)
    else:
        resolution = expected_resolution(request, model)
    usage: dict[str, Any] = {
        "model": request.model,
        "resolution": resolution,
        "video_seconds": _whole(seconds) if seconds is not None else None,
        "video_count": int(_number(raw.get("video_count")) or 1),
        "reported": reported,
        "provider_usage": raw,
    }
    if size:
        usage["size"] = size
    return usage
