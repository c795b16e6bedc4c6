"""Dataset pipeline: how close a running daemon gets to the provider's own limit.

N generated images are renamed into inbox/dataset/bench/ of a daemon subprocess whose provider is
a loopback fake (in this process, real client and wire protocol) answering every request after
`latency` seconds, with the provider's concurrency capped at C in config. Nothing else limits the
rate, so the ideal is C / latency items per second.

Window: from the first request the fake receives to the moment the last row is visible in the
dataset's train.jsonl (polled every 10 ms), i.e. "last record landing" in the file a trainer reads,
not merely in the record store. Daemon CPU (user + system, all threads, from /proc) is sampled at
the drop and at that moment. The scheduler gets a few more slots than C so that an item's
bookkeeping (image prep, record write, render) overlaps other items' requests; the fake reports
the most requests it ever had in flight, which must not exceed C.

    python bench/dataset_pipeline.py [--quick] [--images N] [--latency S] [--concurrency C]
                                     [--provider dashscope|openai|anthropic]

Last line: RESULT {"achieved_per_s": a, "ideal_per_s": b, "ratio": a/b, "daemon_cpu_ms_per_item": c}
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dropflow.engine.fakes import FAKES  # noqa: E402

KEY = "bench-key-not-a-secret"

CONFIG = """
paths: {{inbox: inbox, outputs: outputs, archive: archive, prompts: {prompts}, state: state}}
watch: {{settle_seconds: 0.3, rescan_seconds: 60}}
scheduler:
  max_concurrency: {slots}
  engine_concurrency: {{dataset: {slots}}}
  lease_seconds: 30
providers:
  default: {provider}
  {provider}: {{api_key: {key}, base_url: "{url}", concurrency: {conc}, timeout_seconds: 60}}
logging: {{level: WARNING}}
routes:
  - {{name: dataset, folder: dataset, engine: dataset}}
"""


def make_images(folder: Path, n: int, seed: int = 7) -> list[Path]:
    """N distinct small JPEGs (noise, so each has its own content hash and a realistic size)."""
    from PIL import Image

    rng = random.Random(seed)
    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        im = Image.frombytes("RGB", (96, 72), rng.randbytes(96 * 72 * 3))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        path = folder / f"img{i:04d}.jpg"
        path.write_bytes(buf.getvalue())
        out.append(path)
    return out


def cpu_ms(pid: int) -> float:
    """User + system CPU of a process (all its threads), in milliseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the line)
    return ticks * 1000.0 / os.sysconf("SC_CLK_TCK")


def wait_ready(db: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited with {proc.returncode}")
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as conn:
                    if conn.execute("SELECT 1 FROM daemons WHERE pid = ?", (proc.pid,)).fetchone():
                        time.sleep(0.5)  # let the first rescan of the empty inbox finish
                        return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    raise SystemExit("daemon did not start")


def wait_rows(path: Path, n: int, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Poll train.jsonl until it holds `n` rows; returns the monotonic time that was first seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        now = time.monotonic()
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != last:
                last = stamp
                if path.read_bytes().count(b"\n") >= n:
                    return now
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited with {proc.returncode}")
        if now > deadline:
            raise SystemExit(f"{path} did not reach {n} rows within {timeout:.0f}s")
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="400 images instead of 500")
    ap.add_argument("--images", type=int)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--provider", choices=sorted(FAKES), default="dashscope")
    args = ap.parse_args()
    # --quick: 25 full rounds of 16 requests. With a partial last round (200 = 12.5 rounds) the
    # provider's own limit is already 4 % under the ideal, and the ratio would measure that.
    n = args.images or (400 if args.quick else 500)
    conc = args.concurrency

    with (
        tempfile.TemporaryDirectory(prefix="dropflow-bench-") as tmp,
        FAKES[args.provider](api_key=KEY, latency=args.latency) as srv,
    ):
        root = Path(tmp)
        (root / "config.yaml").write_text(
            CONFIG.format(
                prompts=REPO / "prompts",
                slots=conc + 8,
                provider=args.provider,
                key=KEY,
                url=srv.base_url,
                conc=conc,
            )
        )
        (root / "inbox" / "dataset").mkdir(parents=True)
        images = make_images(root / "staging", n)
        env = dict(
            os.environ, PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost"
        )
        log = open(root / "daemon.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from dropflow.daemon.cli import main; sys.exit(main())",
                "--config",
                str(root / "config.yaml"),
                "daemon",
            ],
            env=env,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(root / "state" / "dropflow.db", proc)
            cpu0 = cpu_ms(proc.pid)
            drop_at = time.monotonic()
            target = root / "inbox" / "dataset" / "bench"
            target.mkdir()
            for p in images:
                os.rename(p, target / p.name)
            done_at = wait_rows(
                root / "outputs" / "dataset" / "bench" / "train.jsonl", n, proc, timeout=n * 2.0
            )
            cpu1 = cpu_ms(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        requests = srv.requests()
        first = min(r.at for r in requests)
        rows = (root / "outputs" / "dataset" / "bench" / "train.jsonl").read_text().splitlines()
        assert len({json.loads(r)["images"][0] for r in rows}) == n, "every image exactly once"
        max_in_flight = srv.max_in_flight

    window = done_at - first
    achieved = n / window
    ideal = conc / args.latency
    print(
        f"{n} images via {args.provider} (latency {args.latency:g}s, provider concurrency {conc}, "
        f"{conc + 8} scheduler slots): {len(requests)} requests, at most {max_in_flight} in flight"
    )
    print(
        f"drop -> first request {first - drop_at:.2f}s; first request -> last row in train.jsonl "
        f"{window:.2f}s (ideal {n / ideal:.2f}s)"
    )
    if max_in_flight > conc:
        print(f"WARNING: {max_in_flight} requests in flight, over the configured {conc}")
    result = {
        "achieved_per_s": round(achieved, 2),
        "ideal_per_s": round(ideal, 2),
        "ratio": round(achieved / ideal, 3),
        "daemon_cpu_ms_per_item": round((cpu1 - cpu0) / n, 2),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
