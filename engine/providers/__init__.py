"""Vision and video-generation providers: dashscope, openai-compatible, anthropic, ark (video
generation), offline.

The daemon creates each provider once (`ProviderPool`) and shares it between jobs, so the rate
limiter of a provider is shared too. Remote provider modules are imported on first use: the
dashscope SDK alone takes about a second to import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dropflow.daemon.core.config import Providers
from dropflow.engine.errors import ConfigError
from dropflow.engine.providers.base import ModelLimits, VideoGenProvider, VisionProvider

if TYPE_CHECKING:
    from dropflow.engine.providers.bailian import BailianAnalysis

VISION_PROVIDERS = ("offline", "dashscope", "openai", "anthropic")
VIDEOGEN_PROVIDERS = ("offline", "dashscope", "ark")

OFFLINE_ANNOUNCEMENT = (
    "no DashScope key (DASHSCOPE_API_KEY): using the offline provider"
    " — deterministic placeholder output, no network"
)


def resolve_default(providers: Providers) -> tuple[str, str | None]:
    """The provider `default: auto` stands for, and a one-line announcement when it falls back offline.

    Raises ConfigError when a configured key file cannot be read.
    """
    if providers.default != "auto":
        return providers.default, None
    if providers.dashscope.key():
        return "dashscope", None
    return "offline", OFFLINE_ANNOUNCEMENT


def _resolve(name: str | None, providers: Providers, known: tuple[str, ...], what: str) -> str:
    if name in (None, "auto"):
        name, _ = resolve_default(providers)
    if name not in known:
        raise ConfigError(
            f"provider {name!r} cannot be used for {what}",
            hint=f"choose one of: {', '.join(known)}",
        )
    return name


def vision_limits(provider: str, model: str) -> ModelLimits:
    """What one request of `model` through `provider` may hold (none known: no limits).

    Only DashScope's are known; an OpenAI-compatible or Anthropic server says so when refusing.
    """
    if provider == "dashscope":
        from dropflow.engine.providers.dashscope_models import limits

        return limits(model)
    return ModelLimits()


def token_counter(provider: str) -> Callable[[str], int] | None:
    """How `provider` counts the tokens of a text (blocking; load it off the event loop), or None
    when not known (its models then have no known input limit either)."""
    if provider == "dashscope":
        from dropflow.engine.providers.dashscope_models import count_tokens

        return count_tokens
    return None


def build_vision(name: str, providers: Providers, *, state_dir: Path) -> VisionProvider:
    """A vision provider by name ("auto" resolves through `resolve_default`).

    Raises AuthError when a remote provider has no key, ConfigError for an unknown name.
    """
    name = _resolve(name, providers, VISION_PROVIDERS, "vision")
    if name == "dashscope":
        from dropflow.engine.providers.dashscope_vision import DashScopeVision

        return DashScopeVision(providers.dashscope)
    if name == "openai":
        from dropflow.engine.providers.openai_compat import OpenAICompatVision

        return OpenAICompatVision(providers.openai)
    if name == "anthropic":
        from dropflow.engine.providers.anthropic import AnthropicVision

        return AnthropicVision(providers.anthropic)
    from dropflow.engine.providers.offline import OfflineVision

    return OfflineVision(providers.offline)


def build_videogen(name: str, providers: Providers, *, state_dir: Path) -> VideoGenProvider:
    """A video-generation provider by name; offline videos are cached under ``state_dir/offline-videos``.

    Raises AuthError when dashscope or ark has no key, ConfigError for a provider that cannot make
    videos.
    """
    name = _resolve(name, providers, VIDEOGEN_PROVIDERS, "video generation")
    if name == "dashscope":
        from dropflow.engine.providers.dashscope import DashScopeVideoGen

        return DashScopeVideoGen(providers.dashscope)
    if name == "ark":
        from dropflow.engine.providers.ark import ArkVideoGen

        return ArkVideoGen(providers.ark)
    from dropflow.engine.providers.offline import OfflineVideoGen

    return OfflineVideoGen(providers.offline, cache_dir=state_dir / "offline-videos")


class ProviderPool:
    """One instance per provider name for the daemon's lifetime (shared rate limits, connections)."""

    def __init__(self, providers: Providers, *, state_dir: Path) -> None:
        self._providers = providers
        self._state_dir = state_dir
        self._vision: dict[str, VisionProvider] = {}
        self._videogen: dict[str, VideoGenProvider] = {}
        self._analysis: BailianAnalysis | None = None

    def vision(self, name: str | None = "auto") -> VisionProvider:
        key = _resolve(name, self._providers, VISION_PROVIDERS, "vision")
        if key not in self._vision:
            self._vision[key] = build_vision(key, self._providers, state_dir=self._state_dir)
        return self._vision[key]

    def videogen(self, name: str | None = "auto") -> VideoGenProvider:
        key = _resolve(name, self._providers, VIDEOGEN_PROVIDERS, "video generation")
        if key not in self._videogen:
            self._videogen[key] = build_videogen(key, self._providers, state_dir=self._state_dir)
        return self._videogen[key]

    def video_analysis(self) -> BailianAnalysis:
        """Bailian's hosted video analysis (the annotate engine's `mode: bailian`): whole videos
        in, analyses out; not a chat model, so not one of the vision providers."""
        if self._analysis is None:
            from dropflow.engine.providers.bailian import BailianAnalysis

            self._analysis = BailianAnalysis(self._providers.bailian)
        return self._analysis

    async def aclose(self) -> None:
        """Close every provider created so far. Never raises."""
        providers: list[VisionProvider | VideoGenProvider] = [
            *self._vision.values(),
            *self._videogen.values(),
        ]
        for provider in providers:
            await provider.aclose()
        if self._analysis is not None:
            await self._analysis.aclose()
            self._analysis = None
        self._vision.clear()
        self._videogen.clear()
