"""Jobs as the store keeps them, the store's interface, and the narrow views of it that engines are lent.

The values here (`Job`, `NewJob`, `Event` ...) are what every store implementation returns.
`JobStore` is the whole interface the daemon runtime, the CLI and the TUI rely on. The narrow
protocols are what `JobContext` hands an engine instead of the store itself: an engine can
spawn jobs (`JobSpawner`) and see its engine's other jobs (`TaskRegistry`), nothing more.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

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
class ActiveInput:
    """The inputs of a job that still needs them where they are, with what its unit held then."""

    input_paths: tuple[str, ...]  # the unit first, then the files that belong to it
    content_hash: str  # the unit's hash when the job was registered (`files.unit_hash`)
    created_at: float  # when it was registered: a unit not changed since holds that content still


@dataclass(frozen=True)
class Event:
    id: int
    job_id: int | None
    at: float
    kind: str
    message: str
    data: dict[str, Any]


Role = Literal["engine", "route"]  # what a daemon's role limits its claims by (`--engines`, `--routes`)


class StoreError(Exception):
    pass


class StoreUnavailable(StoreError):
    """The store's server cannot be reached or refused the statement for now (PostgreSQL down, the
    network gone, a deadlock)."""


# A store that does not answer for now, whichever it is: SQLite locked past its busy timeout or the
# disk full, PostgreSQL out of reach. The runtime waits these out; any other error is a bug.
STORE_DOWN: tuple[type[Exception], ...] = (sqlite3.OperationalError, StoreUnavailable)


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


class JobStore(JobSpawner, TaskRegistry, Protocol):
    """The job store as the daemon runtime, the CLI and the TUI use it (implemented on SQLite and on
    PostgreSQL by `dropflow.daemon.core.store.Store`).

    Every method raises the store's driver error (`sqlite3.Error`: the database is locked past its
    busy timeout, the disk is full ...; `StoreUnavailable` when PostgreSQL cannot be reached, or
    psycopg's own error for a refused statement) when the database fails; a docstring names any other.
    The runner's writes take the lease owner and change nothing once another owner holds the job:
    they return False, or raise `StoreError` where going on without the write would be wrong.
    The request methods answer with an outcome word instead of raising. `Store`'s other public
    methods (`migrate`, `schema_version`, `counts`, `live_daemons`, `get_setting`, `set_setting`)
    are its own, used by tests, benches and its other methods.
    """

    # --- jobs -----------------------------------------------------------------------------------

    async def active_units(self, paths: Sequence[str]) -> set[str]:
        """Those of `paths` that are the unit of an unfinished job (its engine may be changing it)."""
        ...

    async def active_inputs(self) -> list[ActiveInput]:
        """The inputs of the jobs that still need their files where they are (not succeeded or
        cancelled), each job's with its content hash and creation time."""
        ...

    # --- claims and the runner's writes -----------------------------------------------------------

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
        """Lease up to `slots` due jobs to `owner`, highest priority first, within each engine's slots
        (and of the engines / routes `only` lists, when it lists them)."""
        ...

    async def renew_leases(self, owner: str, lease_seconds: float, job_ids: Iterable[int]) -> None:
        """Extend `owner`'s leases on `job_ids` (only those) and its daemon heartbeat."""
        ...

    async def controls(self, owner: str) -> dict[int, str | None]:
        """The pending request (`cancel`, `pause` or None) of each job `owner` is running."""
        ...

    async def reclaim(self, *, owner: str, keep: Iterable[int] = ()) -> list[int]:
        """Queue again the running jobs (bar `keep`) whose lease expired or whose owner died; their ids."""
        ...

    async def set_progress(self, job_id: int, owner: str, progress: float, message: str) -> bool:
        """Record progress (clamped to 0..1); False when `owner` no longer holds the job."""
        ...

    async def set_plan(
        self, job_id: int, owner: str, params: dict[str, Any], provider: str | None
    ) -> int | None:
        """Replace a running job's params and provider; returns the id of another job with this
        content and these params instead (nothing changed). Raises `StoreError` when `owner` lost the job."""
        ...

    async def save_checkpoint(
        self, job_id: int, owner: str, checkpoint: dict[str, Any], *, remote_task_id: str | None = None
    ) -> None:
        """Durably record engine state (and a remote task id). Raises `StoreError` when `owner` lost it."""
        ...

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
        """Finish a job with its outputs and usage; False when `owner` no longer holds it."""
        ...

    async def set_archived(self, job_id: int, archived_path: str) -> None:
        """Record where a job's input was archived (after the job ended, so no lease is checked)."""
        ...

    async def fail(
        self,
        job_id: int,
        owner: str,
        error: dict[str, Any],
        *,
        retry_at: float | None,
        usage: dict[str, Any] | None = None,
    ) -> bool:
        """Record an error: `waiting` until `retry_at` (`failed` if None); False when `owner` lost it."""
        ...

    async def reschedule(
        self, job_id: int, owner: str, *, at: float, message: str, usage: dict[str, Any] | None = None
    ) -> bool:
        """Free the slot until `at`, giving the attempt back; False when `owner` no longer holds it."""
        ...

    async def release(
        self, job_id: int, owner: str, *, to: str = "queued", message: str = "released"
    ) -> bool:
        """Give a running job back unfinished, to status `to`, no attempt charged; False when lost."""
        ...

    async def finish_cancelled(self, job_id: int, owner: str, message: str) -> bool:
        """End a job whose cancel request its engine acted on; False when `owner` no longer holds it."""
        ...

    # --- requests from the CLI / TUI --------------------------------------------------------------

    async def cancel(self, job_id: int) -> str:
        """Cancel a job, or flag a running one. Returns cancelled | requested | noop | missing."""
        ...

    async def pause(self, job_id: int) -> str:
        """Hold a queued or waiting job or flag a running one: paused | requested | noop | missing."""
        ...

    async def resume(self, job_id: int) -> str:
        """Queue a paused job again, or withdraw a pause request. Returns resumed | noop | missing."""
        ...

    async def retry(self, job_id: int) -> str:
        """Queue a failed, cancelled or waiting job afresh. Returns queued | noop | missing."""
        ...

    async def set_priority(self, job_id: int, priority: int) -> str:
        """Set a job's priority (higher is claimed first). Returns ok | missing."""
        ...

    async def remove(self, job_id: int) -> str:
        """Delete a job's record, not its files. Returns removed | running | missing."""
        ...

    async def requeue_failed(
        self, job_id: int, input_path: str, input_paths: list[str] | None = None
    ) -> None:
        """Queue a failed or cancelled job again from a new copy of its input (dropped again)."""
        ...

    async def paused_engines(self) -> tuple[bool, set[str]]:
        """Whether every engine is held, and the names of the engines held one by one."""
        ...

    async def pause_engine(self, engine: str | None, paused: bool) -> None:
        """Hold (or release) every job of one engine, or of all engines when `engine` is None."""
        ...

    # --- events and daemons -----------------------------------------------------------------------

    async def events(self, job_id: int | None = None, *, limit: int = 200) -> list[Event]:
        """The latest `limit` events of one job (or of all), oldest first."""
        ...

    async def register_daemon(self, owner: str, version: str) -> None:
        """Record a daemon's start. Raises `ValueError` for an owner not made by `owner_id`."""
        ...

    async def stop_daemon(self, owner: str) -> None:
        """Record a daemon's clean stop."""
        ...

    async def data_version(self) -> int:
        """A number that changes whenever another connection commits: a cheap change poll."""
        ...

    async def wait_for_change(self, within: float, *, poll: float = 0.25) -> bool:
        """Wait up to `within` seconds for a commit since the last call (the first call only sets
        the mark); True when there was one. PostgreSQL is told (LISTEN/NOTIFY); SQLite is looked
        at every `poll` seconds."""
        ...
