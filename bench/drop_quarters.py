"""Drop quarters: does a big drop finish at the pace it started?

A daemon subprocess (offline provider: answers at once, so only dropflow's own costs count) gets
N images renamed into one dataset folder at once. The store is polled for succeeded jobs, and the
time each quarter of them took is printed. A cost that grows with the jobs already done (a render
of every row at every lull, a scan of finished jobs) shows as later quarters slower than earlier
ones: in a 5,000-image drop the quarters once took 11, 21, 32 and 36 s.

The first quarter also holds the settling and registering of the whole drop, so the ratio
compares the last quarter with the second.

    python bench/drop_quarters.py [--quick] [--images N]

Last line: RESULT {"images": N, "quarters_s": [q1, q2, q3, q4], "ratio_last_to_second": q4/q2}
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

CONFIG = """
paths: {{inbox: inbox, outputs: outputs, archive: archive, prompts: {prompts}, state: state}}
watch: {{settle_seconds: 0.5, rescan_seconds: 60}}
scheduler: {{max_concurrency: 8}}
providers: {{default: offline}}
logging: {{level: WARNING}}
routes:
  - {{name: dataset, folder: dataset, engine: dataset}}
"""


def make_images(folder: Path, n: int) -> list[Path]:
    """N distinct tiny JPEGs (noise: each its own content hash)."""
    from PIL import Image

    rng = random.Random(3)
    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.frombytes("RGB", (32, 24), rng.randbytes(32 * 24 * 3)).save(buf, "JPEG")
        path = folder / f"img{i:05d}.jpg"
        path.write_bytes(buf.getvalue())
        out.append(path)
    return out


def succeeded(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 images instead of 5,000")
    ap.add_argument("--images", type=int)
    args = ap.parse_args()
    n = args.images or (2000 if args.quick else 5000)

    with tempfile.TemporaryDirectory(prefix="dropflow-quarters-") as tmp:
        root = Path(tmp)
        (root / "config.yaml").write_text(CONFIG.format(prompts=REPO / "prompts"))
        images = make_images(root / "staging", n)
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen(
            [sys.executable, "-m", "dropflow.daemon.cli", "--config", str(root / "config.yaml"), "daemon"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        db = root / "state" / "dropflow.db"
        try:
            deadline = time.monotonic() + 60
            while not db.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.05)
            time.sleep(1.0)  # its first scan of the empty inbox
            target = root / "inbox" / "dataset" / "bench"
            target.mkdir(parents=True)
            start = time.monotonic()
            for p in images:
                os.rename(p, target / p.name)
            marks: list[float] = []
            while len(marks) < 4:
                done = succeeded(db)
                while len(marks) < 4 and done >= (len(marks) + 1) * n // 4:
                    marks.append(time.monotonic() - start)
                if proc.poll() is not None:
                    raise SystemExit(f"the daemon exited with {proc.returncode}")
                if time.monotonic() - start > 30 * 60:
                    raise SystemExit("the drop did not finish within 30 minutes")
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()

    quarters = [round(b - a, 2) for a, b in zip([0.0, *marks], marks, strict=False)]
    print(f"{n} images, offline provider: quarters {quarters} s, all done in {marks[-1]:.1f} s")
    result = {
        "images": n,
        "quarters_s": quarters,
        "ratio_last_to_second": round(quarters[3] / quarters[1], 3),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
