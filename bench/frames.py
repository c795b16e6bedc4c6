"""Frame sampling: our sampler against the two obvious loops, on the same video, side by side.

A 60 s, 30 fps, 1280x720 synthetic video (moving shapes, scene cuts; mp4v from OpenCV's writer)
is sampled at 1 fps, frames shrunk to 768 px and JPEG-encoded, three ways:

- ours:      `dropflow.engine.frames.sample_frames`: frames between samples decoded but never
             converted, decoding started at the last keyframe before each sample time when the
             container's index shows one ahead, encoding overlapped on a second thread;
- read_all:  the loop most code starts with: ``cap.read()`` on every frame (decode *and* BGR
             conversion), the same frames picked by the same time rule, encoded inline;
- grab_all:  ``cap.grab()`` on every frame and nothing else: the decoder's own speed, the limit
             of any sampler that decodes every frame (ours does not have to: above 1 means the
             keyframe jumps saved more decoding than the sampling costs).

ours and read_all must return byte-identical JPEGs (else the run fails). Rounds are interleaved and
each method keeps its best time, so load from other processes hurts all three alike.

    python bench/frames.py [--quick]

Last line: RESULT {"speedup_vs_read_all": read_all/ours, "ratio_to_grab_limit": grab_all/ours}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from dropflow.engine.frames import TIME_TOLERANCE, SampleSpec, jpeg, sample_frames, shrink  # noqa: E402

W, H, FPS, SECONDS = 1280, 720, 30, 60
SPEC = SampleSpec(fps=1.0, max_side=768, jpeg_quality=85, dedup=False)


def make_video(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    ramp = np.linspace(0, 60, W, dtype=np.float32)[None, :, None]
    for i in range(FPS * SECONDS):
        t = i / FPS
        scene = int(t // 7)  # a cut every 7 s
        colour = np.array([(40 * scene) % 200, 80, 150 - (15 * scene) % 120], np.float32)
        frame = np.broadcast_to(colour + ramp, (H, W, 3)).astype(np.uint8).copy()
        cv2.circle(frame, (int(100 + 180 * t) % W, 360), 70, (0, 200, 255), -1)
        cv2.rectangle(frame, (int(60 * t) % W, 120), (int(60 * t) % W + 120, 240), (255, 255, 255), -1)
        cv2.putText(frame, f"t={t:5.2f}", (40, 660), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
        writer.write(frame)
    writer.release()
    return path


DECODED: dict[str, int] = {}


def ours(path: Path) -> list[bytes]:
    sampling = sample_frames(path, SPEC)
    DECODED["ours"] = sampling.decoded
    return [f.jpeg for f in sampling.frames]


def read_all(path: Path) -> list[bytes]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    out: list[bytes] = []
    step = 1.0 / SPEC.fps
    next_t = 0.0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if t + TIME_TOLERANCE >= next_t:
            out.append(jpeg(shrink(bgr, SPEC.max_side), SPEC.jpeg_quality))
            next_t = (math.floor((t + TIME_TOLERANCE) / step) + 1) * step
    cap.release()
    return out


def grab_all(path: Path) -> int:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (under a minute on 2 cores)")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    with tempfile.TemporaryDirectory(prefix="dropflow-bench-frames-") as tmp:
        t0 = time.perf_counter()
        video = make_video(Path(tmp) / "synthetic.mp4")
        print(
            f"video: {W}x{H}, {FPS} fps, {SECONDS} s, {video.stat().st_size / 1e6:.1f} MB, "
            f"written in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        best = {"ours": math.inf, "read_all": math.inf, "grab_all": math.inf}
        results: dict[str, object] = {}
        for r in range(rounds):
            for name, fn in (("ours", ours), ("read_all", read_all), ("grab_all", grab_all)):
                t = time.perf_counter()
                results[name] = fn(video)
                best[name] = min(best[name], time.perf_counter() - t)
            print(
                f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v:.3f}s" for k, v in best.items()), flush=True
            )
        frames_ours, frames_read = results["ours"], results["read_all"]
        assert isinstance(frames_ours, list) and isinstance(frames_read, list)
        if frames_ours != frames_read:
            print(f"FAIL: the samplers disagree ({len(frames_ours)} vs {len(frames_read)} frames)")
            return 1
        print(
            f"frames: {len(frames_ours)} identical JPEGs; frames decoded: ours {DECODED['ours']}, "
            f"read_all and grab_all {results['grab_all']}"
        )
    speedup = best["read_all"] / best["ours"]
    ratio = best["grab_all"] / best["ours"]
    print(
        "RESULT "
        + json.dumps({"speedup_vs_read_all": round(speedup, 3), "ratio_to_grab_limit": round(ratio, 3)})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
