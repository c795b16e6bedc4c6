"""Frame sampling (engine/frames.py) on synthetic videos made with OpenCV and PyAV."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from dropflow.engine.errors import InputError, JobCancelled
from dropflow.engine.frames import SampleSpec, dhash, hamming, jpeg, sample_frames, shrink
from tests.videos import make_video, render, time_code


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s at 10 fps, 320x240, scene cuts at 2 s and 4 s, frozen from 4.5 s to 7 s."""
    return make_video(tmp_path_factory.mktemp("v") / "clip.mp4", seconds=8, static=(4.5, 7.0))


def test_one_frame_per_second_at_true_times(clip: Path) -> None:
    s = sample_frames(clip, SampleSpec(fps=1.0, dedup=False))
    assert s.sampled == 8 and len(s.frames) == 8
    assert [f.time for f in s.frames] == pytest.approx([0, 1, 2, 3, 4, 5, 6, 7])
    # the picture really is the one at that time (the time code drawn into each frame)
    assert [time_code(f.jpeg) for f in s.frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 4.5, 4.5, 7.0]
    assert s.duration == pytest.approx(8.0)
    assert (s.width, s.height) == (320, 240)


def test_fps_and_interval(clip: Path) -> None:
    assert sample_frames(clip, SampleSpec(fps=2.0, dedup=False)).sampled == 16
    # one frame every 2.5 s (fps 0.4)
    s = sample_frames(clip, SampleSpec(fps=0.4, dedup=False))
    assert [f.time for f in s.frames] == pytest.approx([0.0, 2.5, 5.0, 7.5])


def test_longest_side_and_quality(tmp_path: Path) -> None:
    wide = make_video(tmp_path / "wide.mp4", seconds=2, fps=5, size=(800, 450))
    small = sample_frames(wide, SampleSpec(max_side=300, dedup=False, jpeg_quality=90))
    assert {(f.width, f.height) for f in small.frames} == {(300, 169)}
    assert decode(small.frames[0].jpeg).shape[:2] == (169, 300)
    big = sample_frames(wide, SampleSpec(max_side=768, dedup=False, jpeg_quality=90))
    assert {(f.width, f.height) for f in big.frames} == {(768, 432)}
    low = sample_frames(wide, SampleSpec(max_side=768, dedup=False, jpeg_quality=40))
    assert sum(map(len, (f.jpeg for f in low.frames))) < sum(map(len, (f.jpeg for f in big.frames)))
    # never upscaled
    tiny = make_video(tmp_path / "tiny.mp4", seconds=1, fps=5, size=(320, 240))
    assert sample_frames(tiny, SampleSpec(max_side=768)).frames[0].width == 320


def test_static_stretch_is_dropped_but_counted(clip: Path) -> None:
    s = sample_frames(clip, SampleSpec(fps=1.0))
    # 5 s and 6 s show the frozen picture of 4.5 s; 5 s is its first sample and is kept
    assert [f.time for f in s.frames] == pytest.approx([0, 1, 2, 3, 4, 5, 7])
    assert s.sampled == 8 and s.dropped == 1
    # the threshold is what decides: accept everything as a repeat and only the first frame stays
    s_all = sample_frames(clip, SampleSpec(fps=1.0, dedup_threshold=256))
    assert len(s_all.frames) == 1 and s_all.sampled == 8


def test_hash_ignores_noise_but_sees_motion() -> None:
    rng = np.random.default_rng(1)
    base = render(1.0, (768, 432))

    def noisy() -> np.ndarray:
        return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)

    assert hamming(dhash(noisy()), dhash(noisy())) <= SampleSpec().dedup_threshold
    assert hamming(dhash(base), dhash(render(2.0, (768, 432)))) > SampleSpec().dedup_threshold


def test_variable_frame_rate_uses_timestamps(tmp_path: Path) -> None:
    # 2 s at 30 fps, then one frame every 0.7 s: frame numbers / nominal fps would be far off
    times = [i / 30 for i in range(60)] + [2.0 + 0.7 * i for i in range(1, 8)]
    vfr = make_video(tmp_path / "vfr.mkv", times=times)
    s = sample_frames(vfr, SampleSpec(fps=1.0, dedup=False))
    got = [(round(f.time, 2), time_code(f.jpeg)) for f in s.frames]
    # the first frame at or after each whole second (2.7 s stands in for 2 s; 4.8 s is skipped,
    # 4.1 s already stood for 4 s), and each picture is the one of its time
    assert got == [(0.0, 0.0), (1.0, 1.0), (2.7, 2.7), (3.4, 3.4), (4.1, 4.1), (5.5, 5.5), (6.2, 6.2)]


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    for degrees in (90, 180, 270):
        rotated = make_video(
            tmp_path / f"phone{degrees}.mov", seconds=2, fps=5, size=(320, 180), rotation=degrees
        )
        spec = SampleSpec(dedup=False)
        s = sample_frames(rotated, spec)
        size = (320, 180) if degrees == 180 else (180, 320)
        assert (s.width, s.height) == size and {(f.width, f.height) for f in s.frames} == {size}
        # turned the way OpenCV turns it (its auto-rotation is the reference)
        assert [f.jpeg for f in s.frames] == read_loop(rotated, spec)


@pytest.mark.parametrize("suffix", [".mov", ".avi", ".mkv", ".webm"])
def test_containers(tmp_path: Path, suffix: str) -> None:
    video = make_video(tmp_path / f"c{suffix}", seconds=2, fps=5)
    s = sample_frames(video, SampleSpec(dedup=False))
    assert [time_code(f.jpeg) for f in s.frames] == [0.0, 1.0]


def read_loop(video: Path, spec: SampleSpec) -> list[bytes]:
    """The obvious sampler: OpenCV decodes and converts every frame, the same time rule picks."""
    cap = cv2.VideoCapture(str(video))
    out, next_t = [], 0.0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
        if t + 1e-3 >= next_t:
            out.append(jpeg(shrink(bgr, spec.max_side), spec.jpeg_quality))
            next_t = (math.floor((t + 1e-3) * spec.fps) + 1) / spec.fps
    cap.release()
    return out


def test_sampler_gives_the_frames_a_read_loop_gives(clip: Path) -> None:
    spec = SampleSpec(fps=1.0, dedup=False, max_side=300)
    assert [f.jpeg for f in sample_frames(clip, spec).frames] == read_loop(clip, spec)


@pytest.mark.parametrize(("gop", "bframes", "fps"), [(10, 0, 1.0), (10, 2, 1.0), (5, 3, 0.5), (10, 2, 3.0)])
def test_keyframe_jumps_skip_decoding_without_changing_frames(
    tmp_path: Path, gop: int, bframes: int, fps: float
) -> None:
    """Camera-like H.264 (a keyframe every `gop` frames, B-frames reordered): the sampler decodes
    from the last keyframe before each sample time, and still picks exactly the read loop's frames."""
    video = make_video(tmp_path / "cam.mp4", seconds=12, fps=10, h264=(gop, bframes))
    spec = SampleSpec(fps=fps, dedup=False)
    s = sample_frames(video, spec)
    assert [f.jpeg for f in s.frames] == read_loop(video, spec)
    # the first frame at or after each sample time, showing its own time
    assert [time_code(f.jpeg) for f in s.frames] == [round(f.time, 1) for f in s.frames]
    assert [f.time for f in s.frames] == pytest.approx(
        [math.ceil(k / fps * 10 - 1e-6) / 10 for k in range(len(s.frames))]
    )
    if fps <= 1.0:
        assert s.decoded < 120 * 0.6  # of 120 frames, most were never decoded


def test_broken_and_empty_files_are_input_errors(tmp_path: Path, clip: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video at all" * 100)
    with pytest.raises(InputError, match=r"junk\.mp4 cannot be opened as a video"):
        sample_frames(junk, SampleSpec())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:2000])  # the header survives, the frames do not
    with pytest.raises(InputError, match=r"cut\.mp4"):
        sample_frames(cut, SampleSpec())


def test_truncated_file_is_sampled_up_to_the_break_with_a_warning(tmp_path: Path) -> None:
    # the mp4 index is at the end with OpenCV's writer; mkv keeps working when cut
    whole = make_video(tmp_path / "long.mkv", seconds=8, fps=10)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    s = sample_frames(cut, SampleSpec(dedup=False))
    assert 0 < len(s.frames) < 8
    assert any("truncated" in w for w in s.warnings)


def test_damage_in_the_middle_is_skipped_with_a_warning(tmp_path: Path) -> None:
    whole = make_video(tmp_path / "whole.mp4", seconds=10, fps=10, h264=(10, 2))
    data = bytearray(whole.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = bytes(3000)  # a burst of zeros over a few packets
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    s = sample_frames(damaged, SampleSpec(dedup=False))
    times = [f.time for f in s.frames]
    assert times[:5] == pytest.approx([0, 1, 2, 3, 4]) and times[-3:] == pytest.approx([7, 8, 9])
    assert any("damaged packet(s) skipped" in w for w in s.warnings)


def test_frame_cap_and_cancel(clip: Path) -> None:
    with pytest.raises(InputError, match=r"clip\.mp4 needs more than 3 frames at 1 fps"):
        sample_frames(clip, SampleSpec(max_frames=3, dedup=False))
    seen: list[int] = []
    with pytest.raises(JobCancelled):
        sample_frames(
            clip, SampleSpec(), progress=lambda k, n: seen.append(k), should_stop=lambda: bool(seen)
        )
    assert seen and seen[-1] < 8
