"""dropflow's daemon: watcher, settle gate, router, job store, scheduler and CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dropflow")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0.0.0"
