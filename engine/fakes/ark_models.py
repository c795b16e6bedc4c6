"""The rules the fake Ark applies to Seedance content-generation tasks, one entry per model: which
inputs it takes (text, first frame, first + last frame), the resolutions, ratios and durations it
makes, what it picks when a request names none, and the tokens it bills.

Written from the service's side and kept apart from the engine's table
(`dropflow.engine.providers.ark_models`) on purpose: a client that gets a rule wrong is refused
here as Ark would refuse it. Sources as in that module ("ark" = Ark's video-generation API page
as mirrored by third parties; "(unconfirmed)" = one mirror only or inferred). Error texts are the
fake's own wording with Ark's codes and statuses.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any

RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9")
# ark (runware.ai mirror for 480p and 1080p; 720p unconfirmed): output pixels per resolution and ratio
GRID = {
    "480p": {"16:9": (864, 480), "4:3": (736, 544), "1:1": (640, 640), "3:4": (544, 736), "9:16": (480, 864)},
    "720p": {
        "16:9": (1248, 704),
        "4:3": (1120, 832),
        "1:1": (960, 960),
        "3:4": (832, 1120),
        "9:16": (704, 1248),
    },
    "1080p": {
        "16:9": (1920, 1088),
        "4:3": (1664, 1248),
        "1:1": (1440, 1440),
        "3:4": (1248, 1664),
        "9:16": (1088, 1920),
    },
}
GRID["480p"]["21:9"], GRID["720p"]["21:9"], GRID["1080p"]["21:9"] = (960, 416), (1504, 640), (2176, 928)
FPS = 24

# ark: image formats, 300-6000 px a side (exclusive), width/height in (0.4, 2.5), under 30 MB
IMAGE_FORMATS = frozenset({"jpeg", "png", "webp", "bmp", "tiff", "gif"})
IMAGE_MIN_SIDE, IMAGE_MAX_SIDE, IMAGE_MAX_BYTES = 300, 6000, 30 * 1024 * 1024
SEED_MAX = 2**32 - 1  # ark: seed in [-1, 2^32 - 1]


@dataclass(frozen=True)
class Model:
    t2v: bool
    first: bool
    last: bool
    resolutions: tuple[str, ...]
    default_resolution: str
    min_seconds: int
    max_seconds: int
    t2v_adaptive: bool = False


SEEDANCE: dict[str, Model] = {
    # ark: text, first, first + last; 480p/720p/1080p, default 1080p; 2-12 s
    "doubao-seedance-1-0-pro-250528": Model(True, True, True, ("480p", "720p", "1080p"), "1080p", 2, 12),
    # ark: text, first frame only; default 1080p; 2-12 s
    "doubao-seedance-1-0-pro-fast-251015": Model(
        True, True, False, ("480p", "720p", "1080p"), "1080p", 2, 12
    ),
    # ark: text only; default 720p; 2-12 s
    "doubao-seedance-1-0-lite-t2v-250428": Model(
        True, False, False, ("480p", "720p", "1080p"), "720p", 2, 12
    ),
    # ark: first, first + last (and reference images); default 720p; 2-12 s
    "doubao-seedance-1-0-lite-i2v-250428": Model(False, True, True, ("480p", "720p", "1080p"), "720p", 2, 12),
    # ark: text, first, first + last; 480p/720p (1080p unconfirmed); default 720p; 4-12 s;
    # adaptive ratio for text too
    "doubao-seedance-1-5-pro-251215": Model(
        True, True, True, ("480p", "720p", "1080p"), "720p", 4, 12, t2v_adaptive=True
    ),
}

# ark: the older way, parameters as text commands after the prompt, and their request fields
COMMANDS = {
    "ratio": "ratio",
    "rt": "ratio",
    "resolution": "resolution",
    "rs": "resolution",
    "duration": "duration",
    "dur": "duration",
    "seed": "seed",
    "camerafixed": "camera_fixed",
    "cf": "camera_fixed",
    "watermark": "watermark",
    "wm": "watermark",
}
_COMMAND = re.compile(r"--(\w+)\s+(\S+)")


class Refused(Exception):
    """What Ark answers with a 400 (or 404 for an unknown model): `code` and `message`."""

    def __init__(self, code: str, message: str, *, status: int = 400, param: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.param = param


def _invalid(param: str, why: str) -> Refused:
    return Refused(
        "InvalidParameter",
        f"The parameter `{param}` specified in the request is not valid: {why}.",
        param=param,
    )


def text_commands(text: str) -> tuple[str, dict[str, Any]]:
    """The prompt without its trailing ``--name value`` commands, and the fields they set."""
    found: dict[str, Any] = {}
    for name, value in _COMMAND.findall(text):
        field = COMMANDS.get(name.lower())
        if field is None:
            continue
        if field in ("duration", "seed"):
            try:
                found[field] = int(value)
            except ValueError:
                raise _invalid(field, f"{value!r} is not an integer") from None
        elif field in ("camera_fixed", "watermark"):
            if value.lower() not in ("true", "false"):
                raise _invalid(field, f"{value!r} is not true or false")
            found[field] = value.lower() == "true"
        else:
            found[field] = value
    return _COMMAND.sub("", text).strip(), found


def image_size(url: str) -> tuple[int, int, int]:
    """(width, height, bytes) of a data-URL image, checked as Ark checks it. Raises Refused."""
    m = re.match(r"^data:image/([a-zA-Z]+);base64,(.*)$", url, re.DOTALL)
    if m is None:
        raise _invalid("image_url", "the image must be an http(s) URL or data:image/<format>;base64,<data>")
    fmt = m.group(1).lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in IMAGE_FORMATS:
        raise _invalid("image_url", f"image format {fmt} is not supported")
    try:
        data = base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("image_url", "the base64 data cannot be decoded") from None
    if len(data) >= IMAGE_MAX_BYTES:
        raise _invalid("image_url", f"the image is {len(data)} bytes; it must be under 30 MB")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except (OSError, ValueError):
        raise _invalid("image_url", "the image cannot be decoded") from None
    if not (IMAGE_MIN_SIDE < w < IMAGE_MAX_SIDE and IMAGE_MIN_SIDE < h < IMAGE_MAX_SIDE):
        raise _invalid("image_url", f"the image is {w}x{h}; each side must be within (300, 6000) px")
    if not 0.4 < w / h < 2.5:
        raise _invalid("image_url", f"the image's aspect ratio {w / h:.2f} must be within (0.4, 2.5)")
    return w, h, len(data)


def nearest_ratio(w: int, h: int) -> str:
    return min(RATIOS, key=lambda r: abs(int(r.split(":")[0]) / int(r.split(":")[1]) - w / h))


@dataclass(frozen=True)
class Made:
    """What a checked create call will make and bill."""

    prompt: str
    ratio: str
    resolution: str
    duration: int
    seed: int
    camera_fixed: bool
    watermark: bool
    width: int
    height: int
    mode: str  # "t2v", "first_frame", "first_last_frame"

    @property
    def tokens(self) -> int:
        """ark billing: width * height * fps * seconds / 1024."""
        return int(self.width * self.height * FPS * self.duration // 1024)


def check_create(body: dict[str, Any]) -> Made:
    """A create call's body checked as Ark checks it. Raises Refused."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise Refused("MissingParameter", "The request failed because it is missing `model`.", param="model")
    model = SEEDANCE.get(name)
    if model is None:
        raise Refused(
            "InvalidEndpointOrModel.NotFound",
            f"The model or endpoint {name} does not exist or you do not have access to it.",
            status=404,
            param="model",
        )
    content = body.get("content")
    if not isinstance(content, list) or not content:
        raise Refused(
            "MissingParameter", "The request failed because it is missing `content`.", param="content"
        )
    texts: list[str] = []
    images: dict[str, tuple[int, int, int]] = {}
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            role = part.get("role") or "first_frame"
            if role == "reference_image":
                raise _invalid("content.role", "reference images are not served by this fake")
            if role not in ("first_frame", "last_frame") or role in images:
                raise _invalid("content.role", f"role {role!r} is not valid here")
            url = str(part["image_url"].get("url") or "")
            images[role] = (800, 600, 0) if url.startswith(("http://", "https://")) else image_size(url)
        else:
            raise _invalid("content", f"a content item of type {kind!r} is not valid")
    if len(texts) > 1:
        raise _invalid("content", "at most one text item")
    prompt, commands = text_commands(texts[0]) if texts else ("", {})
    fields = {k: body.get(k) for k in COMMANDS.values() if body.get(k) is not None}
    if mixed := sorted(set(fields) & set(commands)):
        # (unconfirmed) Ark documents the two ways as alternatives; the fake refuses a mix
        raise _invalid(mixed[0], "it is given both as a request field and as a text command")
    fields.update(commands)
    mode = "t2v"
    if "last_frame" in images and "first_frame" not in images:
        raise _invalid("content.role", "a last_frame needs a first_frame")
    if images:
        mode = "first_last_frame" if "last_frame" in images else "first_frame"
    if mode == "t2v" and not model.t2v:
        raise _invalid("content", f"{name} needs a first frame image")
    if mode == "t2v" and not prompt:
        raise _invalid("content", "a text prompt is required")
    if mode != "t2v" and not model.first:
        raise _invalid("content", f"{name} does not take images")
    if mode == "first_last_frame" and not model.last:
        raise _invalid("content.role", f"{name} does not take a last_frame")
    resolution = str(fields.get("resolution") or model.default_resolution).lower()
    if resolution not in model.resolutions:
        raise _invalid("resolution", f"{name} makes {', '.join(model.resolutions)}, not {resolution}")
    adaptive_ok = mode != "t2v" or model.t2v_adaptive
    ratio = str(fields.get("ratio") or ("adaptive" if mode != "t2v" else "16:9"))
    if ratio not in RATIOS and not (ratio == "adaptive" and adaptive_ok):
        raise _invalid("ratio", f"{name} makes {', '.join(RATIOS)}{' or adaptive' if adaptive_ok else ''}")
    duration = fields.get("duration", 5)
    if not isinstance(duration, int) or isinstance(duration, bool):
        raise _invalid("duration", "it must be an integer")
    if not model.min_seconds <= duration <= model.max_seconds:
        raise _invalid("duration", f"{name} makes {model.min_seconds}-{model.max_seconds} s videos")
    seed = fields.get("seed", -1)
    if not isinstance(seed, int) or isinstance(seed, bool) or not -1 <= seed <= SEED_MAX:
        raise _invalid("seed", "it must be an integer in [-1, 2^32-1]")
    for flag in ("camera_fixed", "watermark"):
        if flag in fields and not isinstance(fields[flag], bool):
            raise _invalid(flag, "it must be true or false")
    if ratio == "adaptive":
        w, h, _ = images.get("first_frame", (16, 9, 0))
        made_ratio = nearest_ratio(w, h)
    else:
        made_ratio = ratio
    width, height = GRID[resolution][made_ratio]
    return Made(
        prompt=prompt,
        ratio=made_ratio,
        resolution=resolution,
        duration=duration,
        seed=seed if seed != -1 else 12345,
        camera_fixed=bool(fields.get("camera_fixed", False)),
        watermark=bool(fields.get("watermark", False)),
        width=width,
        height=height,
        mode=mode,
    )
