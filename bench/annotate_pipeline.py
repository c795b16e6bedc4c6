"""Annotate pipeline: 50 short videos through a running daemon against a slow, rate-limited DashScope.

Two subprocesses: the fake DashScope server (`python -m dropflow.engine.fakes dashscope`) answering
after 500 ms and refusing more than 20 requests per second with 429s, and a daemon
(`python -m dropflow.daemon daemon`) with the annotate route and the real dashscope SDK pointed at
the fake. One warm-up video goes through first (a fresh daemon imports OpenCV and the dashscope
SDK on its first job; "a running daemon" has done that). The engine is then paused while the 50
videos are dropped and settle (intake is not measured here: bench/ingest.py does that), resumed,
and the round is timed from the first job's start to the last job's end, from the job rows in
SQLite. Three rounds of 50 different videos; the median round is reported (the machine is shared:
one round can catch another process's burst).

What "ideal" means: every video is one request (a short clip is one segment, and the default
prompt needs no transcript), so the best any client can do is bounded by
  - the requests it keeps in flight (providers.dashscope.concurrency = C) over the latency L: C/L, and
  - the server's rate limit R.
ideal_per_s = min(C / L, R). The bench sets C so that C / L = R (10 in flight at 500 ms = 20/s):
the concurrency is exactly what the rate limit allows, no more (more would only buy 429s). The
engine's own job slots are set above C, so sampling and writing of one job overlap another's wait.

    python bench/annotate_pipeline.py [--quick]

Last line: RESULT {"achieved_per_s": a, "ideal_per_s": b, "ratio": a/b}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dropflow.daemon.core.store import Store  # noqa: E402

VIDEOS = 50
LATENCY = 0.5
RATE_LIMIT = 20  # requests per second at the fake
IN_FLIGHT = int(RATE_LIMIT * LATENCY)  # C: requests in flight that exactly meet the rate limit
# annotate jobs at once: requests finish in waves of C, and each finished job still writes its outputs
# while a new one is claimed and sampled; 2C slots keep C sampled jobs ready for every wave
JOB_SLOTS = 2 * IN_FLIGHT + 4
KEY = "sk-bench-annotate-0000000000"

CONFIG = f"""
paths: {{inbox: inbox, outputs: outputs, archive: archive, prompts: prompts, state: state}}
watch: {{settle_seconds: 0.3, rescan_seconds: 5, check_seconds: 0.1}}
scheduler:
  max_concurrency: {JOB_SLOTS}
  engine_concurrency: {{annotate: {JOB_SLOTS}}}
  tick_seconds: 0.05
providers:
  default: dashscope
  dashscope:
    api_key: "{KEY}"
    base_url: "{{url}}"
    concurrency: {IN_FLIGHT}
    requests_per_minute: {RATE_LIMIT * 60}
logging: {{level: WARNING}}
routes:
  - {{name: annotate, folder: annotate, engine: annotate}}
"""


def make_videos(folder: Path, n: int, first: int = 0) -> list[Path]:
    """n different 2 s clips (320x240, 10 fps): each its own content, so none is deduplicated."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(first, first + n):
        path = folder / f"clip{k:03}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
        for i in range(20):
            frame = np.full((240, 320, 3), ((37 * k) % 200, 90, (11 * k) % 180), np.uint8)
            cv2.circle(frame, (40 + 12 * i, 120), 25, (0, 200, 255), -1)
            cv2.putText(frame, f"clip {k}", (100, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
            writer.write(frame)
        writer.release()
        out.append(path)
    return out


def start_fake(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dropflow.engine.fakes",
            "dashscope",
            "--port",
            "0",
            "--api-key",
            KEY,
            "--latency",
            str(LATENCY),
            "--rate-limit",
            str(RATE_LIMIT),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"the fake server did not start: {url!r}")
    return proc, url


async def wait_jobs(db: Path, n: int, statuses: tuple[str, ...], within: float) -> None:
    deadline = time.monotonic() + within
    async with Store.open(db) as store:
        while True:
            counts = await store.counts()
            if sum(counts[s] for s in statuses) >= n:
                return
            if counts["failed"]:
                failed = await store.list(status="failed", limit=1)
                raise SystemExit(f"a job failed: {failed[0].error_message}")
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {n} jobs in {statuses}: {counts}")
            await asyncio.sleep(0.05)


async def set_paused(db: Path, paused: bool) -> None:
    async with Store.open(db) as store:
        await store.pause_engine("annotate", paused)


async def timings(db: Path, first_id: int) -> tuple[float, float, int]:
    """(first start, last finish, jobs that needed a retry) of the jobs with id >= first_id."""
    async with Store.open(db) as store:
        jobs = [j for j in await store.list() if j.id >= first_id]
    starts = [j.started_at for j in jobs if j.started_at]
    ends = [j.finished_at for j in jobs if j.finished_at]
    return min(starts), max(ends), sum(j.attempts > 1 for j in jobs)


async def provider_alone(url: str, videos: list[Path]) -> float:
    """The same requests (the first round's, re-sampled) straight through the provider, C at a
    time, no daemon: what the SDK and the fake server leave of the ideal. Requests per second."""
    from dropflow.daemon.core.config import ProviderSettings
    from dropflow.engine.frames import SampleSpec, sample_frames
    from dropflow.engine.providers.base import TextPart, VideoPart, VisionRequest
    from dropflow.engine.providers.dashscope import DashScopeVision

    prompt = (REPO / "prompts" / "pov_annotation_prompt.txt").read_text().strip()
    requests = []
    for v in videos:
        frames = [f.jpeg for f in sample_frames(v, SampleSpec()).frames]
        frames = [frames[i * len(frames) // 4] for i in range(4)] if len(frames) < 4 else frames
        requests.append(
            VisionRequest(model="qwen-vl-max-latest", parts=[VideoPart(frames, 1.0), TextPart(prompt)])
        )
    settings = ProviderSettings.model_validate(
        {"api_key": KEY, "base_url": url, "concurrency": IN_FLIGHT, "requests_per_minute": RATE_LIMIT * 60}
    )
    provider = DashScopeVision(settings)
    try:
        await provider.generate(requests[0])  # warm the connection pool, as the daemon's warm-up did
        t0 = time.perf_counter()
        await asyncio.gather(*(provider.generate(r) for r in requests))
        return len(requests) / (time.perf_counter() - t0)
    finally:
        await provider.aclose()


async def last_id(db: Path) -> int:
    async with Store.open(db) as store:
        jobs = await store.list(limit=1, newest_first=True)
    return jobs[0].id if jobs else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="same runs (they are already short)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of 50 videos; the median round is reported")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    ideal = min(IN_FLIGHT / LATENCY, RATE_LIMIT)
    print(
        f"{VIDEOS} videos per round, fake latency {LATENCY * 1000:.0f} ms, rate limit {RATE_LIMIT}/s, "
        f"{IN_FLIGHT} requests in flight, {JOB_SLOTS} job slots; ideal {VIDEOS / ideal:.2f}s per round",
        flush=True,
    )
    rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="dropflow-bench-annotate-") as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "prompts", root / "prompts")
        inbox = root / "inbox" / "annotate"
        inbox.mkdir(parents=True)
        staging = root / "staging"
        [warmup] = make_videos(staging, 1, first=0)
        rounds = [make_videos(staging, VIDEOS, first=1 + r * VIDEOS) for r in range(args.rounds)]
        db = root / "state" / "dropflow.db"
        fake, url = start_fake(env)
        (root / "config.yaml").write_text(CONFIG.replace("{url}", url))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "dropflow.daemon", "--config", str(root / "config.yaml"), "daemon"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        reference = [root / "archive-ref" / v.name for v in rounds[0]]
        reference[0].parent.mkdir()
        for v, ref in zip(rounds[0], reference, strict=True):
            shutil.copy(v, ref)
        try:
            os.rename(warmup, inbox / warmup.name)
            asyncio.run(wait_jobs(db, 1, ("succeeded",), within=60))
            done = 1
            for r, videos in enumerate(rounds):
                first = asyncio.run(last_id(db)) + 1
                asyncio.run(set_paused(db, True))  # jobs queue up but none starts until all are in
                for v in videos:
                    os.rename(v, inbox / v.name)
                asyncio.run(wait_jobs(db, VIDEOS, ("queued",), within=60))
                asyncio.run(set_paused(db, False))
                done += VIDEOS
                asyncio.run(wait_jobs(db, done, ("succeeded",), within=120))
                first_start, last_end, retried = asyncio.run(timings(db, first))
                elapsed = last_end - first_start
                rates.append(VIDEOS / elapsed)
                print(
                    f"round {r + 1}: first start -> last finish {elapsed:.2f}s = {rates[-1]:.2f} videos/s; "
                    f"jobs retried: {retried}",
                    flush=True,
                )
            daemon.terminate()
            daemon.wait(30)
            alone = asyncio.run(provider_alone(url, reference))
            print(
                f"for reference, the same {VIDEOS} requests straight through the provider (no daemon, no "
                f"sampling): {alone:.2f}/s = {alone / ideal:.3f} of ideal",
                flush=True,
            )
        finally:
            if daemon.poll() is None:
                daemon.terminate()
                daemon.wait(30)
            fake.terminate()
            fake.wait(30)
        outputs = sorted((root / "outputs" / "annotate").glob("*.json"))
        if len(outputs) != done:
            print(f"FAIL: {len(outputs)} annotations for {done} videos")
            return 1
    achieved = statistics.median(rates)
    result = {
        "achieved_per_s": round(achieved, 2),
        "ideal_per_s": round(ideal, 2),
        "ratio": round(achieved / ideal, 3),
    }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
