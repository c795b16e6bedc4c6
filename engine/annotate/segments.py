"""Segments: the kept frames split so that each request fits what the service takes, and what each
request says about its segment beyond the frames (where it sits, when each frame was taken).

A request's frames are bounded three ways (`Budget`): `max_frames_per_segment`, the model's own
frame-list limit and the inline images a request may carry (250 data URIs on DashScope), and the
request body's size (6 MiB). The bytes are counted before anything is sent: each frame travels as
a base64 data URL, 4/3 of its JPEG.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dropflow.engine.annotate.asr import clock
from dropflow.engine.annotate.params import MIN_FRAMES
from dropflow.engine.errors import ConfigError
from dropflow.engine.providers.base import ImagePart

if TYPE_CHECKING:
    from dropflow.engine.frames import Frame, Sampling
    from dropflow.engine.providers.base import ModelLimits, Part


DATA_URL_PREFIX = len("data:image/jpeg;base64,")
FRAME_EXTRA = 12  # per frame: JSON quotes and comma, and its time in the context text ("123.4, ")
ENVELOPE_BYTES = 16 * 1024  # model, parameters, roles, the SDK's JSON around the parts


@dataclass
class Segment:
    index: int
    start: float
    end: float
    frames: list[Frame]
    sampled: int = 0


@dataclass(frozen=True)
class Budget:
    """What the frames of one request may take: a count, and bytes (None: no byte limit)."""

    frames: int
    bytes: int | None = None


def frame_bytes(jpeg_size: int) -> int:
    """What one frame of `jpeg_size` bytes adds to a request body."""
    return 4 * math.ceil(jpeg_size / 3) + DATA_URL_PREFIX + FRAME_EXTRA


def payload_bytes(photos: Sequence[Part], texts: Sequence[str]) -> tuple[int, int]:
    """(inline images, bytes) that `photos` and `texts` add to every segment request."""
    inline = [p for p in photos if isinstance(p, ImagePart) and p.data is not None]
    size = sum(frame_bytes(len(p.data or b"")) for p in inline)
    size += sum(len(p.url or "") for p in photos if isinstance(p, ImagePart) and p.data is None)
    text = sum(len(t.encode()) for t in texts)
    # JSON escapes (the SDK sends UTF-8 unescaped); the part and time lines of `segment_context`
    return len(inline), size + int(text * 1.1) + 1024


def request_budget(
    limits: ModelLimits, max_frames: int, *, inline_media: int, fixed_bytes: int, largest_frame: int
) -> Budget:
    """The frames one request may hold beside `inline_media` other inline images (role photos)
    and `fixed_bytes` of everything else; `largest_frame`: the largest JPEG, in bytes.

    Raises ConfigError when not even MIN_FRAMES frames fit (too many or too large role photos).
    """
    frames = min(max_frames, limits.max_frames or max_frames)
    if limits.max_inline_media is not None:
        frames = min(frames, limits.max_inline_media - inline_media)
    room = None
    if limits.max_request_bytes is not None:
        # a short segment is padded to MIN_FRAMES by repeating frames: leave room for the repeats
        room = limits.max_request_bytes - ENVELOPE_BYTES - fixed_bytes
        room -= (MIN_FRAMES - 1) * frame_bytes(largest_frame)
    if frames < MIN_FRAMES or (room is not None and room < MIN_FRAMES * frame_bytes(largest_frame)):
        raise ConfigError(
            f"the role photos and prompts leave no room for {MIN_FRAMES} frames in one request "
            f"({inline_media} inline images, {fixed_bytes // 1024} KB besides the frames)",
            hint="use fewer or smaller role photos (or https URLs for them), or a smaller max_side",
        )
    return Budget(frames, room)


def split(sampling: Sampling, budget: Budget | int, max_seconds: float | None) -> list[Segment]:
    """Consecutive runs of kept frames, each within `budget` (and at most `max_seconds` long).

    Segments tile the video: each ends where the next begins, the last at the video's end.
    """
    if isinstance(budget, int):
        budget = Budget(budget)
    segments: list[Segment] = []
    used = 0
    for frame in sampling.frames:
        cur = segments[-1] if segments else None
        cost = frame_bytes(len(frame.jpeg))
        if (
            cur is None
            or len(cur.frames) >= budget.frames
            or (budget.bytes is not None and used + cost > budget.bytes)
            or (max_seconds is not None and frame.time - cur.start >= max_seconds)
        ):
            used = 0
            start = 0.0 if cur is None else frame.time
            if cur is not None:
                cur.end = start
            segments.append(Segment(len(segments), start, sampling.duration, [frame]))
        else:
            cur.frames.append(frame)
        used += cost
    for seg in segments:
        seg.end = max(seg.end, seg.frames[-1].time)
        seg.sampled = sum(1 for t in sampling.sample_times if seg.start <= t < seg.end)
    return segments


def padded(frames: Sequence[Frame]) -> list[Frame]:
    """At least MIN_FRAMES frames, repeating each in turn (the order and the times stay right)."""
    n = len(frames)
    if n >= MIN_FRAMES:
        return list(frames)
    return [frames[i * n // MIN_FRAMES] for i in range(MIN_FRAMES)]


def segment_context(seg: Segment, sent: Sequence[Frame], count: int, fps: float) -> str:
    """What the model needs beyond the frames: where the part sits in the video and when each
    frame sent (`sent`) was taken.

    Empty for a one-segment video sampled evenly, whose frames the `fps` alone explains.
    """
    lines = []
    if count > 1:
        lines.append(
            f"This is part {seg.index + 1} of {count} of the video, from {clock(seg.start)} to {clock(seg.end)}."
        )
    step = 1.0 / fps
    times = [f.time for f in sent]
    even = abs(times[0] - seg.start) < step and all(
        abs((b - a) - step) < step / 2 for a, b in itertools.pairwise(times)
    )
    if count > 1 or not even:
        stamps = ", ".join(f"{t:.1f}" for t in times)
        lines.append(f"The frames were taken at these times (seconds from the start of the video): {stamps}.")
    if seg.sampled > len(seg.frames):
        lines.append("Stretches where the picture did not change were left out.")
    return "\n".join(lines)
