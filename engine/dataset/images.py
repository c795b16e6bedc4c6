"""The image as it is sent to the model and stored in the dataset: each provider's size limits,
and `prepare_image`, which keeps the original bytes when they fit and re-encodes otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dropflow.engine.errors import InputError


@dataclass(frozen=True)
class ImageLimit:
    max_side: int
    max_bytes: int


MB = 1024 * 1024
# What each provider accepts per image; anything larger (or not JPEG/PNG/WEBP RGB) is re-encoded
# as an RGB JPEG. Anthropic downscales past 1568 px anyway and refuses more than 5 MB.
PROVIDER_IMAGE_LIMITS = {
    "dashscope": ImageLimit(4096, 10 * MB),
    "openai": ImageLimit(2048, 20 * MB),
    "anthropic": ImageLimit(1568, 5 * MB),
    "offline": ImageLimit(4096, 10 * MB),
}
# The stored image also goes into OpenAI fine-tuning files (10 MB per image): the strictest wins.
STORE_MAX_BYTES = 10 * MB

_KEEP_FORMATS = {
    "JPEG": (".jpg", "image/jpeg"),
    "PNG": (".png", "image/png"),
    "WEBP": (".webp", "image/webp"),
}


@dataclass(frozen=True)
class PreparedImage:
    data: bytes
    ext: str
    mime: str
    width: int
    height: int
    converted: bool


def prepare_image(path: Path, *, max_side: int, max_bytes: int) -> PreparedImage:
    """The image as it is sent and stored: the original bytes when they are within the limits
    (JPEG/PNG/WEBP, RGB, upright, one frame, small enough), else an upright RGB JPEG, shrunk until
    it fits. Blocking.

    Raises:
        InputError: unreadable, not an image, over the pixel cap, or cannot be made small enough.
    """
    from PIL import Image

    from dropflow.engine.media import load_image, to_jpeg

    if not path.is_file():
        raise InputError(
            f"{path.name} is gone: it was moved or deleted before it was read", hint="drop it again"
        )
    upright = load_image(path)  # decodes every pixel: a truncated file fails here, not in training
    with Image.open(path) as im:
        fmt, mode, (w, h) = im.format or "", im.mode, im.size
        orientation = im.getexif().get(0x0112, 1)
        frames = getattr(im, "n_frames", 1)
    keep = _KEEP_FORMATS.get(fmt)
    if (
        keep
        and mode == "RGB"
        and orientation in (0, 1)
        and frames == 1
        and max(w, h) <= max_side
        and path.stat().st_size <= max_bytes
    ):
        return PreparedImage(path.read_bytes(), keep[0], keep[1], w, h, converted=False)
    side = min(max_side, max(upright.size))
    while True:
        data = to_jpeg(upright, max_side=side)
        if len(data) <= max_bytes or side <= 256:
            break
        side = int(side * 0.8)
    if len(data) > max_bytes:
        raise InputError(
            f"{path.name} stays over {max_bytes:,} bytes even as a {side}px JPEG",
            hint="crop or downscale the image",
        )
    scale = side / max(upright.size) if max(upright.size) > side else 1.0
    width = max(1, round(upright.width * scale)) if scale < 1 else upright.width
    height = max(1, round(upright.height * scale)) if scale < 1 else upright.height
    return PreparedImage(data, ".jpg", "image/jpeg", width, height, converted=True)
