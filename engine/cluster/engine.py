"""The cluster engine: photo folders and ZIPs dropped into inbox/cluster/ are sorted per person.

One job per unit (a folder, with every image below it, or a `.zip`), in four steps:

1. detect: every photo goes through InsightFace (`faces`); results are saved in chunk files under
   the state folder as they come, so a restart continues where it stopped;
2. plan: faces join the batch's known persons when close to a person's mean (later runs), the rest
   are clustered (`clustering`, HDBSCAN); each photo gets its destinations (one person: moved;
   several: copied into each; none: `unsorted/`; no face: `no_faces/`; unreadable: `unreadable/`).
   Persons, faces and destinations are committed in one transaction before any file moves;
3. distribute: the journal is replayed idempotently: a destination that exists is done, a source
   is removed only once all of its destinations exist (hard link or copy, then unlink), so a
   SIGKILL at any point loses and duplicates nothing;
4. finish: contact sheets, `clusters.json` (every photo of every run of the batch), emptied source
   folders removed, the unpacked ZIP and the chunk files deleted.

Results go to outputs/cluster/<batch>/; the batch is the folder's name (or the ZIP's stem), or
`params.into` to add photos to an existing batch.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from dropflow.engine.base import Done, JobContext
from dropflow.engine.cluster.collect import Detections, Source, collect, has_photo
from dropflow.engine.cluster.distribute import detect_renames, distribute, remove_emptied, write_markers
from dropflow.engine.cluster.params import DEFAULT_EXCLUDED, SHEETS, ClusterParams, batch_name
from dropflow.engine.cluster.plan import make_plan
from dropflow.engine.cluster.report import refresh_batch
from dropflow.engine.errors import ConfigError, JobCancelled

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job
    from dropflow.daemon.core.persons import JournalEntry, PersonsRepository
    from dropflow.engine.cluster.faces import DetectOptions, ModelCache

log = logging.getLogger("dropflow.engine.cluster.engine")

DETECTIONS, UNZIPPED = "detections", "unzipped"  # in the job's folder under the state folder
DETECT_CHUNK = 16  # photos per detection step (saved, then progress and cancel checks)
MOVE_CHUNK = 200  # journal entries per distribution step


def _detect_chunk(
    model: Any,
    items: list[tuple[str, Path]],
    options: DetectOptions,
    store: Detections,
    number: int,
    should_stop: Any,
    check: Callable[[Path], None],
) -> int:
    """One detection step (blocking): detect `items`, save them as chunk `number`; returns how many."""
    from dropflow.engine.cluster.faces import detect_photos

    results = list(detect_photos(model, items, options, should_stop, check))
    store.save(number, results)
    return len(results)


# --- the engine -------------------------------------------------------------------------------------


class ClusterEngine:
    name: ClassVar[str] = "cluster"
    unit: ClassVar[Literal["file", "folder"]] = "folder"
    extensions: ClassVar[frozenset[str]] = frozenset({".zip"})
    Params: ClassVar[type[ClusterParams]] = ClusterParams
    supports_cancel: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = True

    def __init__(self) -> None:
        # shared by every job of the daemon (the router keeps one engine instance)
        self._models: ModelCache | None = None  # created on first use: faces loads onnxruntime
        self._batch_locks: dict[str, asyncio.Lock] = {}  # jobs of one batch plan and file one at a time
        self._warm: Future[None] | None = None

    def inputs_for(self, path: Path) -> list[Path] | None:
        """A unit: a `.zip` directly in the route folder, or a folder with a photo below it.

        What a run leaves in a dropped folder (non-photos, `dropflow.yaml`, excluded folders) is
        no new drop: it stays where it is and starts no job. Cheap: the walk stops at the first
        photo. Only the default `exclude_folders` are known here (params are per job).
        """
        if path.is_dir():
            if path.name.casefold() in {e.casefold() for e in DEFAULT_EXCLUDED}:
                return None
            return [path] if has_photo(path) else None
        return [path] if path.suffix.lower() == ".zip" else None

    async def run(self, job: Job, ctx: JobContext) -> Done:
        params = ClusterParams.model_validate(job.params)
        repo = ctx.persons
        if repo is None:
            raise ConfigError("the cluster engine needs the daemon's store", hint="run it through the daemon")
        batch = batch_name(job.batch, job.input_path, params.into)
        batch_dir = ctx.output_dir / batch
        unit = Path(job.input_path)
        if unit.name.casefold() in {e.casefold() for e in params.exclude_folders}:
            return Done([], message=f"{unit.name} is an excluded folder: left as it is", archive_input=False)
        warm = self._warm_clustering()
        source = None
        if await repo.phase(job.id) is None:
            try:
                source = await self._detect(job, ctx, params)
            except JobCancelled:
                if ctx.cancel_reason == "cancel":  # a pause keeps the results so far for the resume
                    await asyncio.to_thread(shutil.rmtree, self._workdir(ctx, job), True)
                raise
            except BaseException:
                # a failed job keeps its input where it was dropped: the unpacked copy can go
                await asyncio.to_thread(shutil.rmtree, self._workdir(ctx, job) / UNZIPPED, True)
                raise
            if source is None:
                await asyncio.to_thread(shutil.rmtree, self._workdir(ctx, job), True)
                # an empty folder stays (it may be about to be filled); a ZIP without photos is archived
                return Done([], message="nothing to cluster: no photos", archive_input=_is_zip(unit))
            await ctx.progress(0.86, "clustering")
        # one job of a batch at a time from here: its persons, file names and folders
        async with self._batch_locks.setdefault(batch, asyncio.Lock()):
            if source is not None and await repo.phase(job.id) is None:
                await self._plan(job, ctx, repo, params, batch, batch_dir, source, warm)
            if await repo.phase(job.id) == "distribute":
                await self._distribute(job, ctx, repo, batch, batch_dir, _photo_check(ctx))
            return await self._finish(job, ctx, repo, batch, batch_dir, params)

    def _warm_clustering(self) -> Future[None]:
        """Load the clustering kernels once per daemon, in the background, while faces are detected."""
        fut = self._warm
        if fut is None or (fut.done() and fut.exception() is not None):
            from dropflow.engine.cluster import clustering

            pool = ThreadPoolExecutor(1, thread_name_prefix="dropflow-warm")
            fut = self._warm = pool.submit(clustering.warm_up)
            pool.shutdown(wait=False)
        return fut

    def _workdir(self, ctx: JobContext, job: Job) -> Path:
        """The job's own folder under the state folder: detection chunks, the unpacked ZIP."""
        return ctx.state_dir / "cluster" / f"job-{job.id}"

    async def _detect(self, job: Job, ctx: JobContext, params: ClusterParams) -> Source | None:
        """Collect the unit's photos and analyse those not done before a restart."""
        from dropflow.engine.cluster.faces import DetectOptions, ModelCache, default_root, get_model

        unit = Path(job.input_path)
        store = Detections(self._workdir(ctx, job) / DETECTIONS)
        done = await asyncio.to_thread(store.load)
        if _is_zip(unit):
            await ctx.progress(0.0, "unpacking")
        check = _photo_check(ctx)
        source = await asyncio.to_thread(
            collect, unit, self._workdir(ctx, job) / UNZIPPED, params.exclude_folders, check
        )
        if not source.photos:
            return None  # nothing is removed: an empty folder may be one the user is about to fill
        todo = [(k, p) for k, p in source.photos if k not in done]
        if todo:
            if self._models is None:
                self._models = ModelCache()
            model = await get_model(
                self._models,
                _model_root(params, default_root),
                params.model_pack,
                device=params.device,
                download=params.download_models,
            )
            if model.fallback:  # every job that asked for the GPU is told, not just the first
                await ctx.warn(model.fallback)
            options = DetectOptions(
                params.det_size, params.det_threshold, params.min_face_size, params.max_pixels
            )
            number = await asyncio.to_thread(store.next_chunk)
            total, finished = len(source.photos), len(source.photos) - len(todo)
            for s in range(0, len(todo), DETECT_CHUNK):
                ctx.check_cancelled()
                part = todo[s : s + DETECT_CHUNK]
                finished += await asyncio.to_thread(
                    _detect_chunk, model, part, options, store, number, lambda: ctx.cancelled, check
                )
                number += 1
                await ctx.progress(0.85 * finished / total, f"faces: {finished}/{total} photos")
        return source

    async def _plan(
        self,
        job: Job,
        ctx: JobContext,
        repo: PersonsRepository,
        params: ClusterParams,
        batch: str,
        batch_dir: Path,
        source: Source,
        warm: Any,
    ) -> None:
        """Decide who is who and where each photo goes; commit it all in one transaction."""
        known = await repo.persons(batch)
        renamed, refused = await asyncio.to_thread(detect_renames, known, batch_dir)
        for problem in refused:
            await ctx.warn(problem)
        for pid, name in renamed.items():
            await repo.rename(pid, name)
            log.info("batch %s: person %d now lives in %s (renamed by hand)", batch, pid, name)
        known = await repo.persons(batch)
        await asyncio.wrap_future(warm)
        results = await asyncio.to_thread(Detections(self._workdir(ctx, job) / DETECTIONS).load)
        # photos that another job of this batch filed while this one was detecting are its own
        present = await asyncio.to_thread(lambda: [(k, p) for k, p in source.photos if p.exists()])
        if len(present) < len(source.photos):
            await ctx.warn(
                f"{len(source.photos) - len(present)} photo(s) of {source.root} were gone when they were to "
                "be filed (taken by another job of the batch, or moved away): they are not in this run"
            )
        source.photos = present
        next_seq = await repo.next_seq(batch)
        plan = await asyncio.to_thread(
            make_plan, job.id, batch, batch_dir, source, results, known, next_seq, params
        )
        plan.summary["input"] = job.input_path
        plan.summary["renamed"] = sorted(renamed)
        # a folder submitted in place keeps its photos: they are copied, not moved
        plan.summary["move"] = job.source == "inbox" or source.staging is not None
        plan.summary["staging"] = str(source.staging) if source.staging else None
        plan.summary["links"] = source.links  # removed with the emptied folders once filed
        await repo.commit(plan, params.sheet_faces)
        await ctx.save({"phase": "distribute", "batch": batch})

    async def _distribute(
        self,
        job: Job,
        ctx: JobContext,
        repo: PersonsRepository,
        batch: str,
        batch_dir: Path,
        check: Callable[[Path], None],
    ) -> None:
        entries = await repo.journal(job.id)
        move = bool((await repo.run_info(job.id)).get("summary", {}).get("move", True))
        persons = await repo.persons(batch)
        folders = _person_folders(entries)
        for p in persons:
            if p.folder in folders:
                await asyncio.to_thread((batch_dir / p.folder).mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(write_markers, [p for p in persons if p.folder in folders], batch_dir, batch)
        total = len(entries)
        problems: list[str] = []
        for s in range(0, total, MOVE_CHUNK):
            if ctx.cancelled:
                raise JobCancelled(
                    f"stopped during distribution after {s} of {total} photos; "
                    f"`dropflow retry {job.id}` (or resume) finishes it"
                )
            changes = await asyncio.to_thread(
                distribute, entries[s : s + MOVE_CHUNK], batch_dir, move=move, check=check
            )
            await repo.record_outcomes(changes)
            problems += [error for *_, error in changes if error]
            await ctx.progress(0.88 + 0.08 * min(total, s + MOVE_CHUNK) / total, "filing photos")
        if problems:
            await ctx.warn(
                f"{len(problems)} photo(s) could not be filed ({problems[0]}); clusters.json gives each reason"
            )

    async def _finish(
        self,
        job: Job,
        ctx: JobContext,
        repo: PersonsRepository,
        batch: str,
        batch_dir: Path,
        params: ClusterParams,
    ) -> Done:
        await ctx.progress(0.97, "contact sheets")
        info = await repo.run_info(job.id)
        persons = await repo.persons(batch)
        touched = _person_folders(await repo.journal(job.id))
        touched |= {p.folder for p in persons if p.id in set(info.get("summary", {}).get("renamed", []))}
        # finished before the report is written, so that clusters.json has this run's finished_at;
        # a stop before the report is harmless: a finished run's job comes back here on resume
        await repo.finish(job.id)
        out = await refresh_batch(repo, batch, batch_dir, touched, params.sheet_faces)
        sheets = batch_dir / SHEETS
        await asyncio.to_thread(self._cleanup, info, ctx, job, params)
        counts = info.get("summary", {}).get("counts", {})
        message = (
            f"{counts.get('photos', 0)} photos, {counts.get('faces', 0)} faces: {counts.get('new_persons', 0)} new "
            f"persons, {counts.get('joined', 0)} faces joined known ones; {counts.get('unsorted', 0)} unsorted, "
            f"{counts.get('no_faces', 0)} without faces, {counts.get('unreadable', 0)} unreadable"
        )
        return Done(
            [out, sheets / "overview.jpg"],
            usage={k: v for k, v in counts.items() if isinstance(v, int)},
            message=message,
            # a folder's photos were moved out of the inbox by the distribution; a ZIP is archived
            archive_input=_is_zip(Path(job.input_path)),
        )

    def _cleanup(self, info: dict[str, Any], ctx: JobContext, job: Job, params: ClusterParams) -> None:
        """After the distribution: the job's folder (chunks, unpacked ZIP) goes; a dropped folder
        goes too if the distribution emptied it."""
        root = Path(info["source"])
        if not info.get("summary", {}).get("staging") and root.is_dir() and job.source == "inbox":
            remove_emptied(root, params.exclude_folders, info.get("summary", {}).get("links", []))
        shutil.rmtree(self._workdir(ctx, job), ignore_errors=True)


def _photo_check(ctx: JobContext) -> Callable[[Path], None]:
    """Raises `InputError` for a photo that is a link out of what the job may read (any thread)."""
    return lambda path: ctx.check_readable(path, what="photo")


def _is_zip(unit: Path) -> bool:
    return unit.suffix.lower() == ".zip"


def _model_root(params: ClusterParams, default: Any) -> Path:
    return Path(params.model_root).expanduser() if params.model_root else Path(default())


def _person_folders(entries: Sequence[JournalEntry]) -> set[str]:
    return {d.split("/", 1)[0] for e in entries if e.status == "person" for d in e.dests}
