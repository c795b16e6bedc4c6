"""The folder browser's file-system reads: a folder's children, and the counts on the top folders.

Blocking (os.scandir): the screen calls these from thread workers. Every walk is capped, so a
folder of a million photos costs a bounded read and shows as "20000+" rather than freezing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dropflow.daemon.core.config import Config
from dropflow.engine.files import ERROR_SUFFIX, error_sidecar, is_ignored_name

MAX_CHILDREN = 1000  # entries listed under one folder node
MAX_COUNT = 20_000  # files counted under one top folder


@dataclass(frozen=True)
class FolderEntry:
    path: Path
    is_dir: bool
    size: int


def list_folder(folder: Path, *, limit: int = MAX_CHILDREN) -> tuple[list[FolderEntry], int]:
    """Children of `folder`, folders first then by name; hidden and temp names left out.

    Returns the entries and how many more there were past `limit`. A folder that vanished or
    cannot be read lists as empty.
    """
    entries: list[FolderEntry] = []
    try:
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir()
                    size = 0 if is_dir else e.stat().st_size
                except OSError:
                    continue
                entries.append(FolderEntry(Path(e.path), is_dir, size))
    except OSError:
        return [], 0
    entries.sort(key=lambda x: (not x.is_dir, x.path.name.lower()))
    return entries[:limit], max(0, len(entries) - limit)


@dataclass
class Tally:
    files: int = 0
    failed: int = 0
    capped: bool = False

    def show(self, n: int) -> str:
        return f"{n}+" if self.capped else str(n)


def tally(root: Path, *, inbox: bool = False, cap: int = MAX_COUNT) -> Tally:
    """Count files under `root`. With `inbox`, names the daemon ignores are left out, and an input
    with its `.error.txt` beside it counts as failed, not pending: a failed file as one, a failed
    folder unit (a cluster folder) as one too, and none of the files in it as pending."""
    t = Tally()
    stack = [root]
    seen = 0
    while stack:
        folder = stack.pop()
        # a folder's names are read whole before counting: a sidecar may come after its input
        entries: list[os.DirEntry[str]] = []
        try:
            with os.scandir(folder) as it:
                for e in it:
                    seen += 1
                    if seen > cap:
                        t.capped = True
                        return t
                    if not e.name.startswith("."):
                        entries.append(e)
        except OSError:
            continue
        names = {e.name for e in entries} if inbox else set()
        for e in entries:
            if inbox:
                if e.name.endswith(ERROR_SUFFIX):
                    t.failed += 1
                    continue
                if error_sidecar(Path(e.path)).name in names:
                    continue  # failed: its sidecar is the count, whatever is inside it
            try:
                if e.is_dir():
                    stack.append(Path(e.path))
                    continue
            except OSError:
                continue
            if inbox and is_ignored_name(e.name):
                continue
            t.files += 1
    return t


def top_labels(cfg: Config) -> dict[Path, str]:
    """Labels for the route folders, the engines' output folders and the two roots."""
    labels: dict[Path, str] = {}
    inbox_pending = 0
    for route in cfg.routes:
        folder = cfg.paths.inbox / route.folder if route.folder else cfg.paths.inbox
        here = tally(folder, inbox=True)
        archived = tally(cfg.paths.archive / route.name)
        inbox_pending += here.files
        parts = [f"{here.show(here.files)} pending"]
        if here.failed:
            parts.append(f"{here.failed} failed")
        parts.append(f"{archived.show(archived.files)} archived")
        labels[folder] = " · ".join(parts)
    labels[cfg.paths.inbox] = f"{inbox_pending} pending"
    total = 0
    engines = dict.fromkeys(r.engine for r in cfg.routes)
    for engine in engines:
        out = tally(cfg.paths.outputs / engine)
        total += out.files
        labels[cfg.paths.outputs / engine] = _files(out.show(out.files))
    labels[cfg.paths.outputs] = _files(str(total))
    return labels


def _files(n: str) -> str:
    return f"{n} file" if n == "1" else f"{n} files"
