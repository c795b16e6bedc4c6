"""Ingest: how fast a running daemon turns settled dropped files into visible jobs.

Drops N small files into a running daemon's inbox (processing paused, so only intake is
measured): the files are written in a staging folder beside the inbox, stamped with one mtime
and renamed in, so they all settle at one known moment (mtime + settle_seconds). A reader polls
the database and stamps when each job becomes visible. Then the raw limit on the same files
and the same machine: stat + content hash + one batched SQLite insert, in a tight loop.

    python bench/ingest.py [--quick] [--files N]

Last line: RESULT {"files": N, "jobs_per_s": x, "raw_per_s": y, "ratio": x/y, "p99_ms": z}
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dropflow.daemon.core.store import Store  # noqa: E402
from dropflow.daemon.core.store.connection import _statements  # noqa: E402
from dropflow.daemon.core.store.migrations import MIGRATIONS  # noqa: E402

SETTLE = 1.0

CONFIG = f"""
paths: {{inbox: inbox, outputs: outputs, archive: archive, prompts: prompts, state: state}}
watch: {{settle_seconds: {SETTLE}, rescan_seconds: 300}}
providers: {{default: offline}}
engines: {{plugins: ["tests.engines:RecordEngine"]}}
logging: {{level: WARNING}}
routes:
  - {{name: record, folder: record, engine: record}}
"""


def raw_limit(paths: list[Path], db_path: Path) -> float:
    """stat + sha256 + one executemany insert into the same schema: seconds for all files."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for _v, _n, ddl in MIGRATIONS:
        for stmt in _statements(ddl):
            conn.execute(stmt)
    t0 = time.perf_counter()
    rows = []
    now = time.time()
    for p in paths:
        st = os.stat(p)
        with open(p, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        rows.append(("record", "record", "", str(p), json.dumps([str(p)]), digest, st.st_size, now, now))
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO jobs(engine, route, batch, input_path, input_paths, content_hash, priority, created_at,"
        " updated_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        rows,
    )
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


class VisibilityPoller(threading.Thread):
    """Stamps the wall time each job id first becomes visible to another connection."""

    def __init__(self, db: Path, expected: int) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.expected = expected
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.db.exists() and not self.stop.is_set():
            time.sleep(0.01)
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        last = 0
        while not self.stop.is_set() and len(self.seen) < self.expected:
            try:
                ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE id > ? ORDER BY id", (last,))]
            except sqlite3.OperationalError:  # the daemon has not created the table yet
                ids = []
            now = time.time()
            for i in ids:
                self.seen[i] = now
            if ids:
                last = ids[-1]
            time.sleep(0.002)
        conn.close()


async def pause_all(db: Path) -> None:
    async with Store.open(db) as store:
        await store.pause_engine(None, True)


async def daemon_up(db: Path) -> bool:
    async with Store.open(db) as store:
        return bool(await store.live_daemons(stale_after=60))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2,000 files instead of 10,000")
    ap.add_argument("--files", type=int)
    args = ap.parse_args()
    n = args.files or (2000 if args.quick else 10000)

    with tempfile.TemporaryDirectory(prefix="dropflow-bench-ingest-") as tmp:
        root = Path(tmp)
        (root / "config.yaml").write_text(CONFIG)
        inbox = root / "inbox" / "record"
        inbox.mkdir(parents=True)
        staging = root / "staging"
        staging.mkdir()
        db = root / "state" / "dropflow.db"
        asyncio.run(pause_all(db))  # intake only: no job may start and move files away

        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen(
            [sys.executable, "-m", "dropflow.daemon", "--config", str(root / "config.yaml"), "daemon"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.time() + 60
            while not asyncio.run(daemon_up(db)):
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.1)
            names = [f"f{i:06}.txt" for i in range(n)]
            for i, name in enumerate(names):
                (staging / name).write_bytes(f"file {i} ".encode() * 8)
            poller = VisibilityPoller(db, n)
            poller.start()
            stamp = time.time()
            for name in names:
                os.utime(staging / name, (stamp, stamp))
            for name in names:
                os.rename(staging / name, inbox / name)
            settle_point = stamp + SETTLE
            poller.join(timeout=120)
            poller.stop.set()
            if len(poller.seen) < n:
                raise SystemExit(f"only {len(poller.seen)} of {n} jobs appeared")
        finally:
            proc.terminate()
            proc.wait(30)

        delays_ms = sorted((t - settle_point) * 1000 for t in poller.seen.values())
        last = max(poller.seen.values())
        jobs_per_s = n / max(1e-6, last - settle_point)
        raw_s = raw_limit(sorted(inbox.iterdir()), root / "raw.db")
        raw_per_s = n / raw_s
        p50 = statistics.median(delays_ms)
        p99 = delays_ms[min(len(delays_ms) - 1, int(0.99 * len(delays_ms)))]
        print(f"files: {n}, settle window {SETTLE}s")
        print(
            f"daemon: {jobs_per_s:,.0f} jobs/s after the settle window; delay p50 {p50:.0f} ms, p99 {p99:.0f} ms"
        )
        print(f"raw limit (stat + sha256 + one batched insert): {raw_per_s:,.0f} files/s")
        result = {
            "files": n,
            "jobs_per_s": round(jobs_per_s, 1),
            "raw_per_s": round(raw_per_s, 1),
            "ratio": round(jobs_per_s / raw_per_s, 3),
            "p99_ms": round(p99, 1),
        }
        print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
