"""`mode: bailian`: what a job asks Bailian's video analysis for, checked against the service's
rules (`providers/bailian_rules.py`) before anything is uploaded or paid.

`check` holds the video and the params to the limits; `request_fields` spells the submission the
way the wire does (without the video URL, so the checkpoint and the outputs can record it);
`read_url` reads the `<video>.url` sidecar that stands in for an upload.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.engine.annotate.asr import clock
from dropflow.engine.annotate.sidecars import read_sidecars
from dropflow.engine.annotate.templates import job_templates
from dropflow.engine.errors import ConfigError, InputError
from dropflow.engine.media import VIDEO_EXTENSIONS
from dropflow.engine.providers import bailian_rules as rules

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job
    from dropflow.engine.annotate.params import AnnotateParams


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


def frame_interval(p: AnnotateParams) -> float:
    """Seconds between the frames the service samples (frameSampleMethod.interval)."""
    return p.interval or 1.0 / p.fps


def check(video: Path, p: AnnotateParams) -> Probe:
    """The video and the params against the service's rules. Blocking (probes the video).

    Raises InputError (gone, not a video, empty, over the size or length cap), ConfigError (a frame
    interval, frame size or language the service does not take).
    """
    name, interval = video.name, frame_interval(p)
    try:
        size = video.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{video} no longer exists", hint="drop the video again") from None
    if video.suffix.lower() not in VIDEO_EXTENSIONS:
        raise InputError(f"{name} is not a video dropflow reads", hint="convert it to mp4")
    if size == 0:
        raise InputError(f"{name} is empty (0 bytes)", hint="drop the video again")
    if size > rules.MAX_VIDEO_BYTES:
        raise InputError(
            f"{name} is {size / 1024**3:.2f} GB, over the {rules.MAX_VIDEO_BYTES / 1024**3:.0f} GB "
            "Bailian's video analysis takes from dropflow",
            hint="split it (e.g. `ffmpeg -i in.mp4 -c copy -f segment -segment_time 600 part%02d.mp4`)",
        )
    lo, hi = rules.FRAME_INTERVAL_RANGE
    if not lo <= interval <= hi:
        raise ConfigError(
            f"{name}: Bailian samples one frame every {lo:g}-{hi:g} s (frameSampleMethod.interval); "
            f"these params ask for one every {interval:g} s",
            hint=f"set params.interval between {lo:g} and {hi:g} (or fps between {1 / hi:g} and {1 / lo:g})",
        )
    plo, phi = rules.FRAME_PIXEL_RANGE
    if not plo <= p.max_side <= phi:  # the params' own bounds are these today; kept for the table's sake
        raise ConfigError(
            f"max_side must be {plo}-{phi} for Bailian", hint=f"set params.max_side in {plo}-{phi}"
        )
    if p.language and p.language.strip().lower() not in rules.LANGUAGES:
        raise ConfigError(
            f"{name}: language {p.language!r} is not one Bailian's video analysis takes",
            hint=f"use one of: {', '.join(sorted(set(rules.LANGUAGES.values())))}",
        )
    found = probe(video)
    if found.duration > rules.MAX_VIDEO_SECONDS:
        raise InputError(
            f"{name} runs {clock(found.duration)}, over the {clock(rules.MAX_VIDEO_SECONDS)} "
            "dropflow sends to Bailian's video analysis",
            hint="split it into shorter parts",
        )
    return found


def request_fields(
    job: Job, p: AnnotateParams, prompts_dir: Path, roles_urls: dict[str, list[str]]
) -> dict[str, Any]:
    """The submission as the wire spells it, without the video URL (recorded, so no secret).

    Raises ConfigError: a missing template, or a video template without ``{videoAsrText}``.
    """
    video = Path(job.input_path)
    templates = job_templates(p, [prompts_dir, video.parent])  # segment + summary
    sidecars = read_sidecars(p, video, [Path(x) for x in job.input_paths[1:]])
    out: dict[str, Any] = {
        "videoModelId": p.model,
        "modelId": p.summary_model,
        "frameSampleMethod": {
            "methodName": rules.FRAME_METHOD,
            "interval": frame_interval(p),
            "pixel": p.max_side,
        },
        "generateOptions": list(p.bailian.generate_options),
        "deduplicationId": f"dropflow-{job.content_hash[:32]}-{job.id}",
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
