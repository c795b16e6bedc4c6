"""Intake: settled units become jobs (hash, dedupe, one batched insert), and inputs are put away.

Input housekeeping lives here too, because it is the other half of the same promise: nothing a
user dropped is deleted. A processed input is moved to the archive; a failed one stays where it
was with a `<name>.error.txt` beside it; a duplicate of finished work is archived as such.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from dropflow.daemon.core.config import Config
from dropflow.daemon.core.jobs import Job, NewJob
from dropflow.daemon.core.store import Store
from dropflow.daemon.router import Router
from dropflow.daemon.watcher import Ready
from dropflow.engine import files
from dropflow.engine.errors import InputError, error_payload
from dropflow.engine.files import error_sidecar

log = logging.getLogger("dropflow.intake")


class Intake:
    def __init__(
        self, cfg: Config, store: Store, router: Router, on_new: Callable[[], None] | None = None
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.router = router
        self.on_new = on_new or (lambda: None)

    async def accept(self, ready: list[Ready]) -> list[int]:
        """Turn settled units into jobs in one transaction; returns the ids of new jobs."""
        plans = [
            p
            for p in self.router.plan_many([(route, unit) for route, unit, _sig, _h in ready])
            if p is not None
        ]
        # A folder whose job is not finished is its engine's to change (cluster moves photos out
        # of it): what the watcher sees meanwhile is not a new drop. Photos added to it then are
        # picked up once the job is done (`Watcher.forget`).
        folders = [str(p.path) for p in plans if p.folder]
        busy = await self.store.active_units(folders) if folders else set()
        plans = [p for p in plans if str(p.path) not in busy]
        if not plans:
            return []
        known = {unit: digest for _r, unit, _s, digest in ready if digest is not None}
        for plan in plans:
            if plan.linked_out:  # never read: a unique key, so each drop of it fails on its own
                known[plan.path] = f"link:{plan.path}:{time.time_ns()}"
        todo = [
            p
            for plan in plans
            if not plan.linked_out
            for p in [plan.path, *plan.inputs[1:]]
            if p not in known
        ]
        hashes: dict[Path, str | OSError] = dict(known)
        hashes.update(await asyncio.to_thread(_hash_all, todo))
        new_jobs = []
        for plan in plans:
            digest = hashes.get(plan.path)
            if digest is None:  # vanished or unreadable between settle and hash
                continue
            # the hash `dropflow submit` gives the same unit (`files.unit_hash`), from the hashes
            # known or taken above; a sidecar gone or unreadable since the plan is left out of it
            extra = [h for h in (hashes.get(p) for p in plan.inputs[1:]) if isinstance(h, str)]
            if isinstance(digest, str) and extra:
                digest = files.combine_hashes([digest, *extra])
            error = plan.error
            if isinstance(digest, OSError):
                error = InputError(
                    f"cannot read {plan.path}: {digest.strerror}", hint="check the file's permissions"
                )
                digest = f"unreadable:{plan.path}:{time.time_ns()}"
            new_jobs.append(
                NewJob(
                    engine=plan.engine,
                    route=plan.route.name,
                    input_path=str(plan.path),
                    input_paths=[str(p) for p in plan.inputs],
                    content_hash=str(digest),
                    batch=plan.batch,
                    provider=plan.provider,
                    params=plan.params,
                    priority=plan.priority,
                    max_attempts=plan.max_attempts,
                    status="failed" if error else "queued",
                    error=error_payload(error) if error else None,
                )
            )
        results = await self.store.insert_jobs(new_jobs)
        created = []
        for nj, res in zip(new_jobs, results, strict=True):
            if res.created:
                created.append(res.job_id)
                if nj.status == "failed" and nj.error:
                    write_error_sidecar(Path(nj.input_path), nj.error, res.job_id)
                    log.error("job %d failed at intake: %s", res.job_id, nj.error["message"])
                continue
            await self._duplicate(res.job_id, nj)
        if created:
            log.info("%d new job(s) registered", len(created))
            self.on_new()
        return created

    async def _duplicate(self, existing_id: int, nj: NewJob) -> None:
        existing = await self.store.get(existing_id)
        if existing is None:
            return
        path = Path(nj.input_path)
        if existing.status in ("failed", "cancelled"):
            if existing.input_path != nj.input_path or not error_sidecar(path).exists():
                await self.store.requeue_failed(existing_id, nj.input_path, nj.input_paths)
                self.on_new()
            return
        if existing.input_path == nj.input_path:
            if existing.status == "succeeded" and existing.source == "inbox" and existing.archived_path != "":
                # finished, but the daemon stopped before it archived the input: finish that now
                archived = await asyncio.to_thread(self.archive_inputs, existing)
                if archived:
                    await self.store.set_archived(existing_id, archived)
            return
        if existing.status == "succeeded":
            folder = self.cfg.paths.archive / nj.route / "duplicates" / time.strftime("%Y-%m-%d")
            dest = await asyncio.to_thread(files.move, path, folder)
            rest = [Path(p) for p in nj.input_paths[1:]]  # the rest of a multi-file unit goes with it
            await asyncio.to_thread(lambda: [files.move(p, folder) for p in rest if p.exists()])
            msg = f"the same content was dropped again as {path}; moved to {dest}, not processed twice"
        else:
            msg = f"the same content was dropped again as {path} while this job is {existing.status}; left in place"
        log.info("job %d: %s", existing_id, msg)
        await self.store.add_event(existing_id, "note", msg)

    def archive_inputs(self, job: Job) -> str | None:
        """Move a finished job's inputs out of the inbox (blocking). Returns the primary's new path,
        None when nothing was moved.

        Only while they hold the job's content: a file replaced under the same name since (new
        content, maybe queued as a newer job) stays for that job, with the reason in the log. Stats
        decide for inputs not changed since the job was registered; only changed ones are hashed.
        """
        sources = [Path(raw) for raw in job.input_paths if Path(raw).exists()]
        if sources and files.changed_since(sources, job.created_at):
            # a file of the unit gone (archived by a run cut short) leaves nothing to compare it with
            if len(sources) != len(job.input_paths) or not files.same_content(sources, job.content_hash):
                log.warning(
                    "job %d: %s no longer holds the content this job processed (replaced since it was"
                    " queued); left in place for the job that has it",
                    job.id,
                    job.input_path,
                )
                return None
        dest_dir = self.cfg.paths.archive / job.route / time.strftime("%Y-%m-%d")
        if job.batch:
            dest_dir = dest_dir / job.batch
        primary = None
        for src in sources:
            dest = files.move(src, dest_dir)
            primary = primary or str(dest)
            sidecar = error_sidecar(src)
            if sidecar.exists():
                sidecar.unlink()
        return primary


def write_error_sidecar(path: Path, error: dict[str, object], job_id: int) -> None:
    """Leave the reason beside a failed input, where the user dropped it."""
    if not path.parent.exists():
        return
    text = f"dropflow could not process {path.name}\n\nerror ({error.get('kind')}): {error.get('message')}\n"
    if error.get("hint"):
        text += f"fix: {error.get('hint')}\n"
    text += f"\nThis was job {job_id}. Retry with `dropflow retry {job_id}`, or drop the file again.\n"
    try:
        files.write_text(error_sidecar(path), text)
    except OSError as exc:  # a read-only inbox must not take the daemon down
        log.warning("cannot write %s: %s", error_sidecar(path), exc)


def clear_error_sidecar(path: Path) -> None:
    try:
        error_sidecar(path).unlink()
    except FileNotFoundError:
        pass


def _hash_all(paths: list[Path]) -> dict[Path, str | OSError]:
    out: dict[Path, str | OSError] = {}
    for p in paths:
        try:
            out[p] = files.content_hash(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            out[p] = exc
    return out
