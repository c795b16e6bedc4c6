"""The annotate engine: a video dropped into inbox/annotate/ becomes a timed annotation by a vision model.

One job, in stages (each reports progress, so `dropflow jobs` and the TUI show where it is):

1. sampling  frames at `fps` (or one every `interval` s), longest side `max_side`, static repeats
             dropped (`frames.py`);
2. speech    only when a template in use has ``{videoAsrText}``: the soundtrack in timed chunks
             through a speech-recognition model (`asr.py`);
3. segments  the frames split under the per-request frame limit, one vision request per segment,
             each answer keeping its segment's start and end;
4. summary   two-stage mode (Bailian video analysis): a text model joins the segment analyses
             through ``{videoAnalysisText}``, ``{videoAsrText}`` and ``{videoExtraInfo}``;
5. outputs   ``<name>.json`` and ``<name>.txt`` in outputs/annotate/[<batch>/], written atomically.

Every model call goes through the answer cache (`answer_cache.py`) first: a retry after a 429,
a restart after a crash, or the same video dropped again never pays twice for the same request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dropflow.engine import files
from dropflow.engine.annotate.answer_cache import AnswerCache, request_key
from dropflow.engine.annotate.asr import clock
from dropflow.engine.base import Done, FileEngine, JobContext, Params
from dropflow.engine.errors import (
    ConfigError,
    DropflowError,
    ErrorKind,
    InputError,
    JobCancelled,
)
from dropflow.engine.media import VIDEO_EXTENSIONS
from dropflow.engine.providers.base import (
    ImagePart,
    Part,
    TextPart,
    Usage,
    VideoPart,
    VisionProvider,
    VisionRequest,
    VisionResult,
)

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job
    from dropflow.engine.annotate.asr import Soundtrack, Transcript
    from dropflow.engine.annotate.frames import Frame, Sampling

T = TypeVar("T")

MAX_VIDEO_BYTES = 1024**3  # 1 GB: beyond this a single job holds too many frames and too much money
MIN_FRAMES = 4  # DashScope refuses a frame list shorter than this: short clips repeat their frames
ROLES_SUFFIXES = (".roles.yaml", ".roles.yml")
EXTRA_SUFFIX = ".extra.txt"
AUDIO_PROVIDERS = frozenset({"dashscope", "openai", "offline"})  # those that send an AudioPart
TEMPLATE_VARIABLES = ("videoAsrText", "videoAnalysisText", "videoExtraInfo", "videoRoles", "language")
_VARIABLE_RE = re.compile(r"\{(" + "|".join(TEMPLATE_VARIABLES) + r")\}")

# share of the progress bar per stage (sampling is local work and fast; requests dominate)
P_SAMPLING, P_SPEECH, P_SEGMENTS, P_SUMMARY = 0.30, 0.40, 0.90, 0.97
PROGRESS_SECONDS = 0.3  # how often a long local stage (sampling) reports


class Role(BaseModel):
    """A character to keep consistent across segments (Bailian's videoRoles)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="The name the model should use.")
    description: str = Field("", description="Who this is / how to recognise them.")
    photos: list[str] = Field(
        default_factory=list,
        description="Reference photos: paths (beside the video, else in the prompts folder) or https URLs.",
    )


class AnnotateParams(Params):
    """Parameters of the annotate engine (route `params`, a folder's dropflow.yaml, or `--set`)."""

    model: str = Field(
        "qwen-vl-max-latest", description="Vision model: qwen-vl-max-latest, qwen-vl-plus-latest, qwen3-vl-*."
    )
    prompt: str = Field(
        "pov_annotation_prompt.txt",
        description="Prompt template (single mode): a name in prompts/ or a path.",
    )
    fps: float = Field(1.0, ge=0.1, le=10.0, description="Frames sampled per second of video.")
    interval: float | None = Field(
        None, ge=0.1, le=10.0, description="Seconds between sampled frames; overrides fps when set."
    )
    max_side: int = Field(768, ge=300, le=768, description="Longest side of a frame sent, in pixels.")
    jpeg_quality: int = Field(85, ge=30, le=100, description="JPEG quality of the frames sent.")
    temperature: float = Field(0.3, ge=0.0, le=1.0, description="Sampling temperature.")
    max_tokens: int = Field(4000, ge=1, le=32768, description="Longest answer per request, in tokens.")
    dedup: bool = Field(
        True, description="Drop near-duplicate consecutive frames (static shots) before sending."
    )
    dedup_threshold: int = Field(
        3, ge=0, le=64, description="Hash bits (of 256) that may differ for a frame to count as a repeat."
    )
    max_frames_per_segment: int = Field(
        80, ge=MIN_FRAMES, le=768, description="Frames per request; longer videos are split into segments."
    )
    segment_seconds: float | None = Field(
        None, gt=0, description="Also start a new segment after this many seconds (finer shot analysis)."
    )
    max_total_frames: int = Field(
        3600, ge=1, description="Frames kept per video at most; a longer video fails with a hint."
    )
    mode: Literal["single", "two_stage"] = Field(
        "single", description="single: one prompt per segment; two_stage: segment analysis, then a summary."
    )
    segment_prompt: str = Field("segment_analysis.txt", description="Two-stage: the per-segment template.")
    summary_prompt: str = Field("summary.txt", description="Two-stage: the summary template.")
    summary_model: str = Field("qwen-max", description="Two-stage: the text model of the summary pass.")
    language: str | None = Field(None, description="Language of the answers, e.g. English, Chinese.")
    roles: list[Role] = Field(
        default_factory=list, description="Characters; a <video>.roles.yaml adds to them."
    )
    extra_info: str = Field(
        "", description="Extra information ({videoExtraInfo}); a <video>.extra.txt adds to it."
    )
    asr: bool = Field(True, description="Transcribe the soundtrack when a template uses {videoAsrText}.")
    asr_model: str = Field("qwen3-asr-flash", description="Speech-recognition model.")
    asr_chunk_seconds: float = Field(30.0, ge=5.0, le=180.0, description="Audio per recognition request.")
    concurrency: int = Field(4, ge=1, le=64, description="Requests of one job in flight at once.")
    cache: bool = Field(True, description="Reuse answers already paid for (same content, same params).")

    @property
    def effective_fps(self) -> float:
        return 1.0 / self.interval if self.interval else self.fps


# --- templates ---------------------------------------------------------------------------------


def uses(template: str, variable: str) -> bool:
    return "{" + variable + "}" in template


def fill(template: str, values: dict[str, str]) -> str:
    """Replace the known ``{variables}``; any other brace (a JSON example in a prompt) stays as written."""
    return _VARIABLE_RE.sub(lambda m: values.get(m.group(1), ""), template)


def find_file(name: str, places: Sequence[Path]) -> Path | None:
    """`name` as an absolute path, or the first of `places / name` that is a file."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    for base in places:
        if (base / p).is_file():
            return base / p
    return None


def load_template(name: str, key: str, places: Sequence[Path]) -> str:
    """The text of prompt template `name` (param `key`).

    Raises:
        ConfigError: not found (naming every place looked in), unreadable, or empty.
    """
    path = find_file(name, places)
    if path is None:
        where = ", ".join(str(p) for p in places)
        raise ConfigError(
            f"prompt file {name!r} (param {key}) not found; looked in: {where}",
            hint=f"put {name} in the prompts folder, or give an absolute path: --set {key}=/path/to/prompt.txt",
        )
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read prompt file {path}: {exc}", hint="save it as UTF-8 text") from exc
    if not text:
        raise ConfigError(f"prompt file {path} is empty", hint="write the instructions for the model into it")
    return text


# --- sidecars and roles ----------------------------------------------------------------------------


def sidecar(video: Path, suffixes: Sequence[str]) -> Path | None:
    """``clip.mp4.roles.yaml`` (preferred: unambiguous) or ``clip.roles.yaml`` beside the video."""
    for base in (video.name, video.stem):
        for suffix in suffixes:
            p = video.with_name(base + suffix)
            if p.is_file():
                return p
    return None


class _RolesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roles: list[Role]


def load_roles(path: Path) -> list[Role]:
    """Roles from a sidecar: ``roles: [...]`` or a bare list of ``{name, description, photos}``.

    Raises:
        ConfigError: not YAML, or not roles (naming the file, the key and the line).
    """
    from dropflow.daemon.core.config import validation_error

    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not readable YAML ({exc})", hint="fix the roles sidecar") from exc
    if isinstance(data, list) and node is not None:
        # a bare list: validate it as `roles:` so that error locations still find their line
        key = yaml.ScalarNode("tag:yaml.org,2002:str", "roles", node.start_mark, node.end_mark)
        node = yaml.MappingNode("tag:yaml.org,2002:map", [(key, node)], node.start_mark, node.end_mark)
        data = {"roles": data}
    try:
        return _RolesFile.model_validate(data or {"roles": []}).roles
    except ValidationError as exc:
        raise validation_error(path, node, exc) from None


def merge_roles(base: Sequence[Role], extra: Sequence[Role]) -> list[Role]:
    """Route roles, with a sidecar's role of the same name replacing the route's."""
    names = {r.name for r in extra}
    return [r for r in base if r.name not in names] + list(extra)


def roles_text(roles: Sequence[Role]) -> str:
    if not roles:
        return ""
    lines = ["Characters (call them by these names, consistently):"]
    for r in roles:
        line = f"- {r.name}"
        if r.description:
            line += f": {r.description}"
        if r.photos:
            line += f" ({len(r.photos)} reference photo{'s' if len(r.photos) > 1 else ''} below)"
        lines.append(line)
    return "\n".join(lines)


def role_photo_parts(
    roles: Sequence[Role], places: Sequence[Path], max_side: int, quality: int
) -> list[Part]:
    """Each role's reference photos, labelled, as parts (blocking: reads and re-encodes images).

    Raises:
        InputError: a photo is missing or not an image.
    """
    from dropflow.engine.media import load_image, to_jpeg

    parts: list[Part] = []
    for role in roles:
        for ref in role.photos:
            parts.append(TextPart(f"Reference photo of {role.name}:"))
            if ref.startswith(("http://", "https://", "oss://")):
                parts.append(ImagePart(url=ref))
                continue
            path = find_file(ref, places)
            if path is None:
                raise InputError(
                    f"reference photo {ref!r} of role {role.name!r} not found (looked in "
                    f"{', '.join(str(p) for p in places)})",
                    hint="put the photo beside the video or in the prompts folder, or fix its path",
                )
            parts.append(ImagePart(data=to_jpeg(load_image(path), max_side=max_side, quality=quality)))
    return parts


# --- segments ----------------------------------------------------------------------------------------


@dataclass
class Segment:
    index: int
    start: float
    end: float
    frames: list[Frame]
    sampled: int = 0


def split(sampling: Sampling, max_frames: int, max_seconds: float | None) -> list[Segment]:
    """Consecutive runs of kept frames, each at most `max_frames` (and `max_seconds` long).

    Segments tile the video: each ends where the next begins, the last at the video's end.
    """
    segments: list[Segment] = []
    for frame in sampling.frames:
        cur = segments[-1] if segments else None
        if (
            cur is None
            or len(cur.frames) >= max_frames
            or (max_seconds is not None and frame.time - cur.start >= max_seconds)
        ):
            start = 0.0 if cur is None else frame.time
            if cur is not None:
                cur.end = start
            segments.append(Segment(len(segments), start, sampling.duration, [frame]))
        else:
            cur.frames.append(frame)
    for seg in segments:
        seg.end = max(seg.end, seg.frames[-1].time)
        seg.sampled = sum(1 for t in sampling.sample_times if seg.start <= t < seg.end)
    return segments


def padded(frames: Sequence[Frame]) -> list[Frame]:
    """At least MIN_FRAMES frames, repeating each in turn (the order and the times stay right)."""
    n = len(frames)
    if n >= MIN_FRAMES:
        return list(frames)
    return [frames[i * n // MIN_FRAMES] for i in range(MIN_FRAMES)]


def segment_context(seg: Segment, sent: Sequence[Frame], count: int, fps: float) -> str:
    """What the model needs beyond the frames: where the part sits in the video and when each
    frame sent (`sent`) was taken.

    Empty for a one-segment video sampled evenly, whose frames the `fps` alone explains.
    """
    lines = []
    if count > 1:
        lines.append(
            f"This is part {seg.index + 1} of {count} of the video, from {clock(seg.start)} to {clock(seg.end)}."
        )
    step = 1.0 / fps
    times = [f.time for f in sent]
    even = abs(times[0] - seg.start) < step and all(
        abs((b - a) - step) < step / 2 for a, b in itertools.pairwise(times)
    )
    if count > 1 or not even:
        stamps = ", ".join(f"{t:.1f}" for t in times)
        lines.append(f"The frames were taken at these times (seconds from the start of the video): {stamps}.")
    if seg.sampled > len(seg.frames):
        lines.append("Stretches where the picture did not change were left out.")
    return "\n".join(lines)


# --- the engine ---------------------------------------------------------------------------------


@dataclass
class Call:
    """One model answer this job used."""

    kind: Literal["segment", "asr", "summary"]
    result: VisionResult
    cached: bool  # came from the answer cache
    paid_here: bool  # paid by this job (in this attempt or an earlier one)


@dataclass
class _Ledger:
    calls: list[Call] = field(default_factory=list)

    def usage(self) -> dict[str, int]:
        total = Usage()
        for c in self.calls:
            if c.paid_here:
                total.add(c.result.usage)
        out = total.as_dict()
        out["requests"] = sum(c.paid_here for c in self.calls)
        out["cached_answers"] = sum(c.cached for c in self.calls)
        out["reused_from_other_jobs"] = sum(c.cached and not c.paid_here for c in self.calls)
        return out


class _NotSent(Exception):
    """A request held back because another request of the same job already failed."""


def _worst(errors: Sequence[BaseException]) -> BaseException:
    """The error that decides the job: cancellation, then a bug, then a permanent failure, then a retryable one."""

    def rank(e: BaseException) -> int:
        if isinstance(e, asyncio.CancelledError | JobCancelled):
            return 0
        if isinstance(e, _NotSent):
            return 4
        if not isinstance(e, DropflowError):
            return 1
        return 3 if e.kind == ErrorKind.RETRYABLE else 2

    return min(errors, key=rank)


async def gather_all(aws: Sequence[Awaitable[T]]) -> list[T]:
    """Await all; when some fail, let the others finish (their answers are paid and cached), then raise."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise _worst(errors)
    return results  # type: ignore[return-value]


class AnnotateEngine(FileEngine):
    """Videos -> timed annotations (single prompt, or Bailian-style two-stage analysis)."""

    name: ClassVar[str] = "annotate"
    extensions: ClassVar[frozenset[str]] = VIDEO_EXTENSIONS
    Params: ClassVar[type[BaseModel]] = AnnotateParams
    supports_cancel: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = (
        True  # answers are cached per request: a rerun pays only what is missing
    )

    def __init__(self) -> None:
        # Decoding is CPU-bound: jobs of one daemon (which keeps one engine instance) decode at
        # most one video per core at a time. Twenty jobs decoding at once on two cores finish no
        # sooner in total, but every one of them finishes late, and their requests wait for it.
        self.decode_slots = asyncio.Semaphore(os.cpu_count() or 1)

    def inputs_for(self, path: Path) -> list[Path] | None:
        """The video, then its `<video>.roles.yaml` and `<video>.extra.txt` when present (archived with it)."""
        if path.suffix.lower() not in self.extensions:
            return None
        found = [sidecar(path, ROLES_SUFFIXES), sidecar(path, (EXTRA_SUFFIX,))]
        return [path, *(p for p in found if p is not None)]

    async def run(self, job: Job, ctx: JobContext) -> Done:
        """Raises InputError (missing/oversized/unreadable video, zero frames, bad photo), ConfigError
        (missing prompt, bad sidecar), provider errors (AuthError on 401, RetryableError on 429/5xx),
        JobCancelled."""
        run = _Run(job, ctx, AnnotateParams.model_validate(job.params), self.decode_slots)
        try:
            return await run.run()
        except DropflowError as exc:
            if run.ledger.calls:
                exc.usage = run.ledger.usage()
            raise


class _Run:
    """The state of one job's run: its params, provider, cache and the answers it used."""

    def __init__(
        self, job: Job, ctx: JobContext, params: AnnotateParams, decode_slots: asyncio.Semaphore
    ) -> None:
        self.job = job
        self.decode_slots = decode_slots
        self.ctx = ctx
        self.p = params
        self.video = Path(job.input_path)
        # templates come from the prompts folder first; reference photos from beside the video first
        self.template_places = [ctx.prompts_dir, self.video.parent]
        self.photo_places = [self.video.parent, ctx.prompts_dir]
        self.ledger = _Ledger()
        self.warnings: list[str] = []
        self.provider: VisionProvider | None = None
        self.cache: AnswerCache | None = None
        self.marker = f"job {job.id} {job.content_hash[:16]}"
        self.limit = asyncio.Semaphore(params.concurrency)
        self.failed: BaseException | None = None  # the first failed request: send no more after it
        self.started = time.monotonic()

    # --- the stages ---

    async def run(self) -> Done:
        p, ctx = self.p, self.ctx
        self._check_video()
        templates = self._templates()
        # a few stat() calls and two small text files: not worth a trip through the shared thread
        # pool, where a job would queue behind other jobs' sampling
        roles, extra = self._sidecars()
        provider = ctx.providers.vision(self.job.provider)
        self.provider = provider
        if p.cache and not provider.offline:  # offline answers are free and carry no value worth keeping
            self.cache = AnswerCache(ctx.state_dir / "answers")
        photos: list[Part] = []
        if any(r.photos for r in roles):
            photos = await asyncio.to_thread(
                role_photo_parts, roles, self.photo_places, p.max_side, p.jpeg_quality
            )

        sampling = await self._sample()
        self.warnings += sampling.warnings
        ctx.check_cancelled()
        needs_asr = any(uses(t, "videoAsrText") for t in templates.values())
        transcript, asr_note = await self._speech(needs_asr)
        ctx.check_cancelled()

        segments = split(sampling, p.max_frames_per_segment, p.segment_seconds)
        values = {
            "videoExtraInfo": extra,
            "videoRoles": roles_text(roles),
            "language": p.language or "",
        }
        first = templates["segment" if p.mode == "two_stage" else "prompt"]
        answers = await self._segments(segments, first, values, templates, transcript, photos)

        summary: Call | None = None
        if p.mode == "two_stage":
            summary = await self._summary(segments, answers, templates["summary"], values, transcript)
            annotation = summary.result.text
        elif len(segments) == 1:
            annotation = answers[0].result.text
        else:
            annotation = "\n\n".join(
                f"[{clock(s.start)}-{clock(s.end)}]\n{a.result.text}"
                for s, a in zip(segments, answers, strict=True)
            )
        await ctx.progress(P_SUMMARY, "writing outputs")
        outputs = await asyncio.to_thread(
            self._write, sampling, segments, answers, summary, annotation, transcript, asr_note, roles, extra
        )
        usage = self.ledger.usage()
        usage.update(frames_sampled=sampling.sampled, frames_sent=len(sampling.frames))
        cached = usage["cached_answers"]
        return Done(
            outputs,
            usage=usage,
            message=f"{len(segments)} segment(s), {len(sampling.frames)}/{sampling.sampled} frames sent"
            + (f", {cached} cached answer(s)" if cached else ""),
        )

    def _check_video(self) -> None:
        video = self.video
        try:
            size = video.stat().st_size
        except FileNotFoundError:
            raise InputError(f"{video} no longer exists", hint="drop the video again") from None
        if size > MAX_VIDEO_BYTES:
            raise InputError(
                f"{video.name} is {size / 1024**3:.2f} GB, over the 1 GB cap",
                hint="split it (e.g. `ffmpeg -i in.mp4 -c copy -f segment -segment_time 600 part%02d.mp4`)",
            )
        if video.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputError(
                f"{video.name} is not a video dropflow reads ({', '.join(sorted(VIDEO_EXTENSIONS))})",
                hint="convert it to mp4",
            )

    def _templates(self) -> dict[str, str]:
        p = self.p
        if p.mode == "single":
            return {"prompt": load_template(p.prompt, "prompt", self.template_places)}
        out = {
            "segment": load_template(p.segment_prompt, "segment_prompt", self.template_places),
            "summary": load_template(p.summary_prompt, "summary_prompt", self.template_places),
        }
        if not uses(out["summary"], "videoAnalysisText"):
            raise ConfigError(
                f"the summary template {p.summary_prompt!r} has no {{videoAnalysisText}}: "
                "the summary model would never see the segment analysis",
                hint="add {videoAnalysisText} where the analysis belongs",
            )
        return out

    def _sidecars(self) -> tuple[list[Role], str]:
        """Roles (route + sidecar) and extra info (route + sidecar). Blocking."""
        roles = list(self.p.roles)
        extra = self.p.extra_info.strip()
        listed = [Path(x) for x in self.job.input_paths[1:]]
        roles_file = next((x for x in listed if x.name.endswith(ROLES_SUFFIXES)), None) or sidecar(
            self.video, ROLES_SUFFIXES
        )
        extra_file = next((x for x in listed if x.name.endswith(EXTRA_SUFFIX)), None) or sidecar(
            self.video, (EXTRA_SUFFIX,)
        )
        if roles_file is not None and roles_file.is_file():
            roles = merge_roles(roles, load_roles(roles_file))
            self.photo_places.insert(0, roles_file.parent)
        if extra_file is not None and extra_file.is_file():
            try:
                text = extra_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read {extra_file}: {exc}", hint="save it as UTF-8 text") from exc
            extra = f"{extra}\n{text}".strip()
        return roles, extra

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking decode work in a thread (under the decode slots) that stops, through
        `should_stop`, when this task is cancelled."""
        stop = False

        def should_stop() -> bool:
            return stop or self.ctx.cancelled

        async with self.decode_slots:
            task = asyncio.ensure_future(asyncio.to_thread(fn, *args, should_stop=should_stop, **kwargs))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                stop = True
                await asyncio.wait({task})  # the thread notices within a few frames
                raise

    async def _sample(self) -> Sampling:
        from dropflow.engine.annotate.frames import SampleSpec, sample_frames

        p, ctx = self.p, self.ctx
        spec = SampleSpec(
            fps=p.effective_fps,
            max_side=p.max_side,
            jpeg_quality=p.jpeg_quality,
            dedup=p.dedup,
            dedup_threshold=p.dedup_threshold,
            max_frames=p.max_total_frames,
        )
        seen = [0, 0]

        def progress(k: int, n: int) -> None:  # on the sampling thread: just note it
            seen[0], seen[1] = k, n

        # progress is reported while the thread works, never before it starts: a progress write
        # is a database transaction, and twenty jobs starting at once would queue behind them
        work = asyncio.ensure_future(self._in_thread(sample_frames, self.video, spec, progress=progress))
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=PROGRESS_SECONDS)
                if seen[1] and not work.done():
                    await ctx.progress(P_SAMPLING * seen[0] / seen[1], f"sampling {seen[0]}/{seen[1]} frames")
        except asyncio.CancelledError:
            work.cancel()  # stops the sampling thread too (see _in_thread)
            await asyncio.wait({work})
            raise
        return work.result()

    async def _speech(self, needed: bool) -> tuple[Transcript | None, str]:
        """The transcript (None when not needed, off, impossible or silent) and a note saying which."""
        from dropflow.engine.annotate.asr import Transcript, chunk_request, extract_soundtrack, transcript

        p, ctx = self.p, self.ctx
        assert self.provider is not None
        if not needed:
            return None, "not used by the templates"
        if not p.asr:
            return None, "off (asr: false)"
        if self.provider.name not in AUDIO_PROVIDERS:
            self.warnings.append(
                f"provider {self.provider.name} cannot transcribe audio: {{videoAsrText}} left empty"
            )
            return None, f"provider {self.provider.name} has no speech recognition"
        await ctx.progress(P_SAMPLING, "extracting the soundtrack")
        track: Soundtrack = await self._in_thread(
            extract_soundtrack, self.video, chunk_seconds=p.asr_chunk_seconds
        )
        self.warnings += track.warnings
        if not track.has_audio:
            return None, "no audio track"
        if not track.chunks:
            return Transcript(p.asr_model), "silent soundtrack"
        done = 0

        async def one(chunk: Any) -> str:
            nonlocal done
            call = await self._ask("asr", chunk_request(chunk, p.asr_model))
            done += 1
            fraction = P_SAMPLING + (P_SPEECH - P_SAMPLING) * done / len(track.chunks)
            await ctx.progress(fraction, f"speech {done}/{len(track.chunks)}")
            return call.result.text

        texts = await gather_all([one(c) for c in track.chunks])
        return transcript(p.asr_model, track.chunks, texts), "transcribed"

    async def _segments(
        self,
        segments: list[Segment],
        template: str,
        values: dict[str, str],
        templates: dict[str, str],
        transcript: Transcript | None,
        photos: list[Part],
    ) -> list[Call]:
        p, ctx = self.p, self.ctx
        fps = p.effective_fps
        # what no template of this job places gets appended to the first-stage prompt
        in_use = list(templates.values())
        extra_note = (
            f"\n\nExtra information about this video:\n{values['videoExtraInfo']}"
            if values["videoExtraInfo"] and not any(uses(t, "videoExtraInfo") for t in in_use)
            else ""
        )
        roles_note = values["videoRoles"] if values["videoRoles"] and not uses(template, "videoRoles") else ""
        done = 0

        async def one(seg: Segment) -> Call:
            nonlocal done
            asr = transcript.render(seg.start, seg.end) if transcript else ""
            text = fill(template, {**values, "videoAsrText": asr}) + extra_note
            text += self._language_note(template)
            sent = padded(seg.frames)
            context = segment_context(seg, sent, len(segments), fps)
            parts: list[Part] = []
            if roles_note:
                parts.append(TextPart(roles_note))
            parts += photos
            parts.append(VideoPart(frames=[f.jpeg for f in sent], fps=fps))
            parts.append(TextPart(f"{text}\n\n{context}" if context else text))
            request = VisionRequest(
                model=p.model, parts=parts, temperature=p.temperature, max_tokens=p.max_tokens
            )
            call = await self._ask("segment", request)
            done += 1
            fraction = P_SPEECH + (P_SEGMENTS - P_SPEECH) * done / len(segments)
            await ctx.progress(fraction, f"segment {done}/{len(segments)}")
            return call

        # the requests go out first; the progress write follows while they are in flight
        tasks = [asyncio.ensure_future(one(s)) for s in segments]
        try:
            await ctx.progress(P_SPEECH, f"segment 0/{len(segments)}")
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return await gather_all(tasks)

    async def _summary(
        self,
        segments: list[Segment],
        answers: list[Call],
        template: str,
        values: dict[str, str],
        transcript: Transcript | None,
    ) -> Call:
        p = self.p
        await self.ctx.progress(P_SEGMENTS, "summary")
        analysis = "\n\n".join(
            f"[{clock(s.start)}-{clock(s.end)}]\n{a.result.text.strip()}"
            for s, a in zip(segments, answers, strict=True)
        )
        text = fill(
            template,
            {
                **values,
                "videoAnalysisText": analysis,
                "videoAsrText": transcript.render() if transcript else "",
            },
        )
        if values["videoRoles"] and not uses(template, "videoRoles"):
            text = f"{values['videoRoles']}\n\n{text}"
        text += self._language_note(template)
        request = VisionRequest(
            model=p.summary_model, parts=[TextPart(text)], temperature=p.temperature, max_tokens=p.max_tokens
        )
        return await self._ask("summary", request)

    def _language_note(self, template: str) -> str:
        if self.p.language and not uses(template, "language"):
            return f"\n\nWrite your answer in {self.p.language}."
        return ""

    async def _ask(self, kind: Literal["segment", "asr", "summary"], request: VisionRequest) -> Call:
        """One answer: from the cache when this exact request was answered before, else paid for and cached."""
        assert self.provider is not None
        cache = self.cache
        key = request_key(self.provider.name, request) if cache is not None else ""
        if cache is not None:
            hit = cache.get(key)  # one small local file: read inline (see _sidecars)
            if hit is not None:
                call = Call(kind, hit.result, cached=True, paid_here=hit.paid_by == self.marker)
                self.ledger.calls.append(call)
                return call
        async with self.limit:
            self.ctx.check_cancelled()
            if self.failed is not None:
                # a 401 or a 429 will not be different for the next request: stop paying and hammering;
                # what was answered is cached, the retry sends only what is missing
                raise _NotSent()
            try:
                result = await self.provider.generate(request)
            except Exception as exc:
                self.failed = self.failed or exc
                raise
        if cache is not None:
            try:
                await asyncio.to_thread(cache.put, key, result, paid_by=self.marker)
            except OSError as exc:  # the answer is paid for: use it even if it cannot be kept
                self.ctx.log.warning("cannot store an answer in the cache: %s", exc)
        call = Call(kind, result, cached=False, paid_here=True)
        self.ledger.calls.append(call)
        return call

    # --- outputs ---

    def _output_base(self) -> Path:
        """``outputs/annotate/[<batch>/]<stem>``, or ``<stem> (2)`` when another video's result holds the name.

        A rerun of the same content (a retry, a restart) overwrites its own result.
        """
        folder = self.ctx.output_dir / self.job.batch if self.job.batch else self.ctx.output_dir
        n = 1
        while True:
            base = folder / (self.video.stem if n == 1 else f"{self.video.stem} ({n})")
            j, t = base.with_name(base.name + ".json"), base.with_name(base.name + ".txt")
            if not j.exists() and not t.exists():
                return base
            try:
                if json.loads(j.read_text(encoding="utf-8")).get("content_hash") == self.job.content_hash:
                    return base
            except (OSError, ValueError, AttributeError):
                pass
            n += 1

    def _write(
        self,
        sampling: Sampling,
        segments: list[Segment],
        answers: list[Call],
        summary: Call | None,
        annotation: str,
        transcript: Transcript | None,
        asr_note: str,
        roles: list[Role],
        extra: str,
    ) -> list[Path]:
        p = self.p
        assert self.provider is not None
        elapsed = time.monotonic() - self.started
        now = datetime.now()
        fps = p.effective_fps

        def call_json(c: Call) -> dict[str, Any]:
            return {
                "model": c.result.model,
                "request_id": c.result.request_id,
                "usage": c.result.usage.as_dict(),
                "cached": c.cached,
            }

        doc: dict[str, Any] = {
            "video": self.video.name,
            "model": p.model,
            "fps": fps,
            "processing_time": round(elapsed, 2),
            "timestamp": now.isoformat(timespec="seconds"),
            "annotation": annotation,
            "mode": p.mode,
            "provider": self.provider.name,
            "offline": self.provider.offline,
            "prompt": p.segment_prompt if p.mode == "two_stage" else p.prompt,
            "source": str(self.video),
            "content_hash": self.job.content_hash,
            "job_id": self.job.id,
            "duration": round(sampling.duration, 3),
            "width": sampling.width,
            "height": sampling.height,
            "frames_sampled": sampling.sampled,
            "frames_sent": len(sampling.frames),
            "frames_dropped_as_repeats": sampling.dropped,
            "segments": [
                {
                    "index": s.index,
                    "start": round(s.start, 3),
                    "end": round(s.end, 3),
                    "frames_sampled": s.sampled,
                    "frames_sent": len(s.frames),
                    "frame_times": [round(f.time, 3) for f in s.frames],
                    "text": a.result.text,
                    **call_json(a),
                }
                for s, a in zip(segments, answers, strict=True)
            ],
            "summary": {"text": summary.result.text, **call_json(summary)} if summary else None,
            "asr": {
                "status": asr_note,
                "model": p.asr_model if transcript is not None else None,
                "chunks": transcript.as_json() if transcript is not None else [],
            },
            "roles": [r.model_dump() for r in roles],
            "extra_info": extra,
            "language": p.language,
            "usage": self.ledger.usage(),
            "request_ids": [c.result.request_id for c in self.ledger.calls],
            "warnings": self.warnings,
            "params": p.model_dump(mode="json"),
        }
        lines = [
            f"Video: {self.video.name}",
            f"Model: {p.model}",
            f"FPS: {round(fps, 3)}",
            f"Processing time: {elapsed:.2f} seconds",
            f"Date: {now:%Y-%m-%d %H:%M:%S}",
            "",
            "--- Annotation ---",
            annotation.strip(),
            "",
        ]
        if p.mode == "two_stage":
            lines += ["--- Segment analysis ---"]
            for s, a in zip(segments, answers, strict=True):
                lines += [f"[{clock(s.start)}-{clock(s.end)}]", a.result.text.strip(), ""]
        base = self._output_base()
        out_json = files.write_json(base.with_name(base.name + ".json"), doc)
        out_txt = files.write_text(base.with_name(base.name + ".txt"), "\n".join(lines))
        return [out_json, out_txt]
