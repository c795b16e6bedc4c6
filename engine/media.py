"""Media helpers shared by the engines: safe image loading and encoding, safe ZIP unpacking.

Images: a pixel-count cap against decompression bombs, EXIF orientation honoured, RGB out.
ZIPs: no absolute paths, no `..`, no links, caps on entries, total size and compression ratio.
"""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from dropflow.engine.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".webm", ".mkv"})
DEFAULT_MAX_PIXELS = 64_000_000  # a 8000x8000 photo; far beyond any camera's ordinary output


def load_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image as an upright RGB PIL image.

    Raises:
        InputError: unreadable, not an image, or more than `max_pixels` pixels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise InputError(
                    f"{path.name} is {w}x{h} = {w * h:,} pixels, over the {max_pixels:,} pixel cap",
                    hint="downscale the image, or raise max_pixels for this route if you trust the source",
                )
            im.load()
            upright = ImageOps.exif_transpose(im)
            return upright.convert("RGB")
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InputError(
            f"{path.name} is not a readable image ({exc})", hint="re-export it as JPEG or PNG"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(
            f"{path.name} cannot be decoded: {exc}", hint="the file may be truncated; copy it again"
        ) from exc


def to_jpeg(image: Image.Image, *, max_side: int | None = None, quality: int = 90) -> bytes:
    """Encode a PIL image as JPEG, shrinking it so its longest side is at most `max_side`."""
    from PIL import Image

    im = image if image.mode == "RGB" else image.convert("RGB")
    if max_side and max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize(
            (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS
        )
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 20_000
    max_total_bytes: int = 8 * 1024**3
    max_ratio: float = 200.0  # uncompressed / compressed, per entry and overall
    max_entry_bytes: int = 2 * 1024**3


def safe_unzip(
    archive: Path, dest: Path, *, limits: ZipLimits = ZipLimits(), only: frozenset[str] | None = None
) -> list[Path]:
    """Unpack `archive` into `dest` after checking every entry; returns the files written.

    `only`: keep just these lower-case suffixes (others are skipped, not errors).

    Raises:
        InputError: not a ZIP, or an entry that is absolute, escapes with `..`, is a link or
        device, or breaks a cap (entries, total size, compression ratio).
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(
            f"{archive.name} is not a readable ZIP ({exc})", hint="re-create the archive"
        ) from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise InputError(
                f"{archive.name} has {len(infos):,} entries, over the cap of {limits.max_entries:,}",
                hint="split it into smaller archives",
            )
        total = 0
        compressed = 0
        plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        for info in infos:
            name = info.filename.replace("\\", "/")
            rel = PurePosixPath(name)
            if name.startswith("/") or (len(name) > 1 and name[1] == ":") or rel.is_absolute():
                raise InputError(
                    f"{archive.name}: entry {name!r} has an absolute path", hint="refused: unsafe ZIP"
                )
            if ".." in rel.parts:
                raise InputError(
                    f"{archive.name}: entry {name!r} climbs out with '..'", hint="refused: unsafe ZIP"
                )
            mode = info.external_attr >> 16
            # permission bits without a file type (Python's writestr, many tools) mean a plain file
            if stat.S_IFMT(mode) and (stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))):
                raise InputError(
                    f"{archive.name}: entry {name!r} is a link or device", hint="refused: unsafe ZIP"
                )
            if info.is_dir():
                continue
            if info.file_size > limits.max_entry_bytes:
                raise InputError(
                    f"{archive.name}: entry {name!r} is too large", hint="refused: over the size cap"
                )
            if info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
                raise InputError(
                    f"{archive.name}: entry {name!r} expands {info.file_size / info.compress_size:.0f}x",
                    hint="refused: looks like a ZIP bomb",
                )
            total += info.file_size
            compressed += info.compress_size
            if total > limits.max_total_bytes:
                raise InputError(
                    f"{archive.name} expands past {limits.max_total_bytes:,} bytes", hint="split it"
                )
            if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
                continue
            if only is not None and rel.suffix.lower() not in only:
                continue
            plan.append((info, rel))
        if compressed and total / compressed > limits.max_ratio:
            raise InputError(
                f"{archive.name} expands {total / compressed:.0f}x", hint="refused: looks like a ZIP bomb"
            )
        written: list[Path] = []
        root = dest.resolve()
        for info, rel in plan:
            target = (root / rel).resolve()
            if root not in target.parents:
                raise InputError(
                    f"{archive.name}: entry {info.filename!r} escapes", hint="refused: unsafe ZIP"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            budget = info.file_size
            with zf.open(info) as src, open(target, "wb") as out:
                # the header's size can lie: count what actually comes out
                while chunk := src.read(1024 * 1024):
                    budget -= len(chunk)
                    if budget < 0:
                        raise InputError(
                            f"{archive.name}: entry {info.filename!r} is larger than declared",
                            hint="refused: corrupt or hostile ZIP",
                        )
                    out.write(chunk)
            written.append(target)
        return written
