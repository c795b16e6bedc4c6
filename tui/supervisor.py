"""The daemon as a child process of `dropflow up`.

The child runs in its own session: Ctrl-C, a closed SSH terminal's SIGHUP and the TUI's raw mode
never reach it directly; `dropflow up` stops it with SIGTERM when the TUI quits, which lets
running jobs finish for `shutdown_grace_seconds` and releases the rest. Its console output goes to
a file beside the daemon's own log (the TUI owns the terminal), truncated at each start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

CONSOLE_LOG = "daemon-console.log"


class DaemonProcess:
    def __init__(self, config: Path, log_dir: Path) -> None:
        self.config = config
        self.console_log = log_dir / CONSOLE_LOG
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "dropflow.daemon.cli", "--config", str(self.config), "daemon"]

    def start(self) -> None:
        """Start the daemon. Raises OSError when the interpreter cannot be started."""
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        # owner-only, like the database: the console shows paths and provider messages
        fd = os.open(self.console_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exit_code(self) -> int | None:
        """None while it runs; its exit code once it ended (on its own or stopped)."""
        return self.proc.poll() if self.proc is not None else None

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, wait up to `timeout` seconds for the graceful shutdown, then SIGKILL.

        Returns the exit code (None if it was never started). A SIGKILL loses nothing: the next
        start reclaims the leases of jobs that were running.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # its own session, so its process group: tools it started (ffmpeg, ...) go with it
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode
