"""Queue: does the cost of running a job stay flat as the queue grows?

Runs the real scheduler (claim loop, leases, heartbeat, controls, outcome writes) in-process on
a SQLite store holding N queued jobs of a no-op engine (no provider, no latency), and counts the
jobs finished per second over a fixed number of jobs, once with a small queue and once with a
big one. A per-job cost that grows with the queue shows as a ratio below 1.

    python bench/queue_scale.py [--quick]

Each queue is measured three times (twice under `--quick`) and the best rate is kept: the runs
are short, and a busy machine only ever makes them slower. The queues are the same under
`--quick` (seeding 100,000 rows takes about a second). Then the small queue once more on a
PostgreSQL store (a throwaway server from tests/pgserver.py, on this machine): `pg_to_sqlite` is
its rate over SQLite's, null when PostgreSQL is not installed.

Last line: RESULT {"ratio_100k_to_1k": x, "pg_to_sqlite": y, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dropflow.daemon.core import config  # noqa: E402
from dropflow.daemon.core.jobs import Job  # noqa: E402
from dropflow.daemon.core.store import Store  # noqa: E402
from dropflow.daemon.core.store.connection import owner_id  # noqa: E402
from dropflow.daemon.intake import Intake  # noqa: E402
from dropflow.daemon.logs import Redactor  # noqa: E402
from dropflow.daemon.router import Router  # noqa: E402
from dropflow.daemon.scheduler import Scheduler  # noqa: E402
from dropflow.engine import registry  # noqa: E402
from dropflow.engine.base import Done, FileEngine, JobContext  # noqa: E402
from dropflow.engine.providers import ProviderPool  # noqa: E402
from tests.pgserver import INSTALL_HINT, PgServer, find_bin_dir  # noqa: E402

CONFIG = """
paths: {inbox: inbox, outputs: outputs, archive: archive, prompts: prompts, state: state}
providers: {default: offline}
scheduler: {max_concurrency: 8}
logging: {level: WARNING}
routes:
  - {name: noop, folder: noop, engine: noop}
"""


class NoopEngine(FileEngine):
    """Finishes at once: what is measured is the daemon's own cost per job."""

    name = "noop"
    extensions: ClassVar[frozenset[str]] = frozenset({".txt"})

    async def run(self, job: Job, ctx: JobContext) -> Done:
        return Done([], usage={}, archive_input=False)


async def seed(store: Store, input_path: Path, queued: int) -> None:
    """`queued` jobs of the no-op engine, plus as many finished ones (a store that has been used).

    Submitted (not dropped), so nothing is re-planned or archived: only the queue is measured.
    """
    now = time.time()
    rows = []
    for i in range(queued * 2):
        finished = i < queued
        rows.append(
            (
                "noop",
                "noop",
                "submit",
                str(input_path),
                json.dumps([str(input_path)]),
                f"{i:064x}",
                "succeeded" if finished else "queued",
                now,
                now,
                now if finished else None,
            )
        )
    async with store.transaction() as db:
        await db.executemany(
            "INSERT INTO jobs(engine, route, source, input_path, input_paths, content_hash, status,"
            " created_at, updated_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            rows,
        )


async def measure(root: Path, queued: int, jobs: int, database: str | None = None) -> float:
    """Jobs finished per second over the first `jobs` jobs of a queue of `queued` (on the SQLite
    file of the config, or on `database`, a PostgreSQL URL)."""
    text = CONFIG + (f"state: {{database: '{database}'}}\n" if database else "")
    (root / "config.yaml").write_text(text)
    cfg = config.load(root / "config.yaml")
    input_path = root / "input.txt"
    input_path.write_text("x")
    async with Store.open(cfg.database) as store:  # migrations
        await seed(store, input_path, queued)
    done = 0
    finished = asyncio.Event()
    async with Store.open(cfg.database) as store:
        owner = owner_id()
        await store.register_daemon(owner, "bench")
        router = Router(cfg)
        intake = Intake(cfg, store, router)
        hub = ProviderPool(cfg.providers, state_dir=cfg.paths.state)
        scheduler = Scheduler(cfg, store, router, intake, hub, owner, Redactor())

        def on_finished(_job: Job, _outcome: str) -> None:
            nonlocal done
            done += 1
            if done >= jobs:
                finished.set()

        scheduler.on_finished = on_finished
        stop = asyncio.Event()
        t0 = time.perf_counter()
        task = asyncio.create_task(scheduler.run(stop))
        await finished.wait()
        elapsed = time.perf_counter() - t0
        stop.set()
        await task
        await hub.aclose()
    return done / elapsed


def measure_pg(queued: int, jobs: int, tries: int) -> float | None:
    """The best rate on a fresh database per try of a throwaway server; None without PostgreSQL."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        return None
    best = 0.0
    with PgServer(bin_dir) as server:
        for i in range(tries):
            server.sql(f"CREATE DATABASE bench{i}")
            with tempfile.TemporaryDirectory(prefix="dropflow-queue-") as tmp:
                best = max(best, asyncio.run(measure(Path(tmp), queued, jobs, server.url(f"bench{i}"))))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="the best of two measurements per queue, not of three"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    registry.register(NoopEngine)
    small, big = 1_000, 100_000
    jobs = 800  # fewer than the small queue holds: it must not run dry
    rates = {}
    for queued in (small, big):
        best = 0.0
        for _ in range(2 if args.quick else 3):
            with tempfile.TemporaryDirectory(prefix="dropflow-queue-") as tmp:
                best = max(best, asyncio.run(measure(Path(tmp), queued, jobs)))
        rates[queued] = best
        print(f"{queued:>7,} queued (+{queued:,} finished): {rates[queued]:8.1f} jobs/s over {jobs} jobs")
    pg_rate = measure_pg(small, jobs, 2 if args.quick else 3)
    if pg_rate is None:
        print(f"pg_to_sqlite: null, {INSTALL_HINT}")
    else:
        print(f"{small:>7,} queued on PostgreSQL:     {pg_rate:8.1f} jobs/s over {jobs} jobs")
    result = {
        "ratio_100k_to_1k": round(rates[big] / rates[small], 3),
        "pg_to_sqlite": round(pg_rate / rates[small], 3) if pg_rate is not None else None,
        "jobs_per_s_pg_1k": round(pg_rate, 1) if pg_rate is not None else None,
        "jobs_per_s_1k": round(rates[small], 1),
        "jobs_per_s_big": round(rates[big], 1),
        "jobs_timed": jobs,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
