"""The `<name>.json` record written beside a finished video: what was asked, what the provider made
of it, and when; the job's result."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.engine import files
from dropflow.engine.base import Done

if TYPE_CHECKING:
    from dropflow.engine.videogen.run import Run


def iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t else None


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} KB"


def _image_label(image: str | None) -> str | None:
    """A local image by its name (paths stay private), a URL as it is."""
    if not image:
        return None
    return image if image.startswith(("http://", "https://", "oss://")) else Path(image).name


async def finish(run: Run, video: Path, task: dict[str, Any]) -> Done:
    """Write `<name>.json` beside the video; the job's result."""
    request = run.cp.get("request") or {}
    size = (await asyncio.to_thread(video.stat)).st_size
    record = {
        "video": video.name,
        "bytes": size,
        "task_id": run.task_id,
        "provider": run.cp.get("provider", run.provider.name),
        "offline": bool(run.cp.get("offline", run.provider.offline)),
        "model": run.cp.get("model"),
        "kind": {"t2v": "text-to-video", "i2v": "image-to-video"}.get(str(run.cp.get("kind")), None),
        "inputs": [Path(p).name for p in run.job.input_paths],
        "prompt": request.get("prompt", ""),
        "orig_prompt": task.get("orig_prompt") or request.get("prompt", ""),
        "actual_prompt": task.get("actual_prompt") or "",
        "negative_prompt": request.get("negative_prompt", ""),
        "image": _image_label(request.get("image")),
        "params": {k: request.get(k) for k in ("size", "resolution", "duration", "seed", "prompt_extend")},
        "usage": task.get("usage") or {},
        "times": {
            "submitted": iso(run.cp.get("submitted_at")),
            "provider_submit_time": task.get("submit_time") or None,
            "provider_start_time": task.get("scheduled_time") or None,
            "provider_end_time": task.get("end_time") or None,
            "succeeded_seen": iso(run.cp.get("remote_done_at")),
            "downloaded": iso(time.time()),
        },
        "request_id": task.get("request_id") or None,
        "job_id": run.job.id,
    }
    if run.cp.get("job_file"):
        record["job_file"] = run.cp["job_file"]
    meta = await asyncio.to_thread(files.write_json, video.with_suffix(".json"), record)
    usage = {**(task.get("usage") or {}), "offline": record["offline"]}
    label = " (offline placeholder)" if record["offline"] else ""
    return Done([video, meta], usage=usage, message=f"succeeded: {video.name} ({_size(size)}){label}")
