"""The daemon's side of the store: claiming due jobs under a lease, keeping the lease, taking
back the jobs of runners that died, and the runner's writes, each fenced by the lease owner (a
runner that lost its lease writes nothing)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from dropflow.daemon.core.jobs import Job, Role, StoreError
from dropflow.daemon.core.store.db import Db
from dropflow.daemon.core.store.jobs import job_from_row
from dropflow.daemon.core.store.owners import owner_alive

# a running job gives back the attempt its claim took (MAX(a, b) is SQLite's, GREATEST PostgreSQL's)
_GIVE_BACK_ATTEMPT = "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"


ROLE_COLUMNS: dict[Role, str] = {"engine": "engine", "route": "route"}  # never a name from outside


def claim_query(
    now: float,
    excluded: Sequence[str],
    limit: int,
    only: Mapping[Role, Sequence[str]] | None = None,
    *,
    hint: str = "",
    lock: str = "",
) -> tuple[str, list[Any]]:
    """The claim's candidates: due jobs of engines not `excluded` (and, per column of `only`, of
    the values listed there only: a daemon's role), in claim order (the order of the jobs_ready
    index). `hint` follows the table name (SQLite's index choice); `lock` ends the query
    (PostgreSQL's row locks)."""
    sql = (
        f"SELECT id, engine FROM jobs{hint} WHERE status IN ('queued','waiting')"
        " AND (next_attempt_at IS NULL OR next_attempt_at <= ? OR control = 'cancel')"
    )
    args: list[Any] = [now]
    if excluded:
        sql += f" AND engine NOT IN ({','.join('?' * len(excluded))})"
        args += excluded
    for column, values in (only or {}).items():
        sql += f" AND {ROLE_COLUMNS[column]} IN ({','.join('?' * len(values)) or 'NULL'})"
        args += values
    sql += " ORDER BY priority DESC, id LIMIT ?" + lock
    args.append(limit)
    return sql, args


class ClaimsMixin:
    """Claims, leases and the lease-owned outcomes (part of `Store`)."""

    # provided by each database's connection (connection.py, pg.py), `JobsMixin` (jobs.py) and
    # `EventsMixin` (events.py); declared here for mypy
    db: Db
    if TYPE_CHECKING:

        async def get(self, job_id: int) -> Job | None: ...

        def transaction(self) -> AbstractAsyncContextManager[Db]: ...

        def _claim_sql(
            self, now: float, excluded: Sequence[str], limit: int, only: Mapping[Role, Sequence[str]] | None
        ) -> tuple[str, list[Any]]: ...

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
        only: Mapping[Role, Sequence[str]] | None = None,
    ) -> list[Job]:
        """Take up to `slots` due jobs, highest priority first, honouring per-engine free slots
        (and `only` the engines / routes listed there: a daemon's `--engines` / `--routes`).

        Jobs with a pending cancel are due at once so that their engine can act on it
        (e.g. cancel a remote task) before they end. The candidates' query is the database's own:
        SQLite's write lock makes the claim exclusive; PostgreSQL locks the candidate rows and
        skips those another daemon's claim holds (`FOR UPDATE SKIP LOCKED`).
        """
        if slots <= 0:
            return []
        now = time.time()
        paused = list(paused_engines)
        excluded = [e for e, n in engine_slots.items() if n <= 0] + paused
        sql, args = self._claim_sql(now, excluded, slots * 4 + 16, only)
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
        an orphan once its lease runs out (its runner's last write failed). A process is known to
        be gone only on this host (`owner_alive`); another host's daemon loses its jobs when their
        leases run out. Each row goes back only if the owner seen is still the owner: another
        daemon may have reclaimed and claimed it again in the meantime.
        """
        now = time.time()
        kept = set(keep)
        reclaimed: list[int] = []
        async with self.transaction() as db:
            cur = await db.execute(
                "SELECT id, lease_owner, lease_expires_at FROM jobs WHERE status = 'running' ORDER BY id"
            )
            stale = [
                (int(job_id), lease_owner or "")
                for job_id, lease_owner, expires in await cur.fetchall()
                if job_id not in kept
                and (
                    (expires is not None and expires < now)
                    or (lease_owner != owner and not owner_alive(lease_owner or ""))
                )
            ]
            for job_id, lease_owner in stale:
                cur = await db.execute(
                    "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,"
                    " next_attempt_at = NULL, updated_at = ?"
                    " WHERE id = ? AND status = 'running' AND COALESCE(lease_owner, '') = ?",
                    (now, job_id, lease_owner),
                )
                if cur.rowcount == 1:
                    reclaimed.append(job_id)
                    await self._event(job_id, "state", "reclaimed after its runner stopped (lease expired)")
        return reclaimed

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
                "status = 'waiting', next_attempt_at = ?, progress_message = ?, "
                + _GIVE_BACK_ATTEMPT
                + ", lease_owner = NULL, lease_expires_at = NULL"
                + extra,
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
                "status = ?, "
                + _GIVE_BACK_ATTEMPT
                + ", lease_owner = NULL, lease_expires_at = NULL, control = NULL",
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
