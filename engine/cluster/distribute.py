"""Distribution: photos filed into the batch, and the folders around them.

The journal is replayed idempotently (hard link or copy, then unlink; never an overwrite); hidden
markers say whose a person folder is, so that a rename by hand is recognised; source folders the
distribution left empty are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dropflow.engine import files
from dropflow.engine.errors import InputError

if TYPE_CHECKING:
    from dropflow.daemon.core.persons import JournalEntry, Person

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
    entry: JournalEntry,
    batch_dir: Path,
    *,
    move: bool = True,
    check: Callable[[Path], None] = lambda _p: None,
) -> tuple[str, list[str], str | None] | None:
    """Carry out one photo's plan; replaying it is harmless. Returns what changed, if anything.

    Order: every destination first (the first by hard link when moving, the others by copy), the
    source last, so a crash leaves the photo at its source, at its destinations, or both, never
    nowhere. `move=False` (a folder submitted in place) leaves the source where it is. What is
    reached through a link is copied, never hard-linked, and its target stays where it is: a photo
    that is a link loses only the link, a photo inside a linked folder stays in it.

    Raises:
        InputError: from `check`, when the source is (now) a link out of what the job may read.
    """
    src = Path(entry.source)
    dests = list(entry.dests)
    changed = False
    if os.path.lexists(src):
        check(src)
    in_link = _in_linked_folder(src, entry.photo)
    linked = in_link or src.is_symlink()
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
            _place(src, dst, link=move and i == 0 and not linked)
        except OSError as exc:
            return entry.status, dests, f"could not file it: {exc}"
        _step()
    if move and not in_link:
        with contextlib.suppress(FileNotFoundError):
            src.unlink()
            _step()
    return (entry.status, dests, None) if changed else None


def _in_linked_folder(src: Path, key: str) -> bool:
    """Whether a folder between the unit and the photo (its `key` below the unit) is a link."""
    parts = Path(key).parts
    here = src.parents[len(parts) - 1]
    for part in parts[:-1]:
        here = here / part
        if here.is_symlink():
            return True
    return False


def distribute(
    entries: Sequence[JournalEntry],
    batch_dir: Path,
    *,
    move: bool = True,
    check: Callable[[Path], None] = lambda _p: None,
) -> list[tuple[int, str, list[str], str | None]]:
    """Apply journal entries in order (blocking); returns the changes to record.

    Raises:
        InputError: a source is a link out of what the job may read (see `apply_entry`).
    """
    changes = []
    for entry in entries:
        outcome = apply_entry(entry, batch_dir, move=move, check=check)
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


def detect_renames(persons: Sequence[Person], batch_dir: Path) -> tuple[dict[int, str | None], list[str]]:
    """Person folders renamed by hand since the last run (blocking): {person id: new name}, and
    the renames refused (a reserved name), said for the job's warnings."""
    from dropflow.daemon.core.persons import MARKER, check_folder_name, default_folder

    by_id = {p.id: p for p in persons}
    taken = {p.folder for p in persons}
    out: dict[int, str | None] = {}
    refused: list[str] = []
    if not batch_dir.is_dir():
        return out, refused
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
        except InputError as exc:
            refused.append(
                f"person folder {d} was renamed by hand to a name dropflow cannot use ({exc.message}): "
                f"person {pid} keeps {p.folder}"
            )
    return out, refused


def remove_emptied(root: Path, exclude: Sequence[str], links: Sequence[str] = ()) -> int:
    """Remove folders under (and including) `root` that the distribution left empty (blocking).

    Excluded folders stay, even empty; so does any folder with a file in it, except for OS litter
    (`.DS_Store`, `Thumbs.db`, `desktop.ini`) when that is all that is left. The folder `links`
    the run followed (relative to `root`) go first: their photos were copied, their targets stay.
    """
    for rel in links:
        link = root / rel
        if link.is_symlink() and not _in_linked_folder(link, rel):
            with contextlib.suppress(OSError):
                link.unlink()
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
