"""TUI: how long the queue screen takes to show its first rows, and what one refresh costs, with
100,000 jobs in the database against 1,000, side by side in one run, headless.

Each database is made by `Store.open` (the real schema) and filled with one executemany. First
paint: from creating the app to the first job row drawn by the queue table (app start, store
open, window read, layout and paint included). Refresh: what a data change costs the queue: the
window re-read through the table's own worker and message, plus painting every visible line.
The two sizes alternate round by round so machine noise hits both alike; medians are reported.

    python bench/tui.py [--quick]

Last line: RESULT {"first_paint_100k_s": a, "first_paint_ratio_100k_to_1k": f, "refresh_ratio_100k_to_1k": r}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dropflow.daemon.core.config import load  # noqa: E402
from dropflow.daemon.core.store import Store  # noqa: E402
from dropflow.tui.app import DropflowApp  # noqa: E402
from dropflow.tui.widgets.job_table import JobTable  # noqa: E402

CONFIG = """
paths: {inbox: inbox, outputs: outputs, archive: archive, prompts: prompts, state: state}
providers: {default: offline}
"""
STATES = ["succeeded"] * 88 + ["failed"] * 5 + ["cancelled"] * 2 + ["queued"] * 3 + ["running", "waiting"]
ENGINES = ("annotate", "dataset", "video-gen", "cluster")


async def make_project(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(CONFIG)
    cfg = load(root / "config.yaml")
    rng = random.Random(n)
    now = time.time()
    rows = []
    for i in range(n):
        status = rng.choice(STATES)
        engine = ENGINES[i % 4]
        path = f"{cfg.paths.inbox}/{engine}/shoot_{i // 500:04d}/clip_{i:07d}.mp4"
        done = status in ("succeeded", "failed", "cancelled")
        rows.append(
            (
                engine, engine, "", "inbox", path, json.dumps([path]), f"sha256:{i:064x}",
                json.dumps({"fps": 1.0, "segment_seconds": 30}), i % 3, status, 1, 5,
                1.0 if status == "succeeded" else rng.random(), "segment 3/8" if status == "running" else "",
                json.dumps([f"{cfg.paths.outputs}/{engine}/clip_{i:07d}.json"]) if status == "succeeded" else "[]",
                "input" if status == "failed" else None,
                f"clip_{i:07d}.mp4 cannot be decoded" if status == "failed" else None,
                "the file may be truncated; copy it again" if status == "failed" else None,
                json.dumps({"input_tokens": 1800, "output_tokens": 240}), 1800, 240,
                now - (n - i) * 3, now - (n - i) * 3, now - (n - i) * 3 + 2 if done else None,
            )
        )  # fmt: skip
    async with Store.open(cfg.paths.database) as store:
        await store.db.execute("BEGIN")
        await store.db.executemany(
            "INSERT INTO jobs(engine, route, batch, source, input_path, input_paths, content_hash, params,"
            " priority, status, attempts, max_attempts, progress, progress_message, outputs, error_kind,"
            " error_message, error_hint, usage, tokens_in, tokens_out, created_at, updated_at, finished_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        await store.db.execute("COMMIT")
    return root / "config.yaml"


def first_row_painted(table: JobTable) -> bool:
    return table.loads > 0 and bool(table.window.visible) and table.rows_painted


async def first_paint(config: Path) -> float:
    """Seconds from creating the app to the first job row painted."""
    cfg = load(config)
    started = time.perf_counter()
    # no change poll during the measure: only the queue's own reads
    app = DropflowApp(cfg, images="off", poll_interval=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        while True:
            tables = app.screen.query(JobTable)
            if tables and first_row_painted(tables.first()):
                elapsed = time.perf_counter() - started
                break
            if time.perf_counter() - started > 30:
                raise SystemExit("the queue never painted a row")
            await asyncio.sleep(0.001)
        await pilot.pause()
    return elapsed


class Queue:
    """A running app on one database, for refresh and scroll measures."""

    def __init__(self, config: Path) -> None:
        self.cfg = load(config)
        # no change poll: the measure drives refreshes itself, one at a time
        self.app = DropflowApp(self.cfg, images="off", poll_interval=3600)

    async def ready(self) -> JobTable:
        table = self.app.screen.query_one(JobTable)
        # polling the widget's state is the point here: the measure ends when the UI shows it
        while table.loads == 0 or self.app.stats is None:  # noqa: ASYNC110 - start-up reads done
            await asyncio.sleep(0.005)
        return table

    async def refresh(self, daemon: Store, i: int) -> float:
        """A daemon's progress write on another connection, then the queue's re-read and paint."""
        table = self.app.screen.query_one(JobTable)
        row = table.window.visible[i % len(table.window.visible)]
        await daemon.db.execute("UPDATE jobs SET progress = ? WHERE id = ?", ((i % 100) / 100, row.id))
        loads = table.loads
        t0 = time.perf_counter()
        table.invalidate()
        while table.loads == loads:  # noqa: ASYNC110 - yield until the table applied the read
            await asyncio.sleep(0)
        for y in range(table.size.height):
            table.render_line(y)
        return time.perf_counter() - t0

    async def page_down(self) -> float:
        table = self.app.screen.query_one(JobTable)
        t0 = time.perf_counter()
        table.action_page(1)  # what PageDown runs; it may start a read of the next pages
        while table.reading:  # noqa: ASYNC110 - yield until the next pages are read
            await asyncio.sleep(0)
        for y in range(table.size.height):
            table.render_line(y)
        return time.perf_counter() - t0


async def refreshes(
    configs: dict[int, Path], count: int
) -> tuple[dict[int, list[float]], dict[int, list[float]], dict[int, float]]:
    """Both sizes run at once and alternate sample by sample, so noise lands on both alike."""
    queues = {n: Queue(c) for n, c in configs.items()}
    sizes = list(configs)
    refresh: dict[int, list[float]] = {n: [] for n in sizes}
    page: dict[int, list[float]] = {n: [] for n in sizes}
    a, b = (queues[n] for n in sizes)
    async with a.app.run_test(size=(80, 24)), b.app.run_test(size=(80, 24)):
        async with Store.open(a.cfg.paths.database) as da, Store.open(b.cfg.paths.database) as db:
            daemons = {sizes[0]: da, sizes[1]: db}
            for n in sizes:
                await queues[n].ready()
            for i in range(count):
                for n in sizes if i % 2 == 0 else reversed(sizes):
                    refresh[n].append(await queues[n].refresh(daemons[n], i))
            for i in range(count):
                for n in sizes if i % 2 == 0 else reversed(sizes):
                    page[n].append(await queues[n].page_down())
            stats = {n: (await queues[n].app.reader.stats()).cost_s for n in sizes}
    return refresh, page, stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds (under a minute on 2 cores)")
    args = ap.parse_args()
    rounds, count = (5, 20) if args.quick else (15, 60)
    sizes = (1_000, 100_000)

    async def run() -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="dropflow-bench-tui-") as tmp:
            configs = {}
            for n in sizes:
                t0 = time.perf_counter()
                configs[n] = await make_project(Path(tmp) / f"p{n}", n)
                print(f"{n:>7,} jobs inserted in {time.perf_counter() - t0:.2f}s", flush=True)
            paint: dict[int, list[float]] = {n: [] for n in sizes}
            refresh: dict[int, list[float]] = {n: [] for n in sizes}
            page: dict[int, list[float]] = {n: [] for n in sizes}
            stats_cost: dict[int, list[float]] = {n: [] for n in sizes}
            for n in sizes:  # warm-up: imports, CSS and caches are paid once, before measuring
                await first_paint(configs[n])
            for r in range(rounds):
                for n in sizes if r % 2 == 0 else tuple(reversed(sizes)):
                    paint[n].append(await first_paint(configs[n]))
                ref, pg, sc = await refreshes(configs, count)
                for n in sizes:
                    refresh[n] += ref[n]
                    page[n] += pg[n]
                    stats_cost[n].append(sc[n])
            med = {k: {n: statistics.median(v[n]) for n in sizes} for k, v in
                   (("paint", paint), ("refresh", refresh), ("page", page), ("stats", stats_cost))}  # fmt: skip
            for n in sizes:
                print(
                    f"{n:>7,} jobs: first paint {med['paint'][n] * 1000:7.1f} ms   refresh "
                    f"{med['refresh'][n] * 1000:6.2f} ms   PageDown {med['page'][n] * 1000:6.2f} ms   header stats "
                    f"{med['stats'][n] * 1000:6.1f} ms (re-read at most every "
                    f"{max(1.0, 20 * med['stats'][n]):.1f}s, only after a change)",
                    flush=True,
                )
            return {
                "first_paint_100k_s": round(med["paint"][100_000], 4),
                "first_paint_ratio_100k_to_1k": round(med["paint"][100_000] / med["paint"][1_000], 3),
                "refresh_ratio_100k_to_1k": round(med["refresh"][100_000] / med["refresh"][1_000], 3),
            }

    result = asyncio.run(run())
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
