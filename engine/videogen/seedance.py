"""The seedance family's catalog (Doubao Seedance on Volcengine Ark): requests checked against the
model table (`dropflow.engine.providers.ark_models`), made explicit, and billed tokens read.

Explicit as for wan: left alone, Seedance 1.0 pro makes 1080p (about 3.7 CNY for 5 s against
0.7 CNY at 480p). dropflow sends the model's lowest resolution, 5 s, and 16:9 for text-to-video
("adaptive", the first frame's shape, for image-to-video) unless the unit or the route asks for
another; prompts that carry Ark's text commands (``--dur 10``) are refused, since they would
change what is made and billed behind these checks.

Usage keys (as `usage.py`, plus what Ark bills): ``tokens`` (``usage.completion_tokens`` of the
task, else the estimate width * height * 24 fps * seconds / 1024), the same count as
``output_tokens`` (so the store's token columns and the TUI's "tokens today" include it),
``ratio``, ``size`` (WIDTH*HEIGHT of the billed video) and ``cost_cny`` (tokens at the model's list
price; None when the price is not known).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from dropflow.engine.errors import InputError
from dropflow.engine.providers import ark_models as ark
from dropflow.engine.providers.base import VideoGenRequest
from dropflow.engine.videogen.models import ImageLimits, Kind, Origin, Trimmed

_COMMAND = re.compile(r"(?:^|\s)(" + "|".join(re.escape(c) for c in ark.TEXT_COMMANDS) + r")(?=\s|$)")
_IMAGE = ImageLimits(
    min_side=ark.IMAGE_MIN_SIDE + 1,  # Ark: (300, 6000) px, bounds excluded
    max_side=ark.IMAGE_MAX_SIDE - 1,
    max_bytes=ark.INLINE_MAX_BYTES,
    min_aspect=ark.IMAGE_MIN_ASPECT,
    max_aspect=ark.IMAGE_MAX_ASPECT,
)


def _number(value: Any) -> float | None:
    try:
        n = float(value)
    except (TypeError, ValueError):
        return None
    return n if n >= 0 else None


class SeedanceCatalog:
    family = "seedance"
    sized = False

    def default_model(self, kind: Kind) -> str:
        return ark.DEFAULT_I2V if kind == "i2v" else ark.DEFAULT_T2V

    def known(self, model: str) -> bool:
        return ark.lookup(model) is not None

    def unknown_warning(self, model: str) -> str:
        return (
            f"model {model} is not in dropflow's table of Seedance models: its ratio, resolution "
            "and duration are not checked, and what the job leaves open is the service's to choose "
            "(for Seedance pro models that is 1080p)"
        )

    def check(self, request: VideoGenRequest, origin: Origin) -> tuple[VideoGenRequest, list[Trimmed]]:
        name = request.model
        fix = "fix it and drop the file again" if origin.from_unit else "fix the route's params"
        if m := _COMMAND.search(request.prompt):
            raise InputError(
                f"{origin.unit}: the prompt carries Ark's text command {m.group(1)!r}; dropflow sends "
                "ratio, resolution, duration, seed, camera and watermark as request fields",
                hint="remove the --commands from the prompt and give them as job-file keys (ratio:, "
                "resolution:, duration:, seed:, camera_fixed:, watermark:) or route params",
            )
        if request.last_image and not request.image:
            raise InputError(
                f"{origin.unit}: a last frame needs a first frame (image:)",
                hint="add `image:` to the job file, or drop `last_image:`",
            )
        for key, what in (("size", "a size"), ("prompt_extend", "prompt_extend")):
            if getattr(request, key) is not None:
                raise InputError(
                    f"{origin.unit}: {name} takes no {what} (from {origin.of(key)}); Seedance models "
                    "take ratio (16:9, 4:3, 1:1, 3:4, 9:16, 21:9, adaptive) and resolution",
                    hint=f"give ratio: and resolution: instead; {fix}",
                )
        if request.negative_prompt:
            raise InputError(
                f"{origin.unit}: {name} takes no negative prompt (from {origin.of('negative_prompt')})",
                hint="describe what the video shows in the prompt instead; remove negative_prompt",
            )
        model = ark.lookup(name)
        if model is None:
            return request, []
        i2v = bool(request.image)
        if not i2v and not model.t2v:
            raise InputError(
                f"{origin.unit}: {name} makes videos from a first frame only, and the job has no image",
                hint="give an `image:` in the job file, or choose a text-to-video model (params.model)",
            )
        if i2v and not model.first_frame:
            raise InputError(
                f"{origin.unit}: {name} is a text-to-video model and takes no image",
                hint="choose an image-to-video model (params.i2v_model, or `model:` in the job file)",
            )
        if request.last_image and not model.last_frame:
            raise InputError(
                f"{origin.unit}: {name} takes a first frame but no last frame",
                hint="choose a model that takes both (doubao-seedance-1-0-pro-250528, "
                "doubao-seedance-1-0-lite-i2v-250428, doubao-seedance-1-5-pro-251215), or drop last_image",
            )
        resolution = (request.resolution or model.default_resolution).upper()
        if resolution not in model.resolutions:
            raise InputError(
                f"{origin.unit}: {name} does not make resolution {resolution} (from "
                f"{origin.of('resolution')}); it makes {', '.join(model.resolutions)}",
                hint=fix,
            )
        ratio = request.ratio or (ark.ADAPTIVE if i2v else "16:9")
        if ratio not in model.ratios(i2v):
            raise InputError(
                f"{origin.unit}: {name} does not make ratio {ratio} (from {origin.of('ratio')}) for "
                f"{'image' if i2v else 'text'}-to-video; it makes {', '.join(model.ratios(i2v))}",
                hint=fix,
            )
        duration = request.duration if request.duration is not None else model.service_duration
        if duration not in model.durations:
            raise InputError(
                f"{origin.unit}: {name} does not make {duration} s videos (duration from "
                f"{origin.of('duration')}); it makes {model.durations[0]}-{model.durations[-1]} s",
                hint=fix,
            )
        return replace(request, resolution=resolution, ratio=ratio, duration=duration), []

    def image_limits(self, model: str) -> ImageLimits:
        return _IMAGE

    def paid_usage(self, raw: Mapping[str, Any] | None, request: VideoGenRequest) -> dict[str, Any]:
        raw = dict(raw or {})
        model = ark.lookup(request.model)
        seconds = _number(raw.get("duration")) or _number(request.duration)
        if seconds is None and model is not None:
            seconds = float(model.service_duration)
        resolution = str(raw.get("resolution") or request.resolution or "").upper() or (
            model.service_resolution if model is not None else None
        )
        ratio = str(raw.get("ratio") or request.ratio or "") or None
        size = ark.pixels(resolution, ratio)
        reported = _number(raw.get("completion_tokens"))
        tokens: int | None = int(reported) if reported is not None else None
        if tokens is None and size is not None and seconds is not None:
            fps = int(_number(raw.get("framespersecond")) or ark.FPS)
            tokens = ark.tokens(*size, seconds, fps)
        usage: dict[str, Any] = {
            "model": request.model,
            "resolution": resolution,
            "ratio": ratio,
            "video_seconds": (int(seconds) if seconds == int(seconds) else seconds) if seconds else None,
            "video_count": 1,
            "tokens": tokens,
            "cost_cny": ark.cost_cny(model, tokens) if tokens is not None else None,
            "reported": reported is not None,
            "provider_usage": raw,
        }
        if size is not None and ratio != ark.ADAPTIVE:
            usage["size"] = f"{size[0]}*{size[1]}"
        if tokens is not None:
            usage["output_tokens"] = tokens
        return usage

    def describe(self, request: VideoGenRequest) -> str:
        parts = [" ".join(p for p in (request.resolution, request.ratio) if p) or "service default"]
        if request.duration:
            parts.append(f"{request.duration} s")
        usage = self.paid_usage(None, request)
        if usage["tokens"] is not None:
            cost = f" ≈ {usage['cost_cny']:.2f} CNY" if usage["cost_cny"] is not None else ""
            parts.append(f"~{usage['tokens']:,} tokens{cost}")
        return ", ".join(parts)


SEEDANCE = SeedanceCatalog()
