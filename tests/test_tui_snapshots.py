"""Snapshots of the main screens at 80x24 (pytest-textual-snapshot): the queue, a failed job's
detail, and the folder browser. A fixed clock, fixed timestamps and UTC make them repeatable;
`pytest --snapshot-update` rewrites them after an intended change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from dropflow.daemon.core.config import Config, load
from dropflow.daemon.core.jobs import NewJob
from dropflow.daemon.core.store import Store
from dropflow.tui.app import DropflowApp
from dropflow.tui.screens.detail import JobDetailScreen
from dropflow.tui.widgets.folder_tree import FolderTree
from dropflow.tui.widgets.job_table import JobTable
from tests.conftest import write_config

CLOCK = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC

pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture
def shop(tmp_path: Path, utc: None) -> Config:
    cfg = load(write_config(tmp_path / "proj"))
    asyncio.run(_fill(cfg))
    (cfg.paths.outputs / "record").mkdir(parents=True)
    (cfg.paths.outputs / "record" / "clip_03.json").write_text('{"summary": "a dog on a beach"}')
    return cfg


async def _fill(cfg: Config) -> None:
    rows = [
        # status, progress, message, attempts, tokens, priority
        ("succeeded", 1.0, "done", 1, 2150, 0),
        ("succeeded", 1.0, "done", 1, 1830, 0),
        ("failed", 0.4, "", 5, 640, 0),
        ("succeeded", 1.0, "done", 2, 2400, 0),
        ("cancelled", 0.2, "cancelled by user", 1, 0, 0),
        ("waiting", 0.6, "waiting on the remote task", 1, 300, 0),
        ("paused", 0.0, "", 0, 0, 0),
        ("running", 0.42, "segment 3/8", 1, 980, 2),
        ("running", 0.07, "sampling frames", 1, 0, 0),
        ("queued", 0.0, "", 0, 0, 1),
        ("queued", 0.0, "", 0, 0, 0),
    ]
    inbox = cfg.paths.inbox / "record"
    async with Store.open(cfg.paths.database) as store:
        await store.insert_jobs(
            [
                NewJob("record", "record", str(inbox / f"shoot_a/clip_{i:02d}.txt"), f"h{i}", batch="shoot_a")
                for i in range(len(rows))
            ]
        )
        for i, (status, progress, message, attempts, tokens, priority) in enumerate(rows, 1):
            created = CLOCK - (len(rows) - i) * 377 - 40
            done = status in ("succeeded", "failed", "cancelled")
            await store.db.execute(
                "UPDATE jobs SET status = ?, progress = ?, progress_message = ?, attempts = ?, tokens_in = ?,"
                " priority = ?, created_at = ?, updated_at = ?, started_at = ?, finished_at = ? WHERE id = ?",
                (
                    status, progress, message, attempts, tokens, priority, created, created,
                    created + 5 if attempts else None, created + 60 if done else None, i,
                ),
            )  # fmt: skip
        await store.db.execute(
            "UPDATE jobs SET error_kind = 'input', error_message = 'clip_02.txt is not readable',"
            " error_hint = 'drop a valid file', params = '{\"seconds\": 0.5}' WHERE id = 3"
        )
        await store.db.execute(
            "UPDATE jobs SET outputs = ? WHERE id = 4",
            (f'["{cfg.paths.outputs / "record" / "clip_03.json"}"]',),
        )
        await store.add_event(3, "error", "clip_02.txt is not readable (failed)", {"status": "failed"})
        await store.db.execute("UPDATE events SET at = ? + id * 7", (CLOCK - 4000,))


def _app(cfg: Config) -> DropflowApp:
    return DropflowApp(cfg, images="unicode", clock=lambda: CLOCK, poll_interval=0.05)


async def _settle(pilot: Pilot[Any], ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not ready():
        assert time.monotonic() < deadline, "screen never got ready"
        await pilot.pause(0.02)
    await pilot.pause(0.2)


def test_queue_screen(shop: Config, snap_compare: Any) -> None:
    app = _app(shop)

    async def ready(pilot: Pilot[Any]) -> None:
        await _settle(
            pilot,
            lambda: (
                bool(app.screen.query(JobTable))
                and app.screen.query_one(JobTable).loads > 0
                and app.stats is not None
            ),
        )

    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)


def test_failed_job_detail(shop: Config, snap_compare: Any) -> None:
    app = _app(shop)

    async def ready(pilot: Pilot[Any]) -> None:
        await _settle(
            pilot, lambda: bool(app.screen.query(JobTable)) and app.screen.query_one(JobTable).loads > 0
        )
        await pilot.press("slash", *"failed", "enter", "enter")
        await _settle(
            pilot,
            lambda: (
                isinstance(app.screen, JobDetailScreen)
                and app.screen.job is not None
                and app.stats is not None
            ),
        )

    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)


def test_folders_screen(shop: Config, snap_compare: Any) -> None:
    app = _app(shop)

    async def ready(pilot: Pilot[Any]) -> None:
        await _settle(
            pilot, lambda: bool(app.screen.query(JobTable)) and app.screen.query_one(JobTable).loads > 0
        )
        await pilot.press("f")
        await _settle(
            pilot,
            lambda: bool(app.screen.query(FolderTree)) and bool(app.screen.query_one(FolderTree).labels),
        )

    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)
