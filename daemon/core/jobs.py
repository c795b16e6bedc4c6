"""Jobs as the store keeps them, and the narrow views of the store that engines are lent.

The values here (`Job`, `NewJob`, `Event` ...) are what every store implementation returns; the
protocols are what `JobContext` hands an engine instead of the store itself: an engine can
spawn jobs (`JobSpawner`) and see its engine's other jobs (`TaskRegistry`), nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

STATUSES = ("queued", "running", "waiting", "paused", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running", "waiting", "paused")
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class NewJob:
    engine: str
    route: str
    input_path: str
    content_hash: str
    input_paths: list[str] = field(default_factory=list)
    batch: str = ""
    source: str = "inbox"
    provider: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int = 5
    forced: bool = False
    status: str = "queued"
    error: dict[str, Any] | None = None


@dataclass
class Job:
    id: int
    engine: str
    route: str
    batch: str
    source: str
    input_path: str
    input_paths: list[str]
    content_hash: str
    forced: bool
    provider: str | None
    params: dict[str, Any]
    priority: int
    status: str
    control: str | None
    attempts: int
    max_attempts: int
    next_attempt_at: float | None
    lease_owner: str | None
    lease_expires_at: float | None
    progress: float
    progress_message: str
    outputs: list[str]
    error_kind: str | None
    error_message: str | None
    error_hint: str | None
    remote_task_id: str | None
    checkpoint: dict[str, Any]
    usage: dict[str, Any]
    tokens_in: int
    tokens_out: int
    archived_path: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def error(self) -> dict[str, Any] | None:
        if self.error_kind is None:
            return None
        return {"kind": self.error_kind, "message": self.error_message or "", "hint": self.error_hint or ""}

    def as_dict(self) -> dict[str, Any]:
        """The stable shape of `dropflow jobs --json` / `job --json`."""
        return {
            "id": self.id,
            "engine": self.engine,
            "route": self.route,
            "batch": self.batch,
            "status": self.status,
            "input": self.input_path,
            "inputs": self.input_paths,
            "source": self.source,
            "provider": self.provider,
            "params": self.params,
            "priority": self.priority,
            "progress": round(self.progress, 4),
            "progress_message": self.progress_message,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "next_attempt_at": self.next_attempt_at,
            "outputs": self.outputs,
            "error": self.error,
            "remote_task_id": self.remote_task_id,
            "usage": self.usage,
            "archived_path": self.archived_path,
            "content_hash": self.content_hash,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True)
class InsertResult:
    job_id: int
    created: bool  # False: deduplicated onto an existing job


@dataclass(frozen=True)
class Event:
    id: int
    job_id: int | None
    at: float
    kind: str
    message: str
    data: dict[str, Any]


class StoreError(Exception):
    pass


class JobSpawner(Protocol):
    """Lets an engine turn one job into several (a dataset ZIP becomes one job per image)."""

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> list[InsertResult]:
        """Insert jobs in one transaction; a job whose content is already known is deduplicated
        (`created=False`). Raises `sqlite3.Error` (or the store's driver error) when the store fails."""
        ...

    async def get(self, job_id: int) -> Job | None:
        """One job by id, or None when it was removed."""
        ...


class TaskRegistry(Protocol):
    """Lets an engine see the other jobs of its engine (remote tasks in flight, names taken) and
    leave notes in a job's history (`dropflow job N`)."""

    async def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        engine: str | None = None,
        batch: str | None = None,
        limit: int | None = None,
        after_id: int | None = None,
        newest_first: bool = False,
    ) -> list[Job]:
        """Jobs matching every filter given, oldest first unless `newest_first`."""
        ...

    async def add_event(
        self, job_id: int | None, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        """Append an event to a job's history (or the daemon's, with no job)."""
        ...
