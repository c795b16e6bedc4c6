"""Lease owner names: which daemon holds a job, and whether it is known to be gone.

A name is `host:pid:start stamp`. Leases are how the jobs of a daemon that died come back, on
any host; a pid says more only on the host it belongs to.
"""

from __future__ import annotations

import os
import socket
import time


def owner_id() -> str:
    """This process's lease owner name: host, pid and a start stamp (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000) % 10**9}"


def owner_alive(owner: str) -> bool:
    """False only when the owner ran on this host and its pid is gone; other hosts wait for expiry."""
    try:
        host, pid_s, _ = owner.split(":", 2)
        pid = int(pid_s)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
