"""The offline providers: deterministic placeholder output, no network, no key.

They let the whole pipeline run on a fresh machine. Every answer says it is a placeholder and
`VisionResult.offline` is True, so nothing downstream mistakes it for a model's work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from dropflow.daemon.core.config import OfflineSettings
from dropflow.engine.providers.base import (
    AudioPart,
    ImagePart,
    TaskStatus,
    TextPart,
    Usage,
    VideoGenRequest,
    VideoPart,
    VideoTask,
    VisionRequest,
    VisionResult,
)


def request_digest(request: VisionRequest) -> str:
    h = hashlib.sha256()
    h.update(request.model.encode())
    h.update((request.system or "").encode())
    for part in request.parts:
        if isinstance(part, TextPart):
            h.update(b"T" + part.text.encode())
        elif isinstance(part, ImagePart):
            h.update(b"I" + (part.data or b"") + (part.url or "").encode())
        elif isinstance(part, VideoPart):
            h.update(f"V{part.fps:g}:{len(part.frames)}".encode())
            for frame in part.frames:
                h.update(hashlib.sha256(frame).digest())
        elif isinstance(part, AudioPart):
            h.update(b"A" + hashlib.sha256(part.data).digest())
    return h.hexdigest()[:12]


class OfflineVision:
    """Answers every request with a placeholder derived from a hash of its parts."""

    name: ClassVar[str] = "offline"
    offline: ClassVar[bool] = True

    def __init__(self, settings: OfflineSettings | None = None) -> None:
        self._latency = (settings or OfflineSettings()).latency_seconds

    async def generate(self, request: VisionRequest) -> VisionResult:
        """Never raises a provider error."""
        if self._latency:
            await asyncio.sleep(self._latency)
        images = sum(isinstance(p, ImagePart) for p in request.parts)
        frames = sum(len(p.frames) for p in request.parts if isinstance(p, VideoPart))
        texts = [p.text for p in request.parts if isinstance(p, TextPart)]
        digest = request_digest(request)
        summary = (
            f"[offline placeholder, not a model's output] {images} image(s), {frames} frame(s); "
            f"request digest {digest}. Set a provider key to get real annotations."
        )
        if any(isinstance(p, AudioPart) for p in request.parts):
            summary = f"[offline placeholder transcript, not speech recognition; digest {digest}]"
        text = (
            json.dumps({"offline": True, "description": summary, "digest": digest})
            if request.json_mode
            else summary
        )
        text_tokens = sum(len(t) for t in texts) // 4 + len(request.system or "") // 4 + 1
        usage = Usage(
            input_tokens=text_tokens + 256 * images + 64 * frames,
            output_tokens=len(text.split()),
            image_tokens=256 * images,
            video_tokens=64 * frames,
        )
        return VisionResult(
            text=text,
            model=request.model,
            provider=self.name,
            usage=usage,
            request_id=f"offline-{digest}",
            finish_reason="stop",
            offline=True,
        )

    async def aclose(self) -> None:
        return None


_TASK_RE = re.compile(r"^offline-(\d{13})-([0-9a-f]{10})$")


class OfflineVideoGen:
    """Simulated asynchronous video generation that renders a small real mp4 with OpenCV.

    The task id carries its creation time (``offline-<epoch ms>-<hash>``) and the request is kept
    in `cache_dir`, so a restarted daemon resumes polling the same task and gets the same video.
    """

    name: ClassVar[str] = "offline"
    offline: ClassVar[bool] = True
    model_family: ClassVar[str] = "wan"  # stands in for DashScope's wan models

    def __init__(
        self,
        settings: OfflineSettings | None = None,
        *,
        cache_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock` (epoch seconds) drives the simulated timeline; tests pass a fake one."""
        settings = settings or OfflineSettings()
        self._clock = clock
        self._latency = settings.latency_seconds
        self._seconds = settings.video_seconds
        self._dir = cache_dir

    def _paths(self, task_id: str) -> tuple[Path, Path, Path]:
        return (
            self._dir / f"{task_id}.json",
            self._dir / f"{task_id}.canceled",
            self._dir / f"{task_id}.mp4",
        )

    async def prepare(self, request: VideoGenRequest) -> VideoGenRequest:
        """Nothing to upload: a local image is read where it lies."""
        return request

    async def submit(self, request: VideoGenRequest) -> VideoTask:
        """Never raises a provider error."""
        if self._latency:
            await asyncio.sleep(self._latency)
        created_ms = int(self._clock() * 1000)
        fields: dict[str, Any] = {k: v for k, v in vars(request).items() if v is not None}
        digest = hashlib.sha256(json.dumps([fields, created_ms], sort_keys=True).encode()).hexdigest()[:10]
        task_id = f"offline-{created_ms}-{digest}"
        meta, _, _ = self._paths(task_id)
        self._dir.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps(fields))
        return VideoTask(task_id=task_id, status="PENDING", submit_time=_stamp(created_ms / 1000))

    def _status(self, task_id: str) -> tuple[TaskStatus, float]:
        m = _TASK_RE.match(task_id)
        meta, canceled, _ = self._paths(task_id)
        if m is None or not meta.exists():
            return "UNKNOWN", 0.0
        created = int(m.group(1)) / 1000
        if canceled.exists():
            return "CANCELED", created
        age = self._clock() - created
        if age < self._seconds * 0.3:
            return "PENDING", created
        if age < self._seconds:
            return "RUNNING", created
        return "SUCCEEDED", created

    async def fetch(self, task_id: str) -> VideoTask:
        """Never raises a provider error; an unknown id comes back UNKNOWN."""
        status, created = self._status(task_id)
        if status != "SUCCEEDED":
            return VideoTask(task_id=task_id, status=status, submit_time=_stamp(created) if created else "")
        meta, _, video = self._paths(task_id)
        fields = json.loads(meta.read_text())
        if not video.exists():
            background = fields.get("image")
            await asyncio.to_thread(
                render_placeholder_video,
                video,
                f"offline placeholder: {fields.get('prompt', '')}",
                seconds=float(min(fields.get("duration") or 2, 4)),
                background=Path(background) if background else None,
            )
        prompt = str(fields.get("prompt", ""))
        return VideoTask(
            task_id=task_id,
            status="SUCCEEDED",
            video_url=video.resolve().as_uri(),
            orig_prompt=prompt,
            actual_prompt=prompt,
            submit_time=_stamp(created),
            end_time=_stamp(created + self._seconds),
            usage={"video_count": 1, "video_duration": fields.get("duration") or 2, "offline": True},
        )

    async def cancel(self, task_id: str) -> bool:
        status, _ = self._status(task_id)
        if status != "PENDING":
            return False
        self._paths(task_id)[1].touch()
        return True

    async def aclose(self) -> None:
        return None


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def render_placeholder_video(
    path: Path,
    text: str,
    *,
    seconds: float = 2.0,
    fps: int = 8,
    size: tuple[int, int] = (320, 180),
    background: Path | None = None,
) -> Path:
    """Write a small real mp4 (mp4v) showing `text` and a moving shape; atomic (temp name + rename).

    Raises:
        ModelMissingError: OpenCV is not installed or cannot encode mp4.
    """
    try:
        import cv2  # heavy: loaded only when a video is actually rendered
        import numpy as np
    except ImportError as exc:
        from dropflow.engine.errors import ModelMissingError

        raise ModelMissingError(
            "OpenCV is needed to render offline videos", hint="pip install opencv-python-headless"
        ) from exc
    width, height = size
    base: Any = np.zeros((height, width, 3), np.uint8)
    base[:] = (60, 30, 20)
    if background is not None and background.is_file():
        img = cv2.imread(str(background))
        if img is not None:
            base = cv2.resize(img, (width, height)) // 2
    lines = textwrap.wrap(text, 36)[:4] or [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        from dropflow.engine.errors import ModelMissingError

        raise ModelMissingError("this OpenCV build cannot write mp4", hint="install opencv-python-headless")
    try:
        count = max(1, int(seconds * fps))
        for i in range(count):
            frame = base.copy()
            x = int(20 + (width - 40) * i / max(1, count - 1))
            cv2.circle(frame, (x, height - 30), 14, (0, 180, 255), -1)
            for n, line in enumerate(lines):
                cv2.putText(frame, line, (8, 24 + 20 * n), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
            writer.write(frame)
    finally:
        writer.release()
    os.replace(tmp, path)
    return path
