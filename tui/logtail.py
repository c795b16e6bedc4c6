"""The daemon log lines about one job, read from the end of the log file.

Blocking (file reads): call from a thread worker. Reads at most `TAIL_BYTES` from the end, so a
log of any size costs the same; the caller re-reads only when the file's size or mtime moved.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TAIL_BYTES = 512 * 1024
MAX_LINES = 200


def log_signature(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of the log file, or None when there is none yet."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def job_lines(path: Path, job_id: int, input_name: str = "", *, limit: int = MAX_LINES) -> list[str]:
    """The last `limit` lines naming job `job_id` (or its input file), oldest first."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            fh.seek(max(0, end - TAIL_BYTES))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    if end > TAIL_BYTES:
        text = text.split("\n", 1)[-1]  # the first line was cut in the middle
    pattern = re.compile(rf"\bjob {job_id}\b")
    out = [line for line in text.splitlines() if pattern.search(line) or (input_name and input_name in line)]
    return out[-limit:]
