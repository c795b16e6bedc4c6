"""The dataset engine: images dropped into inbox/dataset/<name>/ become a fine-tuning dataset.

Each image is one job. The job asks the vision model to describe the image (system prompt from
prompts/, user prompt from params), checks the answer, stores the image and one record keyed by
the image's content hash in outputs/dataset/<name>/ (see `dataset_folder`), and has the dataset
files re-rendered from all records. A ZIP dropped into a dataset folder is unpacked safely and
each image in it is queued as a job of its own.

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
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from dropflow.engine import files
from dropflow.engine.base import Done, FileEngine, JobContext, Params, Wait
from dropflow.engine.dataset.folder import RENDER_WAIT, DatasetFolder, RenderCoalescer
from dropflow.engine.dataset.formats import (
    FORMAT_NAMES,
    FailedItem,
    FormatName,
    ItemRecord,
    RenderOptions,
    escape_placeholders,
    has_placeholder,
)
from dropflow.engine.errors import (
    ConfigError,
    DropflowError,
    ErrorKind,
    InputError,
    JobCancelled,
    PermanentError,
    RetryableError,
)
from dropflow.engine.media import IMAGE_EXTENSIONS
from dropflow.engine.providers.base import ImagePart, TextPart, Usage, VisionProvider, VisionRequest

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job

log = logging.getLogger("dropflow.engine.dataset.engine")

DEFAULT_DATASET = "default"  # images dropped straight into inbox/dataset/
DEFAULT_SYSTEM_PROMPT_FILE = "dataset_caption_system.txt"
# Used only when the default prompt file is missing from a project's prompts/ (made by an older
# `dropflow init`); tests check it matches prompts/dataset_caption_system.txt.
DEFAULT_SYSTEM_PROMPT = """You write training data for a vision-language model. Describe the image you are given.

Cover, in this order: the main subjects and what they are doing; the setting and the lighting;
notable objects, their colours and positions; any legible text, quoted exactly.

Be factual and specific. Say "unclear" instead of guessing, and describe only what is visible.
Do not mention that you are an AI or that this is a description task, and do not start with
"This image shows". Answer in plain prose, one or two short paragraphs."""
DEFAULT_USER_PROMPT = "Describe this image in detail."
JSON_INSTRUCTION = "Answer with a single JSON object."

DEFAULT_MODELS = {
    "dashscope": "qwen-vl-max-latest",
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-5",
    "offline": "offline-vision",
}

ZIP_SOURCE = "zip"  # jobs.source of an image queued from a ZIP (its input is our own staged copy)
UNZIP_DIR = "dataset-unzipped"  # under paths.state


@dataclass(frozen=True)
class ImageLimit:
    max_side: int
    max_bytes: int


MB = 1024 * 1024
# What each provider accepts per image; anything larger (or not JPEG/PNG/WEBP RGB) is re-encoded
# as an RGB JPEG. Anthropic downscales past 1568 px anyway and refuses more than 5 MB.
PROVIDER_IMAGE_LIMITS = {
    "dashscope": ImageLimit(4096, 10 * MB),
    "openai": ImageLimit(2048, 20 * MB),
    "anthropic": ImageLimit(1568, 5 * MB),
    "offline": ImageLimit(4096, 10 * MB),
}
# The stored image also goes into OpenAI fine-tuning files (10 MB per image): the strictest wins.
STORE_MAX_BYTES = 10 * MB


class DatasetParams(Params):
    """Per dataset: route params, or `params:` in the dataset folder's dropflow.yaml.

    The provider itself is chosen by the route's (or dropflow.yaml's) `provider:` key.
    """

    model: str | None = Field(None, description="Vision model; empty = the provider's default.")
    system_prompt_file: str | None = Field(
        DEFAULT_SYSTEM_PROMPT_FILE, description="System prompt file in prompts/; empty = no system prompt."
    )
    user_prompt: str = Field(DEFAULT_USER_PROMPT, min_length=1, description="The question asked per image.")
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(1024, ge=16, le=32768, description="Longest answer, in tokens.")
    max_image_side: int = Field(
        2048,
        ge=64,
        le=8192,
        description="Longest image side sent and stored (capped by the provider's limit).",
    )
    formats: list[FormatName] = Field(
        default_factory=lambda: ["llamafactory"],
        min_length=1,
        description=f"Output formats: {', '.join(FORMAT_NAMES)}.",
    )
    val_ratio: float = Field(0.0, ge=0, le=0.5, description="Share of items in the validation split.")
    json_mode: bool = Field(False, description="Ask for a JSON object; invalid JSON is retried.")
    answer_retries: int = Field(
        2, ge=0, le=5, description="Extra calls when an answer is empty, a refusal or invalid JSON."
    )
    image_token: Literal["escape", "reject"] = Field(
        "escape", description="A literal <image> in an answer: escape it as [image], or reject the answer."
    )
    system_in_records: bool = Field(
        True, description="Write the system prompt into the records as a system turn."
    )

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return list(dict.fromkeys(value))
        return value

    @field_validator("system_prompt_file")
    @classmethod
    def _inside_prompts(cls, value: str | None) -> str | None:
        if value and (Path(value).is_absolute() or ".." in Path(value).parts):
            raise ValueError("must name a file inside prompts/ (no absolute path, no '..')")
        return value or None

    @field_validator("user_prompt")
    @classmethod
    def _no_placeholder(cls, value: str) -> str:
        if has_placeholder(value):
            raise ValueError(
                "must not contain <image>/<video>/<audio>: dropflow places the image token itself"
            )
        return value


# --- answer checks -------------------------------------------------------------------------------

# Refusals and "no image" answers seen from vision models, English and Chinese. Matched only near
# the start of an answer, where models put them, so a description quoting such words is kept.
_REFUSALS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(i )?(can ?not|can't|cannot|am unable to|'m unable to|am not able to|'m not able to|do not|don't)"
        r" (see|view|access|open|process|analy[sz]e|display|load) (the |any |this |an |your )?"
        r"(image|picture|photo|attachment)",
        r"\bno (image|picture|photo)s? (was|were|is|are|has been|have been) (provided|attached|uploaded|shared|included)",
        r"\b(image|picture|photo) (is|was|seems to be|appears to be) (missing|not (visible|available|attached|loaded))",
        r"\bunable to (see|view|access|load|display) (the |any |this )?(image|picture|photo)",
        r"\bas an ai( language model)?,? i (can ?not|can't|don't|do not)",
        r"\bi'?m sorry,? (but )?i (can ?not|can't|am unable to) (help|assist|describe|identify|comply)",
        r"\bi (can ?not|can't|won't) (help|assist) with (that|this)",
        r"(无法|不能)(查看|看到|识别|打开|加载)(该|这张|这个|此)?(图片|图像|照片)",
        r"(没有|未)(看到|收到|提供)(任何)?(图片|图像|照片)",
        r"抱歉[，,]?\s*我(无法|不能)",
    )
]
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


@dataclass(frozen=True)
class Rejection:
    code: str  # empty | refusal | invalid_json | media_token
    detail: str


def check_answer(
    text: str, *, json_mode: bool = False, image_token: Literal["escape", "reject"] = "escape"
) -> tuple[str, Rejection | None]:
    """The answer as it goes into a record, or why it may not.

    Empty answers, refusals ("I can't see the image") and, in JSON mode, anything but a JSON object
    or array are rejected; a literal `<image>` (or `<video>`, `<audio>`) is escaped to `[image]`
    or rejected, as `image_token` says. JSON answers are stored compact and fence-free.
    """
    answer = text.strip()
    if not answer:
        return "", Rejection("empty", "the model returned an empty answer")
    head = answer[:300]
    if any(p.search(head) for p in _REFUSALS):
        return answer, Rejection("refusal", f"the model refused or did not see the image: {head[:160]!r}")
    if json_mode:
        fenced = _FENCE.match(answer)
        body = fenced.group(1).strip() if fenced else answer
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            return answer, Rejection("invalid_json", f"the answer is not valid JSON ({exc}): {head[:120]!r}")
        if not isinstance(parsed, dict | list):
            return answer, Rejection("invalid_json", f"the answer is JSON but not an object: {head[:120]!r}")
        answer = json.dumps(parsed, ensure_ascii=False)
    if has_placeholder(answer):
        if image_token == "reject":
            return answer, Rejection(
                "media_token", "the answer holds a literal <image>/<video>/<audio> token"
            )
        answer = escape_placeholders(answer)
    return answer, None


# --- images --------------------------------------------------------------------------------------

_KEEP_FORMATS = {
    "JPEG": (".jpg", "image/jpeg"),
    "PNG": (".png", "image/png"),
    "WEBP": (".webp", "image/webp"),
}


@dataclass(frozen=True)
class PreparedImage:
    data: bytes
    ext: str
    mime: str
    width: int
    height: int
    converted: bool


def prepare_image(path: Path, *, max_side: int, max_bytes: int) -> PreparedImage:
    """The image as it is sent and stored: the original bytes when they are within the limits
    (JPEG/PNG/WEBP, RGB, upright, one frame, small enough), else an upright RGB JPEG, shrunk until
    it fits. Blocking.

    Raises:
        InputError: unreadable, not an image, over the pixel cap, or cannot be made small enough.
    """
    from PIL import Image

    from dropflow.engine.media import load_image, to_jpeg

    if not path.is_file():
        raise InputError(
            f"{path.name} is gone: it was moved or deleted before it was read", hint="drop it again"
        )
    upright = load_image(path)  # decodes every pixel: a truncated file fails here, not in training
    with Image.open(path) as im:
        fmt, mode, (w, h) = im.format or "", im.mode, im.size
        orientation = im.getexif().get(0x0112, 1)
        frames = getattr(im, "n_frames", 1)
    keep = _KEEP_FORMATS.get(fmt)
    if (
        keep
        and mode == "RGB"
        and orientation in (0, 1)
        and frames == 1
        and max(w, h) <= max_side
        and path.stat().st_size <= max_bytes
    ):
        return PreparedImage(path.read_bytes(), keep[0], keep[1], w, h, converted=False)
    side = min(max_side, max(upright.size))
    while True:
        data = to_jpeg(upright, max_side=side)
        if len(data) <= max_bytes or side <= 256:
            break
        side = int(side * 0.8)
    if len(data) > max_bytes:
        raise InputError(
            f"{path.name} stays over {max_bytes:,} bytes even as a {side}px JPEG",
            hint="crop or downscale the image",
        )
    scale = side / max(upright.size) if max(upright.size) > side else 1.0
    width = max(1, round(upright.width * scale)) if scale < 1 else upright.width
    height = max(1, round(upright.height * scale)) if scale < 1 else upright.height
    return PreparedImage(data, ".jpg", "image/jpeg", width, height, converted=True)


# --- the engine ----------------------------------------------------------------------------------


def _source(job: Job, state_dir: Path) -> str:
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


class DatasetEngine(FileEngine):
    name: ClassVar[str] = "dataset"
    extensions: ClassVar[frozenset[str]] = IMAGE_EXTENSIONS | {".zip"}
    Params = DatasetParams
    supports_cancel: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = True

    def __init__(self) -> None:
        # one engine instance per daemon (the router caches it): so is each dataset's coalescer
        self._coalescers: dict[Path, RenderCoalescer] = {}

    def coalescer(self, folder: DatasetFolder) -> RenderCoalescer:
        found = self._coalescers.get(folder.root)
        if found is None:
            found = self._coalescers[folder.root] = RenderCoalescer(folder)
        return found

    async def run(self, job: Job, ctx: JobContext) -> Done | Wait:
        params = DatasetParams.model_validate(job.params)
        if Path(job.input_path).suffix.lower() == ".zip":
            return await self._unpack(job, ctx, params)
        return await self._item(job, ctx, params)

    # --- one image ------------------------------------------------------------------------------

    async def _item(self, job: Job, ctx: JobContext, p: DatasetParams) -> Done | Wait:
        folder = DatasetFolder(ctx.output_dir / (job.batch or DEFAULT_DATASET))
        coalescer = self.coalescer(folder)
        options = RenderOptions(
            name=folder.name, root=folder.root, val_ratio=p.val_ratio, include_system=p.system_in_records
        )
        source = _source(job, ctx.state_dir)
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
            await asyncio.to_thread(_drop_staged, Path(job.input_path), ctx.state_dir / UNZIP_DIR)
        return Done(
            [folder.record_path(record.hash), folder.root / record.image],
            usage=record.usage,
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
        provider = ctx.providers.vision(job.provider)
        model = p.model or DEFAULT_MODELS.get(provider.name, "")
        if not model:
            raise ConfigError(
                f"no default model for provider {provider.name!r}", hint="set params.model for this dataset"
            )
        limit = PROVIDER_IMAGE_LIMITS.get(provider.name, ImageLimit(2048, 10 * MB))
        try:
            # one trip to a worker thread for both: each trip queues behind the other jobs' file I/O
            image, system = await asyncio.to_thread(
                lambda: (
                    prepare_image(
                        Path(job.input_path),
                        max_side=min(p.max_image_side, limit.max_side),
                        max_bytes=min(limit.max_bytes, STORE_MAX_BYTES),
                    ),
                    self._system_prompt(ctx.prompts_dir, p),
                )
            )
        except InputError as exc:
            if source != Path(job.input_path).name:  # name the ZIP the image came from
                raise InputError(f"{source}: {exc.message}", hint=exc.hint) from exc
            raise
        prompt = p.user_prompt
        if p.json_mode and "json" not in prompt.lower():
            # OpenAI's json_object mode refuses a request whose messages never say "JSON"
            prompt = f"{prompt}\n\n{JSON_INSTRUCTION}"
        answer, ck = await self._ask(job, ctx, p, provider, model, image, system, prompt, source)
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
            provider=answer["provider"],
            model=answer["model"],
            offline=bool(answer["offline"]),
            json_mode=p.json_mode,
            request_id=answer["request_id"],
            finish_reason=answer["finish_reason"],
            usage=dict(ck.get("spent") or {}),
            calls=int(ck.get("calls") or 1),
            rejected=list(ck.get("rejected") or []),
            created=time.time(),
        )
        try:
            await asyncio.to_thread(folder.write_item, record, image.data)
        except OSError as exc:
            # keep what was paid for: the retry takes the answer from the checkpoint
            await ctx.save(ck)
            raise RetryableError(
                f"dataset {folder.name!r}: cannot write the record of {source} ({exc.strerror or exc})",
                hint=f"check free space and permissions of {folder.root}; retried automatically",
                code="DatasetWrite",
            ) from exc
        return record

    async def _ask(
        self,
        job: Job,
        ctx: JobContext,
        p: DatasetParams,
        provider: VisionProvider,
        model: str,
        image: PreparedImage,
        system: str | None,
        prompt: str,
        source: str,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """An accepted answer, and the checkpoint state with the spend of every call for this item.

        The answer comes from the checkpoint when an earlier run saved one. A rejected answer is
        saved (with its usage) before the next call, so the spend survives retries and restarts.

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
            result = await provider.generate(
                VisionRequest(
                    model=model,
                    parts=[ImagePart(data=image.data, mime=image.mime), TextPart(prompt)],
                    system=system,
                    temperature=temperature,
                    max_tokens=p.max_tokens,
                    json_mode=p.json_mode,
                )
            )
            calls += 1
            spent.add(result.usage)
            text, rejection = check_answer(result.text, json_mode=p.json_mode, image_token=p.image_token)
            ck.update(spent=spent.as_dict(), calls=calls)
            if rejection is None:
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

    @staticmethod
    def _system_prompt(prompts_dir: Path, p: DatasetParams) -> str | None:
        """Raises ConfigError when the named file is missing or holds a media placeholder."""
        if not p.system_prompt_file:
            return None
        path = prompts_dir / p.system_prompt_file
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            if p.system_prompt_file == DEFAULT_SYSTEM_PROMPT_FILE:
                return DEFAULT_SYSTEM_PROMPT
            raise ConfigError(
                f"the system prompt file {path} does not exist",
                hint=f"create it, or set params.system_prompt_file to a file in {prompts_dir}",
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="check its permissions") from exc
        if has_placeholder(text):
            raise ConfigError(
                f"{path} contains <image>/<video>/<audio>",
                hint="remove it: dropflow places the image token itself",
            )
        return text or None

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

    # --- a ZIP of images ----------------------------------------------------------------------------

    async def _unpack(self, job: Job, ctx: JobContext, p: DatasetParams) -> Done:
        """Unpack safely and queue each image as an item job of the dataset.

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
        images = await asyncio.to_thread(_extract, archive, staging)
        if not images:
            raise InputError(
                f"{archive.name} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})",
                hint="put the images into the ZIP, or drop them into the dataset folder directly",
            )
        hashes = await asyncio.to_thread(lambda: [files.content_hash(m) for m in images])
        results = await store.insert_jobs(
            [
                NewJob(
                    engine=self.name,
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
                await asyncio.to_thread(_drop_staged, member, ctx.state_dir / UNZIP_DIR)
        return Done(
            [],
            message=f"{len(images)} image(s) from {archive.name}: {created} queued into dataset {name!r}, "
            f"{len(images) - created} already there",
        )


def _extract(archive: Path, dest: Path) -> list[Path]:
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


def _drop_staged(path: Path, root: Path) -> None:
    """Delete a staged ZIP member (our own copy; the ZIP itself is archived) and empty folders."""
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
