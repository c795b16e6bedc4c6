"""Distribution: photos filed into the batch, and the folders around them.

The journal is replayed idempotently (hard link or copy, then unlink; never an overwrite); hidden
markers say whose a person folder is, so that a rename by hand is recognised; source folders the
distribution left empty are removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dropflow.engine import files
from dropflow.engine.errors import InputError

if TYPE_CHECKING:
    from dropflow.daemon.core.persons import JournalEntry, Person

log = logging.getLogger("dropflow.engine.cluster.engine")  # one logger name for the whole engine, as in faces

JUNK = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # OS litter that alone keeps a folder


# --- distribution -------------------------------------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
        return a.stat().st_size == b.stat().st_size and files.file_hash(a) == files.file_hash(b)
    except OSError:
        return False


def _place(src: Path, dst: Path, *, link: bool) -> None:
    """Put a copy of `src` at `dst` without ever overwriting: a hard link when allowed, else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)  # atomic, and fails rather than clobber
            return
        except FileExistsError:
            raise  # someone else's file appeared there this instant: leave the photo at its source
        except OSError:
            pass  # another filesystem, or one without hard links: copy instead
    files.copy_file(src, dst)


def apply_entry(
    entry: JournalEntry, batch_dir: Path, *, move: bool = True
) -> tuple[str, list[str], str | None] | None:
    """Carry out one photo's plan; replaying it is harmless. Returns what changed, if anything.

    Order: every destination first (the first by hard link when moving, the others by copy), the
    source last, so a crash leaves the photo at its source, at its destinations, or both, never
    nowhere. `move=False` (a folder submitted in place) leaves the source where it is.
    """
    src = Path(entry.source)
    dests = list(entry.dests)
    changed = False
    for i, rel in enumerate(dests):
        dst = batch_dir / rel
        if dst.exists():
            if not src.exists() or _same_file(src, dst):
                continue  # done before a restart
            # taken by another file meanwhile: never overwrite, take the next free name
            dst = files.unique_path(dst)
            dests[i] = dst.relative_to(batch_dir).as_posix()
            changed = True
        if not src.exists():
            return "missing", dests, f"{src} vanished before it could be filed"
        try:
            _place(src, dst, link=move and i == 0)
        except OSError as exc:
            return entry.status, dests, f"could not file it: {exc}"
        _step()
    if move:
        with contextlib.suppress(FileNotFoundError):
            src.unlink()
            _step()
    return (entry.status, dests, None) if changed else None


def distribute(
    entries: Sequence[JournalEntry], batch_dir: Path, *, move: bool = True
) -> list[tuple[int, str, list[str], str | None]]:
    """Apply journal entries in order (blocking); returns the changes to record."""
    changes = []
    for entry in entries:
        outcome = apply_entry(entry, batch_dir, move=move)
        if outcome is not None:
            changes.append((entry.id, *outcome))
    return changes


_steps = 0


def _step() -> None:
    """Tests only: with DROPFLOW_TEST_CLUSTER_PAUSE_AFTER=N the N-th file operation of this process
    is followed by a marker file and an endless sleep, so that a SIGKILL lands mid-distribution."""
    global _steps
    limit = os.environ.get("DROPFLOW_TEST_CLUSTER_PAUSE_AFTER")
    if not limit:
        return
    _steps += 1
    if _steps >= int(limit):
        Path(os.environ.get("DROPFLOW_TEST_CLUSTER_PAUSE_MARKER", "dropflow-paused")).touch()
        while True:
            time.sleep(3600)


def write_markers(persons: Sequence[Person], batch_dir: Path, batch: str) -> None:
    """A hidden file in each person's folder says whose it is, so a rename by hand is recognised."""
    from dropflow.daemon.core.persons import MARKER

    for p in persons:
        folder = batch_dir / p.folder
        marker = folder / MARKER
        if folder.is_dir() and not marker.exists():
            files.write_json(marker, {"batch": batch, "person": p.id})


def detect_renames(persons: Sequence[Person], batch_dir: Path) -> dict[int, str | None]:
    """Person folders renamed by hand since the last run: {person id: new name} (blocking)."""
    from dropflow.daemon.core.persons import MARKER, check_folder_name, default_folder

    by_id = {p.id: p for p in persons}
    taken = {p.folder for p in persons}
    out: dict[int, str | None] = {}
    if not batch_dir.is_dir():
        return out
    for d in sorted(batch_dir.iterdir()):
        marker = d / MARKER
        if not d.is_dir() or not marker.is_file():
            continue
        try:
            pid = int(json.loads(marker.read_text(encoding="utf-8"))["person"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        p = by_id.get(pid)
        if p is None or d.name == p.folder or d.name in taken:
            continue
        if d.name == default_folder(p.seq):
            out[pid] = None
            continue
        try:
            out[pid] = check_folder_name(d.name)
        except InputError:
            log.warning("person folder %s has a reserved name; keeping %s for it", d, p.folder)
    return out


def remove_emptied(root: Path, exclude: Sequence[str]) -> int:
    """Remove folders under (and including) `root` that the distribution left empty (blocking).

    Excluded folders stay, even empty; so does any folder with a file in it, except for OS litter
    (`.DS_Store`, `Thumbs.db`, `desktop.ini`) when that is all that is left.
    """
    excluded = {e.casefold() for e in exclude}
    removed = 0
    for dirpath, _dirnames, _filenames in os.walk(root, topdown=False):
        here = Path(dirpath)
        if here != root and here.name.casefold() in excluded:
            continue
        try:
            left = os.listdir(here)  # now, not when the walk listed it: children may be gone
            if any(n not in JUNK for n in left):
                continue
            for n in left:
                (here / n).unlink()
            here.rmdir()
            removed += 1
        except OSError:
            continue
    return removed
