"""Segments: the kept frames split under the per-request frame limit, and what each request says
about its segment beyond the frames (where it sits, when each frame was taken)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dropflow.engine.annotate.asr import clock
from dropflow.engine.annotate.params import MIN_FRAMES

if TYPE_CHECKING:
    from dropflow.engine.annotate.frames import Frame, Sampling


@dataclass
class Segment:
    index: int
    start: float
    end: float
    frames: list[Frame]
    sampled: int = 0


def split(sampling: Sampling, max_frames: int, max_seconds: float | None) -> list[Segment]:
    """Consecutive runs of kept frames, each at most `max_frames` (and `max_seconds` long).

    Segments tile the video: each ends where the next begins, the last at the video's end.
    """
    segments: list[Segment] = []
    for frame in sampling.frames:
        cur = segments[-1] if segments else None
        if (
            cur is None
            or len(cur.frames) >= max_frames
            or (max_seconds is not None and frame.time - cur.start >= max_seconds)
        ):
            start = 0.0 if cur is None else frame.time
            if cur is not None:
                cur.end = start
            segments.append(Segment(len(segments), start, sampling.duration, [frame]))
        else:
            cur.frames.append(frame)
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
