"""Engine registry: a name -> class table that rejects duplicates.

Built-in engines are listed by import path and imported on first use, so that `dropflow --help`
and an idle daemon do not pay for OpenCV, onnxruntime or HDBSCAN. Plugins come from config
(`engines.plugins: ["module:Class"]`).
"""

from __future__ import annotations

import importlib

from dropflow.engine.base import Engine
from dropflow.engine.errors import ConfigError

BUILTINS: dict[str, str] = {
    "annotate": "dropflow.engine.annotate.engine:AnnotateEngine",
    "dataset": "dropflow.engine.dataset.engine:DatasetEngine",
    "video-gen": "dropflow.engine.videogen.engine:VideoGenEngine",
    "cluster": "dropflow.engine.cluster.engine:ClusterEngine",
}

_engines: dict[str, type[Engine]] = {}


def register(cls: type[Engine]) -> type[Engine]:
    """Add an engine class; a second class under the same name is an error."""
    name = cls.name
    existing = _engines.get(name)
    if existing is not None and existing is not cls:
        raise ConfigError(
            f"two engines are named {name!r}: {existing.__module__}.{existing.__qualname__} and "
            f"{cls.__module__}.{cls.__qualname__}",
            hint="rename one of them or drop the duplicate from engines.plugins",
        )
    _engines[name] = cls
    return cls


def load_plugin(spec: str) -> type[Engine]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"engines.plugins: {spec!r} is not 'module:Class'", hint="e.g. mypkg.engines:MyEngine"
        )
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"engines.plugins: cannot import {spec!r}: {exc}", hint="check the module path"
        ) from exc
    if not isinstance(cls, type) or not hasattr(cls, "run"):
        raise ConfigError(
            f"engines.plugins: {spec!r} is not an engine class", hint="see dropflow.engine.base.Engine"
        )
    return register(cls)


def get(name: str) -> type[Engine]:
    if name not in _engines and name in BUILTINS:
        load_plugin(BUILTINS[name])
    try:
        return _engines[name]
    except KeyError:
        raise ConfigError(
            f"unknown engine {name!r}",
            hint=f"known engines: {', '.join(names())}; or add it to engines.plugins",
        ) from None


def names() -> list[str]:
    return sorted(set(BUILTINS) | set(_engines))
