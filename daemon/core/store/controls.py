"""Requests from the CLI and the TUI (cancel, pause, resume, retry, priority, remove, requeue) and
the engine-wide pause kept in `settings`.

Each is one short `BEGIN IMMEDIATE` transaction: a job that is not running changes state at once;
a running one gets a `control` flag that its runner picks up within a scheduler tick.
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from dropflow.daemon.core.jobs import TERMINAL, Job
from dropflow.daemon.core.store.db import Db


class ControlsMixin:
    """Request methods and settings (part of `Store`)."""

    # provided by the database's connection, `JobsMixin` and `EventsMixin`; declared here for mypy
    db: Db
    if TYPE_CHECKING:

        def transaction(self) -> AbstractAsyncContextManager[Db]: ...

        async def get(self, job_id: int) -> Job | None: ...

        async def _event(
            self, job_id: int | None, kind: str, message: str, data: dict[str, Any] | None = None
        ) -> None: ...

        async def add_event(
            self, job_id: int | None, kind: str, message: str, data: dict[str, Any] | None = None
        ) -> None: ...

    # --- requests from the CLI / TUI ---------------------------------------------------------------

    async def cancel(self, job_id: int) -> str:
        """Cancel a job. Returns what happened: cancelled | requested | noop | missing."""
        async with self.transaction() as db:
            job = await self.get(job_id)
            if job is None:
                return "missing"
            if job.status in TERMINAL:
                return "noop"
            if job.status == "running" or job.remote_task_id:
                # its engine must act (stop work, cancel the remote task): flag it and make it due now
                await db.execute(
                    "UPDATE jobs SET control = 'cancel', next_attempt_at = NULL,"
                    " status = CASE WHEN status = 'paused' THEN 'queued' ELSE status END, updated_at = ?"
                    " WHERE id = ?",
                    (time.time(), job_id),
                )
                await self._event(job_id, "command", "cancel requested")
                return "requested"
            await self._set_status(job_id, "cancelled", "cancelled by user")
            return "cancelled"

    async def pause(self, job_id: int) -> str:
        async with self.transaction() as db:
            job = await self.get(job_id)
            if job is None:
                return "missing"
            if job.status in ("queued", "waiting"):
                await self._set_status(job_id, "paused", "paused by user")
                return "paused"
            if job.status == "running":
                await db.execute(
                    "UPDATE jobs SET control = 'pause', updated_at = ? WHERE id = ?", (time.time(), job_id)
                )
                await self._event(job_id, "command", "pause requested")
                return "requested"
            return "noop"

    async def resume(self, job_id: int) -> str:
        async with self.transaction() as db:
            job = await self.get(job_id)
            if job is None:
                return "missing"
            if job.status == "paused":
                await self._set_status(job_id, "queued", "resumed by user")
                return "resumed"
            if job.status == "running" and job.control == "pause":
                await db.execute("UPDATE jobs SET control = NULL WHERE id = ?", (job_id,))
                return "resumed"
            return "noop"

    async def retry(self, job_id: int) -> str:
        async with self.transaction() as db:
            job = await self.get(job_id)
            if job is None:
                return "missing"
            if job.status not in ("failed", "cancelled", "waiting"):
                return "noop"
            await db.execute(
                "UPDATE jobs SET status = 'queued', attempts = 0, next_attempt_at = NULL, error_kind = NULL,"
                " error_message = NULL, error_hint = NULL, finished_at = NULL, control = NULL, progress = 0,"
                " progress_message = '', updated_at = ? WHERE id = ?",
                (time.time(), job_id),
            )
            await self._event(job_id, "state", "retry requested: queued", {"status": "queued"})
            return "queued"

    async def set_priority(self, job_id: int, priority: int) -> str:
        async with self.transaction() as db:
            cur = await db.execute(
                "UPDATE jobs SET priority = ?, updated_at = ? WHERE id = ?", (priority, time.time(), job_id)
            )
            if cur.rowcount == 0:
                return "missing"
            await self._event(job_id, "command", f"priority set to {priority}")
            return "ok"

    async def remove(self, job_id: int) -> str:
        """Delete a job's record (not its files). Only jobs that are not running."""
        async with self.transaction() as db:
            job = await self.get(job_id)
            if job is None:
                return "missing"
            if job.status == "running":
                return "running"
            await db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            await self._event(job_id, "command", f"job record removed ({job.input_path})")
            return "removed"

    async def _set_status(self, job_id: int, status: str, message: str) -> None:
        now = time.time()
        await self.db.execute(
            "UPDATE jobs SET status = ?, updated_at = ?, finished_at = CASE WHEN ? IN ('succeeded','failed',"
            "'cancelled') THEN ? ELSE finished_at END WHERE id = ?",
            (status, now, status, now, job_id),
        )
        await self._event(job_id, "state", message, {"status": status})

    async def requeue_failed(
        self, job_id: int, input_path: str, input_paths: list[str] | None = None
    ) -> None:
        """The same content was dropped again after its job failed: try once more, from the new copy
        (`input_paths`: every file of a multi-file unit, primary first)."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE jobs SET status = 'queued', attempts = 0, input_path = ?, input_paths = ?,"
                " next_attempt_at = NULL, error_kind = NULL, error_message = NULL, error_hint = NULL,"
                " finished_at = NULL, updated_at = ? WHERE id = ? AND status IN ('failed','cancelled')",
                (input_path, json.dumps(input_paths or [input_path]), time.time(), job_id),
            )
            await self._event(job_id, "state", f"dropped again ({input_path}): queued", {"status": "queued"})

    # --- settings: engine / global pause --------------------------------------------------------------

    async def get_setting(self, key: str, default: Any = None) -> Any:
        cur = await self.db.execute("SELECT value FROM settings WHERE key = ?", (key,))
        row = await cur.fetchone()
        return json.loads(row[0]) if row else default

    async def set_setting(self, key: str, value: Any) -> None:
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    async def paused_engines(self) -> tuple[bool, set[str]]:
        return bool(await self.get_setting("paused_all", False)), set(
            await self.get_setting("paused_engines", [])
        )

    async def pause_engine(self, engine: str | None, paused: bool) -> None:
        """Hold (or release) every job of one engine, or of all engines when `engine` is None."""
        if engine is None:
            await self.set_setting("paused_all", paused)
        else:
            engines = set(await self.get_setting("paused_engines", []))
            (engines.add if paused else engines.discard)(engine)
            await self.set_setting("paused_engines", sorted(engines))
        await self.add_event(
            None, "command", f"{'paused' if paused else 'resumed'} {engine or 'all engines'}"
        )
