"""The daemon's side of the store: claiming due jobs under a lease, keeping the lease, taking
back the jobs of runners that died, and the runner's writes, each fenced by the lease owner (a
runner that lost its lease writes nothing)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import aiosqlite

from dropflow.daemon.core.jobs import Job, StoreError
from dropflow.daemon.core.store.connection import owner_alive
from dropflow.daemon.core.store.jobs import job_from_row


def claim_query(now: float, excluded: Sequence[str], limit: int) -> tuple[str, list[Any]]:
    """The claim's candidates: due jobs of engines not `excluded`, in claim order.

    INDEXED BY: with no ANALYZE statistics (the daemon never runs it) SQLite prefers
    jobs_status_id and reads and sorts every queued row on each claim, a cost that grows with the
    queue (14 ms a claim at 100,000 queued). jobs_ready is in claim order, so the claim stops at
    its LIMIT; a query shape that could not use it fails loudly instead of slowing down.
    """
    sql = (
        "SELECT id, engine FROM jobs INDEXED BY jobs_ready WHERE status IN ('queued','waiting')"
        " AND (next_attempt_at IS NULL OR next_attempt_at <= ? OR control = 'cancel')"
    )
    args: list[Any] = [now]
    if excluded:
        sql += f" AND engine NOT IN ({','.join('?' * len(excluded))})"
        args += excluded
    sql += " ORDER BY priority DESC, id LIMIT ?"
    args.append(limit)
    return sql, args


class ClaimsMixin:
    """Claims, leases and the lease-owned outcomes (part of `Store`)."""

    # provided by `_Connection` (connection.py), `JobsMixin` (jobs.py) and `EventsMixin` (events.py);
    # declared here for mypy
    db: aiosqlite.Connection
    if TYPE_CHECKING:

        async def get(self, job_id: int) -> Job | None: ...

        def transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        async def _event(
            self, job_id: int | None, kind: str, message: str, data: dict[str, Any] | None = None
        ) -> None: ...

    # --- claiming and leases ----------------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        *,
        slots: int,
        engine_slots: dict[str, int],
        lease_seconds: float,
        paused_engines: Iterable[str] = (),
    ) -> list[Job]:
        """Take up to `slots` due jobs, highest priority first, honouring per-engine free slots.

        Jobs with a pending cancel are due at once so that their engine can act on it
        (e.g. cancel a remote task) before they end.
        """
        if slots <= 0:
            return []
        now = time.time()
        paused = list(paused_engines)
        excluded = [e for e, n in engine_slots.items() if n <= 0] + paused
        sql, args = claim_query(now, excluded, slots * 4 + 16)
        claimed: list[int] = []
        async with self.transaction() as db:
            cur = await db.execute(sql, args)
            free = dict(engine_slots)
            for job_id, engine in await cur.fetchall():
                if len(claimed) >= slots:
                    break
                if engine in free:
                    if free[engine] <= 0:
                        continue
                    free[engine] -= 1
                claimed.append(job_id)
            if claimed:
                marks = ",".join("?" * len(claimed))
                await db.execute(
                    f"UPDATE jobs SET status = 'running', lease_owner = ?, lease_expires_at = ?,"
                    f" attempts = attempts + 1, started_at = COALESCE(started_at, ?), updated_at = ?"
                    f" WHERE id IN ({marks})",
                    [owner, now + lease_seconds, now, now, *claimed],
                )
                cur = await db.execute(
                    f"SELECT * FROM jobs WHERE id IN ({marks}) ORDER BY priority DESC, id", claimed
                )
                return [job_from_row(r) for r in await cur.fetchall()]
        return []

    async def renew_leases(self, owner: str, lease_seconds: float, job_ids: Iterable[int]) -> None:
        """Extend the leases of `owner`'s jobs that are still being worked on, and its heartbeat.

        Only those: a row whose runner died without a word (its last write failed) must let its
        lease run out, so that `reclaim` puts it back.
        """
        now = time.time()
        ids = list(job_ids)
        async with self.transaction() as db:
            if ids:
                await db.execute(
                    "UPDATE jobs SET lease_expires_at = ? WHERE lease_owner = ? AND status = 'running'"
                    f" AND id IN ({','.join('?' * len(ids))})",
                    (now + lease_seconds, owner, *ids),
                )
            await db.execute(
                "UPDATE daemons SET heartbeat_at = ? WHERE owner = ?",
                (now, owner),
            )

    async def controls(self, owner: str) -> dict[int, str | None]:
        cur = await self.db.execute(
            "SELECT id, control FROM jobs WHERE lease_owner = ? AND status = 'running'", (owner,)
        )
        return {int(r[0]): r[1] for r in await cur.fetchall()}

    async def reclaim(self, *, owner: str, keep: Iterable[int] = ()) -> list[int]:
        """Put back running jobs whose lease expired or whose owner process is gone.

        `keep`: the jobs `owner` (the caller) is working on. Any other running row of its own is
        an orphan once its lease runs out (its runner's last write failed).
        """
        now = time.time()
        kept = set(keep)
        async with self.transaction() as db:
            cur = await db.execute(
                "SELECT id, lease_owner, lease_expires_at FROM jobs WHERE status = 'running'"
            )
            stale = [
                int(job_id)
                for job_id, lease_owner, expires in await cur.fetchall()
                if job_id not in kept
                and (
                    (expires is not None and expires < now)
                    or (lease_owner != owner and not owner_alive(lease_owner or ""))
                )
            ]
            for job_id in stale:
                await db.execute(
                    "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,"
                    " next_attempt_at = NULL, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
                await self._event(job_id, "state", "reclaimed after its runner stopped (lease expired)")
        return stale

    # --- the runner's writes (all fenced by lease owner) --------------------------------------------

    async def _owned_update(self, job_id: int, owner: str, sets: str, args: Sequence[Any]) -> bool:
        cur = await self.db.execute(
            f"UPDATE jobs SET {sets}, updated_at = ? WHERE id = ? AND lease_owner = ? AND status = 'running'",
            (*args, time.time(), job_id, owner),
        )
        return cur.rowcount == 1

    async def set_progress(self, job_id: int, owner: str, progress: float, message: str) -> bool:
        async with self.transaction():
            return await self._owned_update(
                job_id, owner, "progress = ?, progress_message = ?", (max(0.0, min(1.0, progress)), message)
            )

    async def set_plan(
        self, job_id: int, owner: str, params: dict[str, Any], provider: str | None
    ) -> int | None:
        """Replace a running job's params and provider with those the config gives now (a job about
        to start from scratch). Returns the id of another job that already has this content with
        these params (nothing is changed then: the two would be one piece of work), else None."""
        encoded = json.dumps(params)
        async with self.transaction() as db:
            job = await self.get(job_id)
            if job is not None and not job.forced:
                cur = await db.execute(
                    "SELECT id FROM jobs WHERE route = ? AND batch = ? AND content_hash = ? AND params = ?"
                    " AND forced = 0 AND id != ?",
                    (job.route, job.batch, job.content_hash, encoded, job_id),
                )
                other = await cur.fetchone()
                if other is not None:
                    return int(other[0])
            if not await self._owned_update(job_id, owner, "params = ?, provider = ?", (encoded, provider)):
                raise StoreError(f"job {job_id} is no longer held by this runner")
            await self._event(job_id, "note", "params and provider taken from the current config")
            return None

    async def save_checkpoint(
        self, job_id: int, owner: str, checkpoint: dict[str, Any], *, remote_task_id: str | None = None
    ) -> None:
        """Durably record engine state (and a remote task id) before the engine waits on anything."""
        async with self.transaction():
            ok = await self._owned_update(
                job_id,
                owner,
                "checkpoint = ?, remote_task_id = COALESCE(?, remote_task_id)",
                (json.dumps(checkpoint), remote_task_id),
            )
            if not ok:
                raise StoreError(f"job {job_id} is no longer held by this runner")
            if remote_task_id:
                await self._event(job_id, "note", f"remote task {remote_task_id} submitted")

    async def succeed(
        self,
        job_id: int,
        owner: str,
        *,
        outputs: Sequence[str],
        usage: dict[str, Any],
        archived_path: str | None,
        message: str = "done",
    ) -> bool:
        now = time.time()
        async with self.transaction():
            ok = await self._owned_update(
                job_id,
                owner,
                "status = 'succeeded', progress = 1, progress_message = ?, outputs = ?, usage = ?,"
                " tokens_in = ?, tokens_out = ?, archived_path = ?, finished_at = ?, lease_owner = NULL,"
                " lease_expires_at = NULL, control = NULL, error_kind = NULL, error_message = NULL,"
                " error_hint = NULL, next_attempt_at = NULL",
                (
                    message,
                    json.dumps(list(outputs)),
                    json.dumps(usage),
                    int(usage.get("input_tokens", 0)),
                    int(usage.get("output_tokens", 0)),
                    archived_path,
                    now,
                ),
            )
            if ok:
                await self._event(
                    job_id, "state", "succeeded", {"status": "succeeded", "outputs": list(outputs)}
                )
        return ok

    async def set_archived(self, job_id: int, archived_path: str) -> None:
        async with self.transaction() as db:
            await db.execute("UPDATE jobs SET archived_path = ? WHERE id = ?", (archived_path, job_id))
            await self._event(job_id, "note", f"input archived to {archived_path}")

    async def fail(
        self,
        job_id: int,
        owner: str,
        error: dict[str, Any],
        *,
        retry_at: float | None,
        usage: dict[str, Any] | None = None,
    ) -> bool:
        """Record an error: back to `waiting` until `retry_at`, or `failed` when it is None."""
        now = time.time()
        usage_sets, usage_args = "", ()  # type: tuple[str, tuple[Any, ...]]
        if usage is not None:
            usage_sets = ", usage = ?, tokens_in = ?, tokens_out = ?"
            usage_args = (
                json.dumps(usage),
                int(usage.get("input_tokens", 0)),
                int(usage.get("output_tokens", 0)),
            )
        status = "waiting" if retry_at is not None else "failed"
        async with self.transaction():
            ok = await self._owned_update(
                job_id,
                owner,
                "status = ?, error_kind = ?, error_message = ?, error_hint = ?, next_attempt_at = ?,"
                " lease_owner = NULL, lease_expires_at = NULL, finished_at = ?" + usage_sets,
                (
                    status,
                    error.get("kind"),
                    error.get("message"),
                    error.get("hint"),
                    retry_at,
                    None if retry_at is not None else now,
                    *usage_args,
                ),
            )
            if ok:
                what = (
                    f"retry at {time.strftime('%H:%M:%S', time.localtime(retry_at))}"
                    if retry_at
                    else "failed"
                )
                await self._event(
                    job_id, "error", f"{error.get('message')} ({what})", {"status": status, **error}
                )
        return ok

    async def reschedule(
        self, job_id: int, owner: str, *, at: float, message: str, usage: dict[str, Any] | None = None
    ) -> bool:
        """The engine is waiting on something remote: free the slot, come back at `at`.

        The attempt taken by this claim is given back: waiting is not failing.
        """
        extra = ", usage = ?" if usage is not None else ""
        args: tuple[Any, ...] = (at, message) + ((json.dumps(usage),) if usage is not None else ())
        async with self.transaction():
            return await self._owned_update(
                job_id,
                owner,
                "status = 'waiting', next_attempt_at = ?, progress_message = ?, attempts = MAX(attempts - 1, 0),"
                " lease_owner = NULL, lease_expires_at = NULL" + extra,
                args,
            )

    async def release(
        self, job_id: int, owner: str, *, to: str = "queued", message: str = "released"
    ) -> bool:
        """Give a running job back unfinished (shutdown, pause): no attempt is charged."""
        async with self.transaction():
            ok = await self._owned_update(
                job_id,
                owner,
                "status = ?, attempts = MAX(attempts - 1, 0), lease_owner = NULL, lease_expires_at = NULL,"
                " control = NULL",
                (to,),
            )
            if ok:
                await self._event(job_id, "state", message, {"status": to})
        return ok

    async def finish_cancelled(self, job_id: int, owner: str, message: str) -> bool:
        now = time.time()
        async with self.transaction():
            ok = await self._owned_update(
                job_id,
                owner,
                "status = 'cancelled', control = NULL, lease_owner = NULL, lease_expires_at = NULL,"
                " finished_at = ?, progress_message = ?",
                (now, message),
            )
            if ok:
                await self._event(job_id, "state", message, {"status": "cancelled"})
        return ok
