"""`mode: bailian`: the annotate engine's two stages run by Bailian's hosted video analysis.

One job follows one remote task across short runs, waiting between them without a worker:

    run 1   check the video and the params against the service's rules (`bailian_rules.py`),
            before anything is uploaded or paid; get a URL the service can fetch: the
            `<video>.url` sidecar, or an upload to the user's OSS bucket (its object key is saved
            once done, and an object of the same size already there is not uploaded again) and a
            signed URL; write a "submitting" marker, submit, save the task id   -> Wait
    run n   poll: PENDING / RUNNING                                              -> Wait
    run m   SUCCESSED: `<name>.json` / `<name>.txt` from the results in the poll's own reply
            (nothing to download, so no link can expire first)                  -> Done

Never paid twice: the task id is committed (checkpoint + the job's remote task id) before the
job waits on it; a restarted daemon resumes polling it. A crash inside the create call leaves the
marker without an id: the job then fails with that explanation instead of submitting again, and
`dropflow retry` submits anew (the `deduplicationId` sent may let the service spot the repeat;
unconfirmed, so nothing relies on it).

The outputs have the local modes' shape (model, frames, timing, usage; `segments` are the shots,
`summary` the generated text, `asr` the captions) plus the service's own results under `bailian`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.engine import files
from dropflow.engine.annotate.asr import clock
from dropflow.engine.annotate.output import output_base
from dropflow.engine.annotate.sidecars import URL_SUFFIX, read_sidecars, sidecar
from dropflow.engine.annotate.templates import find_file, job_templates
from dropflow.engine.base import Done, JobContext, Result, Wait
from dropflow.engine.errors import (
    AuthError,
    ConfigError,
    DropflowError,
    InputError,
    JobCancelled,
    PermanentError,
    ProviderError,
    RetryableError,
)
from dropflow.engine.media import VIDEO_EXTENSIONS
from dropflow.engine.providers import bailian_rules as rules

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job
    from dropflow.engine.annotate.params import AnnotateParams
    from dropflow.engine.providers.bailian import AnalysisTask, BailianAnalysis


@dataclasses.dataclass(frozen=True)
class Probe:
    duration: float
    width: int
    height: int


def probe(path: Path) -> Probe:
    """The video's length and size from its container (blocking; no frame is decoded).

    Raises InputError: not a video dropflow can open.
    """
    from dropflow.engine.frames import open_video

    src = open_video(path)
    try:
        ctx = src.stream.codec_context
        return Probe(float(src.stated_duration), int(ctx.width or 0), int(ctx.height or 0))
    finally:
        src.container.close()


def read_url(path: Path) -> str:
    """The URL in a `.url` sidecar: its first line, or the `URL=` line of a Windows shortcut.

    Raises ConfigError: no http(s) URL in it.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint="save it as UTF-8 text") from exc
    for line in text.splitlines():
        line = line.strip()
        if line.upper().startswith("URL="):
            line = line[4:].strip()
        if line.startswith(rules.URL_SCHEMES):
            return line
    raise ConfigError(
        f"{path.name} holds no http(s) URL",
        hint="put the video's URL (one the service can fetch) on its first line",
    )


class HostedRun:
    """One run of a `mode: bailian` job; `cp` is its checkpoint, saved whole after each change."""

    def __init__(self, job: Job, ctx: JobContext, params: AnnotateParams) -> None:
        from dropflow.engine.providers.bailian import BailianAnalysis

        self.job, self.ctx, self.p = job, ctx, params
        self.video = Path(job.input_path)
        self.name = self.video.name
        self.cp: dict[str, Any] = dict(job.checkpoint)
        provider = ctx.providers.vision("bailian")
        if not isinstance(provider, BailianAnalysis):  # a test's or a plugin's stand-in
            raise ConfigError("mode: bailian needs the bailian provider", hint="check providers.bailian")
        self.service: BailianAnalysis = provider
        if not self.cp.get("phase") and job.remote_task_id:
            # a task id without engine state (should not happen): follow it rather than pay again
            self.cp.update(phase="remote", task_id=job.remote_task_id, submitted_at=time.time())

    @property
    def interval(self) -> float:
        return self.p.interval or 1.0 / self.p.fps

    async def save(self, *, remote_task_id: str | None = None) -> None:
        await self.ctx.save(self.cp, remote_task_id=remote_task_id)

    async def note(self, message: str) -> None:
        if self.ctx.tasks is not None:
            with contextlib.suppress(Exception):  # history is a nicety; never fail a job over it
                await self.ctx.tasks.add_event(self.job.id, "note", message)

    async def run(self) -> Result:
        """Raises InputError / ConfigError (before anything is uploaded or paid), AuthError,
        PermanentError (refused, failed, refused content, unresolved submission), RetryableError,
        JobCancelled."""
        if self.ctx.cancel_reason is not None:
            raise self.cancelled()
        self.cp.setdefault("started_at", time.time())
        try:
            if self.cp.get("phase") != "remote":
                await self.submit()
                return Wait(
                    self.p.bailian.poll_first_seconds, f"submitted: task {self.cp['task_id']}", self.usage()
                )
            return await self.follow()
        except ProviderError as exc:
            # the SDK layer knows the call, not the file: name it, as every other error of a job does
            if not exc.message.startswith(f"{self.name}: "):
                exc.message = f"{self.name}: {exc.message}"
                exc.args = (exc.message,)
            raise

    def cancelled(self) -> JobCancelled:
        if self.cp.get("phase") == "remote":
            return JobCancelled(
                f"{self.ctx.cancel_reason}ed; Bailian task {self.cp.get('task_id')} was already submitted and "
                "may still complete and bill (the light app offers no cancel for it)"
            )
        return JobCancelled(f"{self.ctx.cancel_reason}ed before anything was submitted (nothing billed)")

    # --- before the task -------------------------------------------------------------------------

    def check(self) -> Probe:
        """The video and the params against the service's rules. Blocking (probes the video)."""
        p, video = self.p, self.video
        try:
            size = video.stat().st_size
        except FileNotFoundError:
            raise InputError(f"{video} no longer exists", hint="drop the video again") from None
        if video.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputError(f"{self.name} is not a video dropflow reads", hint="convert it to mp4")
        if size == 0:
            raise InputError(f"{self.name} is empty (0 bytes)", hint="drop the video again")
        if size > rules.MAX_VIDEO_BYTES:
            raise InputError(
                f"{self.name} is {size / 1024**3:.2f} GB, over the {rules.MAX_VIDEO_BYTES / 1024**3:.0f} GB "
                "Bailian's video analysis takes from dropflow",
                hint="split it (e.g. `ffmpeg -i in.mp4 -c copy -f segment -segment_time 600 part%02d.mp4`)",
            )
        lo, hi = rules.FRAME_INTERVAL_RANGE
        if not lo <= self.interval <= hi:
            raise ConfigError(
                f"{self.name}: Bailian samples one frame every {lo:g}-{hi:g} s (frameSampleMethod.interval); "
                f"these params ask for one every {self.interval:g} s",
                hint=f"set params.interval between {lo:g} and {hi:g} (or fps between {1 / hi:g} and {1 / lo:g})",
            )
        plo, phi = rules.FRAME_PIXEL_RANGE
        if not plo <= p.max_side <= phi:  # the params' own bounds are these today; kept for the table's sake
            raise ConfigError(
                f"max_side must be {plo}-{phi} for Bailian", hint=f"set params.max_side in {plo}-{phi}"
            )
        if p.language and p.language.strip().lower() not in rules.LANGUAGES:
            raise ConfigError(
                f"{self.name}: language {p.language!r} is not one Bailian's video analysis takes",
                hint=f"use one of: {', '.join(sorted(set(rules.LANGUAGES.values())))}",
            )
        found = probe(video)
        if found.duration > rules.MAX_VIDEO_SECONDS:
            raise InputError(
                f"{self.name} runs {clock(found.duration)}, over the {clock(rules.MAX_VIDEO_SECONDS)} "
                "dropflow sends to Bailian's video analysis",
                hint="split it into shorter parts",
            )
        return found

    def fields(self, probe: Probe, roles_urls: dict[str, list[str]]) -> dict[str, Any]:
        """The submission as the wire spells it, without the video URL (recorded, so no secret)."""
        p = self.p
        templates = job_templates(p, [self.ctx.prompts_dir, self.video.parent])  # segment + summary
        sidecars = read_sidecars(p, self.video, [Path(x) for x in self.job.input_paths[1:]])
        out: dict[str, Any] = {
            "videoModelId": p.model,
            "modelId": p.summary_model,
            "frameSampleMethod": {
                "methodName": rules.FRAME_METHOD,
                "interval": self.interval,
                "pixel": p.max_side,
            },
            "generateOptions": list(p.bailian.generate_options),
            "deduplicationId": f"dropflow-{self.job.content_hash[:32]}-{self.job.id}",
        }
        if not p.bailian.service_templates:
            video_template = templates["segment"]
            if rules.VIDEO_TEMPLATE_VARIABLE not in video_template:
                raise ConfigError(
                    f"{p.segment_prompt}: Bailian's video template must contain {rules.VIDEO_TEMPLATE_VARIABLE}",
                    hint=f"add {rules.VIDEO_TEMPLATE_VARIABLE} where the transcript goes, or set "
                    "params.bailian.service_templates: true",
                )
            out["videoModelCustomPromptTemplate"] = video_template
            if p.bailian.summary_template_id:
                out["modelCustomPromptTemplateId"] = p.bailian.summary_template_id
            else:
                out["modelCustomPromptTemplate"] = templates["summary"]
        if sidecars.extra:
            out["videoExtraInfo"] = sidecars.extra
        if p.language:
            out["language"] = rules.LANGUAGES[p.language.strip().lower()]
        if sidecars.roles:
            out["videoRoles"] = [
                {"roleName": r.name, "roleInfo": r.description, "urls": roles_urls.get(r.name, [])}
                for r in sidecars.roles
            ]
        return out

    async def video_url(self) -> str:
        """The `.url` sidecar's URL, or the uploaded video's signed URL (uploading it first)."""
        import asyncio

        listed = next((Path(x) for x in self.job.input_paths[1:] if x.endswith(URL_SUFFIX)), None)
        url_file = listed or sidecar(self.video, (URL_SUFFIX,))
        if url_file is not None and url_file.is_file():
            url = read_url(url_file)
            self.cp.update(url_source="sidecar", video_ref=url.split("?", 1)[0])
            return url
        key = (
            self.cp.get("object_key")
            or f"{self.service.settings.oss_prefix}{self.job.content_hash[:16]}/{self.name}"
        )
        if not self.cp.get("uploaded"):
            size = self.video.stat().st_size
            if not await self.service.uploaded(key, size):  # a crash after the upload, before its record
                await self.ctx.progress(0.02, f"uploading {self.name} to OSS")
                await self.service.upload(self.video, key)
                await self.note(f"uploaded {self.name} to OSS as {key}")
            self.cp.update(
                object_key=key, uploaded=True, url_source="oss", video_ref=self.service.object_url(key)
            )
            await self.save()
        expiry = self.service.settings.url_expiry_seconds
        url = await asyncio.to_thread(self.service.sign, key, expiry)
        self.cp["url_valid_until"] = time.time() + expiry
        return url

    async def role_photo_urls(self) -> dict[str, list[str]]:
        """Each role's photo URLs: URLs as given, local photos uploaded once and signed."""
        import asyncio

        out: dict[str, list[str]] = {}
        sidecars = read_sidecars(self.p, self.video, [Path(x) for x in self.job.input_paths[1:]])
        places = [p for p in (sidecars.roles_dir, self.video.parent, self.ctx.prompts_dir) if p is not None]
        done: dict[str, str] = dict(self.cp.get("photos", {}))
        for role in sidecars.roles:
            urls = []
            for ref in role.photos:
                if ref.startswith(rules.URL_SCHEMES):
                    urls.append(ref)
                    continue
                path = find_file(ref, places)
                if path is None:
                    raise InputError(
                        f"reference photo {ref!r} of role {role.name!r} not found",
                        hint="put the photo beside the video or in the prompts folder, or give its URL",
                    )
                self.ctx.check_readable(path, what=f"reference photo of role {role.name!r}")
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                key = f"{self.service.settings.oss_prefix}photos/{digest}{path.suffix.lower()}"
                if key not in done.values():
                    await self.service.upload(path, key)
                    done[ref] = key
                    self.cp["photos"] = done
                    await self.save()
                urls.append(
                    await asyncio.to_thread(self.service.sign, key, self.service.settings.url_expiry_seconds)
                )
            out[role.name] = urls
        return out

    async def submit(self) -> None:
        """Check, upload, mark "submitting", create the task and save its id."""
        import asyncio

        if self.cp.get("phase") == "submitting" and not self.cp.get("resubmit_ok"):
            raise await self.unresolved("the daemon stopped during the submission")
        found = await asyncio.to_thread(self.check)  # nothing uploaded or paid before this passes
        roles_urls = await self.role_photo_urls()
        request = self.fields(found, roles_urls)
        url = await self.video_url()
        self.ctx.check_cancelled()
        self.cp.update(
            phase="submitting",
            since=time.time(),
            request=request,
            probe=dataclasses.asdict(found),
            model=self.p.model,
        )
        await self.save()
        try:
            task_id, request_id = await self.service.submit({**request, "videoUrl": url})
        except DropflowError as exc:
            if _never_created(exc):
                self.cp["phase"] = "idle"
                await self.save()
                raise
            raise await self.unresolved(
                f"the submission failed without a clear answer ({exc.message})"
            ) from exc
        self.ctx.log.info("job %d: submitted Bailian task %s for %s", self.job.id, task_id, self.name)
        now = time.time()
        self.cp.update(
            phase="remote",
            task_id=task_id,
            submit_request_id=request_id,
            submitted_at=now,
            status="PENDING",
            polls=0,
        )
        for k in ("resubmit_ok", "since"):
            self.cp.pop(k, None)
        await self.save(remote_task_id=task_id)
        await self.ctx.progress(0.05, f"submitted: task {task_id}")

    async def unresolved(self, why: str) -> PermanentError:
        self.cp["resubmit_ok"] = True
        await self.save()
        return PermanentError(
            f"{self.name}: {why}; a Bailian task may exist and bill, but its id never came back, so dropflow "
            "will not submit it again on its own",
            hint=f"check the Bailian console's task list; to submit again, run `dropflow retry {self.job.id}`",
            provider="bailian",
            code="SubmissionUnresolved",
        )

    # --- following the task ----------------------------------------------------------------------

    def next_delay(self) -> float:
        b = self.p.bailian
        return min(b.poll_max_seconds, b.poll_first_seconds * 1.5 ** int(self.cp.get("polls", 0)))

    async def follow(self) -> Result:
        task_id = str(self.cp["task_id"])
        elapsed = time.time() - float(self.cp.get("submitted_at", time.time()))
        try:
            task = await self.service.fetch(task_id)
        except RetryableError as exc:
            # a network blip must not cost the job: only the deadline ends a run of failed polls
            if elapsed > self.p.bailian.deadline_minutes * 60:
                raise self.deadline(task_id) from exc
            self.cp["polls"] = int(self.cp.get("polls", 0)) + 1
            await self.save()
            return Wait(
                self.next_delay(), f"task {task_id}: status check failed ({exc.message}); trying again"
            )
        if task.status != self.cp.get("status"):
            self.cp["status"] = task.status
            await self.note(f"Bailian task {task_id}: {task.status}")
        if task.refused_content:
            self.cp["phase"] = "retired"
            await self.save()
            raise PermanentError(
                f"{self.name}: Bailian refused the content of this video ({task.error_code}): "
                f"{task.error_message or 'it trips the service security policy'}",
                hint="the service will not analyse this video; nothing to retry unless the video changes",
                provider="bailian",
                code=task.error_code,
                request_id=task.request_id,
            )
        if task.status == "SUCCESSED":
            return await self.finish(task)
        if task.status in ("FAILED", "CANCELED", "UNKNOWN"):
            self.cp["phase"] = "retired"
            await self.save()
            what = {
                "FAILED": "failed at the service",
                "CANCELED": "was cancelled at the service (not by dropflow)",
                "UNKNOWN": f"is unknown to the service (results are kept about {rules.TASK_RESULT_DAYS} days)",
            }[task.status]
            raise PermanentError(
                f"{self.name}: Bailian task {task_id} {what}: {task.error_code or task.status}: "
                f"{task.error_message or 'no message'}",
                hint="a video the service cannot fetch or read fails here: check the .url sidecar or the OSS "
                f"settings, then `dropflow retry {self.job.id}` to submit it again",
                provider="bailian",
                code=task.error_code or f"Task{task.status.title()}",
                request_id=task.request_id,
            )
        if elapsed > self.p.bailian.deadline_minutes * 60:
            raise self.deadline(task_id)
        self.cp["polls"] = int(self.cp.get("polls", 0)) + 1
        await self.save()
        running = task.status == "RUNNING"
        fraction = 0.15 + 0.7 * (1 - math.exp(-elapsed / 300)) if running else 0.1
        message = f"task {task_id} {task.status} ({clock(elapsed)})"
        await self.ctx.progress(fraction, message)
        return Wait(self.next_delay(), message, self.usage())

    def deadline(self, task_id: str) -> PermanentError:
        return PermanentError(
            f"{self.name}: Bailian task {task_id} is unfinished after {self.p.bailian.deadline_minutes:g} min; "
            "dropflow stopped following it (it may still complete and bill)",
            hint=f"`dropflow retry {self.job.id}` follows the same task again; raise params.bailian.deadline_minutes",
            provider="bailian",
            code="DeadlineExceeded",
        )

    # --- the results -----------------------------------------------------------------------------

    def usage(self, task: AnalysisTask | None = None) -> dict[str, Any]:
        """The job's usage, in the keys the local modes use (so `dropflow job N` shows both alike)."""
        found = Probe(**self.cp["probe"]) if isinstance(self.cp.get("probe"), dict) else Probe(0.0, 0, 0)
        frames = rules.frames_billed(found.duration, self.interval) if found.duration else 0
        out: dict[str, Any] = {
            "input_tokens": 0,
            "output_tokens": 0,
            "image_tokens": 0,
            "video_tokens": 0,
            "audio_seconds": 0,
            "requests": 1 if self.cp.get("task_id") else 0,
            "cached_answers": 0,
            "reused_from_other_jobs": 0,
            "frames_sampled": frames,
            "frames_sent": frames,
            "mode": "bailian",
            "model": self.p.model,
            "summary_model": self.p.summary_model,
            "processing_seconds": round(time.time() - float(self.cp.get("started_at", time.time())), 2),
        }
        if task is not None:
            analysis = task.output.get("videoAnalysisResult") or {}
            a_usage = analysis.get("usage") if isinstance(analysis, dict) else {}
            out.update(
                input_tokens=int(task.usage.get("inputTokens", 0) or 0),
                output_tokens=int(task.usage.get("outputTokens", 0) or 0),
                image_tokens=int((a_usage or {}).get("imageTokens", 0) or 0),
                audio_seconds=math.ceil(found.duration) if task.output.get("videoCaptionResult") else 0,
            )
        return out

    async def finish(self, task: AnalysisTask) -> Done:
        import asyncio

        self.cp.update(phase="done", finished_at=time.time())
        usage = self.usage(task)
        outputs = await asyncio.to_thread(self.write, task, usage)
        await self.save()
        shots = len(_shots(task.output))
        return Done(
            outputs,
            usage=usage,
            message=f"Bailian task {task.task_id}: {shots} shot(s), {usage['frames_sent']} frames at "
            f"{self.interval:g} s",
        )

    def write(self, task: AnalysisTask, usage: dict[str, Any]) -> list[Path]:
        """`<name>.json` and `<name>.txt`, in the local modes' shape (blocking)."""
        p, cp = self.p, self.cp
        found = Probe(**cp["probe"])
        output = task.output
        shots = _shots(output)
        summary = output.get("videoGenerateResult") or {}
        captions = (output.get("videoCaptionResult") or {}).get("videoCaptions") or []
        summary_text = str(summary.get("text") or "")
        annotation = summary_text or "\n\n".join(
            f"[{clock(s['start'])}-{clock(s['end'])}]\n{s['text']}" for s in shots
        )
        now = datetime.now()
        elapsed = usage["processing_seconds"]
        zero = {
            "input_tokens": 0,
            "output_tokens": 0,
            "image_tokens": 0,
            "video_tokens": 0,
            "audio_seconds": 0,
        }
        doc: dict[str, Any] = {
            "video": self.name,
            "model": p.model,
            "fps": round(1.0 / self.interval, 6),
            "processing_time": elapsed,
            "timestamp": now.isoformat(timespec="seconds"),
            "annotation": annotation,
            "mode": "bailian",
            "provider": "bailian",
            "offline": False,
            "prompt": "service default" if p.bailian.service_templates else p.segment_prompt,
            "source": str(self.video),
            "content_hash": self.job.content_hash,
            "job_id": self.job.id,
            "duration": round(found.duration, 3),
            "width": found.width,
            "height": found.height,
            "frames_sampled": usage["frames_sampled"],
            "frames_sent": usage["frames_sent"],
            "frames_dropped_as_repeats": 0,
            "segments": [
                {
                    "index": i,
                    "start": round(s["start"], 3),
                    "end": round(s["end"], 3),
                    "frames_sampled": rules.frames_billed(s["end"] - s["start"], self.interval),
                    "frames_sent": rules.frames_billed(s["end"] - s["start"], self.interval),
                    "frame_times": [],  # the service samples them; it does not say when
                    "text": s["text"],
                    "model": p.model,
                    "request_id": task.request_id,
                    "usage": zero,  # billed per task: the total is under usage and bailian.usage
                    "cached": False,
                    "complete": True,
                }
                for i, s in enumerate(shots)
            ],
            "summary": {
                "text": summary_text,
                "model": str(summary.get("modelId") or p.summary_model),
                "request_id": task.request_id,
                "usage": _usage(summary.get("usage")),
                "cached": False,
                "complete": bool(summary.get("generateFinished", True)),
                "parts": [],
            }
            if summary
            else None,
            "asr": {
                "status": "transcribed by the service" if captions else "no captions",
                "model": "bailian" if captions else None,
                "chunks": [
                    {
                        "start": round(_seconds(c.get("startTime")), 3),
                        "end": round(_seconds(c.get("endTime")), 3),
                        "text": str(c.get("text") or ""),
                        "speaker": str(c.get("speaker") or ""),
                    }
                    for c in captions
                    if isinstance(c, dict)
                ],
            },
            "roles": [r.model_dump() for r in read_sidecars(p, self.video, []).roles],
            "extra_info": str(cp.get("request", {}).get("videoExtraInfo", "")),
            "language": p.language,
            "usage": {
                k: usage[k]
                for k in (
                    "input_tokens",
                    "output_tokens",
                    "image_tokens",
                    "video_tokens",
                    "audio_seconds",
                    "requests",
                    "cached_answers",
                    "reused_from_other_jobs",
                )
            },
            "request_ids": [x for x in (cp.get("submit_request_id"), task.request_id) if x],
            "warnings": [],
            "params": p.model_dump(mode="json"),
            "bailian": {
                "task_id": task.task_id,
                "workspace_id": self.service.settings.workspace_id,
                "video": cp.get("video_ref"),  # the object, never the signed URL
                "url_source": cp.get("url_source"),
                "request": cp.get("request"),
                "status": task.status,
                "usage": task.usage,
                "estimated_cost_cny": _cost(task, p.model, p.summary_model, found.duration),
                "task_run_info": task.run_info,
                "results": {k: v for k, v in output.items() if v not in (None, [], {})},
            },
        }
        title = (output.get("videoTitleGenerateResult") or {}).get("text")
        mind_map = (output.get("videoMindMappingGenerateResult") or {}).get("text")
        lines = [
            f"Video: {self.name}",
            f"Model: {p.model} (Bailian video analysis; summary {p.summary_model})",
            f"FPS: {round(1.0 / self.interval, 3)}",
            f"Processing time: {elapsed:.2f} seconds",
            f"Date: {now:%Y-%m-%d %H:%M:%S}",
            "",
        ]
        if title:
            lines += ["--- Title ---", str(title).strip(), ""]
        lines += ["--- Annotation ---", annotation.strip(), "", "--- Segment analysis ---"]
        for s in shots:
            lines += [f"[{clock(s['start'])}-{clock(s['end'])}]", s["text"].strip(), ""]
        if mind_map:
            lines += ["--- Mind map ---", str(mind_map).strip(), ""]
        folder = self.ctx.output_dir / self.job.batch if self.job.batch else self.ctx.output_dir
        base = output_base(folder, self.video.stem, self.job.content_hash)
        out_json = files.write_json(base.with_name(base.name + ".json"), doc)
        out_txt = files.write_text(base.with_name(base.name + ".txt"), "\n".join(lines))
        return [out_json, out_txt]


def _seconds(ms: Any) -> float:
    """The service's times are milliseconds (unconfirmed: the examples show whole numbers)."""
    try:
        return float(ms) / 1000.0
    except (TypeError, ValueError):
        return 0.0


def _shots(output: dict[str, Any]) -> list[dict[str, Any]]:
    analysis = output.get("videoAnalysisResult") or {}
    raw = analysis.get("videoShotAnalysisResults") or [] if isinstance(analysis, dict) else []
    return [
        {
            "start": _seconds(s.get("startTime")),
            "end": _seconds(s.get("endTime")),
            "text": str(s.get("text") or ""),
        }
        for s in raw
        if isinstance(s, dict)
    ]


def _usage(raw: Any) -> dict[str, int]:
    raw = raw if isinstance(raw, dict) else {}
    return {
        "input_tokens": int(raw.get("inputTokens", 0) or 0),
        "output_tokens": int(raw.get("outputTokens", 0) or 0),
        "image_tokens": int(raw.get("imageTokens", 0) or 0),
        "video_tokens": 0,
        "audio_seconds": 0,
    }


def _cost(task: AnalysisTask, model: str, summary_model: str, duration: float) -> float | None:
    """An estimate from list prices (`bailian_rules`, unconfirmed); None for a model not in the table."""
    analysis = _usage((task.output.get("videoAnalysisResult") or {}).get("usage"))
    total = _usage(task.usage)
    text_in = max(0, total["input_tokens"] - analysis["input_tokens"])
    text_out = max(0, total["output_tokens"] - analysis["output_tokens"])
    vision, text = (
        rules.PRICES_PER_MILLION_TOKENS.get(model),
        rules.PRICES_PER_MILLION_TOKENS.get(summary_model),
    )
    if vision is None or text is None:
        return None
    cost = (analysis["input_tokens"] * vision[0] + analysis["output_tokens"] * vision[1]) / 1e6
    cost += (text_in * text[0] + text_out * text[1]) / 1e6
    if task.output.get("videoCaptionResult"):
        cost += duration / 60 * rules.ASR_PRICE_PER_MINUTE
    return round(cost, 4)


def _never_created(exc: DropflowError) -> bool:
    """True when a failed submission certainly made no task (the service answered, or nothing was sent)."""
    if isinstance(exc, InputError | AuthError | ConfigError):
        return True
    if not isinstance(exc, ProviderError):
        return False
    if exc.code == "MalformedResponse":
        return False  # answered, but garbled: the task may exist
    if exc.status is not None and exc.status > 0:
        return exc.status not in (502, 504)
    return exc.code.startswith(("ClientConnector", "ConnectionRefused", "ConnectError"))
