"""What a job submits, fixed once: the unit read and kept, checked against its model, its prompts cut
to what the model reads, its first frame prepared.

A job is the content it was made from. Its unit is read once and kept in the checkpoint from the
first submission on, so a retry (after a FAILED task, an unresolved submission ...) submits that
content again, never a file edited since: an edited file has a new content hash and is a job of
its own (the watcher makes it), and running it here as well would pay for it twice. A job that
never got as far as submitting reads its files afresh on a retry, but only while they still hold
the content the job was made from (its content hash); otherwise it fails and names the new job.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.daemon.core.jobs import Job
from dropflow.engine import files
from dropflow.engine.errors import InputError
from dropflow.engine.files import unit_hash  # the one definition, shared with intake and submit
from dropflow.engine.providers.base import VideoGenRequest
from dropflow.engine.videogen.catalog import catalog_for
from dropflow.engine.videogen.image import PreparedImage, job_image_dir, prepare_image
from dropflow.engine.videogen.job import REMOTE_PREFIXES, VideoSpec, read_spec
from dropflow.engine.videogen.models import ImageLimits, Origin, Trimmed
from dropflow.engine.videogen.params import build_request

if TYPE_CHECKING:
    from dropflow.engine.videogen.run import Run

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Plan:
    spec: VideoSpec
    request: VideoGenRequest  # explicit and checked; `image` / `last_image` are the job's prepared copies
    image: PreparedImage | None
    last_image: PreparedImage | None
    cuts: tuple[Trimmed, ...]
    warnings: tuple[str, ...]  # for the user, once per job (see `Run.warn_once`)


async def make_plan(run: Run) -> Plan:
    """Raises InputError: an unreadable or edited unit, a request its model does not take, an image
    that cannot be made fit."""
    spec = await _spec(run)
    catalog = catalog_for(run.provider.model_family)
    request = build_request(spec, run.p, catalog)
    warnings: list[str] = []
    if not catalog.known(request.model):
        warnings.append(catalog.unknown_warning(request.model))
    given = frozenset(k for k in _UNIT_KEYS if getattr(spec, k, None) is not None)
    request, cuts = catalog.check(request, Origin(spec.job_file or run.name, given))
    for cut in cuts:
        words = "prompt" if cut.field == "prompt" else "negative prompt"
        warnings.append(
            f"the {words} is {cut.length:,} characters; {request.model} reads the first {cut.limit:,} "
            "and the service drops the rest without an error, so dropflow sent only those "
            "(the record's actual_prompt shows the text used)"
        )
    limits = catalog.image_limits(request.model)
    image = last = None
    if request.image and not request.image.startswith(REMOTE_PREFIXES):
        image = await _image(run, Path(request.image), limits, request.model)
        request = replace(request, image=image.path)
    if request.last_image and not request.last_image.startswith(REMOTE_PREFIXES):
        last = await _image(run, Path(request.last_image), limits, request.model, key="last_image")
        request = replace(request, last_image=last.path)
    return Plan(spec, request, image, last, tuple(cuts), tuple(warnings))


# what a unit may set; an error about one of them names the unit, else the route's params
_UNIT_KEYS = (
    "size",
    "resolution",
    "duration",
    "ratio",
    "negative_prompt",
    "prompt_extend",
    "camera_fixed",
    "watermark",
    "last_image",
)


# --- the unit, read once ------------------------------------------------------------------------------


async def _spec(run: Run) -> VideoSpec:
    kept = run.cp.get("spec")
    if isinstance(kept, dict):
        return VideoSpec(**kept)
    inputs = [Path(p) for p in run.job.input_paths]
    if await asyncio.to_thread(unit_changed, run.job):
        raise await _edited(run)
    spec = await asyncio.to_thread(read_spec, inputs, default_prompt=run.p.default_prompt)
    if await asyncio.to_thread(unit_changed, run.job):  # edited while it was being read
        raise await _edited(run)
    return spec


def unit_changed(job: Job) -> bool:
    """True when the job's files no longer hold the content it was made from. Blocking.

    Jobs whose hash is not a plain digest (a link, an unreadable file) are never "changed"; for
    a job `dropflow submit` queued before it hashed the whole unit (the primary file alone), the
    primary's hash counts too.
    """
    if not _DIGEST.match(job.content_hash):
        return False
    paths = [Path(p) for p in job.input_paths] or [Path(job.input_path)]
    try:
        current = unit_hash(paths)
        primary = files.content_hash(paths[0]) if len(paths) > 1 else current
    except OSError:
        return False  # gone or unreadable: reading the unit says so
    return job.content_hash not in (current, primary)


async def _edited(run: Run) -> InputError:
    newer = ""
    store = run.ctx.tasks
    if store is not None:
        jobs = await store.list(engine=run.job.engine)
        later = [j.id for j in jobs if j.input_path == run.job.input_path and j.id > run.job.id]
        if later:
            newer = f" (job {later[-1]})"
    return InputError(
        f"{run.name} was edited after job {run.job.id} was made from it: an edited file is a new "
        f"job{newer}, so this one does not run it (nothing was submitted)",
        hint="follow the new job in `dropflow jobs --engine video-gen`; if none appears (the daemon "
        f"was stopped while {run.name} was edited), touch the file or drop it again",
    )


# --- the first frame, prepared once -------------------------------------------------------------------


async def _image(
    run: Run, source: Path, limits: ImageLimits, model: str, *, key: str = "image"
) -> PreparedImage:
    """The job's copy of its first (`key` "image") or last ("last_image") frame: the one kept
    from an earlier run, else made now."""
    kept = run.cp.get(key)
    earlier = PreparedImage.from_dict(kept) if isinstance(kept, dict) else None
    if earlier is None and any(source.is_relative_to(r) for r in run.ctx.read_roots):  # source is absolute
        # a job file may name an image anywhere (documented), but one in the inbox that is a link
        # out of it is not read
        run.ctx.check_readable(source, what="image")
    return await asyncio.to_thread(
        _prepare_cached, earlier, source, run.ctx.state_dir, run.job.id, limits, model
    )


def _prepare_cached(
    earlier: PreparedImage | None, source: Path, state_dir: Path, job_id: int, limits: ImageLimits, model: str
) -> PreparedImage:
    """The copy an earlier submission of this job sent, if it is still there; else `prepare_image`,
    kept under the job's state folder by the source's hash and the limits, so a job that waits for
    a task slot after preparing does not decode the photo again. Blocking."""
    if earlier is not None and Path(earlier.path).is_file():
        return earlier
    if not source.is_file():
        raise InputError(
            f"the image {source.name} does not exist any more ({source})",
            hint="drop the image again, next to its prompt or job file",
        )
    key = hashlib.sha256(
        (files.file_hash(source) + json.dumps(asdict(limits), sort_keys=True)).encode()
    ).hexdigest()[:16]
    folder = job_image_dir(state_dir, job_id) / key
    meta = folder / "prepared.json"
    try:
        data: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
        prepared = PreparedImage.from_dict(data)
        if Path(prepared.path).is_file():
            return prepared
    except (OSError, ValueError, TypeError, KeyError):
        pass
    prepared = prepare_image(source, folder, limits, model)
    files.write_json(meta, prepared.as_dict())
    return prepared
