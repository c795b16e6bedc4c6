"""The video-gen engine's route parameters, and how a unit's own spec (a prompt, a job file) merges
with them into one provider request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from dropflow.engine.base import Params
from dropflow.engine.providers.base import VideoGenRequest
from dropflow.engine.videogen.job import Ratio, Resolution, Size, VideoSpec

if TYPE_CHECKING:
    from dropflow.engine.videogen.catalog import Catalog


class VideoGenParams(Params):
    """Route parameters of the video-gen engine (`routes[].params` in config.yaml)."""

    model: str | None = Field(
        None,
        description="Text-to-video model; empty: the provider's default (wan2.2-t2v-plus for "
        "dashscope and offline, doubao-seedance-1-0-lite-t2v-250428 for ark).",
    )
    i2v_model: str | None = Field(
        None,
        description="Image-to-video model; empty: the provider's default (wan2.2-i2v-plus for "
        "dashscope and offline, doubao-seedance-1-0-lite-i2v-250428 for ark).",
    )
    size: Size = Field(
        None,
        description="Text-to-video size WIDTH*HEIGHT, one the model makes; empty: the model's lowest "
        "tier (832*480), sent explicitly (the service's own default is its most expensive).",
    )
    resolution: Resolution = Field(
        None,
        description="Resolution (480P/720P/1080P), one the model makes: image-to-video (wan), or "
        "any video (seedance); empty: the model's lowest, sent explicitly.",
    )
    ratio: Ratio = Field(
        None,
        description="Seedance: aspect ratio 16:9, 4:3, 1:1, 3:4, 9:16, 21:9 or adaptive; empty: "
        "16:9 for text-to-video, adaptive (the first frame's) for image-to-video.",
    )
    camera_fixed: bool | None = Field(None, description="Seedance: keep the camera still.")
    watermark: bool | None = Field(None, description="Seedance: add the service's watermark.")
    duration: int | None = Field(
        None, ge=1, le=60, description="Seconds of video, as the model allows; the model's default if empty."
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Fixed seed; random if empty.")
    prompt_extend: bool | None = Field(
        None, description="Let the provider rewrite prompts (its default if empty)."
    )
    negative_prompt: str = Field(
        "", description="What videos must not show, unless a job file says otherwise."
    )
    default_prompt: str = Field(
        "", description="Prompt for an image dropped without a .txt; empty: such images fail."
    )
    poll_first_seconds: float = Field(15.0, gt=0, description="First status check after submitting.")
    poll_growth: float = Field(1.5, ge=1.0, description="Each interval is the previous times this.")
    poll_max_seconds: float = Field(60.0, gt=0, description="Longest interval between status checks.")
    deadline_minutes: float = Field(
        60.0,
        gt=0,
        le=24 * 60,
        description="Give up following a task not finished this long after submission (or "
        "submitting one that every try is throttled, 429).",
    )
    max_download_mb: float = Field(512.0, gt=0, description="Refuse a video larger than this.")
    download_retries: int = Field(
        3, ge=0, le=10, description="Quick re-tries of a failed download in one run."
    )
    submissions_per_second: float = Field(2.0, gt=0, description="Task submissions per second, per model.")
    max_concurrent_tasks: int = Field(2, ge=1, description="Remote tasks in flight at once, per model.")

    @model_validator(mode="after")
    def _intervals(self) -> VideoGenParams:
        if self.poll_max_seconds < self.poll_first_seconds:
            raise ValueError("poll_max_seconds must be at least poll_first_seconds")
        return self


def build_request(spec: VideoSpec, p: VideoGenParams, catalog: Catalog | None = None) -> VideoGenRequest:
    """The provider request: what the unit says, the route's params for what it leaves open, and
    the model family's default model (`catalog`; wan when None) when neither names one."""
    if catalog is None:
        from dropflow.engine.videogen.catalog import WAN

        catalog = WAN
    i2v = spec.kind == "i2v"
    if catalog.sized:
        # wan: route defaults give a size only to text-to-video, a resolution only to image-to-video
        explicit = spec.size is not None or spec.resolution is not None
        size = spec.size if explicit else (None if i2v else p.size)
        resolution = spec.resolution if explicit else (p.resolution if i2v else None)
    else:  # ratio + resolution for every video; a size, from wherever, is refused by the check
        size = spec.size if spec.size is not None else p.size
        resolution = spec.resolution if spec.resolution is not None else p.resolution
    return VideoGenRequest(
        model=spec.model or (p.i2v_model if i2v else p.model) or catalog.default_model(spec.kind),
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt if spec.negative_prompt is not None else p.negative_prompt,
        image=spec.image,
        size=size,
        resolution=resolution,
        duration=spec.duration if spec.duration is not None else p.duration,
        seed=spec.seed if spec.seed is not None else p.seed,
        prompt_extend=spec.prompt_extend if spec.prompt_extend is not None else p.prompt_extend,
        last_image=spec.last_image,
        ratio=spec.ratio if spec.ratio is not None else p.ratio,
        camera_fixed=spec.camera_fixed if spec.camera_fixed is not None else p.camera_fixed,
        watermark=spec.watermark if spec.watermark is not None else p.watermark,
    )
