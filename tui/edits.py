"""Queue edits: each one is a store request method (a short `BEGIN IMMEDIATE` transaction), so it
goes in whether or not the daemon runs; a running job gets a control flag the daemon applies
within a scheduler tick. This module only chooses the method and words the outcome."""

from __future__ import annotations

from dataclasses import dataclass

from dropflow.daemon.core.store import Store

ACTIONS = ("pause", "resume", "toggle-pause", "cancel", "retry", "remove", "priority-up", "priority-down")


@dataclass(frozen=True)
class EditResult:
    action: str
    job_id: int
    outcome: str  # the store's answer: cancelled | requested | noop | missing | ...
    message: str

    @property
    def ok(self) -> bool:
        return self.outcome not in ("noop", "missing", "running")


async def apply_edit(store: Store, action: str, job_id: int) -> EditResult:
    """Run one edit on one job.

    Raises: ValueError for an unknown action; sqlite3 errors (e.g. the database is locked for
    longer than its busy timeout) pass through to the worker's error handler.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown edit {action!r}")
    if action == "toggle-pause":
        job = await store.get(job_id)
        if job is None:
            return EditResult(action, job_id, "missing", f"job {job_id} is gone")
        paused = job.status == "paused" or (job.status == "running" and job.control == "pause")
        action = "resume" if paused else "pause"
    if action in ("priority-up", "priority-down"):
        job = await store.get(job_id)
        if job is None:
            return EditResult(action, job_id, "missing", f"job {job_id} is gone")
        priority = job.priority + (1 if action == "priority-up" else -1)
        outcome = await store.set_priority(job_id, priority)
        return EditResult(action, job_id, outcome, f"job {job_id}: priority {priority}")
    outcome = await getattr(store, action)(job_id)
    return EditResult(action, job_id, outcome, _words(action, job_id, outcome))


def _words(action: str, job_id: int, outcome: str) -> str:
    if outcome == "missing":
        return f"job {job_id} is gone"
    if outcome == "noop":
        return f"job {job_id}: nothing to {action} in its current state"
    if outcome == "running":
        return f"job {job_id} is running: cancel it first, then remove it"
    if outcome == "requested":
        return f"job {job_id}: {action} requested; the daemon applies it within a second"
    return f"job {job_id}: {outcome}"
