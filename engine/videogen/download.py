"""Downloading a finished task's video: streamed to a temp name, refused when too large, truncated
or not an mp4, re-tried a few times, and the signed URL's expiry read. Blocking: run it in a thread."""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from dropflow.engine import files
from dropflow.engine.errors import JobCancelled

URL_MARGIN = 60.0  # a signed URL this close to its expiry is refreshed before downloading


class DownloadFailed(Exception):
    """One download attempt failed; `expired` when the signed URL was refused (403) or is stale."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


class VideoTooLarge(Exception):
    pass


def _is_mp4(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] == b"ftyp"


def fetch_video(
    url: str, dest: Path, *, max_bytes: int, stop: Callable[[], bool], timeout: float = 60.0
) -> int:
    """Stream `url` into `dest` (temp name in its folder, then rename); returns the byte count.

    Blocking: run it in a thread. `file://` URLs (the offline provider) are copied.
    Raises DownloadFailed (worth another try), VideoTooLarge, JobCancelled (when `stop()`).
    """
    import httpx

    if url.startswith("file://"):
        src = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        try:
            size = src.stat().st_size
            if size > max_bytes:
                raise VideoTooLarge(f"{size:,} bytes")
            files.copy_file(src, dest)
        except FileNotFoundError as exc:
            raise DownloadFailed(f"the offline video {src} is missing") from exc
        return size
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise DownloadFailed(
                    f"HTTP {response.status_code} from the video URL", expired=response.status_code == 403
                )
            expected = response.headers.get("content-length")
            length = int(expected) if expected and expected.isdigit() else None
            if length is not None and length > max_bytes:
                raise VideoTooLarge(f"{length:,} bytes")
            received, head = 0, b""
            with files.atomic_writer(dest, "wb") as fh:
                for chunk in response.iter_bytes(1 << 20):
                    if stop():
                        raise JobCancelled("stopped during the download")
                    received += len(chunk)
                    if received > max_bytes:
                        raise VideoTooLarge(f"more than {max_bytes:,} bytes")
                    if len(head) < 12:
                        head += chunk[: 12 - len(head)]
                    fh.write(chunk)
                # raising inside the writer discards the temp file: nothing half-written is renamed
                if length is not None and received != length:
                    raise DownloadFailed(f"truncated: {received:,} of {length:,} bytes")
                if not _is_mp4(head):
                    raise DownloadFailed(f"the URL answered {received:,} bytes that are not an mp4")
            return received
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"{type(exc).__name__}: {exc}") from exc


def download_with_retries(
    url: str, dest: Path, *, max_bytes: int, retries: int, stop: Callable[[], bool]
) -> int:
    """`fetch_video`, re-tried `retries` times with short pauses (not when the URL went stale).

    Blocking. Raises the last DownloadFailed, VideoTooLarge, JobCancelled.
    """
    for attempt in range(retries + 1):
        try:
            return fetch_video(url, dest, max_bytes=max_bytes, stop=stop)
        except DownloadFailed as exc:
            if exc.expired or attempt == retries:
                raise
            pause = min(8.0, 0.5 * 2**attempt)
            end = time.monotonic() + pause
            while time.monotonic() < end:
                if stop():
                    raise JobCancelled("stopped during the download") from exc
                time.sleep(0.05)
    raise AssertionError("unreachable")  # pragma: no cover


def url_expires_at(url: str) -> float | None:
    """The epoch second a signed URL stops working, if it says: an OSS URL's ``Expires`` (epoch
    seconds; DashScope), or a V4-style URL's ``X-Tos-Date`` + ``X-Tos-Expires`` (Volcengine TOS,
    Ark's videos) or ``X-Amz-Date`` + ``X-Amz-Expires`` (seconds after the signing time)."""
    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    try:
        if values := query.get("Expires"):
            return float(values[0])
        for prefix in ("X-Tos-", "X-Amz-"):
            signed, valid = query.get(prefix + "Date"), query.get(prefix + "Expires")
            if signed and valid:
                at = datetime.strptime(signed[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                return at.timestamp() + float(valid[0])
    except ValueError:
        return None
    return None
