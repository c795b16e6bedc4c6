"""The outputs of one job: ``<name>.json`` (everything, for programs) and ``<name>.txt`` (the
annotation, for people) in outputs/annotate/[<batch>/], written atomically."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.engine import files
from dropflow.engine.annotate.asr import clock

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job
    from dropflow.engine.annotate.asr import Transcript
    from dropflow.engine.annotate.ledger import Call, Ledger
    from dropflow.engine.annotate.params import AnnotateParams, Role
    from dropflow.engine.annotate.segments import Segment
    from dropflow.engine.annotate.summary import Summary
    from dropflow.engine.frames import Sampling
    from dropflow.engine.providers.base import VisionProvider


@dataclass
class Outcome:
    """What one job did and found: all that its outputs say."""

    job: Job
    video: Path
    params: AnnotateParams
    provider: VisionProvider
    started: float  # time.monotonic() when the run began
    sampling: Sampling
    segments: list[Segment]
    answers: list[Call]  # one per segment
    summary: Summary | None  # two-stage mode only
    annotation: str
    transcript: Transcript | None
    asr_note: str
    roles: list[Role]
    extra: str
    ledger: Ledger
    warnings: list[str]


def output_base(folder: Path, stem: str, content_hash: str) -> Path:
    """``<folder>/<stem>``, or ``<stem> (2)`` when another video's result holds the name.

    A rerun of the same content (a retry, a restart) overwrites its own result.
    """
    n = 1
    while True:
        base = folder / (stem if n == 1 else f"{stem} ({n})")
        j, t = base.with_name(base.name + ".json"), base.with_name(base.name + ".txt")
        if not j.exists() and not t.exists():
            return base
        try:
            if json.loads(j.read_text(encoding="utf-8")).get("content_hash") == content_hash:
                return base
        except (OSError, ValueError, AttributeError):
            pass
        n += 1


def write_outputs(o: Outcome, output_dir: Path) -> list[Path]:
    """Write ``outputs/annotate/[<batch>/]<stem>.json`` and ``.txt`` (blocking); their paths.

    Raises:
        OSError: the output folder cannot be written.
    """
    p = o.params
    elapsed = time.monotonic() - o.started
    now = datetime.now()
    fps = p.effective_fps

    def call_json(c: Call) -> dict[str, Any]:
        return {
            "model": c.result.model,
            "request_id": c.result.request_id,
            "usage": c.result.usage.as_dict(),
            "cached": c.cached,
            "complete": c.result.complete,
        }

    sampling, summary = o.sampling, o.summary
    doc: dict[str, Any] = {
        "video": o.video.name,
        "model": p.model,
        "fps": fps,
        "processing_time": round(elapsed, 2),
        "timestamp": now.isoformat(timespec="seconds"),
        "annotation": o.annotation,
        "mode": p.mode,
        "provider": o.provider.name,
        "offline": o.provider.offline,
        "prompt": p.segment_prompt if p.mode == "two_stage" else p.prompt,
        "source": str(o.video),
        "content_hash": o.job.content_hash,
        "job_id": o.job.id,
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
            for s, a in zip(o.segments, o.answers, strict=True)
        ],
        "summary": {
            "text": summary.final.result.text,
            **call_json(summary.final),
            "parts": [
                {
                    "level": part.level,
                    "start": round(part.start, 3),
                    "end": round(part.end, 3),
                    "text": part.call.result.text,
                    **call_json(part.call),
                }
                for part in summary.parts
            ],
        }
        if summary
        else None,
        "asr": {
            "status": o.asr_note,
            "model": p.asr_model if o.transcript is not None else None,
            "chunks": o.transcript.as_json() if o.transcript is not None else [],
        },
        "roles": [r.model_dump() for r in o.roles],
        "extra_info": o.extra,
        "language": p.language,
        "usage": o.ledger.usage(),
        "request_ids": [c.result.request_id for c in o.ledger.calls],
        "warnings": o.warnings,
        "params": p.model_dump(mode="json"),
    }
    lines = [
        f"Video: {o.video.name}",
        # offline answers are placeholders: the model line must not claim a model wrote them
        f"Model: offline placeholder (no model was called; {p.model} with a key)"
        if o.provider.offline
        else f"Model: {p.model}",
        f"FPS: {round(fps, 3)}",
        f"Processing time: {elapsed:.2f} seconds",
        f"Date: {now:%Y-%m-%d %H:%M:%S}",
        "",
        "--- Annotation ---",
        o.annotation.strip(),
        "",
    ]
    if p.mode == "two_stage":
        lines += ["--- Segment analysis ---"]
        for s, a in zip(o.segments, o.answers, strict=True):
            lines += [f"[{clock(s.start)}-{clock(s.end)}]", a.result.text.strip(), ""]
    folder = output_dir / o.job.batch if o.job.batch else output_dir
    base = output_base(folder, o.video.stem, o.job.content_hash)
    out_json = files.write_json(base.with_name(base.name + ".json"), doc)
    out_txt = files.write_text(base.with_name(base.name + ".txt"), "\n".join(lines))
    return [out_json, out_txt]
