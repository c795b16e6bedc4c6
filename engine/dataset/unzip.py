"""A ZIP dropped into a dataset folder: unpacked safely into the daemon's state folder, once and
all or nothing, and each image in it queued as an item job of its own through `ctx.spawner`.

The staged images are our own copies (the ZIP itself is archived): an item job from a ZIP has
`source == ZIP_SOURCE` and deletes its staged image when it is done.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from dropflow.engine import files
from dropflow.engine.base import Done, JobContext
from dropflow.engine.errors import ConfigError, InputError
from dropflow.engine.media import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job

ZIP_SOURCE = "zip"  # jobs.source of an image queued from a ZIP (its input is our own staged copy)
UNZIP_DIR = "dataset-unzipped"  # under paths.state


def source_name(job: Job, state_dir: Path) -> str:
    """What the user dropped, for messages: the file name, or `archive.zip:member` for ZIP items."""
    path = Path(job.input_path)
    if job.source == ZIP_SOURCE:
        try:
            rel = path.relative_to(state_dir / UNZIP_DIR)
        except ValueError:
            return path.name
        if len(rel.parts) >= 2:
            stem = rel.parts[0].rsplit("-", 1)[0]
            return f"{stem}.zip:{Path(*rel.parts[1:]).as_posix()}"
    return path.name


async def unpack(job: Job, ctx: JobContext, *, engine: str) -> Done:
    """Unpack safely and queue each image as an item job of the dataset, for `engine`.

    Raises InputError (unsafe or unreadable ZIP, no images), ConfigError (no job store).
    """
    from dropflow.daemon.core.jobs import NewJob

    store = ctx.spawner
    if store is None:
        raise ConfigError(
            "unpacking a ZIP needs the daemon's job store",
            hint="drop the ZIP into the inbox of a running daemon",
        )
    archive = Path(job.input_path)
    name = job.batch or archive.stem
    staging = ctx.state_dir / UNZIP_DIR / f"{archive.stem}-{job.content_hash[:12]}"
    await ctx.progress(0.1, f"unpacking {archive.name}")
    images = await asyncio.to_thread(extract, archive, staging)
    if not images:
        raise InputError(
            f"{archive.name} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})",
            hint="put the images into the ZIP, or drop them into the dataset folder directly",
        )
    hashes = await asyncio.to_thread(lambda: [files.content_hash(m) for m in images])
    results = await store.insert_jobs(
        [
            NewJob(
                engine=engine,
                route=job.route,
                input_path=str(member),
                input_paths=[str(member)],
                content_hash=digest,
                batch=name,
                source=ZIP_SOURCE,
                provider=job.provider,
                params=job.params,
                priority=job.priority,
                max_attempts=job.max_attempts,
            )
            for member, digest in zip(images, hashes, strict=True)
        ]
    )
    created = 0
    for member, res in zip(images, results, strict=True):
        if res.created:
            created += 1
            continue
        existing = await store.get(res.job_id)
        if existing is not None and existing.status == "succeeded":
            # already in the dataset: this staged copy will never be read
            await asyncio.to_thread(drop_staged, member, ctx.state_dir / UNZIP_DIR)
    return Done(
        [],
        message=f"{len(images)} image(s) from {archive.name}: {created} queued into dataset {name!r}, "
        f"{len(images) - created} already there",
    )


def extract(archive: Path, dest: Path) -> list[Path]:
    """Unpack the images of `archive` into `dest` once (all or nothing); the staged files. Blocking.

    A crash mid-unpack leaves only `<dest>.partial`, redone next time; a finished unpack is
    reused as it is (some files may already be gone: their items finished).
    """
    from dropflow.engine.media import safe_unzip

    if not dest.is_dir():
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            safe_unzip(archive, partial, only=IMAGE_EXTENSIONS)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.mkdir(parents=True, exist_ok=True)
        os.replace(partial, dest)
    return sorted(p for p in dest.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def drop_staged(path: Path, root: Path) -> None:
    """Delete a staged ZIP member (our own copy; the ZIP itself is archived) and empty folders."""
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
