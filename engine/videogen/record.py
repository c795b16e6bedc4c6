"""The `<name>.json` record written beside a finished video: what was asked, what the provider made
of it, and when; the job's result."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.engine import files
from dropflow.engine.base import Done
from dropflow.engine.videogen.image import job_image_dir

if TYPE_CHECKING:
    from dropflow.engine.videogen.run import Run


def iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t else None


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} KB"


_SEEDANCE_KEYS = ("ratio", "camera_fixed", "watermark")


def _sent(image: dict[str, Any]) -> dict[str, Any]:
    return {
        "width": image.get("width"),
        "height": image.get("height"),
        "bytes": image.get("bytes"),
        "resized_from": "{}x{}".format(*image["original"]) if image.get("reencoded") else None,
    }


def _image_label(image: str | None) -> str | None:
    """A local image by its name (paths stay private), a URL as it is."""
    if not image:
        return None
    return image if image.startswith(("http://", "https://", "oss://")) else Path(image).name


async def finish(run: Run, video: Path, task: dict[str, Any]) -> Done:
    """Write `<name>.json` beside the video; the job's result."""
    request = run.cp.get("request") or {}
    spec = run.cp.get("spec") or {}
    image = run.cp.get("image") or {}
    size = (await asyncio.to_thread(video.stat)).st_size
    usage = run.usage(task.get("usage")) or {}
    sent = request.get("prompt", "")
    record = {
        "video": video.name,
        "bytes": size,
        "task_id": run.task_id,
        "provider": run.cp.get("provider", run.provider.name),
        "offline": bool(run.cp.get("offline", run.provider.offline)),
        "model": run.cp.get("model"),
        "kind": {"t2v": "text-to-video", "i2v": "image-to-video"}.get(str(run.cp.get("kind")), None),
        "inputs": [Path(p).name for p in run.job.input_paths],
        "prompt": spec.get("prompt", sent),  # as written
        "orig_prompt": task.get("orig_prompt") or sent,  # as sent (cut to what the model reads)
        # what the video was made from: the provider's rewrite (prompt_extend), else the text sent
        "actual_prompt": task.get("actual_prompt") or sent,
        "negative_prompt": request.get("negative_prompt", ""),
        "image": _image_label(image.get("source") or request.get("image")),
        "params": {
            **{k: request.get(k) for k in ("size", "resolution", "duration", "seed", "prompt_extend")},
            # the seedance options, where the request had them
            **{k: request[k] for k in _SEEDANCE_KEYS if request.get(k) is not None},
        },
        "usage": {k: v for k, v in usage.items() if k != "offline"},
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
    if run.cp.get("trimmed"):
        record["prompt_truncated"] = run.cp["trimmed"]
    if image:
        record["image_sent"] = _sent(image)
    last = run.cp.get("last_image") or {}
    if last or request.get("last_image"):
        record["last_image"] = _image_label(last.get("source") or request.get("last_image"))
    if last:
        record["last_image_sent"] = _sent(last)
    meta = await asyncio.to_thread(files.write_json, video.with_suffix(".json"), record)
    usage = {**usage, "offline": record["offline"]}
    # the job's copy of its first frame is not needed any more (a failed job keeps it for a retry)
    await asyncio.to_thread(shutil.rmtree, job_image_dir(run.ctx.state_dir, run.job.id), True)
    label = " (offline placeholder)" if record["offline"] else ""
    return Done([video, meta], usage=usage, message=f"succeeded: {video.name} ({_size(size)}){label}")
