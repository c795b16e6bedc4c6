"""One annotate job's run, stage by stage: sampling, speech, segment requests, the summary, and the
hand-off to the outputs (the stages are listed in `engine.py`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from dropflow.engine.annotate.asr import clock, fit_chunk_seconds
from dropflow.engine.annotate.calls import Caller, gather_all
from dropflow.engine.annotate.ledger import Call, Ledger
from dropflow.engine.annotate.output import Outcome, write_outputs
from dropflow.engine.annotate.segments import (
    Budget,
    Segment,
    padded,
    payload_bytes,
    request_budget,
    segment_context,
    split,
)
from dropflow.engine.annotate.sidecars import read_sidecars, role_photo_parts, roles_text
from dropflow.engine.annotate.summary import Piece, Summariser, Summary
from dropflow.engine.annotate.templates import fill, job_templates, uses
from dropflow.engine.answer_cache import AnswerCache
from dropflow.engine.base import Done, JobContext
from dropflow.engine.errors import InputError
from dropflow.engine.media import VIDEO_EXTENSIONS
from dropflow.engine.providers import token_counter, vision_limits
from dropflow.engine.providers.base import (
    ModelLimits,
    Part,
    TextPart,
    VideoPart,
    VisionProvider,
    VisionRequest,
)

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job
    from dropflow.engine.annotate.asr import Soundtrack, Transcript
    from dropflow.engine.annotate.params import AnnotateParams
    from dropflow.engine.frames import Sampling

T = TypeVar("T")

MAX_VIDEO_BYTES = 1024**3  # 1 GB: beyond this a single job holds too many frames and too much money
AUDIO_PROVIDERS = frozenset({"dashscope", "openai", "offline"})  # those that send an AudioPart

# share of the progress bar per stage (sampling is local work and fast; requests dominate)
P_SAMPLING, P_SPEECH, P_SEGMENTS, P_SUMMARY = 0.30, 0.40, 0.90, 0.97
PROGRESS_SECONDS = 0.3  # how often a long local stage (sampling) reports


class Run:
    """The state of one job's run: its params, provider, the caller of its requests and their ledger."""

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
        self.ledger = Ledger()
        self.warnings: list[str] = []
        self.provider: VisionProvider | None = None
        self.caller: Caller | None = None  # set once the provider is known
        self.started = time.monotonic()

    # --- the stages ---

    async def run(self) -> Done:
        p, ctx = self.p, self.ctx
        self._check_video()
        templates = job_templates(p, self.template_places)
        # a few stat() calls and two small text files: not worth a trip through the shared thread
        # pool, where a job would queue behind other jobs' sampling
        sidecars = read_sidecars(p, self.video, [Path(x) for x in self.job.input_paths[1:]])
        roles, extra = sidecars.roles, sidecars.extra
        if sidecars.roles_dir is not None:
            self.photo_places.insert(0, sidecars.roles_dir)
        provider = ctx.providers.vision(self.job.provider)
        self.provider = provider
        cache: AnswerCache | None = None
        if p.cache and not provider.offline:  # offline answers are free and carry no value worth keeping
            cache = AnswerCache(ctx.state_dir / "answers")
        marker = f"job {self.job.id} {self.job.content_hash[:16]}"
        self.caller = Caller(
            provider, cache, ctx, self.ledger, marker, p.concurrency, self.limits, self.warnings
        )
        values = {
            "videoExtraInfo": extra,
            "videoRoles": roles_text(roles),
            "language": p.language or "",
        }
        summariser: Summariser | None = None
        if p.mode == "two_stage":  # checked before anything is paid for
            summariser = self._summariser(templates["summary"], values)
            answer_limit = self.limits(p.model).max_output_tokens or p.max_tokens
            await asyncio.to_thread(summariser.check_room, min(p.max_tokens, answer_limit))
        photos: list[Part] = []
        if any(r.photos for r in roles):
            photos = await asyncio.to_thread(
                role_photo_parts, roles, self.photo_places, p.max_side, p.jpeg_quality, ctx.check_readable
            )

        sampling = await self._sample()
        self.warnings += sampling.warnings
        ctx.check_cancelled()
        needs_asr = any(uses(t, "videoAsrText") for t in templates.values())
        transcript, asr_note = await self._speech(needs_asr)
        ctx.check_cancelled()

        first = templates["segment" if p.mode == "two_stage" else "prompt"]
        budget = self._budget(sampling, photos, [first, *values.values()], transcript)
        segments = split(sampling, budget, p.segment_seconds)
        if len(segments) > len(split(sampling, p.max_frames_per_segment, p.segment_seconds)):
            self.warnings.append(
                f"{len(segments)} segments: at most {budget.frames} frames"
                + (f" and {budget.bytes // 2**20} MiB" if budget.bytes else "")
                + f" fit in one request to {p.model}"
            )
        answers = await self._segments(segments, first, values, templates, transcript, photos)

        summary: Summary | None = None
        if summariser is not None:
            summariser.transcript = transcript
            await ctx.progress(P_SEGMENTS, "summary")
            pieces = [Piece(s.start, s.end, a.result.text, 0) for s, a in zip(segments, answers, strict=True)]
            summary = await summariser.run(pieces)
            self.warnings += summary.notes
            annotation = summary.final.result.text
        elif len(segments) == 1:
            annotation = answers[0].result.text
        else:
            annotation = "\n\n".join(
                f"[{clock(s.start)}-{clock(s.end)}]\n{a.result.text}"
                for s, a in zip(segments, answers, strict=True)
            )
        await ctx.progress(P_SUMMARY, "writing outputs")
        outcome = Outcome(
            job=self.job,
            video=self.video,
            params=p,
            provider=provider,
            started=self.started,
            sampling=sampling,
            segments=segments,
            answers=answers,
            summary=summary,
            annotation=annotation,
            transcript=transcript,
            asr_note=asr_note,
            roles=roles,
            extra=extra,
            ledger=self.ledger,
            warnings=self.warnings,
        )
        outputs = await asyncio.to_thread(write_outputs, outcome, ctx.output_dir)
        usage: dict[str, Any] = dict(self.ledger.usage())
        usage.update(frames_sampled=sampling.sampled, frames_sent=len(sampling.frames))
        # the keys `dropflow job N` reads to show a local and a hosted (mode: bailian) job alike
        usage.update(mode=p.mode, model=p.model, processing_seconds=round(time.monotonic() - self.started, 2))
        if p.mode == "two_stage":
            usage["summary_model"] = p.summary_model
        cached = usage["cached_answers"]
        return Done(
            outputs,
            usage=usage,
            message=f"{len(segments)} segment(s), {len(sampling.frames)}/{sampling.sampled} frames sent"
            + (f", {cached} cached answer(s)" if cached else ""),
        )

    def limits(self, model: str) -> ModelLimits:
        """What one request of `model` may hold, through this job's provider."""
        assert self.provider is not None
        return vision_limits(self.provider.name, model)

    def _budget(
        self, sampling: Sampling, photos: list[Part], texts: list[str], transcript: Transcript | None
    ) -> Budget:
        """What the frames of one segment request may take (see `segments.request_budget`)."""
        inline, fixed = payload_bytes(photos, [*texts, transcript.render() if transcript else ""])
        return request_budget(
            self.limits(self.p.model),
            self.p.max_frames_per_segment,
            inline_media=inline,
            fixed_bytes=fixed,
            largest_frame=max((len(f.jpeg) for f in sampling.frames), default=0),
        )

    def _summariser(self, template: str, values: dict[str, str]) -> Summariser:
        p = self.p
        assert self.provider is not None and self.caller is not None
        caller = self.caller

        async def ask(request: VisionRequest, label: str) -> Call:
            return await caller.ask("summary", request, label)

        return Summariser(
            model=p.summary_model,
            template=template,
            values=values,
            transcript=None,
            suffix=self._language_note(template),
            temperature=p.temperature,
            max_tokens=p.max_tokens,
            count=token_counter(self.provider.name),
            max_input=self.limits(p.summary_model).max_input_tokens,
            ask=ask,
        )

    def _check_video(self) -> None:
        video = self.video
        try:
            size = video.stat().st_size
        except FileNotFoundError:
            raise InputError(f"{video} no longer exists", hint="drop the video again") from None
        if size == 0:
            raise InputError(
                f"{video.name} is empty (0 bytes)",
                hint="the copy or download may have failed; drop the video again",
            )
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
        from dropflow.engine.frames import SampleSpec, sample_frames

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
            extract_soundtrack, self.video, chunk_seconds=self._chunk_seconds()
        )
        self.warnings += track.warnings
        if not track.has_audio:
            return None, "no audio track"
        if not track.chunks:
            return Transcript(p.asr_model), "silent soundtrack"
        done = 0

        async def one(chunk: Any) -> str:
            nonlocal done
            call = await self._ask("asr", chunk_request(chunk, p.asr_model), f"speech {clock(chunk.start)}")
            done += 1
            fraction = P_SAMPLING + (P_SPEECH - P_SAMPLING) * done / len(track.chunks)
            await ctx.progress(fraction, f"speech {done}/{len(track.chunks)}")
            return call.result.text

        texts = await gather_all([one(c) for c in track.chunks])
        return transcript(p.asr_model, track.chunks, texts), "transcribed"

    def _chunk_seconds(self) -> float:
        p = self.p
        seconds = fit_chunk_seconds(p.asr_chunk_seconds, self.limits(p.asr_model))
        if seconds < p.asr_chunk_seconds:
            self.warnings.append(
                f"speech is sent in chunks of about {seconds:g} s (not {p.asr_chunk_seconds:g} s): "
                f"a longer clip does not fit one request to {p.asr_model}"
            )
        return seconds

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
            call = await self._ask(
                "segment", request, f"segment {seg.index + 1} ({clock(seg.start)}-{clock(seg.end)})"
            )
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

    def _language_note(self, template: str) -> str:
        if self.p.language and not uses(template, "language"):
            return f"\n\nWrite your answer in {self.p.language}."
        return ""

    async def _ask(
        self, kind: Literal["segment", "asr", "summary"], request: VisionRequest, label: str
    ) -> Call:
        """One answer, through the answer cache (see `Caller.ask`, which says what it raises)."""
        assert self.caller is not None
        return await self.caller.ask(kind, request, label)
