"""`dropflow up` and `dropflow tui` as real processes: in a pseudo-terminal (TUI and daemon child,
quitting stops the daemon gracefully) and without one (headless daemon, or a clear refusal)."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import subprocess_env, write_config


def _daemons(db: Path) -> list[tuple[int, float | None]]:
    """(pid, stopped_at) of every daemon that registered in this store."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return [(int(r[0]), r[1]) for r in conn.execute("SELECT pid, stopped_at FROM daemons")]
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        conn.close()


def _wait(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "dropflow.daemon.cli", "--config", str(config), *args]


def test_up_without_a_terminal_runs_the_daemon_headless(tmp_path: Path) -> None:
    config = write_config(tmp_path / "proj")
    db = tmp_path / "proj" / "state" / "dropflow.db"
    proc = subprocess.Popen(
        _cli(config, "up"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    try:
        _wait(lambda: any(stopped is None for _pid, stopped in _daemons(db)), "the daemon registered")
        assert [pid for pid, _ in _daemons(db)] == [proc.pid], "the daemon runs in this process, no child"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"stdout is not a terminal" in err and b"headless" in err
    assert all(stopped is not None for _pid, stopped in _daemons(db)), "stopped gracefully"


def test_tui_without_a_terminal_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path / "proj")
    out = subprocess.run(
        _cli(config, "tui"), capture_output=True, text=True, env=subprocess_env(), timeout=60
    )
    assert out.returncode == 2
    assert "not a terminal" in out.stderr and "dropflow jobs" in out.stderr


class Terminal:
    """A process on a pseudo-terminal of 80x24, its screen output drained by a thread."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.master = master
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=subprocess_env(TERM="xterm-256color", COLUMNS="80", LINES="24"),
            start_new_session=True,
        )
        os.close(slave)
        self.screen = bytearray()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:  # the TUI blocks on a full pty buffer unless someone reads it
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.screen.extend(data)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        self.reader.join(timeout=5)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_up_in_a_terminal_runs_tui_and_daemon_and_q_stops_both(tmp_path: Path) -> None:
    config = write_config(tmp_path / "proj")
    db = tmp_path / "proj" / "state" / "dropflow.db"
    term = Terminal(_cli(config, "up", "--images", "off"))
    try:
        _wait(lambda: any(stopped is None for _pid, stopped in _daemons(db)), "the child daemon registered")
        [(child, _)] = _daemons(db)
        assert child != term.proc.pid, "the daemon is a child process"
        _wait(lambda: b"daemon up" in term.screen, "the header shows the daemon up")
        term.type(b"q")
        term.proc.wait(timeout=60)
    finally:
        term.close()
    assert term.proc.returncode == 0, bytes(term.screen[-2000:])
    assert b"daemon stopped" in term.screen
    [(pid, stopped_at)] = _daemons(db)
    assert stopped_at is not None, "the daemon shut down gracefully (it recorded its stop)"
    assert _gone(pid), f"daemon {pid} still running"
    console = tmp_path / "proj" / "state" / "logs" / "daemon-console.log"
    assert console.exists() and oct(console.stat().st_mode & 0o777) == "0o600"


def test_up_attaches_to_a_running_daemon_and_leaves_it_running(tmp_path: Path) -> None:
    config = write_config(tmp_path / "proj")
    db = tmp_path / "proj" / "state" / "dropflow.db"
    daemon = subprocess.Popen(
        _cli(config, "daemon"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=subprocess_env(),
    )  # fmt: skip
    try:
        _wait(lambda: any(stopped is None for _pid, stopped in _daemons(db)), "the daemon registered")
        term = Terminal(_cli(config, "up", "--images", "off"))
        try:
            _wait(lambda: b"daemon up" in term.screen, "the TUI came up on the running daemon")
            assert b"attaching" in term.screen
            term.type(b"q")
            term.proc.wait(timeout=60)
        finally:
            term.close()
        assert term.proc.returncode == 0
        assert _daemons(db) == [(daemon.pid, None)], "no second daemon, and the first one still runs"
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def test_a_daemon_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    from dropflow.tui.supervisor import DaemonProcess

    class Stubborn(DaemonProcess):
        def command(self) -> list[str]:
            code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
            return [sys.executable, "-c", code]

    proc = Stubborn(tmp_path / "config.yaml", tmp_path / "logs")
    proc.start()
    _wait(lambda: (tmp_path / "logs" / "daemon-console.log").read_text() == "up\n", "started")
    assert proc.exit_code() is None
    assert proc.stop(timeout=0.5) == -signal.SIGKILL
    assert proc.pid is not None and _gone(proc.pid)
