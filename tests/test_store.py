"""The job store: migrations, permissions, dedupe, claims, leases, requests."""

from __future__ import annotations

import inspect
import os
import stat
import time
from pathlib import Path

from dropflow.daemon.core.jobs import JobStore, NewJob
from dropflow.daemon.core.store import Store
from dropflow.daemon.core.store.migrations import MIGRATIONS


async def test_migrations_are_recorded_and_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with Store.open(db) as s:
        assert await s.schema_version() == max(v for v, _n, _d in MIGRATIONS)
        cur = await s.db.execute("SELECT COUNT(*) FROM schema_migrations")
        assert (await cur.fetchone())[0] == len(MIGRATIONS)  # type: ignore[index]
        cur = await s.db.execute("PRAGMA journal_mode")
        assert (await cur.fetchone())[0] == "wal"  # type: ignore[index]
    async with Store.open(db) as s:
        assert await s.migrate() == [], "nothing is applied twice"


async def test_database_files_are_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with Store.open(db) as s:
        await s.insert_jobs([NewJob("record", "r", "/x", "h")])
        for suffix in ("", "-wal"):
            mode = stat.S_IMODE(os.stat(str(db) + suffix).st_mode)
            assert mode == 0o600, (suffix, oct(mode))


async def test_dedupe_by_route_batch_and_hash(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db") as s:
        first = await s.insert_jobs(
            [
                NewJob("record", "r", "/in/a", "H1"),
                NewJob("record", "r", "/in/b", "H1"),  # same content, same batch: one job
                NewJob("record", "r", "/in/c", "H1", batch="other"),  # another dataset: its own job
                NewJob("record", "r2", "/in/d", "H1"),  # another route: its own job
            ]
        )
        assert [r.created for r in first] == [True, False, True, True]
        assert first[0].job_id == first[1].job_id
        again = await s.insert_jobs([NewJob("record", "r", "/in/e", "H1")])
        assert again[0].created is False and again[0].job_id == first[0].job_id
        forced = await s.insert_jobs([NewJob("record", "r", "/in/f", "H1", forced=True)])
        assert forced[0].created is True and forced[0].job_id != first[0].job_id
        assert len(await s.list()) == 4
        events = await s.events(first[0].job_id)
        assert [e.message for e in events] == ["queued: /in/a"]


async def test_claim_respects_priority_engine_slots_and_pauses(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db") as s:
        await s.insert_jobs(
            [NewJob("a", "r", f"/a{i}", f"a{i}", priority=i) for i in range(3)]
            + [NewJob("b", "r", f"/b{i}", f"b{i}") for i in range(3)]
        )
        got = await s.claim("me:1:1", slots=10, engine_slots={"a": 2, "b": 1}, lease_seconds=30)
        assert sorted((j.engine, j.priority) for j in got) == [("a", 1), ("a", 2), ("b", 0)]
        assert all(j.status == "running" and j.attempts == 1 for j in got)
        none = await s.claim("me:1:1", slots=10, engine_slots={"a": 0, "b": 0}, lease_seconds=30)
        assert none == []
        held = await s.claim("me:1:1", slots=10, engine_slots={}, lease_seconds=30, paused_engines=["a", "b"])
        assert held == []


async def test_expired_lease_is_reclaimed_and_fenced(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db") as s:
        await s.insert_jobs([NewJob("a", "r", "/a", "h")])
        [job] = await s.claim("otherhost:1:1", slots=1, engine_slots={}, lease_seconds=0.01)
        time.sleep(0.02)
        assert await s.reclaim(owner="me:2:2") == [job.id]
        again = await s.get(job.id)
        assert again is not None and again.status == "queued" and again.lease_owner is None
        # the old owner can no longer write its result
        assert not await s.succeed(job.id, "otherhost:1:1", outputs=[], usage={}, archived_path=None)


async def test_only_jobs_in_hand_keep_their_lease(tmp_path: Path) -> None:
    """A running daemon renews the leases of the jobs it works on; a row of its own whose runner
    died without a word (its last write failed) runs out and is reclaimed while it runs on."""
    me = "me:2:2"
    async with Store.open(tmp_path / "s.db") as s:
        await s.insert_jobs([NewJob("a", "r", f"/{i}", f"h{i}") for i in range(2)])
        working, orphan = await s.claim(me, slots=2, engine_slots={}, lease_seconds=0.05)
        await s.renew_leases(me, 30, [working.id])
        time.sleep(0.1)
        assert await s.reclaim(owner=me, keep=[working.id]) == [orphan.id]
        rows = {j.id: j for j in await s.list()}
        assert rows[working.id].status == "running" and rows[working.id].lease_owner == me
        assert rows[orphan.id].status == "queued" and rows[orphan.id].lease_owner is None


async def test_dead_local_owner_is_reclaimed_at_once(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = f"{socket.gethostname()}:{p.pid}:1"
    async with Store.open(tmp_path / "s.db") as s:
        await s.insert_jobs([NewJob("a", "r", "/a", "h")])
        [job] = await s.claim(dead, slots=1, engine_slots={}, lease_seconds=3600)
        assert await s.reclaim(owner="me:2:2") == [job.id]


async def test_requests_on_idle_jobs_apply_at_once(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db") as s:
        [a, b] = await s.insert_jobs([NewJob("a", "r", "/a", "h1"), NewJob("a", "r", "/b", "h2")])
        assert await s.pause(a.job_id) == "paused"
        assert await s.resume(a.job_id) == "resumed"
        assert await s.cancel(a.job_id) == "cancelled"
        assert await s.cancel(a.job_id) == "noop"
        assert await s.retry(a.job_id) == "queued"
        assert await s.set_priority(b.job_id, 7) == "ok"
        assert (await s.get(b.job_id)).priority == 7  # type: ignore[union-attr]
        assert await s.remove(b.job_id) == "removed"
        assert await s.get(b.job_id) is None
        assert await s.retry(999) == "missing"


async def test_requests_on_running_jobs_become_controls(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db") as s:
        await s.insert_jobs([NewJob("a", "r", "/a", "h1")])
        [job] = await s.claim("me:1:1", slots=1, engine_slots={}, lease_seconds=30)
        assert await s.cancel(job.id) == "requested"
        assert await s.controls("me:1:1") == {job.id: "cancel"}
        assert await s.remove(job.id) == "running"


def test_store_implements_the_job_store_protocol() -> None:
    """Every method of `JobStore` (its inherited narrow protocols too) exists on `Store`, async like
    the protocol's, with the same parameters in the same order and of the same kind."""
    methods = {
        name: fn for name, fn in inspect.getmembers(JobStore, inspect.isfunction) if not name.startswith("_")
    }
    assert {"insert_jobs", "get", "list", "add_event", "claim", "cancel", "events"} <= set(methods)
    for name, fn in methods.items():
        impl = getattr(Store, name, None)
        assert impl is not None, f"Store lacks JobStore.{name}"
        assert inspect.iscoroutinefunction(impl) == inspect.iscoroutinefunction(fn), name
        want = [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]
        got = [(p.name, p.kind) for p in inspect.signature(impl).parameters.values()]
        assert got == want, f"Store.{name}{inspect.signature(impl)} != JobStore.{name}{inspect.signature(fn)}"


async def test_claim_walks_the_ready_index_without_sorting(tmp_path: Path) -> None:
    """The claim's cost must not grow with the queue: it reads jobs_ready in order up to its LIMIT
    (no full read of the queued rows, no temp B-tree sort), with and without excluded engines."""
    async with Store.open(tmp_path / "s.db") as s:
        await s.insert_jobs([NewJob("a", "r", f"/a{i}", f"a{i}", priority=i % 3) for i in range(50)])
        for excluded, only in (([], None), (["b", "c"], None), ([], {"route": ["r", "s"], "engine": ["a"]})):
            sql, args = s._claim_sql(time.time(), excluded, 20, only)
            cur = await s.db.execute("EXPLAIN QUERY PLAN " + sql, args)
            plan = [str(r[3]) for r in await cur.fetchall()]
            assert any("jobs_ready" in step for step in plan), plan
            assert not any("TEMP B-TREE" in step for step in plan), plan
