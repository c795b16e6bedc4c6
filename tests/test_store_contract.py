"""One contract, every store: each test runs on SQLite and on a real PostgreSQL server.

Modelled on huey's `test_storage.py`: the same assertions against each implementation, so the
daemon, the CLI and the TUI can rely on one behaviour. Two stores opened on one database stand
for two daemons (two processes, or two hosts) sharing a queue.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from dropflow.daemon.core.jobs import ActiveInput, NewJob, StoreError
from dropflow.daemon.core.persons import Plan, PlannedFace, PlannedPerson, PlannedPhoto
from dropflow.daemon.core.store import Store, owner_id
from dropflow.daemon.core.store.migrations import MIGRATIONS
from dropflow.daemon.core.store.persons import SqlitePersons
from dropflow.daemon.core.store.pg_migrations import PG_MIGRATIONS

pytestmark = pytest.mark.timeout(60)

OTHER_HOST = "elsewhere.example:4242:1"  # an owner on another host: its pid means nothing here


def jobs(n: int, *, engine: str = "e", prefix: str = "f", priority: int = 0) -> list[NewJob]:
    return [NewJob(engine, "r", f"/in/{prefix}{i}", f"{prefix}{i}", priority=priority) for i in range(n)]


async def test_migrations_have_the_same_versions_on_both(store_target: Path | str) -> None:
    assert [(v, n) for v, n, _ in MIGRATIONS] == [(v, n) for v, n, _ in PG_MIGRATIONS]
    async with Store.open(store_target) as s:
        assert await s.schema_version() == MIGRATIONS[-1][0]
        assert await s.migrate() == []  # a second open applies nothing


async def test_insert_dedupes_by_content_and_params(store_target: Path | str) -> None:
    async with Store.open(store_target) as s:
        first = await s.insert_jobs(jobs(3))
        assert [r.created for r in first] == [True] * 3
        again = await s.insert_jobs([*jobs(3), NewJob("e", "r", "/in/new", "new")])
        assert [r.created for r in again] == [False, False, False, True]
        assert [r.job_id for r in again[:3]] == [r.job_id for r in first]
        other_params = await s.insert_jobs([NewJob("e", "r", "/in/f0", "f0", params={"fps": 2})])
        forced = await s.insert_jobs([NewJob("e", "r", "/in/f0", "f0", forced=True)])
        assert other_params[0].created and forced[0].created
        assert len(await s.list()) == 6
        events = await s.events(first[0].job_id)
        assert [e.message for e in events] == ["queued: /in/f0"]


async def test_two_stores_inserting_the_same_files_register_each_once(store_target: Path | str) -> None:
    """Two daemons watching one shared inbox: every file becomes exactly one job."""
    async with Store.open(store_target) as a, Store.open(store_target) as b:
        batches = [jobs(40, prefix=f"b{k}-") for k in range(5)]

        async def offer(store: Store) -> list[bool]:
            created = []
            for batch in batches:
                created += [r.created for r in await store.insert_jobs(batch)]
            return created

        got_a, got_b = await asyncio.gather(offer(a), offer(b))
        assert [x + y for x, y in zip(got_a, got_b, strict=True)] == [1] * 200
        assert len(await a.list()) == 200


async def test_claims_honour_priority_slots_and_pauses(store_target: Path | str) -> None:
    async with Store.open(store_target) as s:
        await s.insert_jobs(jobs(3, engine="a", prefix="a") + jobs(3, engine="b", prefix="b", priority=5))
        me = owner_id()
        got = await s.claim(me, slots=4, engine_slots={"a": 1, "b": 2}, lease_seconds=30)
        assert [(j.engine, j.priority) for j in got] == [("b", 5), ("b", 5), ("a", 0)]
        assert all(j.status == "running" and j.lease_owner == me and j.attempts == 1 for j in got)
        assert await s.claim(me, slots=4, engine_slots={"a": 0, "b": 0}, lease_seconds=30) == []
        held = await s.claim(
            me, slots=4, engine_slots={"a": 4, "b": 4}, lease_seconds=30, paused_engines=["a"]
        )
        assert [j.engine for j in held] == ["b"]


async def test_claims_of_a_daemon_limited_to_some_routes_or_engines(store_target: Path | str) -> None:
    async with Store.open(store_target) as s:
        await s.insert_jobs(
            [NewJob("e", route, f"/in/{route}{i}", f"{route}{i}") for route in "xyz" for i in range(2)]
        )
        me = owner_id()
        got = await s.claim(me, slots=9, engine_slots={}, lease_seconds=30, only={"route": ["x", "z"]})
        assert sorted(j.route for j in got) == ["x", "x", "z", "z"]
        assert await s.claim(me, slots=9, engine_slots={}, lease_seconds=30, only={"route": []}) == []
        assert [j.route for j in await s.claim(me, slots=9, engine_slots={}, lease_seconds=30)] == ["y", "y"]
        # engines: an engine this daemon does not list (one it may not even know) is left alone
        await s.insert_jobs([NewJob(engine, "r", f"/in/{engine}", engine) for engine in ("a", "b", "plugin")])
        got = await s.claim(
            me, slots=9, engine_slots={}, lease_seconds=30, only={"engine": ["a"], "route": ["r"]}
        )
        assert [j.engine for j in got] == ["a"]


async def test_concurrent_claims_never_hand_out_a_job_twice(store_target: Path | str) -> None:
    async with Store.open(store_target) as a, Store.open(store_target) as b:
        await a.insert_jobs(jobs(120))
        owners = {"host-a:1:1": a, "host-b:2:2": b}
        seen: dict[int, str] = {}

        async def drain(owner: str, store: Store) -> None:
            while batch := await store.claim(owner, slots=3, engine_slots={}, lease_seconds=30):
                for j in batch:
                    assert j.id not in seen, f"job {j.id} claimed by {seen.get(j.id)} and {owner}"
                    seen[j.id] = owner
                    assert await store.succeed(j.id, owner, outputs=[], usage={}, archived_path=None)

        await asyncio.gather(*(drain(o, s) for o, s in owners.items()))
        assert len(seen) == 120
        assert (await a.counts())["succeeded"] == 120


async def test_expired_leases_are_reclaimed_by_any_daemon_and_fence_the_loser(
    store_target: Path | str,
) -> None:
    async with Store.open(store_target) as s:
        [job_id] = [r.job_id for r in await s.insert_jobs(jobs(1))]
        [job] = await s.claim(OTHER_HOST, slots=1, engine_slots={}, lease_seconds=0.2)
        me = owner_id()
        # another host's daemon is never judged by pid: its job waits for the lease to run out
        assert await s.reclaim(owner=me) == []
        await asyncio.sleep(0.3)
        assert await s.reclaim(owner=me) == [job_id]
        assert (await s.get(job_id)).status == "queued"  # type: ignore[union-attr]
        [again] = await s.claim(me, slots=1, engine_slots={}, lease_seconds=30)
        assert again.id == job.id and again.attempts == 2
        # the first runner comes back: every write it tries is refused
        assert not await s.set_progress(job_id, OTHER_HOST, 0.5, "late")
        assert not await s.succeed(job_id, OTHER_HOST, outputs=[], usage={}, archived_path=None)
        with pytest.raises(StoreError):
            await s.save_checkpoint(job_id, OTHER_HOST, {"phase": "submitting"})
        assert await s.reclaim(owner=OTHER_HOST) == []  # a live lease is not taken
        assert await s.set_progress(job_id, me, 2.0, "going")
        assert (await s.get(job_id)).progress == 1.0  # type: ignore[union-attr]


async def test_renewed_leases_survive_and_a_dead_local_owner_is_reclaimed(store_target: Path | str) -> None:
    async with Store.open(store_target) as s:
        ids = [r.job_id for r in await s.insert_jobs(jobs(2))]
        me = owner_id()
        await s.register_daemon(me, "test")
        await s.claim(me, slots=2, engine_slots={}, lease_seconds=0.3)
        await asyncio.sleep(0.2)
        await s.renew_leases(me, 30, [ids[0]])
        await asyncio.sleep(0.2)
        assert await s.reclaim(owner="other:1:1", keep=[]) == [ids[1]]
        assert [d["owner"] for d in await s.live_daemons(stale_after=10)] == [me]
        # same host, a pid that does not exist: reclaimed at once, whatever its lease
        dead = f"{socket.gethostname()}:999999:1"
        [orphan] = await s.claim(dead, slots=1, engine_slots={}, lease_seconds=300)
        assert await s.reclaim(owner=me, keep=[ids[0]]) == [orphan.id]


async def test_runner_outcomes(store_target: Path | str) -> None:
    async with Store.open(store_target) as s:
        ids = [r.job_id for r in await s.insert_jobs(jobs(4))]
        me = owner_id()
        await s.claim(me, slots=4, engine_slots={}, lease_seconds=30)
        usage = {"input_tokens": 7, "output_tokens": 3}
        assert await s.succeed(ids[0], me, outputs=["/o/a.json"], usage=usage, archived_path="/arch/a")
        assert await s.fail(
            ids[1], me, {"kind": "retryable", "message": "429", "hint": "wait"}, retry_at=time.time() + 60
        )
        assert await s.reschedule(ids[2], me, at=time.time() + 60, message="remote task running")
        assert await s.release(ids[3], me, to="paused", message="paused by user")
        done, waiting, resched, paused = [await s.get(i) for i in ids]
        assert (
            done is not None
            and done.status == "succeeded"
            and done.tokens_in == 7
            and done.outputs == ["/o/a.json"]
        )
        assert (
            waiting is not None
            and waiting.status == "waiting"
            and waiting.error == {"kind": "retryable", "message": "429", "hint": "wait"}
        )
        assert resched is not None and resched.status == "waiting" and resched.attempts == 0
        assert paused is not None and paused.status == "paused" and paused.attempts == 0
        # neither waiting job is due yet
        assert await s.claim(me, slots=4, engine_slots={}, lease_seconds=30) == []


async def test_requests_from_the_cli_and_tui(store_target: Path | str) -> None:
    async with Store.open(store_target) as s:
        ids = [r.job_id for r in await s.insert_jobs(jobs(4))]
        me = owner_id()
        [running] = await s.claim(me, slots=1, engine_slots={}, lease_seconds=30)
        assert running.id == ids[0]
        assert await s.cancel(ids[0]) == "requested"
        assert await s.controls(me) == {ids[0]: "cancel"}
        assert await s.finish_cancelled(ids[0], me, "cancelled by user")
        assert await s.cancel(ids[0]) == "noop"
        assert await s.pause(ids[1]) == "paused"
        assert await s.resume(ids[1]) == "resumed"
        assert await s.cancel(ids[2]) == "cancelled"
        assert await s.retry(ids[2]) == "queued"
        assert await s.set_priority(ids[3], 9) == "ok"
        assert await s.set_priority(10_000, 1) == "missing"
        assert await s.remove(ids[3]) == "removed"
        assert await s.remove(ids[3]) == "missing"
        await s.pause_engine("e", True)
        await s.pause_engine(None, True)
        assert await s.paused_engines() == (True, {"e"})
        await s.pause_engine(None, False)
        assert await s.paused_engines() == (False, {"e"})
        kinds = [e.message for e in await s.events(ids[0])]
        assert kinds == ["queued: /in/f0", "cancel requested", "cancelled by user"]
        assert [e.message for e in await s.events(None, limit=2)] == [
            "paused all engines",
            "resumed all engines",
        ]


async def test_task_registry_and_checkpoints(store_target: Path | str) -> None:
    """What videogen relies on: a 'submitting' marker saved before the remote create is fenced by
    the lease, so a daemon that lost the job can never go on to submit it."""
    async with Store.open(store_target) as s:
        ids = [r.job_id for r in await s.insert_jobs(jobs(3, engine="video-gen", prefix="v"))]
        me = owner_id()
        await s.claim(me, slots=1, engine_slots={}, lease_seconds=30)
        await s.save_checkpoint(ids[0], me, {"phase": "submitting"})
        await s.save_checkpoint(ids[0], me, {"phase": "remote"}, remote_task_id="task-1")
        job = await s.get(ids[0])
        assert job is not None and job.checkpoint == {"phase": "remote"} and job.remote_task_id == "task-1"
        running = await s.list(engine="video-gen", status="running")
        assert [j.id for j in running] == [ids[0]]
        assert [j.id for j in await s.list(engine="video-gen", newest_first=True, limit=2)] == [
            ids[2],
            ids[1],
        ]
        assert [j.id for j in await s.list(after_id=ids[0])] == ids[1:]
        await s.add_event(ids[0], "note", "hello")
        assert (await s.events(ids[0]))[-1].message == "hello"
        assert await s.active_units(["/in/v1", "/nowhere"]) == {"/in/v1"}
        # with what the unit held and when: the daemon's start tells an input edited since
        assert ActiveInput(("/in/v0",), "v0", job.created_at) in await s.active_inputs()


async def test_persons_repository(store_target: Path | str) -> None:
    async with Store.open(store_target) as s:
        repo = SqlitePersons(s)
        [job] = await s.insert_jobs([NewJob("cluster", "c", "/in/party", "h", batch="party")])
        mean = np.ones(4, dtype=np.float32)
        face = PlannedFace(0, [1, 2, 3, 4], 0.9, -1, "a.jpg", b"jpeg")
        plan = Plan(
            job.job_id,
            "party",
            "/in/party",
            [PlannedPerson(-1, 1, mean, 1)],
            [
                PlannedPhoto(
                    "a.jpg", "/in/party/a.jpg", "person", ["person_001/a.jpg"], (10, 10), None, [face]
                )
            ],
            {"photos": 1},
        )
        refs = await repo.commit(plan, keep_thumbs=3)
        [person] = await repo.persons("party", with_counts=True)
        assert refs == {-1: person.id} and person.photos == 1 and person.folder == "person_001"
        assert np.array_equal(person.mean, mean)
        assert await repo.thumbs(person.id, 5) == [b"jpeg"]
        assert await repo.phase(job.job_id) == "distribute"
        await repo.finish(job.job_id)
        await repo.rename(person.id, "alice")
        report = await repo.report("party")
        assert report["persons"][0]["folder"] == "alice"
        assert [b["batch"] for b in await repo.batches()] == ["party"]
        assert await repo.next_seq("party") == 2


async def test_wait_for_change_sees_another_connections_commit(store_target: Path | str) -> None:
    async with Store.open(store_target) as writer, Store.open(store_target, readonly=True) as watcher:
        assert not await watcher.wait_for_change(0.2, poll=0.02)  # sets the mark; nothing since
        started = time.monotonic()
        waiting = asyncio.create_task(watcher.wait_for_change(5, poll=0.02))
        await asyncio.sleep(0.05)
        await writer.insert_jobs(jobs(1))
        assert await waiting
        assert time.monotonic() - started < 2
        assert not await watcher.wait_for_change(0.1, poll=0.02)
