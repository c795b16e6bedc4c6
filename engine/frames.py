"""Frame sampling for video engines (annotate, video datasets): which frames a model sees, when, how big.

One module: its image helpers (shrink, hash, JPEG) serve only the decode loop of `sample_frames`.

A frame is sampled when it is the first shown at or after a sample time (k / fps), by its
presentation timestamp, so variable-frame-rate footage is sampled at true times. Frames between
samples are decoded but never converted (what OpenCV's `grab()` does), and when the container's
index shows a keyframe between the current position and the next sample time, decoding jumps to
the last keyframe before that time: nothing before a keyframe is needed to decode what follows, so
camera footage (a keyframe every 0.5-2 s) sampled at 1 fps decodes a fraction of its frames. The
frames are still the ones a decode-everything loop picks, pixel for pixel (the tests and
bench/frames.py check this against OpenCV's `read()`). Rotation metadata (phones) is applied.

Decoding is PyAV's (the ffmpeg inside its wheel): OpenCV's VideoCapture seeks only coarsely (it
decodes at least 16 frames before any target and counts positions at a constant frame rate, which
variable-frame-rate footage breaks).

OpenCV does the image work: shrinking, the perceptual hash and JPEG encoding, on a second thread
while the decoder moves on (both release the GIL).

Near-duplicate consecutive frames (static shots) are dropped before anyone pays for them: a
256-bit difference hash with a dead zone (so sensor noise on flat areas flips no bits) is compared
with the last *kept* frame, so a slow drift is still caught once it adds up.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.engine.errors import InputError, JobCancelled

if TYPE_CHECKING:
    import numpy as np

HASH_SIZE = 16  # 16x16 comparisons = a 256-bit hash
HASH_DEAD_ZONE = 2  # grey levels: a neighbour difference below this is "equal", not a coin flip
TIME_TOLERANCE = 1e-3  # seconds: a frame this close before a sample time counts as on it
MAX_PENDING = 4  # frames waiting for the encoder thread (each is a full-size BGR array)
SMALL_DECODE = 50e6  # pixels x frames (~1 minute of 320x240 at 10 fps): below it, one decode thread
MAX_DAMAGED_PACKETS = 100  # undecodable packets skipped before a file counts as broken from there on

REENCODE_HINT = "check that the file plays; re-encode it, e.g. `ffmpeg -i in.mov -c:v libx264 out.mp4`"


@dataclass(frozen=True)
class SampleSpec:
    """How to sample: `fps` frames per second of video, longest side, JPEG quality, dedup."""

    fps: float = 1.0
    max_side: int = 768
    jpeg_quality: int = 85
    dedup: bool = True
    dedup_threshold: int = 3  # Hamming distance (of 256 bits) at or below which a frame is a repeat
    max_frames: int | None = None  # kept frames; more is an InputError (memory and spend guard)


@dataclass(frozen=True)
class Frame:
    """One kept frame: its time (seconds from the start), its place among the samples, JPEG bytes."""

    time: float
    index: int  # 0-based among the sampled frames (kept or not)
    jpeg: bytes
    width: int
    height: int


@dataclass
class Sampling:
    """The result of sampling one video."""

    frames: list[Frame]  # kept frames, in time order
    sample_times: list[float]  # every sampled frame's time, kept or dropped as a repeat
    duration: float  # seconds, from the last decoded frame
    width: int  # upright source size (after rotation)
    height: int
    source_fps: float
    decoded: int  # frames the decoder went through
    warnings: list[str] = field(default_factory=list)

    @property
    def sampled(self) -> int:
        return len(self.sample_times)

    @property
    def dropped(self) -> int:
        return self.sampled - len(self.frames)


def dhash(bgr: np.ndarray) -> int:
    """A 256-bit difference hash of a BGR image (horizontal neighbour comparisons on a 17x16 grey thumbnail).

    The thumbnail is rounded to whole grey levels; the dead zone (2 levels) absorbs that rounding
    and sensor noise, so flat areas of a static shot hash the same every time.
    """
    import cv2
    import numpy as np

    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    # INTER_AREA is fast only for whole-number ratios: bilinear to 8x the grid, then an exact 8x8 average
    grid = (HASH_SIZE + 1, HASH_SIZE)
    mid = cv2.resize(grey, (grid[0] * 8, grid[1] * 8), interpolation=cv2.INTER_LINEAR)
    thumb = cv2.resize(mid, grid, interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (thumb[:, 1:] - thumb[:, :-1]) > HASH_DEAD_ZONE
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size with the longest side at most `max_side`, aspect kept; never upscaled."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink(bgr: np.ndarray, max_side: int) -> np.ndarray:
    """The frame with its longest side at most `max_side`.

    OpenCV's area averaging (the right filter for shrinking) is fast only for whole-number ratios
    and ~15x slower otherwise: average by the largest whole factor first, then finish bilinearly
    (a ratio below 2, where bilinear leaves no input pixel out).
    """
    import cv2

    h, w = bgr.shape[:2]
    size = fit(w, h, max_side)
    if size == (w, h):
        return bgr
    k = max(w, h) // max_side
    if k >= 2:
        bgr = cv2.resize(bgr, (w // k, h // k), interpolation=cv2.INTER_AREA)
        if (w // k, h // k) == size:
            return bgr
    return cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)


def jpeg(bgr: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a BGR frame.

    OpenCV, not `media.to_jpeg`: the frame already is a BGR array, and a PIL round trip per frame
    would cost more than the decode it follows.
    """
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - imencode fails only on invalid arrays
        raise InputError("a frame could not be encoded as JPEG", hint=REENCODE_HINT)
    return bytes(buf.tobytes())


class _Encoder:
    """Runs on one worker thread, frames in order: shrink, hash, drop repeats, encode."""

    def __init__(self, spec: SampleSpec) -> None:
        self.spec = spec
        self.last_hash: int | None = None

    def __call__(self, t: float, index: int, bgr: np.ndarray) -> Frame | None:
        spec = self.spec
        small = shrink(bgr, spec.max_side)
        if spec.dedup:
            digest = dhash(small)
            if self.last_hash is not None and hamming(digest, self.last_hash) <= spec.dedup_threshold:
                return None
            self.last_hash = digest
        height, width = small.shape[:2]
        return Frame(time=t, index=index, jpeg=jpeg(small, spec.jpeg_quality), width=width, height=height)


@dataclass
class _Source:
    """An opened video track: the container, the stream, its time base and keyframe times."""

    container: Any
    stream: Any
    origin: int | None  # the stream's start pts (times are measured from it)
    keyframes: list[float]  # seconds, from the container's index (empty when it has none)
    fps: float
    stated_duration: float


def open_video(path: Path) -> _Source:
    """The first video track of `path`, opened for decoding.

    Raises:
        InputError: the container cannot be opened (not a video, broken, unsupported), or has no
            video track.
    """
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InputError(
            f"{path.name} cannot be opened as a video (unreadable container or unsupported codec: {exc})",
            hint=REENCODE_HINT,
        ) from exc
    if not container.streams.video:
        container.close()
        raise InputError(f"{path.name} has no video track", hint="drop a video file, not audio only")
    stream = container.streams.video[0]
    if stream.time_base is None:  # pragma: no cover - demuxers always set one
        container.close()
        raise InputError(f"{path.name}: the video track has no time base", hint=REENCODE_HINT)
    tb = float(stream.time_base)
    origin = stream.start_time
    base = origin or 0
    # the container's own index (mp4 stss, mkv cues, avi idx1): where decoding can start cheaply
    keyframes = [(e.timestamp - base) * tb for e in stream.index_entries if e.is_keyframe]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    if stream.duration is not None:
        duration = stream.duration * tb
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    # decoder threads pay off on real footage; a short small clip decodes faster without starting them
    ctx = stream.codec_context
    work = duration * (fps or 30.0) * (ctx.width or 0) * (ctx.height or 0)
    if work < SMALL_DECODE:
        ctx.thread_count = 1
    else:
        stream.thread_type = "AUTO"  # frame and slice threads
    return _Source(container, stream, origin, sorted(keyframes), fps, duration)


def _upright(frame: Any, reformatter: Any) -> np.ndarray:
    """The decoded frame as a BGR array, turned as its display matrix says (phones film sideways).

    One `VideoReformatter` per video: it keeps its swscale context, which `frame.to_ndarray(format=)`
    would set up anew for every frame (a millisecond or more each).
    """
    import cv2

    bgr = reformatter.reformat(frame, format="bgr24").to_ndarray()
    turn = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}
    code = turn.get(int(getattr(frame, "rotation", 0) or 0) % 360)
    return bgr if code is None else cv2.rotate(bgr, code)


def sample_frames(
    path: Path,
    spec: SampleSpec,
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Sampling:
    """Sample `path` at `spec.fps` (blocking: run it in a thread).

    A frame is sampled when it is the first at or after a sample time (k / fps), by its
    presentation timestamp. Frames between samples are decoded but never converted; when the
    container's index shows a keyframe between the current position and the next sample time,
    decoding jumps there instead (what lies before a keyframe is not needed to decode what follows).

    `progress(sampled, expected)` is called after each sampled frame; `should_stop()` is polled
    every few frames.

    Raises:
        InputError: the video cannot be opened, has no decodable frame, or needs more than
            `spec.max_frames` frames.
        JobCancelled: `should_stop()` returned True.
    """
    import av
    from av.video.reformatter import VideoReformatter

    if not 0 < spec.fps <= 1000:
        raise ValueError(f"fps must be positive, got {spec.fps}")
    step = 1.0 / spec.fps
    src = open_video(path)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dropflow-frames")
    encoder = _Encoder(spec)
    pending: deque[Future[Frame | None]] = deque()
    kept: list[Frame] = []
    sample_times: list[float] = []
    warnings: list[str] = []

    def collect(block_until: int) -> None:
        while len(pending) > block_until:
            frame = pending.popleft().result()
            if frame is not None:
                kept.append(frame)
                if spec.max_frames is not None and len(kept) > spec.max_frames:
                    raise InputError(
                        f"{path.name} needs more than {spec.max_frames} frames at {spec.fps:g} fps",
                        hint="lower fps (or set interval) for this route, raise max_total_frames, "
                        "or split the video",
                    )

    stream, tb = src.stream, float(src.stream.time_base or 0)
    frame_gap = 1.0 / src.fps if src.fps > 0 else 0.04
    min_skip = 4 * frame_gap  # a jump costs a seek and a decoder flush: worth it past a few frames
    expected = max(1, math.ceil(src.stated_duration * spec.fps)) if src.stated_duration else 0
    next_t = 0.0
    last_t = -math.inf
    decoded = damaged = 0
    width = height = 0
    jumped_for: float | None = None  # the sample time of the last jump: one jump per sample time
    landing = False  # a jump was made and its first frame is yet to come
    frames = src.container.decode(stream)
    reformatter = VideoReformatter()

    def seek(t: float) -> None:
        """Restart decoding at the last keyframe shown at or before `t`."""
        nonlocal frames
        src.container.seek(round(max(t, 0.0) / tb) + (src.origin or 0), stream=stream, backward=True)
        frames = src.container.decode(stream)

    try:
        while True:
            if src.keyframes and jumped_for != next_t:
                # the index may hold decode times (a frame or two before display times): good
                # enough to tell whether a keyframe lies ahead; the seek itself goes by display time
                k = bisect.bisect_right(src.keyframes, next_t + TIME_TOLERANCE) - 1
                if k >= 0 and src.keyframes[k] > last_t + min_skip:
                    jumped_for, landing = next_t, True
                    seek(next_t + TIME_TOLERANCE)
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.FFmpegError as exc:
                # a damaged packet: skip it and go on with the next (the demuxer resynchronises),
                # unless the damage goes on and on
                damaged += 1
                if damaged > MAX_DAMAGED_PACKETS:
                    warnings.append(f"decoding gave up at {max(last_t, 0):.1f}s: {exc}")
                    break
                frames = src.container.decode(stream)
                continue
            decoded += 1
            if decoded % 16 == 0 and should_stop is not None and should_stop():
                raise JobCancelled("job cancelled while sampling frames")
            if frame.pts is None:  # a stream without timestamps: count frames at the nominal rate
                t = max(last_t, 0.0) + frame_gap if decoded > 1 else 0.0
            else:
                if src.origin is None:
                    src.origin = frame.pts
                t = (frame.pts - src.origin) * tb
            if landing:
                landing = False
                if t > next_t + TIME_TOLERANCE:
                    # landed past the sample time (a demuxer that seeks by decode time): go back to
                    # where decoding was and take the slow road to this sample
                    seek(last_t)
                    continue
            if t < last_t or t + TIME_TOLERANCE < next_t:
                last_t = max(last_t, t)
                continue
            last_t = t
            bgr = _upright(frame, reformatter)
            if not width:
                height, width = bgr.shape[:2]
            sample_times.append(t)
            # the next sample time strictly after this frame (a VFR gap may swallow several)
            next_t = (math.floor((t + TIME_TOLERANCE) / step) + 1) * step
            pending.append(pool.submit(encoder, t, len(sample_times) - 1, bgr))
            collect(MAX_PENDING)
            if progress is not None:
                progress(len(sample_times), max(expected, len(sample_times)))
        collect(0)
    finally:
        # on an error the queued frames are abandoned, not encoded
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True)
        src.container.close()
    source_fps = src.fps
    stated_duration = src.stated_duration
    if not kept:
        raise InputError(
            f"{path.name} has no decodable video frames (empty, audio-only or broken)", hint=REENCODE_HINT
        )
    duration = last_t + (1.0 / source_fps if source_fps > 0 else 0.0)
    if damaged:
        warnings.append(f"{damaged} damaged packet(s) skipped: some frames near them may be missing")
    # compared in time, not frames: some containers state odd rates (AVI with a 1 ms time base)
    if stated_duration > 0 and duration < 0.9 * stated_duration:
        warnings.append(
            f"decoding stopped at {last_t:.1f}s of {stated_duration:.1f}s: the file looks truncated; "
            "only the part before that was annotated"
        )
    return Sampling(
        frames=kept,
        sample_times=sample_times,
        duration=duration,
        width=width,
        height=height,
        source_fps=source_fps,
        decoded=decoded,
        warnings=warnings,
    )
