"""The rules the fake DashScope applies to wan video-synthesis tasks, one table per model: what a
create call may ask for, what the service picks when it asks for nothing, how long a prompt may
be before the service cuts it, and the shape of the usage it reports.

Written from the service's side and kept apart from the engine's own table
(`dropflow.engine.videogen.models`) on purpose: a client that gets a rule wrong is refused here
as the real service would refuse it. Sources, per rule: "limits" = shared/reference/
dashscope-limits.md; "ref" = shared/reference/dashscope.md; "mirror" = a third-party copy of the
Model Studio docs (novita.ai model-apis pages); "(unconfirmed)" = not seen in a recorded reply.
Error texts are the fake's own wording with the real codes and statuses.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Any

SD = ("832*480", "480*832", "624*624")  # 480P sizes (mirror, wan2.2 t2v / wan2.5 t2v)
HD = ("1280*720", "720*1280", "960*960", "1088*832", "832*1088")  # 720P (mirror)
FHD = ("1920*1080", "1080*1920", "1440*1440", "1632*1248", "1248*1632")  # 1080P (mirror)
PIXELS = {"480P": 832 * 480, "720P": 1280 * 720, "1080P": 1920 * 1080}
RATIOS = {"16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0, "4:3": 4 / 3, "3:4": 3 / 4}


@dataclass(frozen=True)
class Rules:
    kind: str  # "t2v" (parameters.size) or "i2v" (input.img_url + parameters.resolution)
    sizes: tuple[str, ...] = ()  # t2v
    resolutions: tuple[str, ...] = ()  # i2v
    default: str = ""  # the size (t2v) or resolution (i2v) used when the call names none
    durations: tuple[int, ...] = (5,)
    default_duration: int = 5
    prompt_chars: int = 800  # cut without an error beyond this
    negative_chars: int = 500
    usage_shape: str = (
        "classic"  # "classic": video_duration/video_ratio/video_count; "wan25": duration/SR/...
    )


# One entry per model; the SDK's `VideoSynthesis.Models` spells wan2.1 as "wanx2.1-...", the
# international docs as "wan2.1-...": both are served.
WAN: dict[str, Rules] = {
    # mirror (wan2.5-t2v): three tiers, default 1920*1080; 5 or 10 s; prompts cut at 2000 chars;
    # limits: wan2.5+ usage is {duration, SR, ratio, output_video_duration, fps}
    "wan2.5-t2v-preview": Rules(
        "t2v", SD + HD + FHD, default="1920*1080", durations=(5, 10), prompt_chars=2000, usage_shape="wan25"
    ),
    # limits: "sizes for 480P and 1080P only; default 1920*1080; duration fixed at 5 s"
    "wan2.2-t2v-plus": Rules("t2v", SD + FHD, default="1920*1080"),
    # Model Studio t2v docs (unconfirmed): turbo 480P + 720P, plus 720P; default 1280*720; 5 s
    "wanx2.1-t2v-turbo": Rules("t2v", SD + HD, default="1280*720"),
    "wanx2.1-t2v-plus": Rules("t2v", HD, default="1280*720"),
    # mirror (wan2.5-i2v): 480P/720P/1080P, default 1080P; 5 or 10 s; 2000 chars; wan2.5+ usage
    "wan2.5-i2v-preview": Rules(
        "i2v",
        resolutions=("480P", "720P", "1080P"),
        default="1080P",
        durations=(5, 10),
        prompt_chars=2000,
        usage_shape="wan25",
    ),
    # limits: "resolution 480P or 1080P; default 1080P"; mirror (wan2.2-i2v): 5 s
    "wan2.2-i2v-plus": Rules("i2v", resolutions=("480P", "1080P"), default="1080P"),
    # Model Studio i2v docs (unconfirmed): flash 480P/720P default 720P; turbo 480P/720P, 3-5 s;
    # plus 720P only
    "wan2.2-i2v-flash": Rules("i2v", resolutions=("480P", "720P"), default="720P"),
    "wanx2.1-i2v-turbo": Rules("i2v", resolutions=("480P", "720P"), default="720P", durations=(3, 4, 5)),
    "wanx2.1-i2v-plus": Rules("i2v", resolutions=("720P",), default="720P"),
}
for _old in ("t2v-turbo", "t2v-plus", "i2v-turbo", "i2v-plus"):
    WAN[f"wan2.1-{_old}"] = WAN[f"wanx2.1-{_old}"]

# limits: wan2.2 i2v input image "each side 360-2000 px, at most 10 MB"; mirror: the same for wan2.5
IMAGE_MIN_SIDE, IMAGE_MAX_SIDE, IMAGE_MAX_BYTES = 360, 2000, 10 * 1024 * 1024


class Refused(Exception):
    """The create call is refused: 400 with a DashScope code."""

    def __init__(self, message: str, code: str = "InvalidParameter") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def image_bytes(url: str, uploads: dict[str, bytes]) -> bytes | None:
    """The bytes behind an img_url the fake can see (an upload to it, or a data: URI); None for a
    remote http(s) URL, which the fake does not fetch."""
    if url.startswith("oss://"):
        return uploads.get(url[len("oss://") :])
    if url.startswith("data:") and "," in url:
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=False)
        except ValueError:
            return None
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an image, or None when the fake cannot decode it. (The real service
    refuses what it cannot decode; the fake lets such bytes through, so tests that upload stand-in
    bytes still create tasks.)"""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def check_create(model: str, inp: dict[str, Any], params: dict[str, Any], image: bytes | None) -> Rules:
    """The model's rules when the create call is one the real service takes; raises Refused."""
    rules = WAN.get(model)
    if rules is None:
        raise Refused("Model not exist.")  # ref: the service's answer to an unknown model
    if rules.kind == "t2v":
        if not inp.get("prompt"):
            raise Refused("prompt is required.")
        size = params.get("size", rules.default)
        if size not in rules.sizes:
            raise Refused(
                f"The size {size} is not supported by {model}; supported: {', '.join(rules.sizes)}."
            )
    else:
        if not inp.get("img_url"):
            raise Refused("img_url is required for image-to-video.")
        resolution = params.get("resolution", rules.default)
        if resolution not in rules.resolutions:
            raise Refused(
                f"The resolution {resolution} is not supported by {model}; supported: "
                f"{', '.join(rules.resolutions)}."
            )
        if image is not None:
            if len(image) > IMAGE_MAX_BYTES:
                raise Refused(f"The image is {len(image)} bytes; the limit is 10MB.")
            dims = image_size(image)
            if dims is not None and not all(IMAGE_MIN_SIDE <= side <= IMAGE_MAX_SIDE for side in dims):
                raise Refused(
                    f"The image is {dims[0]}x{dims[1]}; width and height must be within "
                    f"[{IMAGE_MIN_SIDE}, {IMAGE_MAX_SIDE}] pixels."
                )
    duration = params.get("duration", rules.default_duration)
    if duration not in rules.durations:
        raise Refused(
            f"The duration {duration} is not supported by {model}; supported: "
            f"{', '.join(str(d) for d in rules.durations)}."
        )
    return rules


def used_prompts(rules: Rules, inp: dict[str, Any]) -> tuple[str, str]:
    """(prompt, negative prompt) as the model reads them: cut without an error (limits)."""
    prompt = str(inp.get("prompt") or "")[: rules.prompt_chars]
    negative = str(inp.get("negative_prompt") or "")[: rules.negative_chars]
    return prompt, negative


def output_size(rules: Rules, params: dict[str, Any], image: bytes | None) -> tuple[int, int]:
    """The size of the video made: the t2v size asked, or for i2v the tier's pixel count at the
    image's aspect ratio (ref: "the model keeps the image's aspect, total pixels near the tier")."""
    if rules.kind == "t2v":
        w, h = (int(x) for x in str(params.get("size", rules.default)).split("*"))
        return w, h
    pixels = PIXELS[str(params.get("resolution", rules.default))]
    dims = image_size(image) if image is not None else None
    aspect = dims[0] / dims[1] if dims else 16 / 9
    w = round(math.sqrt(pixels * aspect) / 16) * 16
    return w, round(w / aspect)


def usage(rules: Rules, params: dict[str, Any], image: bytes | None) -> dict[str, Any]:
    """The `usage` of a SUCCEEDED task, in the model's own shape (limits)."""
    seconds = params.get("duration", rules.default_duration)
    w, h = output_size(rules, params, image)
    if rules.usage_shape == "classic":
        return {"video_duration": seconds, "video_ratio": f"{w}*{h}", "video_count": 1}
    tier = min(PIXELS, key=lambda t: abs(PIXELS[t] - w * h))
    ratio = min(RATIOS, key=lambda r: abs(RATIOS[r] - w / h))
    return {
        "duration": seconds,
        "SR": int(tier.removesuffix("P")),
        "ratio": ratio,
        "output_video_duration": seconds,
        "fps": 24,
    }
