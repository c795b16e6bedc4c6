"""A content-addressed store of model answers: the same request is never paid for twice.

The key is a sha256 of everything that decides an answer: the provider, the model, the sampling
parameters and every part (text verbatim, media by the sha256 of their bytes). Frames are encoded
deterministically, so the same video with the same params gives the same keys; a retried or
restarted job finds the answers it already paid for, and so does a job for a copy of the video.

One small JSON file per answer under ``<state>/answers/ab/abcdef....json``, written atomically
(temp + fsync + rename) before the answer is used, so a crash right after a paid call keeps it.
Only complete answers are kept: one cut off by its token budget or by the service is never final
(an entry that says so, from an older version, reads as missing).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropflow.engine import files
from dropflow.engine.providers.base import (
    AudioPart,
    ImagePart,
    TextPart,
    Usage,
    VideoPart,
    VisionRequest,
    VisionResult,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def request_key(provider: str, request: VisionRequest) -> str:
    """The cache key of `request` sent to `provider`."""
    parts: list[Any] = []
    for part in request.parts:
        if isinstance(part, TextPart):
            parts.append(["text", part.text])
        elif isinstance(part, ImagePart):
            parts.append(["image", part.mime, _sha(part.data) if part.data is not None else part.url])
        elif isinstance(part, VideoPart):
            parts.append(["video", part.fps, [_sha(f) for f in part.frames]])
        elif isinstance(part, AudioPart):
            parts.append(["audio", part.mime, _sha(part.data)])
    blob = json.dumps(
        {
            "provider": provider,
            "model": request.model,
            "system": request.system,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "json_mode": request.json_mode,
            "extra": request.extra,
            "parts": parts,
        },
        sort_keys=True,
        default=str,
    )
    return _sha(blob.encode())


@dataclass(frozen=True)
class CachedAnswer:
    result: VisionResult
    paid_by: str  # the job marker of whoever paid for it
    at: float


class AnswerCache:
    """Answers by request key. Reads and writes are small blocking file operations."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> CachedAnswer | None:
        """The stored answer, or None (also for an unreadable or incomplete entry, which is then
        simply paid again)."""
        try:
            data = json.loads(self._path(key).read_text(encoding="utf-8"))
            usage = Usage(
                **{k: int(v) for k, v in data.get("usage", {}).items() if k in Usage.__dataclass_fields__}
            )
            result = VisionResult(
                text=str(data["text"]),
                model=str(data.get("model", "")),
                provider=str(data.get("provider", "")),
                usage=usage,
                request_id=str(data.get("request_id", "")),
                finish_reason=str(data.get("finish_reason", "")),
                partial=bool(data.get("partial", False)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not result.complete:
            return None
        return CachedAnswer(result, str(data.get("paid_by", "")), float(data.get("at", 0.0)))

    def put(self, key: str, result: VisionResult, *, paid_by: str) -> None:
        """Store a complete answer durably (an incomplete one is not stored).

        Raises OSError when the state folder is not writable.
        """
        if not result.complete:
            return
        files.write_json(
            self._path(key),
            {
                "text": result.text,
                "model": result.model,
                "provider": result.provider,
                "usage": result.usage.as_dict(),
                "request_id": result.request_id,
                "finish_reason": result.finish_reason,
                "partial": result.partial,
                "paid_by": paid_by,
                "at": time.time(),
            },
        )
