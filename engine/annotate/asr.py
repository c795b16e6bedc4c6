"""A video's soundtrack as timed text: extracted with PyAV, transcribed chunk by chunk.

OpenCV cannot read audio; PyAV ships ffmpeg inside its wheel. The track is decoded to 16 kHz mono
PCM and cut into chunks of about `chunk_seconds`, each cut placed at the quietest 100 ms near the
nominal boundary so that a word is rarely split. Silent chunks are never sent. Each chunk goes to
a speech-recognition model as one WAV (DashScope qwen3-asr-flash through MultiModalConversation,
or an OpenAI-compatible server's audio part) and its text keeps the chunk's start and end: speech
models answer with text only, so the chunk bounds are the timestamps.

The engine sends the requests (through its answer cache); this module makes them and reads them.
"""

from __future__ import annotations

import io
import math
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dropflow.engine.errors import JobCancelled
from dropflow.engine.providers.base import AudioPart, ModelLimits, VisionRequest

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16_000
QUIET_BLOCK = 0.1  # seconds: the unit in which the quietest cut point is searched
CUT_SEARCH = 0.2  # the last 20% of a chunk is searched for a quiet cut point
SILENCE_RMS = 32768 * 10 ** (-45 / 20)  # -45 dBFS: below this a chunk holds no speech worth paying for
ASR_MAX_TOKENS = 2000


@dataclass(frozen=True)
class AudioChunk:
    start: float  # seconds from the start of the video
    end: float
    wav: bytes  # 16 kHz mono 16-bit PCM WAV


@dataclass
class Soundtrack:
    has_audio: bool
    chunks: list[AudioChunk] = field(default_factory=list)  # the chunks worth sending
    duration: float = 0.0
    silent_chunks: int = 0
    warnings: list[str] = field(default_factory=list)


def to_wav(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def _decode(path: Path, should_stop: Callable[[], bool] | None) -> tuple[np.ndarray | None, float, list[str]]:
    """(16 kHz mono int16 samples or None without an audio track, start offset, warnings)."""
    import av
    import numpy as np

    warnings: list[str] = []
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        return None, 0.0, [f"the soundtrack could not be read ({exc}); no speech recognition"]
    with container:
        if not container.streams.audio:
            return None, 0.0, []
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        pieces: list[np.ndarray] = []
        offset: float | None = None
        try:
            for n, frame in enumerate(container.decode(stream)):
                if should_stop is not None and n % 256 == 0 and should_stop():
                    raise JobCancelled("job cancelled while extracting the soundtrack")
                if offset is None:
                    offset = max(0.0, float(frame.time or 0.0))
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as exc:
            # a damaged soundtrack must not sink a video whose pictures are fine
            warnings.append(
                f"the soundtrack is damaged after {sum(map(len, pieces)) / SAMPLE_RATE:.1f}s ({exc})"
            )
        samples = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
        return samples, offset or 0.0, warnings


def _rms(samples: np.ndarray) -> float:
    import numpy as np

    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))


def cut_points(samples: np.ndarray, chunk_seconds: float, rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Sample ranges of about `chunk_seconds`, each cut at the quietest block near its nominal end."""
    import numpy as np

    n = len(samples)
    win = max(1, int(chunk_seconds * rate))
    look = int(win * CUT_SEARCH)
    block = max(1, int(QUIET_BLOCK * rate))
    out: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = start + win
        if n - end < win * 0.25:  # no tiny last chunk: the remainder joins this one
            end = n
        elif look >= block:
            region = samples[end - look : end].astype(np.float32)
            blocks = region[: (len(region) // block) * block].reshape(-1, block)
            energy = np.mean(np.square(blocks), axis=1)
            quietest = len(energy) - 1 - int(np.argmin(energy[::-1]))  # on a tie, the latest: longer chunks
            end = end - look + quietest * block + block // 2
        out.append((start, end))
        start = end
    return out


def extract_soundtrack(
    path: Path, *, chunk_seconds: float = 30.0, should_stop: Callable[[], bool] | None = None
) -> Soundtrack:
    """Decode and chunk the first audio track of `path` (blocking: run it in a thread).

    Never raises for audio trouble (a missing or damaged track gives no chunks and a warning):
    the pictures can still be annotated. Raises JobCancelled when `should_stop()` turns True.
    """
    samples, offset, warnings = _decode(path, should_stop)
    if samples is None:
        return Soundtrack(has_audio=False, warnings=warnings)
    track = Soundtrack(has_audio=True, duration=len(samples) / SAMPLE_RATE, warnings=warnings)
    for a, b in cut_points(samples, chunk_seconds):
        piece = samples[a:b]
        if _rms(piece) < SILENCE_RMS:
            track.silent_chunks += 1
            continue
        track.chunks.append(AudioChunk(offset + a / SAMPLE_RATE, offset + b / SAMPLE_RATE, to_wav(piece)))
    return track


def fit_chunk_seconds(asked: float, limits: ModelLimits) -> float:
    """`asked`, shortened so that every clip fits the model's clip length and the request body (a
    WAV travels as base64, 4/3 of its bytes). A chunk can come out a quarter longer than asked
    (`cut_points` joins a short tail), so the bound is divided by 1.25."""
    longest = limits.max_audio_seconds or math.inf
    if limits.max_request_bytes is not None:
        room = (limits.max_request_bytes - 16 * 1024) * 3 / 4 - 44  # minus the envelope, the WAV header
        longest = min(longest, room / (SAMPLE_RATE * 2))
    return asked if asked * 1.25 <= longest else float(int(longest / 1.25))


def chunk_request(chunk: AudioChunk, model: str) -> VisionRequest:
    """The speech-recognition request for one chunk (the WAV as the only part)."""
    return VisionRequest(
        model=model,
        parts=[AudioPart(data=chunk.wav, mime="audio/wav")],
        temperature=0.0,
        max_tokens=ASR_MAX_TOKENS,
    )


def clock(seconds: float) -> str:
    """mm:ss, or h:mm:ss from an hour on."""
    s = max(0, math.floor(seconds + 0.5))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


@dataclass(frozen=True)
class TranscriptLine:
    start: float
    end: float
    text: str


@dataclass
class Transcript:
    model: str
    lines: list[TranscriptLine] = field(default_factory=list)

    def render(self, start: float | None = None, end: float | None = None) -> str:
        """``[mm:ss-mm:ss] text`` lines, only those overlapping [start, end) when given."""
        picked = [
            ln
            for ln in self.lines
            if (start is None or ln.end > start) and (end is None or ln.start < end) and ln.text
        ]
        return "\n".join(f"[{clock(ln.start)}-{clock(ln.end)}] {ln.text}" for ln in picked)

    def as_json(self) -> list[dict[str, object]]:
        return [{"start": round(ln.start, 3), "end": round(ln.end, 3), "text": ln.text} for ln in self.lines]


def transcript(model: str, chunks: list[AudioChunk], texts: list[str]) -> Transcript:
    """Pair each chunk with its recognised text (whitespace tidied; empty answers dropped)."""
    lines = [
        TranscriptLine(c.start, c.end, " ".join(t.split()))
        for c, t in zip(chunks, texts, strict=True)
        if t and t.strip()
    ]
    return Transcript(model=model, lines=lines)
