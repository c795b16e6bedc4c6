"""The soundtrack side (engine/asr.py): extraction with PyAV, chunking, timed transcripts."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from dropflow.engine.annotate.asr import (
    SAMPLE_RATE,
    AudioChunk,
    chunk_request,
    clock,
    cut_points,
    extract_soundtrack,
    transcript,
)
from dropflow.engine.errors import JobCancelled
from dropflow.engine.providers.base import AudioPart
from tests.videos import make_video


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        return w.getnframes() / SAMPLE_RATE


def test_soundtrack_is_chunked_with_times_and_silence_is_not_sent(tmp_path: Path) -> None:
    # speech-like tones at 0.5-4 s and 11-14 s; silence from 4 s to 11 s
    video = make_video(tmp_path / "talk.mp4", seconds=15, fps=5, tones=[(0.5, 4.0, 440), (11.0, 14.0, 300)])
    track = extract_soundtrack(video, chunk_seconds=5.0)
    assert track.has_audio and track.duration == pytest.approx(15.0, abs=0.1)
    assert track.silent_chunks == 1  # 5-10 s holds nothing worth paying for
    starts = [round(c.start, 1) for c in track.chunks]
    assert len(track.chunks) == 2 and starts[0] == 0.0 and 9.0 <= starts[1] <= 10.5
    for chunk in track.chunks:
        assert wav_seconds(chunk.wav) == pytest.approx(chunk.end - chunk.start, abs=0.01)
    assert track.chunks[-1].end == pytest.approx(15.0, abs=0.1)


def test_video_without_audio_track(tmp_path: Path) -> None:
    track = extract_soundtrack(make_video(tmp_path / "mute.mp4", seconds=2, fps=5))
    assert not track.has_audio and track.chunks == [] and track.warnings == []


def test_cuts_land_in_quiet_places() -> None:
    rate = SAMPLE_RATE
    loud = (np.sin(np.arange(20 * rate) * 0.3) * 8000).astype(np.int16)
    loud[int(9.2 * rate) : int(9.4 * rate)] = 0  # a pause just before the nominal 10 s boundary
    cuts = cut_points(loud, 10.0)
    assert len(cuts) == 2
    assert 9.2 <= cuts[0][1] / rate <= 9.4
    assert cuts[1] == (cuts[0][1], len(loud))
    # no crumb of a last chunk: 21 s in 10 s chunks makes two, not three
    assert len(cut_points(np.ones(21 * rate, np.int16), 10.0)) == 2


def test_transcript_keeps_chunk_times_and_filters_by_range() -> None:
    chunks = [AudioChunk(0.0, 29.5, b""), AudioChunk(29.5, 61.0, b""), AudioChunk(61.0, 3725.0, b"")]
    t = transcript("qwen3-asr-flash", chunks, ["  hello   there ", "", "much later"])
    assert t.render() == "[00:00-00:30] hello there\n[1:01:05-1:02:05] much later".replace(
        "[1:01:05-1:02:05]", f"[{clock(61.0)}-{clock(3725.0)}]"
    )
    assert t.render(0.0, 20.0) == "[00:00-00:30] hello there"
    assert t.render(30.0, 50.0) == ""  # the silent-answer chunk has no line
    assert clock(3725.0) == "1:02:05" and clock(59.6) == "01:00"


def test_chunk_request_is_one_audio_part() -> None:
    req = chunk_request(AudioChunk(0, 1, b"RIFFxxxx"), "qwen3-asr-flash")
    assert req.model == "qwen3-asr-flash" and req.parts == [AudioPart(b"RIFFxxxx", "audio/wav")]


def test_extraction_can_be_cancelled(tmp_path: Path) -> None:
    video = make_video(tmp_path / "talk.mkv", seconds=6, fps=5, tones=[(0, 6, 440)])
    with pytest.raises(JobCancelled):
        extract_soundtrack(video, should_stop=lambda: True)
