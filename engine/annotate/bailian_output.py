"""`mode: bailian`: a finished task's results as the job's outputs, and what it used and cost.

`<name>.json` and `<name>.txt` have the local modes' shape (model, frames, timing, usage;
`segments` are the service's shots, `summary` its generated text, `asr` its captions) plus the
service's own results under `bailian`; `job_usage` gives the keys the local modes report, so
`dropflow job N` shows a hosted job and a local one alike.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.engine import files
from dropflow.engine.annotate.asr import clock
from dropflow.engine.annotate.bailian_request import Probe, frame_interval
from dropflow.engine.annotate.output import output_base
from dropflow.engine.annotate.sidecars import read_sidecars
from dropflow.engine.providers import bailian_rules as rules

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job
    from dropflow.engine.annotate.params import AnnotateParams
    from dropflow.engine.providers.bailian import AnalysisTask

# the keys of a usage the JSON's top-level `usage` keeps (the rest are `dropflow job N`'s)
_DOC_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "image_tokens",
    "video_tokens",
    "audio_seconds",
    "requests",
    "cached_answers",
    "reused_from_other_jobs",
)


def job_usage(p: AnnotateParams, cp: dict[str, Any], task: AnalysisTask | None = None) -> dict[str, Any]:
    """The job's usage from its checkpoint `cp` (and the finished `task`'s reported tokens)."""
    found = Probe(**cp["probe"]) if isinstance(cp.get("probe"), dict) else Probe(0.0, 0, 0)
    frames = rules.frames_billed(found.duration, frame_interval(p)) if found.duration else 0
    out: dict[str, Any] = {
        "input_tokens": 0,
        "output_tokens": 0,
        "image_tokens": 0,
        "video_tokens": 0,
        "audio_seconds": 0,
        "requests": 1 if cp.get("task_id") else 0,
        "cached_answers": 0,
        "reused_from_other_jobs": 0,
        "frames_sampled": frames,
        "frames_sent": frames,
        "mode": "bailian",
        "model": p.model,
        "summary_model": p.summary_model,
        "processing_seconds": round(time.time() - float(cp.get("started_at", time.time())), 2),
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


def write_outputs(
    task: AnalysisTask,
    usage: dict[str, Any],
    *,
    job: Job,
    p: AnnotateParams,
    cp: dict[str, Any],
    output_dir: Path,
    workspace_id: str | None,
) -> list[Path]:
    """`<name>.json` and `<name>.txt` in `output_dir` (under the job's batch), written atomically
    (blocking)."""
    video = Path(job.input_path)
    interval = frame_interval(p)
    found = Probe(**cp["probe"])
    output = task.output
    cuts = shots(output)
    summary = output.get("videoGenerateResult") or {}
    captions = (output.get("videoCaptionResult") or {}).get("videoCaptions") or []
    summary_text = str(summary.get("text") or "")
    annotation = summary_text or "\n\n".join(
        f"[{clock(s['start'])}-{clock(s['end'])}]\n{s['text']}" for s in cuts
    )
    now = datetime.now()
    elapsed = usage["processing_seconds"]
    zero = {"input_tokens": 0, "output_tokens": 0, "image_tokens": 0, "video_tokens": 0, "audio_seconds": 0}
    doc: dict[str, Any] = {
        "video": video.name,
        "model": p.model,
        "fps": round(1.0 / interval, 6),
        "processing_time": elapsed,
        "timestamp": now.isoformat(timespec="seconds"),
        "annotation": annotation,
        "mode": "bailian",
        "provider": "bailian",
        "offline": False,
        "prompt": "service default" if p.bailian.service_templates else p.segment_prompt,
        "source": str(video),
        "content_hash": job.content_hash,
        "job_id": job.id,
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
                "frames_sampled": rules.frames_billed(s["end"] - s["start"], interval),
                "frames_sent": rules.frames_billed(s["end"] - s["start"], interval),
                "frame_times": [],  # the service samples them; it does not say when
                "text": s["text"],
                "model": p.model,
                "request_id": task.request_id,
                "usage": zero,  # billed per task: the total is under usage and bailian.usage
                "cached": False,
                "complete": True,
            }
            for i, s in enumerate(cuts)
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
        "roles": [r.model_dump() for r in read_sidecars(p, video, []).roles],
        "extra_info": str(cp.get("request", {}).get("videoExtraInfo", "")),
        "language": p.language,
        "usage": {k: usage[k] for k in _DOC_USAGE_KEYS},
        "request_ids": [x for x in (cp.get("submit_request_id"), task.request_id) if x],
        "warnings": [],
        "params": p.model_dump(mode="json"),
        "bailian": {
            "task_id": task.task_id,
            "workspace_id": workspace_id,
            "video": cp.get("video_ref"),  # the object, never the signed URL
            "url_source": cp.get("url_source"),
            "request": cp.get("request"),
            "status": task.status,
            "usage": task.usage,
            "estimated_cost_cny": estimated_cost(task, p.model, p.summary_model, found.duration),
            "task_run_info": task.run_info,
            "results": {k: v for k, v in output.items() if v not in (None, [], {})},
        },
    }
    title = (output.get("videoTitleGenerateResult") or {}).get("text")
    mind_map = (output.get("videoMindMappingGenerateResult") or {}).get("text")
    lines = [
        f"Video: {video.name}",
        f"Model: {p.model} (Bailian video analysis; summary {p.summary_model})",
        f"FPS: {round(1.0 / interval, 3)}",
        f"Processing time: {elapsed:.2f} seconds",
        f"Date: {now:%Y-%m-%d %H:%M:%S}",
        "",
    ]
    if title:
        lines += ["--- Title ---", str(title).strip(), ""]
    lines += ["--- Annotation ---", annotation.strip(), "", "--- Segment analysis ---"]
    for s in cuts:
        lines += [f"[{clock(s['start'])}-{clock(s['end'])}]", s["text"].strip(), ""]
    if mind_map:
        lines += ["--- Mind map ---", str(mind_map).strip(), ""]
    folder = output_dir / job.batch if job.batch else output_dir
    base = output_base(folder, video.stem, job.content_hash)
    out_json = files.write_json(base.with_name(base.name + ".json"), doc)
    out_txt = files.write_text(base.with_name(base.name + ".txt"), "\n".join(lines))
    return [out_json, out_txt]


def shots(output: dict[str, Any]) -> list[dict[str, Any]]:
    """The service's per-shot analysis as `start` / `end` (seconds) and `text`."""
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


def estimated_cost(task: AnalysisTask, model: str, summary_model: str, duration: float) -> float | None:
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


def _seconds(ms: Any) -> float:
    """The service's times are milliseconds (unconfirmed: the examples show whole numbers)."""
    try:
        return float(ms) / 1000.0
    except (TypeError, ValueError):
        return 0.0


def _usage(raw: Any) -> dict[str, int]:
    raw = raw if isinstance(raw, dict) else {}
    return {
        "input_tokens": int(raw.get("inputTokens", 0) or 0),
        "output_tokens": int(raw.get("outputTokens", 0) or 0),
        "image_tokens": int(raw.get("imageTokens", 0) or 0),
        "video_tokens": 0,
        "audio_seconds": 0,
    }
