"""Routing: first matching route wins; globs; units; batches; per-folder overrides."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from dropflow.daemon.core import config as cfgmod
from dropflow.daemon.router import Router
from dropflow.daemon.scheduler import backoff
from dropflow.engine import registry
from dropflow.engine.errors import ConfigError
from tests.conftest import write_config
from tests.engines import FolderRecordEngine, RecordEngine

EXTRA = """
  - name: folders
    folder: folders
    engine: folder-record
"""


@pytest.fixture
def router(tmp_path: Path) -> Router:
    path = write_config(tmp_path / "p", extra=EXTRA)
    text = path.read_text()
    # a second, narrower route first: only names starting with "urgent" in record/
    text = text.replace(
        "routes:\n",
        "routes:\n  - name: urgent\n    folder: record\n    engine: record\n    glob: 'urgent*'\n    priority: 9\n",
    )
    path.write_text(
        text.replace(
            '["tests.engines:RecordEngine"]',
            '["tests.engines:RecordEngine", "tests.engines:FolderRecordEngine"]',
        )
    )
    registry.register(RecordEngine)
    registry.register(FolderRecordEngine)
    return Router(cfgmod.load(path))


def test_first_matching_route_wins_with_globs(router: Router) -> None:
    inbox = router.inbox
    (inbox / "record").mkdir(exist_ok=True)
    for name in ("URGENT-1.txt", "normal.txt"):
        (inbox / "record" / name).write_text("x")
    assert router.unit_root(inbox / "record" / "URGENT-1.txt")[0].name == "urgent"  # type: ignore[index]
    assert router.unit_root(inbox / "record" / "normal.txt")[0].name == "record"  # type: ignore[index]


def test_engine_must_accept_the_file(router: Router) -> None:
    p = router.inbox / "record" / "photo.jpg"
    p.write_bytes(b"x")
    assert router.unit_root(p) is None
    assert router.unit_root(router.inbox / "record" / "part.txt.part") is None
    assert router.unit_root(router.inbox.parent / "outside.txt") is None


def test_folder_units_and_batches(router: Router) -> None:
    album = router.inbox / "folders" / "album" / "deep"
    album.mkdir(parents=True)
    (album / "a.jpg").write_bytes(b"x")
    route, unit = router.unit_root(album / "a.jpg")  # type: ignore[misc]
    assert route.name == "folders" and unit == router.inbox / "folders" / "album"
    plan = router.plan(route, unit)
    assert plan is not None and plan.batch == "album" and plan.inputs == [unit]
    nested = router.inbox / "record" / "set1" / "b.txt"
    nested.parent.mkdir(parents=True)
    nested.write_text("b")
    route, unit = router.unit_root(nested)  # type: ignore[misc]
    assert router.plan(route, unit).batch == "set1"  # type: ignore[union-attr]


def test_overrides_merge_deeper_last(router: Router) -> None:
    base = router.inbox / "record"
    (base / "a" / "b").mkdir(parents=True)
    (base / "dropflow.yaml").write_text("priority: 3\nparams: {seconds: 1.0, note: top}\n")
    (base / "a" / "b" / "dropflow.yaml").write_text("params: {note: deep}\nmax_attempts: 2\n")
    f = base / "a" / "b" / "x.txt"
    f.write_text("x")
    route, unit = router.unit_root(f)  # type: ignore[misc]
    plan = router.plan(route, unit)
    assert plan is not None and plan.error is None
    assert plan.params["seconds"] == 1.0 and plan.params["note"] == "deep"
    assert plan.priority == 3 and plan.max_attempts == 2
    assert plan.overrides == [base / "dropflow.yaml", base / "a" / "b" / "dropflow.yaml"]


def test_registry_rejects_a_second_engine_under_one_name() -> None:
    class Impostor(RecordEngine):
        pass

    with pytest.raises(ConfigError, match="two engines are named 'record'"):
        registry.register(Impostor)
    with pytest.raises(ConfigError, match="unknown engine"):
        registry.get("no-such-engine")


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    random.seed(7)
    d1 = [backoff(1, 2.0, 600) for _ in range(50)]
    d4 = [backoff(4, 2.0, 600) for _ in range(50)]
    assert all(1.0 <= d <= 2.0 for d in d1) and len(set(d1)) > 10  # jittered in [base/2, base]
    assert all(8.0 <= d <= 16.0 for d in d4)
    assert all(backoff(30, 2.0, 600) <= 600 for _ in range(10))
    assert backoff(1, 2.0, 600, retry_after=45.0) == 45.0


async def test_offline_fallback_is_announced_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.conftest import running_daemon

    path = write_config(tmp_path / "q")
    path.write_text(path.read_text().replace("providers: {default: offline}", "providers: {default: auto}"))
    cfg = cfgmod.load(path)
    caplog.set_level(logging.INFO, logger="dropflow")
    async with running_daemon(cfg) as d:
        (cfg.paths.inbox / "record" / "a.txt").write_text("a")
        await d.wait_status(1, ("succeeded",))
    notes = [r for r in caplog.records if "offline provider" in r.getMessage()]
    assert len(notes) == 1 and "DASHSCOPE_API_KEY" in notes[0].getMessage()
