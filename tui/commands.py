"""`dropflow tui` and `dropflow up`.

Imported by the CLI's parser for every command, so only light modules load at the top: Textual,
textual-image and the app load inside the command functions. `dropflow --help` and the daemon
never import Textual (a test checks `sys.modules`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
from typing import TYPE_CHECKING, Any

from dropflow.daemon.core.config import redact_url
from dropflow.daemon.core.jobs import StoreUnavailable

if TYPE_CHECKING:
    from dropflow.daemon.core.config import Config
    from dropflow.tui.data import DaemonState
    from dropflow.tui.supervisor import DaemonProcess

IMAGE_MODES = ("auto", "sixel", "tgp", "halfcell", "unicode", "off")
IMAGES_ENV = "DROPFLOW_IMAGES"


def add_commands(sub: Any) -> None:
    s = sub.add_parser(
        "tui", help="the terminal UI on this machine's store (works with the daemon up or down)"
    )
    _images_arg(s)
    s.set_defaults(fn=cmd_tui)

    s = sub.add_parser("up", help="daemon and TUI in one command; quitting the TUI stops the daemon")
    _images_arg(s)
    s.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.set_defaults(fn=cmd_up)


def _images_arg(s: argparse.ArgumentParser) -> None:
    default = os.environ.get(IMAGES_ENV, "auto")
    s.add_argument(
        "--images",
        choices=IMAGE_MODES,
        default=default if default in IMAGE_MODES else "auto",
        help="image previews: auto (ask the terminal: Sixel, Kitty graphics, else coloured half-blocks), "
        f"a fixed mode, or off (default: ${IMAGES_ENV} or auto)",
    )


def not_a_terminal() -> str | None:
    """Which standard stream is not a terminal (the TUI needs all three), or None."""
    for name in ("stdout", "stdin", "stderr"):
        stream = getattr(sys, name)
        if stream is None or not stream.isatty():
            return f"{name} is not a terminal"
    return None


def cmd_tui(args: argparse.Namespace) -> int:
    from dropflow.daemon.cli import EXIT_USAGE, load_config

    cfg = load_config(args)
    problem = not_a_terminal()
    if problem:
        print(f"dropflow tui: {problem}; the TUI needs one (in scripts use `dropflow jobs`)", file=sys.stderr)
        return EXIT_USAGE
    return run_app(cfg, args.images)


def cmd_up(args: argparse.Namespace) -> int:
    from dropflow.daemon.cli import EXIT_ERROR, cmd_daemon, load_config
    from dropflow.tui.supervisor import DaemonProcess

    cfg = load_config(args)
    problem = not_a_terminal()
    if problem:
        print(
            f"dropflow up: {problem}, so no TUI: running the daemon headless (as `dropflow daemon`)",
            file=sys.stderr,
        )
        return cmd_daemon(args)
    try:
        state = asyncio.run(daemon_state(cfg))
    except (OSError, sqlite3.Error, StoreUnavailable) as exc:
        print(f"dropflow up: cannot open the job store {redact_url(cfg.database)}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    supervisor = None
    if state.up:
        print(
            f"a daemon already serves {redact_url(cfg.database)} (pid {state.pid} on {state.host}): attaching to it"
        )
    else:
        assert cfg.source is not None  # load() records the file it read
        supervisor = DaemonProcess(cfg.source, cfg.paths.logs)
        supervisor.start()
    try:
        return run_app(cfg, args.images, supervisor)
    finally:
        if supervisor is not None:
            stop_daemon(supervisor, cfg.scheduler.shutdown_grace_seconds + 10)


def stop_daemon(supervisor: DaemonProcess, timeout: float) -> None:
    print(
        f"stopping the daemon (pid {supervisor.pid}; up to {timeout:.0f}s for running jobs to finish)…",
        file=sys.stderr,
    )
    code = supervisor.stop(timeout)
    if code == 0:
        print("daemon stopped", file=sys.stderr)
    else:
        print(f"daemon exited with code {code}; its output is in {supervisor.console_log}", file=sys.stderr)


async def daemon_state(cfg: Config) -> DaemonState:
    from dropflow.daemon.core.store import Store
    from dropflow.tui.data import StoreReader

    async with Store.open(cfg.database) as store:
        return await StoreReader(store, stale_after=cfg.scheduler.lease_seconds + 5).daemon_state()


def prepare_images(mode: str) -> str:
    """Load textual-image before Textual owns the terminal: it asks the terminal for its cell size
    and graphics support once, on import, and cannot once the app reads stdin. Returns the mode
    to use ('off' when textual-image is missing)."""
    if mode == "off":
        return mode
    try:
        import textual_image.widget  # noqa: F401
    except ImportError:
        print("image previews are off: textual-image is not installed", file=sys.stderr)
        return "off"
    return mode


def run_app(cfg: Config, images: str, supervisor: DaemonProcess | None = None) -> int:
    mode = prepare_images(images)
    from dropflow.tui.app import DropflowApp

    app = DropflowApp(cfg, images=mode, supervisor=supervisor)
    app.run()
    return app.return_code or 0
