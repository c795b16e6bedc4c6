"""The daemon log lines about one job, read from the end of the log file.

Blocking (file reads): call from a thread worker. Reads at most `TAIL_BYTES` from the end of the
log (and of the file it was rotated from, `dropflow.log.1`, while the job's lines there are
needed), so a log of any size costs the same; the caller re-reads only when the file's size or
mtime moved.
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
    """The last `limit` lines naming job `job_id` (or its input file), oldest first: from the
    log, and from its rotated predecessor when the log holds fewer (a rotation must not make a
    running job's first lines vanish from its Log tab)."""
    pattern = re.compile(rf"\bjob {job_id}\b")
    out: list[str] = []
    for part in (path, path.with_name(path.name + ".1")):
        lines = [line for line in _tail(part) if pattern.search(line) or (input_name and input_name in line)]
        out = lines + out
        if len(out) >= limit or not part.exists():
            break
    return out[-limit:]


def _tail(path: Path) -> list[str]:
    """The whole lines of the last `TAIL_BYTES` of `path` ([] when there is no such file)."""
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
    return text.splitlines()
