"""A video item as the model sees it: frames sampled by the shared sampler (`engine.frames`, the one
the annotate engine uses), repeats of a static shot dropped, and as many as one request of the model
may hold, spread over the whole video. Blocking; the engine runs `prepare_video` in a thread.

One video is one record, so one request: a video longer than `video_max_frames` frames at
`video_fps` is sampled more sparsely (the rate is lowered from its stated duration before decoding,
which also decodes less), never split. What one request may hold comes from the provider
(`vision_limits`): frames per frame list, inline images, the request body's size (each frame
travels as a base64 data URL, 4/3 of its JPEG).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dropflow.engine.errors import InputError

if TYPE_CHECKING:
    from dropflow.engine.dataset.params import DatasetParams
    from dropflow.engine.frames import Frame
    from dropflow.engine.providers.base import ModelLimits

MAX_VIDEO_BYTES = 1024**3  # 1 GB, as annotate: the stored copy goes into every training run's data
JPEG_QUALITY = 85
DATA_URL_PREFIX = len("data:image/jpeg;base64,")
FRAME_EXTRA = 12  # per frame: JSON quotes and comma, and its time in the note ("123.4, ")
ENVELOPE_BYTES = 16 * 1024  # model, parameters, the SDK's JSON around the parts
# sampled frames beyond this many times the frames sent mean the stated duration was wrong (or
# missing): stop before a long video fills memory with frames that would be thinned out anyway
SAMPLE_GUARD = 8
VIDEO_MIMES = {
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".avi": "video/x-msvideo",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
}


@dataclass(frozen=True)
class PreparedVideo:
    frames: list[bytes]  # the JPEGs sent, in order (repeated up to the model's minimum when few)
    times: list[float]  # seconds from the start, of each distinct frame sent
    fps: float  # frames per second of video sent (the sampling rate, unless thinned to fit)
    duration: float
    width: int
    height: int
    sampled: int  # frames sampled, before repeats were dropped
    kept: int  # frames left after repeats were dropped
    ext: str
    mime: str
    warnings: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        """What the model needs beyond the frames: when they were taken, when that is not every
        1/fps seconds from the start (repeats dropped, or thinned to fit), and why."""
        step = 1.0 / self.fps
        even = abs(self.times[0]) < step and all(
            abs((b - a) - step) < step / 2 for a, b in itertools.pairwise(self.times)
        )
        lines = []
        if not even:
            stamps = ", ".join(f"{t:.1f}" for t in self.times)
            lines.append(
                f"The frames were taken at these times (seconds from the start of the video): {stamps}."
            )
        if self.sampled > self.kept:
            lines.append("Stretches where the picture did not change were left out.")
        return "\n".join(lines)


def frame_bytes(jpeg_size: int) -> int:
    """What one frame of `jpeg_size` bytes adds to a request body."""
    return 4 * math.ceil(jpeg_size / 3) + DATA_URL_PREFIX + FRAME_EXTRA


def check_video(path: Path, source: str) -> None:
    """Raises InputError for a video that is gone, empty or over `MAX_VIDEO_BYTES`."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(
            f"{source} is gone: it was moved or deleted before it was read", hint="drop it again"
        ) from None
    if size == 0:
        raise InputError(f"{source} is empty (0 bytes)", hint="the copy may have failed; drop it again")
    if size > MAX_VIDEO_BYTES:
        raise InputError(
            f"{source} is {size / 1024**3:.2f} GB, over the 1 GB cap of a dataset video",
            hint="cut it into clips (e.g. `ffmpeg -i in.mp4 -c copy -f segment -segment_time 60 clip%02d.mp4`)",
        )


def spread(frames: Sequence[Frame], n: int) -> list[Frame]:
    """`n` of `frames` (all when there are no more), evenly over them, first one included."""
    if len(frames) <= n:
        return list(frames)
    return [frames[i * len(frames) // n] for i in range(n)]


def padded(frames: Sequence[bytes], least: int) -> list[bytes]:
    """At least `least` frames, repeating each in turn (DashScope refuses a list of fewer than 4)."""
    n = len(frames)
    if n >= least or not n:
        return list(frames)
    return [frames[i * n // least] for i in range(least)]


def frame_cap(p: DatasetParams, limits: ModelLimits) -> int:
    """Frames one request may hold: `video_max_frames`, the model's frame-list and inline-media caps."""
    cap = min(p.video_max_frames, limits.max_frames or p.video_max_frames)
    if limits.max_inline_media is not None:
        cap = min(cap, limits.max_inline_media)
    return max(1, cap)


def prepare_video(
    path: Path,
    source: str,
    p: DatasetParams,
    limits: ModelLimits,
    *,
    text_bytes: int,
    should_stop: Callable[[], bool] | None = None,
) -> PreparedVideo:
    """Sample `path` and choose the frames to send. `text_bytes`: the prompts' share of the request.

    Raises:
        InputError: not a readable video, no decodable frame, a sampling that runs far past the
            stated duration, or not even one frame fits the request (`video_max_side` too large).
        JobCancelled: `should_stop()` returned True.
    """
    from dropflow.engine.frames import SampleSpec, open_video, sample_frames

    check_video(path, source)
    cap = frame_cap(p, limits)
    rate = p.video_rate
    src = open_video(path)  # raises InputError for what is not a video
    stated = src.stated_duration
    src.container.close()
    if stated > 0 and stated * rate > cap:
        rate = cap / stated  # spread over the whole video rather than its first `cap` frames
    spec = SampleSpec(
        fps=rate,
        max_side=p.video_max_side,
        jpeg_quality=JPEG_QUALITY,
        dedup=p.video_dedup,
        dedup_threshold=p.video_dedup_threshold,
    )
    guard = SAMPLE_GUARD * cap + 16

    def progress(sampled: int, expected: int) -> None:
        if sampled > guard:
            raise InputError(
                f"{source}: sampling went on past {guard} frames (its stated length, "
                f"{stated:.0f} s, looks wrong)",
                hint="re-encode the video (e.g. `ffmpeg -i in.mp4 -c:v libx264 out.mp4`) or cut it into clips",
            )

    sampling = sample_frames(path, spec, progress=progress, should_stop=should_stop)
    kept = sampling.frames
    room = None
    if limits.max_request_bytes is not None:
        room = limits.max_request_bytes - ENVELOPE_BYTES - int(text_bytes * 1.1) - 1024
    n = min(len(kept), cap)
    while True:
        chosen = spread(kept, n)
        sent = padded([f.jpeg for f in chosen], limits.min_frames)
        if room is None or sum(frame_bytes(len(f)) for f in sent) <= room:
            break
        if n == 1:
            raise InputError(
                f"{source}: not even one frame fits in a request to this model "
                f"({len(sent)} frame(s) of up to {max(len(f) for f in sent) // 1024} KB)",
                hint="lower video_max_side for this dataset",
            )
        n = max(1, n - max(1, n // 8))
    warnings = list(sampling.warnings)
    ext = path.suffix.lower()
    return PreparedVideo(
        frames=sent,
        times=[f.time for f in chosen],
        # thinned to fit: the mean rate of what is sent (the note gives the times)
        fps=rate * len(chosen) / len(kept),
        duration=sampling.duration,
        width=sampling.width,
        height=sampling.height,
        sampled=sampling.sampled,
        kept=len(kept),
        ext=ext,
        mime=VIDEO_MIMES.get(ext, "video/mp4"),
        warnings=warnings,
    )
