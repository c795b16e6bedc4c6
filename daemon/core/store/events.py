"""The store's history and heartbeat: job and daemon events and the `daemons` table."""

from __future__ import annotations

import json
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from dropflow.daemon.core.jobs import Event
from dropflow.daemon.core.store.db import Db


class EventsMixin:
    """Events and daemons (part of `Store`)."""

    # provided by each database's connection (connection.py, pg.py); declared here for mypy
    db: Db
    if TYPE_CHECKING:

        def transaction(self) -> AbstractAsyncContextManager[Db]: ...

    async def events(self, job_id: int | None = None, *, limit: int = 200) -> list[Event]:
        if job_id is None:
            cur = await self.db.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        else:
            cur = await self.db.execute(
                "SELECT * FROM events WHERE job_id = ? ORDER BY id DESC LIMIT ?", (job_id, limit)
            )
        rows = await cur.fetchall()
        return [
            Event(r["id"], r["job_id"], r["at"], r["kind"], r["message"], json.loads(r["data"]))
            for r in reversed(list(rows))
        ]

    # --- events and daemons ----------------------------------------------------------------------

    async def _event(
        self, job_id: int | None, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        await self.db.execute(
            "INSERT INTO events(job_id, at, kind, message, data) VALUES (?, ?, ?, ?, ?)",
            (job_id, time.time(), kind, message, json.dumps(data or {})),
        )

    async def add_event(
        self, job_id: int | None, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        async with self.transaction():
            await self._event(job_id, kind, message, data)

    async def register_daemon(self, owner: str, version: str) -> None:
        now = time.time()
        host, pid, _ = owner.split(":", 2)
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO daemons(owner, host, pid, version, started_at, heartbeat_at) VALUES (?,?,?,?,?,?)",
                (owner, host, int(pid), version, now, now),
            )

    async def stop_daemon(self, owner: str) -> None:
        async with self.transaction() as db:
            await db.execute("UPDATE daemons SET stopped_at = ? WHERE owner = ?", (time.time(), owner))

    async def live_daemons(self, *, stale_after: float) -> list[dict[str, Any]]:
        """Daemons that have beaten their heart within `stale_after` seconds and did not stop."""
        cur = await self.db.execute(
            "SELECT * FROM daemons WHERE stopped_at IS NULL AND heartbeat_at > ? ORDER BY started_at",
            (time.time() - stale_after,),
        )
        return [dict(r) for r in await cur.fetchall()]
