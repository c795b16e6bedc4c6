"""What the engine knows about a provider's models, behind one small contract: a `Catalog` per
model family (a provider says which family it runs, `VideoGenProvider.model_family`).

The engine stays provider-agnostic: it asks the catalog for the default model of a kind, checks a
request against its model before anything is paid (every cost-bearing choice made explicit),
sizes first frames to the model's limits, and reads the provider's usage into dropflow's usage
keys. Families: "wan" (DashScope, and the offline stand-in: `models.py`, `usage.py`) and
"seedance" (Volcengine Ark: `seedance.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from dropflow.engine.errors import ConfigError, InputError
from dropflow.engine.providers.base import VideoGenRequest
from dropflow.engine.videogen.models import (
    ImageLimits,
    Kind,
    Origin,
    Trimmed,
    lookup,
    resolve,
    trim_prompts,
)


class Catalog(Protocol):
    """One family's models: defaults, checks, first-frame limits, usage."""

    family: str
    # text-to-video is asked by WIDTH*HEIGHT size, image-to-video by resolution (wan); False: every
    # video by ratio + resolution (seedance)
    sized: bool

    def default_model(self, kind: Kind) -> str:
        """The model a route that names none uses, for text-to-video or image-to-video."""
        ...

    def known(self, model: str) -> bool:
        """Whether the family's table has this model (an unknown one is sent unchecked)."""
        ...

    def unknown_warning(self, model: str) -> str:
        """What the user is told, once, about a model the table does not know."""
        ...

    def check(self, request: VideoGenRequest, origin: Origin) -> tuple[VideoGenRequest, list[Trimmed]]:
        """The request with every cost-bearing choice explicit, its prompts cut to what the
        model reads (and the cuts). A model the table does not know passes unchanged.

        Raises InputError naming the value, where it came from, and what the model takes.
        """
        ...

    def image_limits(self, model: str) -> ImageLimits:
        """What a first (or last) frame may be for this model."""
        ...

    def paid_usage(self, raw: Mapping[str, Any] | None, request: VideoGenRequest) -> dict[str, Any]:
        """dropflow's usage keys from the provider's usage (None: none seen yet) and the request."""
        ...

    def describe(self, request: VideoGenRequest) -> str:
        """What the task was asked to make (and is billed for), in a few words."""
        ...


# options only seedance models take: a wan request that sets one is refused, not silently dropped
_NOT_WAN = ("ratio", "last_image", "camera_fixed", "watermark")


class WanCatalog:
    family = "wan"
    sized = True

    def default_model(self, kind: Kind) -> str:
        return "wan2.2-i2v-plus" if kind == "i2v" else "wan2.2-t2v-plus"

    def known(self, model: str) -> bool:
        return lookup(model) is not None

    def unknown_warning(self, model: str) -> str:
        return (
            f"model {model} is not in dropflow's table of wan models: its size, resolution "
            "and duration are not checked, and what the job leaves open is the service's to choose "
            "(for wan models that is the most expensive resolution)"
        )

    def check(self, request: VideoGenRequest, origin: Origin) -> tuple[VideoGenRequest, list[Trimmed]]:
        for key in _NOT_WAN:
            if getattr(request, key) is not None:
                raise InputError(
                    f"{origin.unit}: {request.model} (wan, through DashScope) takes no {key} "
                    f"(from {origin.of(key)})",
                    hint="remove it, or use a seedance model with `provider: ark` on the route",
                )
        model = lookup(request.model)
        if model is None:
            return request, []
        request, cuts = trim_prompts(resolve(request, model, origin), model)
        return request, cuts

    def image_limits(self, model: str) -> ImageLimits:
        found = lookup(model)
        return found.image if found is not None and found.image is not None else ImageLimits()

    def paid_usage(self, raw: Mapping[str, Any] | None, request: VideoGenRequest) -> dict[str, Any]:
        from dropflow.engine.videogen.usage import paid_usage

        return paid_usage(raw, request)

    def describe(self, request: VideoGenRequest) -> str:
        parts = [request.size or request.resolution or "service default"]
        if request.duration:
            parts.append(f"{request.duration} s")
        return ", ".join(parts)


WAN = WanCatalog()


def catalog_for(family: str) -> Catalog:
    """The catalog of a provider's model family.

    Raises ConfigError for a family the engine does not know (a provider plugin's).
    """
    if family == "wan":
        return WAN
    if family == "seedance":
        from dropflow.engine.videogen.seedance import SEEDANCE

        return SEEDANCE
    raise ConfigError(
        f"the video-gen engine knows no models of the family {family!r}",
        hint="use a provider whose models it knows: dashscope, ark or offline",
    )
