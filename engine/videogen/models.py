"""What each wan model takes: sizes or resolutions, durations, prompt lengths, first-frame images,
and the defaults the service would pick on its own. A request is checked against its model before
anything is uploaded or paid, and the choices dropflow leaves to nobody are made explicit.

Why explicit: left alone, DashScope picks a model's *largest* tier (wan2.2: 1080P, about 0.70 CNY/s
against 0.14 CNY/s at 480P). dropflow sends the model's lowest tier unless the unit or the route
asks for another one, so a video never costs five times more than asked without anyone saying so.

Sources, per entry: "limits" = shared/reference/dashscope-limits.md; "mirror" = a third-party copy
of the Model Studio docs (novita.ai model-apis pages); "(unconfirmed)" = not seen in a recorded
reply. The fake server (`dropflow.engine.fakes.wan_models`) keeps its own table, written from the
same sources as the service would behave, so a wrong row here is caught by the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from dropflow.engine.errors import InputError
from dropflow.engine.providers.base import VideoGenRequest

Kind = Literal["t2v", "i2v"]

# text-to-video sizes per resolution tier (WIDTH*HEIGHT; 16:9, 9:16, 1:1, 4:3, 3:4)
SIZES_480P = ("832*480", "480*832", "624*624")
SIZES_720P = ("1280*720", "720*1280", "960*960", "1088*832", "832*1088")
SIZES_1080P = ("1920*1080", "1080*1920", "1440*1440", "1632*1248", "1248*1632")
TIER_PIXELS = {"480P": 832 * 480, "720P": 1280 * 720, "1080P": 1920 * 1080}


@dataclass(frozen=True)
class ImageLimits:
    """What a first frame may be: each side within [min_side, max_side] px, at most max_bytes, and
    width / height within [min_aspect, max_aspect] when the model says (seedance: 0.4-2.5)."""

    min_side: int = 360
    max_side: int = 2000
    max_bytes: int = 10 * 1024 * 1024
    min_aspect: float | None = None
    max_aspect: float | None = None


@dataclass(frozen=True)
class WanModel:
    name: str
    kind: Kind
    tiers: Mapping[str, tuple[str, ...]]  # resolution tier -> sizes (t2v); -> () for i2v (resolution only)
    service_default: str  # what the service picks when nothing is sent: a size (t2v) or a tier (i2v)
    durations: tuple[int, ...]
    default_duration: int
    prompt_chars: int = 800  # longer prompts are cut by the service without an error
    negative_chars: int = 500
    image: ImageLimits | None = None  # i2v only
    aliases: tuple[str, ...] = field(default=())

    @property
    def resolutions(self) -> tuple[str, ...]:
        return tuple(self.tiers)

    @property
    def default_resolution(self) -> str:
        """dropflow's default: the lowest (cheapest) tier the model has."""
        return min(self.tiers, key=lambda t: TIER_PIXELS.get(t, 0))

    @property
    def default_size(self) -> str | None:
        """dropflow's default size for text-to-video: the lowest tier's first (landscape) size."""
        return self.tiers[self.default_resolution][0] if self.kind == "t2v" else None

    def allowed(self) -> str:
        """What this model takes, in words, for error messages."""
        if self.kind == "t2v":
            what = "; ".join(f"{t}: {', '.join(s)}" for t, s in self.tiers.items())
            sizes = f"size {what}"
        else:
            sizes = f"resolution {', '.join(self.tiers)}"
        secs = ", ".join(str(d) for d in self.durations)
        return f"{sizes}; duration {secs} s"


_I2V_IMAGE = ImageLimits()  # 360-2000 px per side, 10 MB: limits (wan2.2 i2v); mirror (wan2.5 i2v)

MODELS: tuple[WanModel, ...] = (
    # mirror (novita model-apis-wan2.5-t2v): 480P/720P/1080P sizes, default 1920*1080; 5 or 10 s;
    # prompts up to 2000 characters
    WanModel(
        "wan2.5-t2v-preview",
        "t2v",
        {"480P": SIZES_480P, "720P": SIZES_720P, "1080P": SIZES_1080P},
        "1920*1080",
        (5, 10),
        5,
        prompt_chars=2000,
    ),
    # limits + mirror (wan2.2-t2v): 480P and 1080P sizes only, default 1920*1080, fixed 5 s
    WanModel("wan2.2-t2v-plus", "t2v", {"480P": SIZES_480P, "1080P": SIZES_1080P}, "1920*1080", (5,), 5),
    # Model Studio t2v docs (unconfirmed): turbo 480P + 720P, plus 720P only; default 1280*720; 5 s
    WanModel(
        "wanx2.1-t2v-turbo",
        "t2v",
        {"480P": SIZES_480P, "720P": SIZES_720P},
        "1280*720",
        (5,),
        5,
        aliases=("wan2.1-t2v-turbo",),
    ),
    WanModel(
        "wanx2.1-t2v-plus", "t2v", {"720P": SIZES_720P}, "1280*720", (5,), 5, aliases=("wan2.1-t2v-plus",)
    ),
    # mirror (novita model-apis-wan2.5-i2v): 480P/720P/1080P, default 1080P; 5 or 10 s; 2000 chars
    WanModel(
        "wan2.5-i2v-preview",
        "i2v",
        {"480P": (), "720P": (), "1080P": ()},
        "1080P",
        (5, 10),
        5,
        prompt_chars=2000,
        image=_I2V_IMAGE,
    ),
    # limits + mirror (wan2.2-i2v): 480P or 1080P, default 1080P, fixed 5 s
    WanModel("wan2.2-i2v-plus", "i2v", {"480P": (), "1080P": ()}, "1080P", (5,), 5, image=_I2V_IMAGE),
    # Model Studio i2v docs (unconfirmed): flash 480P/720P, default 720P, fixed 5 s
    WanModel("wan2.2-i2v-flash", "i2v", {"480P": (), "720P": ()}, "720P", (5,), 5, image=_I2V_IMAGE),
    # Model Studio i2v docs (unconfirmed): turbo 480P/720P (default 720P), 3-5 s; plus 720P, 5 s
    WanModel(
        "wanx2.1-i2v-turbo",
        "i2v",
        {"480P": (), "720P": ()},
        "720P",
        (3, 4, 5),
        5,
        image=_I2V_IMAGE,
        aliases=("wan2.1-i2v-turbo",),
    ),
    WanModel(
        "wanx2.1-i2v-plus",
        "i2v",
        {"720P": ()},
        "720P",
        (5,),
        5,
        image=_I2V_IMAGE,
        aliases=("wan2.1-i2v-plus",),
    ),
)

_BY_NAME = {n: m for m in MODELS for n in (m.name, *m.aliases)}


def lookup(name: str) -> WanModel | None:
    """The table's entry for a model name (aliases included), or None for a model it does not know."""
    return _BY_NAME.get(name)


def tier_of_size(size: str) -> str | None:
    """The resolution tier a WIDTH*HEIGHT size belongs to (by pixel count), e.g. 832*480 -> 480P."""
    try:
        w, h = (int(x) for x in size.lower().replace("x", "*").split("*"))
    except ValueError:
        return None
    return min(TIER_PIXELS, key=lambda t: abs(TIER_PIXELS[t] - w * h))


@dataclass(frozen=True)
class Origin:
    """Where each value of a request came from, so an error says what to fix."""

    unit: str  # the job file's (or prompt's) name
    from_unit: frozenset[str] = frozenset()  # fields the unit itself set; the rest are route params

    def of(self, key: str) -> str:
        return self.unit if key in self.from_unit else f"the route's params.{key}"


def resolve(request: VideoGenRequest, model: WanModel, origin: Origin) -> VideoGenRequest:
    """The request with every cost-bearing choice explicit, checked against the model.

    Adds dropflow's defaults (the lowest tier; the model's default duration when it has several),
    so nothing is left for the service to choose at a higher price.

    Raises InputError naming the value, where it came from, and what the model takes.
    """
    name = request.model
    hint_fix = "fix it and drop the file again" if origin.from_unit else "fix the route's params"
    if model.kind == "i2v" and not request.image:
        raise InputError(
            f"{origin.unit}: {name} is an image-to-video model, but the job has no image",
            hint="give an `image:` in the job file, or choose a text-to-video model (params.model)",
        )
    if model.kind == "t2v" and request.image:
        raise InputError(
            f"{origin.unit}: {name} is a text-to-video model and takes no image",
            hint="choose an image-to-video model (params.i2v_model, or `model:` in the job file)",
        )
    size, resolution = request.size, request.resolution
    if model.kind == "t2v":
        if resolution is not None:
            raise InputError(
                f"{origin.unit}: {name} takes a size, not a resolution ({resolution}, from "
                f"{origin.of('resolution')}); it allows {model.allowed()}",
                hint=f"give size: WIDTH*HEIGHT instead; {hint_fix}",
            )
        size = size or model.default_size
        if not any(size in sizes for sizes in model.tiers.values()):
            raise InputError(
                f"{origin.unit}: {name} does not make size {size} (from {origin.of('size')}); "
                f"it allows {model.allowed()}",
                hint=hint_fix,
            )
    else:
        if size is not None:
            raise InputError(
                f"{origin.unit}: {name} takes a resolution, not a size ({size}, from "
                f"{origin.of('size')}); it allows {model.allowed()}",
                hint=f"give resolution: {' / '.join(model.resolutions)} instead; {hint_fix}",
            )
        resolution = resolution or model.default_resolution
        if resolution not in model.tiers:
            raise InputError(
                f"{origin.unit}: {name} does not make resolution {resolution} (from "
                f"{origin.of('resolution')}); it allows {model.allowed()}",
                hint=hint_fix,
            )
    duration = request.duration
    if duration is not None and duration not in model.durations:
        raise InputError(
            f"{origin.unit}: {name} does not make {duration} s videos (duration from "
            f"{origin.of('duration')}); it allows {model.allowed()}",
            hint=hint_fix,
        )
    if duration is None and len(model.durations) > 1:
        duration = model.default_duration  # e.g. wan2.5: 5 s, not the 10 s that costs twice as much
    return replace(request, size=size, resolution=resolution, duration=duration)


def expected_seconds(request: VideoGenRequest, model: WanModel | None) -> int | None:
    """Seconds of video the request will be billed for, as far as dropflow can tell before the task."""
    if request.duration is not None:
        return request.duration
    return model.default_duration if model is not None else None


def expected_resolution(request: VideoGenRequest, model: WanModel | None) -> str | None:
    if request.resolution:
        return request.resolution
    if request.size:
        return tier_of_size(request.size)
    if model is None:
        return None
    return model.service_default if model.kind == "i2v" else tier_of_size(model.service_default)


@dataclass(frozen=True)
class Trimmed:
    """A prompt the service would cut: its length as written and the limit it is cut to."""

    field: str  # "prompt" or "negative_prompt"
    length: int
    limit: int


def trim_prompts(request: VideoGenRequest, model: WanModel) -> tuple[VideoGenRequest, list[Trimmed]]:
    """Cut prompts to what the model reads: the service drops the rest without an error, so dropflow
    cuts them itself and says so, and the record shows exactly the text the video was made from."""
    cuts: list[Trimmed] = []
    prompt, negative = request.prompt, request.negative_prompt
    if len(prompt) > model.prompt_chars:
        cuts.append(Trimmed("prompt", len(prompt), model.prompt_chars))
        prompt = prompt[: model.prompt_chars]
    if len(negative) > model.negative_chars:
        cuts.append(Trimmed("negative_prompt", len(negative), model.negative_chars))
        negative = negative[: model.negative_chars]
    return replace(request, prompt=prompt, negative_prompt=negative), cuts
