"""Synthetic test videos: moving shapes drawn with OpenCV, scene cuts, a static stretch, a time code.

Plain MP4s are written with OpenCV's `VideoWriter` (mp4v). Anything OpenCV cannot write — a
soundtrack, rotation metadata, explicit (variable) frame times, other containers — is muxed with
PyAV, which ships ffmpeg. Every frame carries a time code along its top edge: its time in tenths of
a second as 10 black/white squares (binary), which survives compression and downscaling, so a
sampled frame tells when it was taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

TIME_CODE_BITS = 10  # tenths of a second: up to 102.3 s
TIME_CODE_CELL = 16  # pixels per square (at the source size)
SCENE_COLOURS = [(90, 40, 20), (20, 90, 40), (40, 20, 90), (90, 90, 20), (20, 90, 90), (60, 60, 60)]

Tone = tuple[float, float, float]  # start s, end s, frequency Hz


def render(t: float, size: tuple[int, int], cuts: Sequence[float] = ()) -> np.ndarray:
    """The BGR frame at time `t`: a scene colour (changing at each cut), two moving shapes, the time code."""
    w, h = size
    scene = sum(1 for c in cuts if t >= c)
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = SCENE_COLOURS[scene % len(SCENE_COLOURS)]
    # shapes move fast enough that two frames a second apart never look alike
    x = int(60 + (w - 120) * ((t * 0.37) % 1.0))
    y = int(50 + (h - 100) * ((t * 0.23) % 1.0))
    cv2.circle(frame, (x, h * 2 // 3), max(8, h // 8), (0, 200, 255), -1)
    cv2.rectangle(frame, (w * 3 // 4 - 20, y - 20), (w * 3 // 4 + 20, y + 20), (255, 255, 255), -1)
    cv2.putText(frame, f"scene {scene}", (w // 3, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (230, 230, 230), 1)
    tenths = min(2**TIME_CODE_BITS - 1, round(t * 10))
    frame[:TIME_CODE_CELL, : TIME_CODE_CELL * TIME_CODE_BITS] = 0
    for bit in range(TIME_CODE_BITS):
        if tenths >> bit & 1:
            x = bit * TIME_CODE_CELL
            frame[2 : TIME_CODE_CELL - 2, x + 2 : x + TIME_CODE_CELL - 2] = 255
    return frame


def time_code(image: np.ndarray | bytes, scale: float = 1.0) -> float:
    """Read the time code of a frame (a BGR array, or JPEG bytes); `scale` = frame width / source width."""
    if isinstance(image, bytes):
        image = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    tenths = 0
    for bit in range(TIME_CODE_BITS):
        cx = round((bit + 0.5) * TIME_CODE_CELL * scale)
        cy = round(TIME_CODE_CELL * scale / 2)
        if grey[cy, cx] > 128:
            tenths |= 1 << bit
    return tenths / 10


def frame_times(seconds: float, fps: float) -> list[float]:
    return [i / fps for i in range(round(seconds * fps))]


def make_video(
    path: Path,
    *,
    seconds: float = 6.0,
    fps: float = 10.0,
    size: tuple[int, int] = (320, 240),
    cuts: Sequence[float] = (2.0, 4.0),
    static: tuple[float, float] | None = None,
    tones: Sequence[Tone] | None = None,
    rotation: int = 0,
    times: Sequence[float] | None = None,
    h264: tuple[int, int] | None = None,
) -> Path:
    """Write a synthetic video and return its path.

    `static`: between these times the picture is frozen (a static shot). `tones`: a soundtrack of
    sine tones (silence elsewhere); `None` = no audio track at all. `rotation`: display-matrix
    rotation in degrees. `times`: explicit frame times (variable frame rate) instead of `fps`.
    `h264`: (keyframe interval, B-frames) for an H.264 stream like a camera's, instead of mp4v.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps = list(times) if times is not None else frame_times(seconds, fps)

    def picture(t: float) -> np.ndarray:
        if static is not None and static[0] <= t < static[1]:
            t = static[0]
        return render(t, size, cuts)

    plain = (
        tones is None and not rotation and times is None and h264 is None and path.suffix.lower() == ".mp4"
    )
    if plain:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        assert writer.isOpened(), "this OpenCV build cannot write mp4v"
        try:
            for t in stamps:
                writer.write(picture(t))
        finally:
            writer.release()
        return path
    _write_pyav(
        path, stamps, picture, fps, size, tones, rotation, seconds, explicit=times is not None, h264=h264
    )
    return path


def _write_pyav(
    path: Path,
    stamps: list[float],
    picture: object,
    fps: float,
    size: tuple[int, int],
    tones: Sequence[Tone] | None,
    rotation: int,
    seconds: float,
    *,
    explicit: bool,
    h264: tuple[int, int] | None = None,
) -> None:
    import av

    codec = "libvpx" if path.suffix.lower() == ".webm" else "mpeg4"
    with av.open(str(path), "w") as out:
        rate = Fraction(fps).limit_denominator(1000)
        vs = out.add_stream("libx264" if h264 else codec, rate=rate)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        if h264:
            gop, bframes = h264
            vs.codec_context.gop_size = gop
            vs.options = {
                "preset": "veryfast",
                "bf": str(bframes),
                "keyint_min": str(gop),
                "sc_threshold": "0",
            }
        if explicit:  # explicit frame times need a fine time base (AVI cannot do this)
            vs.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            vs.set_display_rotation(rotation)
        audio = None
        if tones is not None:
            audio = out.add_stream(
                "libopus" if codec == "libvpx" else "aac", rate=48000 if codec == "libvpx" else 16000
            )
            audio.layout = "mono"
        for i, t in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(picture(t), format="bgr24")  # type: ignore[operator]
            frame.pts, frame.time_base = i, 1 / rate
            if explicit:
                frame.pts = round(t * 1000)
                frame.time_base = Fraction(1, 1000)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if audio is not None:
            arate = audio.rate
            n = round(max(seconds, stamps[-1] if stamps else 0.0) * arate)
            t = np.arange(n) / arate
            wave = np.zeros(n, np.float32)
            for start, end, freq in tones or ():
                on = (t >= start) & (t < end)
                wave[on] = 0.5 * np.sin(2 * np.pi * freq * t[on])
            step = 1024
            for i in range(0, n, step):
                chunk = wave[i : i + step].reshape(1, -1)
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                aframe.sample_rate = arate
                aframe.pts = i
                aframe.time_base = Fraction(1, arate)
                for packet in audio.encode(aframe):
                    out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)
