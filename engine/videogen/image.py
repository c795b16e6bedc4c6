"""The first frame of an image-to-video job, made fit for the model once and kept with the job.

wan i2v models take images of 360-2000 px per side and at most 10 MB; seedance models 300-6000 px,
width/height within 0.4-2.5 (sent inline, kept to 10 MB by dropflow). A phone photo (4032x3024,
often stored sideways with an EXIF rotation) or a 4K render is turned upright and shrunk, aspect
kept, before it is uploaded; an image too small fails at once, naming its size and the limit.

The result lives in the job's own state folder and its path in the checkpoint, so every later run
(a poll, a retry, a resubmission) uploads the same bytes without decoding the photo again, and an
image edited or replaced in the inbox afterwards is not taken for this job's (an edited unit is a
new job). An image that already fits is copied as it is: re-encoding would only lose quality.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dropflow.engine import files
from dropflow.engine.errors import InputError
from dropflow.engine.videogen.models import ImageLimits

KEEP_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP"})  # what the service decodes (no transparency)
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PreparedImage:
    path: str  # the job's copy, in its state folder
    source: str  # the image as dropped (or named by the job file)
    width: int
    height: int
    bytes: int
    original: tuple[int, int]  # upright size of the source
    reencoded: bool  # False: the source's bytes, copied

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedImage:
        return cls(**{**data, "original": tuple(data["original"])})


def job_image_dir(state_dir: Path, job_id: int) -> Path:
    return state_dir / "video-gen" / f"job-{job_id}"


def prepare_image(src: Path, dest_dir: Path, limits: ImageLimits, model: str) -> PreparedImage:
    """Check `src` against `limits`, fix what can be fixed (EXIF rotation, too large, transparency)
    and write the job's copy into `dest_dir`. Blocking: run it in a thread.

    Raises InputError: unreadable, too small, or too elongated to fit both limits.
    """
    from PIL import Image

    from dropflow.engine.media import load_image

    size_on_disk = src.stat().st_size
    try:
        with Image.open(src) as probe:
            fmt = probe.format or ""
            rotated = probe.getexif().get(EXIF_ORIENTATION, 1) not in (0, 1)
            alpha = probe.mode in ("RGBA", "LA", "PA") or "transparency" in probe.info
    except (OSError, ValueError, SyntaxError):
        fmt, rotated, alpha = "", False, False  # load_image below says what is wrong
    image = load_image(src)  # upright, RGB, within the pixel cap; InputError otherwise
    w, h = image.size
    lo, hi = limits.min_side, limits.max_side
    if min(w, h) < lo:
        raise InputError(
            f"{src.name} is {w}x{h} px; {model} takes images of {lo}-{hi} px per side "
            f"(its {'width' if w < h else 'height'} is under {lo} px)",
            hint=f"use an image at least {lo} px on each side: dropflow shrinks large images but "
            "does not enlarge small ones",
        )
    scale = min(1.0, hi / max(w, h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if min(nw, nh) < lo:
        raise InputError(
            f"{src.name} is {w}x{h} px; {model} takes images of {lo}-{hi} px per side, and shrunk to "
            f"{hi} px its short side would be {min(nw, nh)} px",
            hint=f"crop {src.name} to a less elongated shape (at most {hi}:{lo})",
        )
    aspect = w / h
    if (limits.min_aspect is not None and aspect < limits.min_aspect) or (
        limits.max_aspect is not None and aspect > limits.max_aspect
    ):
        raise InputError(
            f"{src.name} is {w}x{h} px (width/height {aspect:.2f}); {model} takes images whose "
            f"width/height is within {limits.min_aspect}-{limits.max_aspect}",
            hint=f"crop {src.name} to a less elongated shape",
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    fits = scale == 1.0 and not rotated and not alpha and size_on_disk <= limits.max_bytes
    if fits and fmt in KEEP_FORMATS:
        dest = dest_dir / f"{src.stem}{src.suffix.lower()}"
        with files.atomic_writer(dest, "wb") as out, open(src, "rb") as fh:
            shutil.copyfileobj(fh, out)
        return PreparedImage(str(dest), str(src), w, h, size_on_disk, (w, h), reencoded=False)
    if alpha:
        with Image.open(src) as raw:  # flatten onto white: transparent pixels would turn black
            rgba = raw.convert("RGBA")
        from PIL import ImageOps

        rgba = ImageOps.exif_transpose(rgba) or rgba
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        image = background
    if scale < 1.0:
        image = image.resize((nw, nh), Image.Resampling.LANCZOS)
    data = _jpeg_within(image, limits.max_bytes)
    if data is None:
        raise InputError(
            f"{src.name} cannot be made smaller than {limits.max_bytes // (1024 * 1024)} MB for {model}",
            hint="export it as a JPEG at a lower quality",
        )
    dest = files.write_bytes(dest_dir / f"{src.stem}.jpg", data)
    return PreparedImage(str(dest), str(src), nw, nh, len(data), (w, h), reencoded=True)


def _jpeg_within(image: Any, max_bytes: int) -> bytes | None:
    """JPEG bytes of `image` at the best quality (from 92 down to 60) that fits `max_bytes`."""
    for quality in (92, 85, 75, 60):
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality)
        if buf.tell() <= max_bytes:
            return buf.getvalue()
    return None
