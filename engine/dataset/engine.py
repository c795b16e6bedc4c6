"""The dataset engine: images and videos dropped into inbox/dataset/<name>/ become a fine-tuning
dataset.

Each image or video is one job (a video is described from frames sampled by the shared
sampler and sent as one request, see `video`). The job asks the vision model to describe the
item (system prompt from prompts/, user prompt from params, or one of several chosen by the
content hash: `prompts`), checks the answer, stores the image or video and one record keyed by
its content hash in outputs/dataset/<name>/ (see `folder`), and has the dataset files
re-rendered from all records. A ZIP dropped into a dataset folder is unpacked safely and each
image in it is queued as a job of its own.

Exactly once, however often the daemon dies:
- the record of an item is named by its content hash, so it exists at most once; a job that finds
  its record already written (a crash after the write) does not call the model again;
- the record is written right after the model's answer (rejected answers and their cost go to
  the job's checkpoint as they come), so only a request in flight at a kill can be paid twice;
- the dataset files are rebuilt from every record and renamed into place: no reader sees half a
  line, and a render lost in a crash is redone by the next one;
- a row not yet rendered always has an unfinished job standing guard for it (see
  `RenderCoalescer`), which renders it after a restart: when every job of a dataset has
  finished, every row is in the files.

A video's answer also goes into the answer cache shared with the annotate engine
(`engine.answer_cache`, keyed by the frames, prompts, model and parameters): the same video asked
the same way is never paid for twice, whichever dataset or job asks, and a job that lost its record
(or its checkpoint) finds its answer there. Images keep to their record and checkpoint.

The parts around the `DatasetEngine` class here: `params` (what a dataset is configured with),
`images` (the image as sent and stored), `video` (the frames of a video as sent), `answers`
(the checks an answer passes), `unzip` (the ZIP path), `records`, `formats` and `summary` (the
files trainers read), `folder` (one dataset on disk) and `coalescer` (the coalescing of its
renders).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dropflow.engine.answer_cache import AnswerCache, request_key
from dropflow.engine.base import Done, FileEngine, JobContext, Wait
from dropflow.engine.dataset import prompts
from dropflow.engine.dataset.answers import check_answer
from dropflow.engine.dataset.coalescer import RENDER_WAIT, RenderCoalescer
from dropflow.engine.dataset.folder import DEFAULT_DATASET, DatasetFolder
from dropflow.engine.dataset.formats import RenderOptions
from dropflow.engine.dataset.images import (
    MB,
    PROVIDER_IMAGE_LIMITS,
    STORE_MAX_BYTES,
    ImageLimit,
    prepare_image,
)
from dropflow.engine.dataset.params import DEFAULT_MODELS, DatasetParams
from dropflow.engine.dataset.records import FailedItem, ItemRecord
from dropflow.engine.dataset.unzip import UNZIP_DIR, ZIP_SOURCE, drop_staged, source_name, unpack
from dropflow.engine.dataset.video import PreparedVideo, prepare_video
from dropflow.engine.errors import (
    ConfigError,
    DropflowError,
    ErrorKind,
    InputError,
    JobCancelled,
    PermanentError,
    RetryableError,
)
from dropflow.engine.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from dropflow.engine.providers import vision_limits
from dropflow.engine.providers.base import (
    ImagePart,
    ModelLimits,
    Part,
    TextPart,
    Usage,
    VideoPart,
    VisionProvider,
    VisionRequest,
)

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job

log = logging.getLogger("dropflow.engine.dataset.engine")

JSON_INSTRUCTION = "Answer with a single JSON object."
ANSWERS_DIR = "answers"  # under paths.state: the answer cache, shared with the annotate engine
# videos decoded at once: decoding is CPU work, and a dataset runs many jobs for the requests' sake
DECODE_SLOTS = max(1, (os.cpu_count() or 2) // 2)


class DatasetEngine(FileEngine):
    name: ClassVar[str] = "dataset"
    extensions: ClassVar[frozenset[str]] = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | {".zip"}
    Params = DatasetParams
    supports_cancel: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = True

    def __init__(self) -> None:
        # one engine instance per daemon (the router caches it): so is each dataset's coalescer
        self._coalescers: dict[Path, RenderCoalescer] = {}
        self._decode_slots = asyncio.Semaphore(DECODE_SLOTS)

    def coalescer(self, folder: DatasetFolder) -> RenderCoalescer:
        found = self._coalescers.get(folder.root)
        if found is None:
            found = self._coalescers[folder.root] = RenderCoalescer(folder)
        return found

    async def run(self, job: Job, ctx: JobContext) -> Done | Wait:
        params = DatasetParams.model_validate(job.params)
        if Path(job.input_path).suffix.lower() == ".zip":
            return await unpack(job, ctx, engine=self.name)
        return await self._item(job, ctx, params)

    # --- one image or video ---------------------------------------------------------------------

    async def _item(self, job: Job, ctx: JobContext, p: DatasetParams) -> Done | Wait:
        folder = DatasetFolder(ctx.output_dir / (job.batch or DEFAULT_DATASET))
        coalescer = self.coalescer(folder)
        options = RenderOptions(
            name=folder.name, root=folder.root, val_ratio=p.val_ratio, system=p.record_system
        )
        source = source_name(job, ctx.state_dir)
        # --force re-describes an item, but only once: after its record it behaves like any job
        fresh = job.forced and not job.checkpoint.get("recorded")
        record = None
        if not fresh:
            # a forced job's record replaced the one the last render read: only the file will do
            cached = None if job.forced else coalescer.cached(job.content_hash)
            record = cached or await asyncio.to_thread(folder.load_record, job.content_hash)
        if record is None:
            coalescer.begin()
            wrote = False
            try:
                if Path(job.input_path).suffix.lower() in VIDEO_EXTENSIONS:
                    record = await self._describe_video(job, ctx, p, folder, source)
                else:
                    record = await self._describe(job, ctx, p, folder, source)
                wrote = True
            except JobCancelled:
                raise
            except Exception as exc:
                await self._failed(job, p, folder, coalescer, options, source, exc)
                if isinstance(exc, DropflowError) and job.checkpoint.get("spent"):
                    exc.usage = dict(job.checkpoint["spent"])
                raise
            finally:
                coalescer.end(wrote=wrote)
            if job.forced:
                await ctx.save({**job.checkpoint, "recorded": True})
        try:
            settled = await coalescer.settle(job.id, record, p.formats, options)
        except OSError as exc:
            raise RetryableError(
                f"dataset {folder.name!r}: cannot write its files ({exc.strerror or exc})",
                hint=f"check free space and permissions of {folder.root}; retried automatically",
                code="DatasetWrite",
            ) from exc
        if not settled:
            return Wait(
                RENDER_WAIT,
                "recorded; keeping the newest rows safe until the dataset files are rewritten",
                usage=record.usage,
            )
        if job.source == ZIP_SOURCE:
            await asyncio.to_thread(drop_staged, Path(job.input_path), ctx.state_dir / UNZIP_DIR)
        usage: dict[str, Any] = dict(record.usage)
        if record.is_video:
            usage.update(frames_sampled=record.sampled, frames_sent=record.frames)
        return Done(
            [folder.record_path(record.hash), folder.root / record.media],
            usage=usage,
            message=f"in dataset {folder.name!r}"
            + (f" after {record.calls} calls" if record.calls > 1 else ""),
            archive_input=job.source != ZIP_SOURCE,  # a ZIP item's input is our own staged copy
        )

    async def _describe(
        self, job: Job, ctx: JobContext, p: DatasetParams, folder: DatasetFolder, source: str
    ) -> ItemRecord:
        """Ask the model (unless the checkpoint holds an accepted answer) and write the record.

        No progress writes or checkpoint on the way when all goes well: a job takes about one
        model call, and every store write queues behind those of the other jobs. The record file,
        written right after the answer, is what makes the answer durable.
        """
        provider, model = _provider_and_model(job, ctx, p)
        limit = PROVIDER_IMAGE_LIMITS.get(provider.name, ImageLimit(2048, 10 * MB))
        try:
            # one trip to a worker thread for both: each trip queues behind the other jobs' file I/O
            image, system, questions = await asyncio.to_thread(
                lambda: (
                    prepare_image(
                        Path(job.input_path),
                        max_side=min(p.max_image_side, limit.max_side),
                        max_bytes=min(limit.max_bytes, STORE_MAX_BYTES),
                    ),
                    prompts.system_prompt(ctx.prompts_dir, p),
                    prompts.user_prompts(ctx.prompts_dir, p),
                )
            )
        except InputError as exc:
            if source != Path(job.input_path).name:  # name the ZIP the image came from
                raise InputError(f"{source}: {exc.message}", hint=exc.hint) from exc
            raise
        prompt = prompts.pick(questions, job.content_hash)
        if p.json_mode and "json" not in prompt.lower():
            # OpenAI's json_object mode refuses a request whose messages never say "JSON"
            prompt = f"{prompt}\n\n{JSON_INSTRUCTION}"
        parts: list[Part] = [ImagePart(data=image.data, mime=image.mime), TextPart(prompt)]
        answer, ck = await self._ask(job, ctx, p, provider, model, parts, system, source)
        record = ItemRecord(
            hash=job.content_hash,
            source=source,
            image=folder.image_rel(job.content_hash, image.ext),
            prompt=prompt,
            answer=answer["text"],
            system=system,
            mime=image.mime,
            width=image.width,
            height=image.height,
            converted=image.converted,
            **_answered(answer, ck, p, calls=1),
        )
        await _write(ctx, ck, folder, source, lambda: folder.write_item(record, image.data))
        return record

    async def _describe_video(
        self, job: Job, ctx: JobContext, p: DatasetParams, folder: DatasetFolder, source: str
    ) -> ItemRecord:
        """As `_describe`, for a video: frames sampled and chosen (see `video`), one request through
        the answer cache, then the record, with the video copied into the dataset."""
        provider, model = _provider_and_model(job, ctx, p)
        system, questions = await asyncio.to_thread(
            lambda: (
                prompts.system_prompt(ctx.prompts_dir, p, video=True),
                prompts.user_prompts(ctx.prompts_dir, p, video=True),
            )
        )
        prompt = prompts.pick(questions, job.content_hash)
        if p.json_mode and "json" not in prompt.lower():
            prompt = f"{prompt}\n\n{JSON_INSTRUCTION}"
        limits = vision_limits(provider.name, model)
        # the note on frame times is at most a few KB: counted generously with the prompts
        text_bytes = len((system or "").encode()) + len(prompt.encode()) + 8 * p.video_max_frames + 256
        video = await self._sample(ctx, Path(job.input_path), source, p, limits, text_bytes)
        for warning in video.warnings:
            await ctx.warn(f"{source}: {warning}")
        note = video.note
        parts: list[Part] = [
            VideoPart(frames=video.frames, fps=round(video.fps, 6)),
            TextPart(f"{prompt}\n\n{note}" if note else prompt),
        ]
        # offline answers are free and say they are placeholders: nothing to keep (the cache
        # would not remember that they are offline, either)
        cache = AnswerCache(ctx.state_dir / ANSWERS_DIR) if p.cache and not provider.offline else None
        answer, ck = await self._ask(job, ctx, p, provider, model, parts, system, source, cache)
        cached = bool(answer.get("cached"))
        record = ItemRecord(
            hash=job.content_hash,
            source=source,
            image="",
            prompt=prompt,
            answer=answer["text"],
            system=system,
            mime=video.mime,
            width=video.width,
            height=video.height,
            **_answered(answer, ck, p, calls=0 if cached else 1),
            video=folder.video_rel(job.content_hash, video.ext),
            duration=round(video.duration, 3),
            fps=round(video.fps, 6),
            frames=len(video.frames),
            sampled=video.sampled,
            cached=cached,
        )
        await _write(ctx, ck, folder, source, lambda: folder.write_video_item(record, Path(job.input_path)))
        return record

    async def _sample(
        self,
        ctx: JobContext,
        path: Path,
        source: str,
        p: DatasetParams,
        limits: ModelLimits,
        text_bytes: int,
    ) -> PreparedVideo:
        """`video.prepare_video` in a thread, under the decode slots; a cancelled job stops the
        thread within a few frames (through `should_stop`), and waits for it."""
        stop = False

        def should_stop() -> bool:
            return stop or ctx.cancelled

        async with self._decode_slots:
            task = asyncio.ensure_future(
                asyncio.to_thread(
                    prepare_video, path, source, p, limits, text_bytes=text_bytes, should_stop=should_stop
                )
            )
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                stop = True
                await asyncio.wait({task})
                raise

    async def _ask(
        self,
        job: Job,
        ctx: JobContext,
        p: DatasetParams,
        provider: VisionProvider,
        model: str,
        parts: Sequence[Part],
        system: str | None,
        source: str,
        cache: AnswerCache | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """An accepted answer, and the checkpoint state with the spend of every call for this item.

        The answer comes from the checkpoint when an earlier run saved one, else from `cache` when
        this exact request was answered before (not for a forced job: --force asks again). A
        rejected answer is saved (with its usage) before the next call, so the spend survives
        retries and restarts; an accepted, complete one goes into `cache`.

        Raises PermanentError when `answer_retries` extra calls were all rejected; provider errors.
        """
        ck: dict[str, Any] = dict(job.checkpoint)
        saved = ck.get("answer")
        if isinstance(saved, dict) and saved.get("hash") == job.content_hash:
            return dict(saved), ck
        spent = Usage(**{k: int(v) for k, v in (ck.get("spent") or {}).items() if k in Usage().as_dict()})
        calls = int(ck.get("calls") or 0)
        rejected: list[dict[str, str]] = list(ck.get("rejected") or [])
        while len(rejected) <= p.answer_retries:
            ctx.check_cancelled()
            retry = len(rejected)
            if retry:
                await ctx.progress(0.5, f"asking {model} again ({rejected[-1]['reason']})")
            # the same request at the same temperature tends to get the same refusal back
            temperature = max(p.temperature, min(1.0, p.temperature + 0.3 * retry))
            request = VisionRequest(
                model=model,
                parts=list(parts),
                system=system,
                temperature=temperature,
                max_tokens=p.max_tokens,
                json_mode=p.json_mode,
            )
            key = request_key(provider.name, request) if cache is not None else ""
            hit = cache.get(key) if cache is not None and not job.forced else None
            if hit is not None:
                # paid for before (by this item, or by a copy of its video): only an accepted
                # answer was stored, so it is accepted again as it is
                text, _ = check_answer(hit.result.text, json_mode=p.json_mode, image_token=p.image_token)
                ck["answer"] = {
                    "hash": job.content_hash,
                    "text": text,
                    "provider": hit.result.provider,
                    "model": hit.result.model or model,
                    "offline": False,
                    "request_id": hit.result.request_id,
                    "finish_reason": hit.result.finish_reason,
                    "cached": True,
                }
                ck.setdefault("calls", calls)
                return dict(ck["answer"]), ck
            result = await provider.generate(request)
            calls += 1
            spent.add(result.usage)
            text, rejection = check_answer(result.text, json_mode=p.json_mode, image_token=p.image_token)
            ck.update(spent=spent.as_dict(), calls=calls)
            if rejection is None:
                if cache is not None and not result.offline:
                    try:
                        await asyncio.to_thread(
                            cache.put, key, result, paid_by=f"job {job.id} {job.content_hash[:16]}"
                        )
                    except OSError as exc:  # paid for: use it even if it cannot be kept
                        log.warning("%s: cannot store the answer in the cache: %s", source, exc)
                ck["answer"] = {
                    "hash": job.content_hash,
                    "text": text,
                    "provider": result.provider,
                    "model": result.model or model,
                    "offline": result.offline,
                    "request_id": result.request_id,
                    "finish_reason": result.finish_reason,
                }
                return dict(ck["answer"]), ck
            rejected.append({"reason": rejection.code, "detail": rejection.detail})
            ck["rejected"] = rejected
            await ctx.save(ck)
            log.info("%s: answer rejected (%s), %s", source, rejection.code, rejection.detail)
        last = rejected[-1]
        raise PermanentError(
            f"{source}: the model's answer was rejected {len(rejected)} time(s); last: {last['detail']}",
            hint="check the image and the prompts (a refusal often means the image did not reach the model)"
            if last["reason"] != "invalid_json"
            else "make the prompt ask for the JSON shape explicitly, or turn json_mode off",
            provider=provider.name,
            code=last["reason"],
        )

    async def _failed(
        self,
        job: Job,
        p: DatasetParams,
        folder: DatasetFolder,
        coalescer: RenderCoalescer,
        options: RenderOptions,
        source: str,
        exc: Exception,
    ) -> None:
        """A failure that ends the item (not one the scheduler will retry) goes into summary.json."""
        kind = exc.kind if isinstance(exc, DropflowError) else ErrorKind.PERMANENT
        if kind == ErrorKind.RETRYABLE and job.attempts < job.max_attempts:
            return
        ck = job.checkpoint
        answer = ck.get("answer") or {}
        failure = FailedItem(
            hash=job.content_hash,
            source=source,
            kind=str(kind),
            reason=exc.message if isinstance(exc, DropflowError) else f"{type(exc).__name__}: {exc}",
            hint=exc.hint if isinstance(exc, DropflowError) else "",
            usage=dict(ck.get("spent") or {}),
            calls=int(ck.get("calls") or 0),
            provider=str(answer.get("provider") or job.provider or ""),
            model=str(answer.get("model") or p.model or ""),
            at=time.time(),
        )
        try:
            await asyncio.to_thread(folder.write_failure, failure)
            await coalescer.request(p.formats, options)
        except OSError as write_exc:  # the job's own error is the one to report
            log.error("dataset %s: cannot record the failure of %s: %s", folder.name, source, write_exc)


def _provider_and_model(job: Job, ctx: JobContext, p: DatasetParams) -> tuple[VisionProvider, str]:
    provider = ctx.providers.vision(job.provider)
    model = p.model or DEFAULT_MODELS.get(provider.name, "")
    if not model:
        raise ConfigError(
            f"no default model for provider {provider.name!r}", hint="set params.model for this dataset"
        )
    return provider, model


def _answered(answer: dict[str, Any], ck: dict[str, Any], p: DatasetParams, *, calls: int) -> dict[str, Any]:
    """A record's fields that say who answered and what it cost (`calls`: when the checkpoint has none)."""
    return {
        "provider": answer["provider"],
        "model": answer["model"],
        "offline": bool(answer["offline"]),
        "json_mode": p.json_mode,
        "request_id": answer["request_id"],
        "finish_reason": answer["finish_reason"],
        "usage": dict(ck.get("spent") or {}),
        "calls": int(ck.get("calls") or calls),
        "rejected": list(ck.get("rejected") or []),
        "created": time.time(),
    }


async def _write(
    ctx: JobContext, ck: dict[str, Any], folder: DatasetFolder, source: str, write: Callable[[], object]
) -> None:
    """Write an item's record (in a thread); on failure keep what was paid for in the checkpoint
    (a video's answer is in the cache too, unless offline): the retry takes the answer from it."""
    try:
        await asyncio.to_thread(write)
    except OSError as exc:
        await ctx.save(ck)
        raise RetryableError(
            f"dataset {folder.name!r}: cannot write the record of {source} ({exc.strerror or exc})",
            hint=f"check free space and permissions of {folder.root}; retried automatically",
            code="DatasetWrite",
        ) from exc
