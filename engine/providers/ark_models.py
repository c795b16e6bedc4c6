"""What each Doubao Seedance model on Volcengine Ark takes, makes and costs: one entry per model.

The video-gen engine checks every request against its entry before anything is paid
(`dropflow.engine.videogen.seedance`), and estimates spend from it until the task reports its
tokens. The fake Ark (`dropflow.engine.fakes.ark_models`) keeps its own table on purpose, written
from the service's side, so a wrong row here is refused there as the service would refuse it.

Billing (Ark's video-generation pricing page): a video is billed in tokens,
``tokens = width * height * fps * seconds / 1024``, at a price per million tokens per model; a
failed, cancelled or expired task is not billed. Example: Seedance 1.0 pro, 1080p 16:9
(1920x1088), 24 fps, 5 s = 244,800 tokens, at 15 CNY per million = 3.67 CNY.

Sources, per entry: "ark" = Volcengine Ark's video-generation API and model pages (docs
82379/1520757 and the model list), as mirrored by third parties (docs.anyfast.ai,
doc.starrise.tech, docs.modelhunter.ai, novita.ai, runware.ai, docs.powertokens.ai); "sdk" =
volcengine-ark-runtime 5.0.54 (`resources/content_generation/tasks.py`); "(unconfirmed)" = a
value seen in one mirror only, or inferred, and not in a recorded reply of the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ark: the ratios every Seedance model makes; "adaptive" lets the first frame (i2v) or the
# prompt (1.5 pro t2v) decide
RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9")
ADAPTIVE = "adaptive"

# Output pixels per (resolution, ratio): runware.ai (480p, 1080p of Seedance 1.0 pro); 720p from
# the Ark API page's table (unconfirmed). Seedance 1.5 pro is assumed to use the same grid
# (unconfirmed). Billing uses these: the token count is width * height * fps * seconds / 1024.
PIXELS: dict[str, dict[str, tuple[int, int]]] = {
    "480P": {
        "16:9": (864, 480),
        "4:3": (736, 544),
        "1:1": (640, 640),
        "3:4": (544, 736),
        "9:16": (480, 864),
        "21:9": (960, 416),
    },
    "720P": {
        "16:9": (1248, 704),
        "4:3": (1120, 832),
        "1:1": (960, 960),
        "3:4": (832, 1120),
        "9:16": (704, 1248),
        "21:9": (1504, 640),
    },
    "1080P": {
        "16:9": (1920, 1088),
        "4:3": (1664, 1248),
        "1:1": (1440, 1440),
        "3:4": (1248, 1664),
        "9:16": (1088, 1920),
        "21:9": (2176, 928),
    },
}
FPS = 24  # ark: every Seedance 1.x model makes 24 fps

# ark: first / last frame images: jpeg, png, webp, bmp, tiff, gif; each side 300-6000 px; width /
# height within 0.4-2.5; under 30 MB. dropflow sends a local image inline as a base64 data URL
# and keeps it to 10 MB itself (its own cap: re-encoded as JPEG beyond that), so a request body
# stays small (Ark's request-size limit is not documented: unconfirmed).
IMAGE_MIN_SIDE, IMAGE_MAX_SIDE = 300, 6000
IMAGE_MIN_ASPECT, IMAGE_MAX_ASPECT = 0.4, 2.5
IMAGE_MAX_BYTES = 30 * 1024 * 1024
INLINE_MAX_BYTES = 10 * 1024 * 1024

# ark: parameters given as text commands after the prompt (the older way, e.g. "--ratio 16:9
# --dur 5"); dropflow sends request fields and refuses prompts that carry commands, which would
# change what is made and billed behind the checks
TEXT_COMMANDS = (
    "--ratio",
    "--rt",
    "--resolution",
    "--rs",
    "--duration",
    "--dur",
    "--frames",
    "--fps",
    "--seed",
    "--camerafixed",
    "--cf",
    "--watermark",
    "--wm",
)

# ark: a task's video_url (and last_frame_url) is valid for 24 h; tasks are listed for 7 days
VIDEO_URL_HOURS = 24


@dataclass(frozen=True)
class SeedanceModel:
    name: str
    t2v: bool  # makes videos from a prompt alone
    first_frame: bool  # takes a first frame (image-to-video)
    last_frame: bool  # also takes a last frame with it
    resolutions: tuple[str, ...]
    service_resolution: str  # what the service makes when the request names none
    durations: tuple[int, ...]  # seconds it makes
    price_cny_per_mtok: float | None  # None: not known
    t2v_adaptive: bool = False  # "adaptive" ratio for text-to-video too (the prompt decides)
    service_duration: int = 5
    note: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def default_resolution(self) -> str:
        """dropflow's default: the lowest (cheapest) resolution the model makes."""
        return min(self.resolutions, key=lambda r: int(r.rstrip("P")))

    def ratios(self, i2v: bool) -> tuple[str, ...]:
        return (*RATIOS, ADAPTIVE) if i2v or self.t2v_adaptive else RATIOS


_SECONDS_2_12 = tuple(range(2, 13))  # ark (current API page): 2-12 s for Seedance 1.0
_SECONDS_4_12 = tuple(range(4, 13))  # ark: 4-12 s for Seedance 1.5 pro

MODELS: tuple[SeedanceModel, ...] = (
    # ark: text, first frame, first + last frame; 480p/720p/1080p (default 1080p); 2-12 s;
    # 15 CNY per million tokens (the "3.67 CNY for a 5 s 1080p video" of the launch)
    SeedanceModel(
        "doubao-seedance-1-0-pro-250528",
        t2v=True,
        first_frame=True,
        last_frame=True,
        resolutions=("480P", "720P", "1080P"),
        service_resolution="1080P",
        durations=_SECONDS_2_12,
        price_cny_per_mtok=15.0,
    ),
    # ark: text and first frame only (no last frame); 480p/720p/1080p (default 1080p); 2-12 s;
    # price 4.2 CNY per million tokens (unconfirmed)
    SeedanceModel(
        "doubao-seedance-1-0-pro-fast-251015",
        t2v=True,
        first_frame=True,
        last_frame=False,
        resolutions=("480P", "720P", "1080P"),
        service_resolution="1080P",
        durations=_SECONDS_2_12,
        price_cny_per_mtok=4.2,
    ),
    # ark: text only; 480p/720p/1080p (default 720p); 2-12 s; 10 CNY per million tokens (unconfirmed)
    SeedanceModel(
        "doubao-seedance-1-0-lite-t2v-250428",
        t2v=True,
        first_frame=False,
        last_frame=False,
        resolutions=("480P", "720P", "1080P"),
        service_resolution="720P",
        durations=_SECONDS_2_12,
        price_cny_per_mtok=10.0,
    ),
    # ark: first frame, first + last frame (and 1-4 reference images, which dropflow does not
    # send); no text-only videos; 480p/720p/1080p (default 720p); 2-12 s; 10 CNY (unconfirmed)
    SeedanceModel(
        "doubao-seedance-1-0-lite-i2v-250428",
        t2v=False,
        first_frame=True,
        last_frame=True,
        resolutions=("480P", "720P", "1080P"),
        service_resolution="720P",
        durations=_SECONDS_2_12,
        price_cny_per_mtok=10.0,
    ),
    # ark: text, first frame, first + last frame, with sound by default (generate_audio);
    # 480p/720p (default 720p; 1080p listed by one mirror, not by another: unconfirmed, included
    # so that the service, not dropflow, answers); 4-12 s; "adaptive" ratio for text too;
    # 16 CNY per million tokens with sound, 8 without (unconfirmed; dropflow estimates with sound)
    SeedanceModel(
        "doubao-seedance-1-5-pro-251215",
        t2v=True,
        first_frame=True,
        last_frame=True,
        resolutions=("480P", "720P", "1080P"),
        service_resolution="720P",
        durations=_SECONDS_4_12,
        price_cny_per_mtok=16.0,
        t2v_adaptive=True,
        note="makes sound by default; priced with sound",
    ),
)

_BY_NAME = {n: m for m in MODELS for n in (m.name, *m.aliases)}

DEFAULT_T2V = "doubao-seedance-1-0-lite-t2v-250428"
DEFAULT_I2V = "doubao-seedance-1-0-lite-i2v-250428"


def lookup(name: str) -> SeedanceModel | None:
    """The table's entry for a model name, or None (an endpoint id `ep-...`, a newer model)."""
    return _BY_NAME.get(name)


def pixels(resolution: str | None, ratio: str | None) -> tuple[int, int] | None:
    """Output width and height of a resolution and ratio; "adaptive" (and an unknown ratio) is
    estimated as 16:9, within 4% of every other ratio's pixel count."""
    if not resolution:
        return None
    grid = PIXELS.get(resolution.upper())
    if grid is None:
        return None
    return grid.get(ratio or "16:9") or grid["16:9"]


def tokens(width: int, height: int, seconds: float, fps: int = FPS) -> int:
    """Billed tokens of a video: width * height * fps * seconds / 1024."""
    return int(width * height * fps * seconds // 1024)


def cost_cny(model: SeedanceModel | None, n_tokens: int) -> float | None:
    if model is None or model.price_cny_per_mtok is None:
        return None
    return round(n_tokens * model.price_cny_per_mtok / 1_000_000, 4)
