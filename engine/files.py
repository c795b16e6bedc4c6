"""File helpers every engine and the daemon share: atomic writes, content hashes, safe moves.

An output is written to a hidden temp name in its final folder, fsynced, then renamed: a reader
(or a crash) sees the old file or the whole new one, never half of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from dropflow.engine.errors import InputError

TEMP_PREFIX = ".dropflow-tmp-"

# --- names: what in an inbox is never an input --------------------------------------------------

FOLDER_OVERRIDE_NAME = "dropflow.yaml"  # per-folder overrides of a route
ERROR_SUFFIX = ".error.txt"  # the reason a job failed, beside its input
TEMP_SUFFIXES = (".part", ".crdownload", ".download", ".tmp", ".partial", ".swp")
SIDECAR_SUFFIXES = (ERROR_SUFFIX,)
IGNORED_NAMES = {FOLDER_OVERRIDE_NAME, "README.md", "Thumbs.db", "desktop.ini"}


def is_ignored_name(name: str) -> bool:
    """Names that are never inputs: temp/partial downloads, hidden files, our own sidecars."""
    lower = name.lower()
    return (
        name.startswith((".", "~"))
        or lower.endswith(TEMP_SUFFIXES)
        or lower.endswith(SIDECAR_SUFFIXES)
        or name in IGNORED_NAMES
    )


def link_outside(path: Path, *roots: Path) -> Path | None:
    """Where `path` really leads when a link (the path itself or a folder above it) takes it out
    of every one of `roots`; None when it stays inside one (or is no link at all).

    Links inside the inbox are followed, by design: a user may link a folder of photos from one
    route into another. A link out of it is never read: its content would reach a provider and
    outputs/ on the strength of a name in the inbox.
    """
    real = Path(os.path.realpath(path))
    for root in roots:
        if real.is_relative_to(os.path.realpath(root)):
            return None
    return real


def check_inside(path: Path, *roots: Path, what: str = "") -> None:
    """Raise `InputError` when `path` is a link out of every one of `roots` (see `link_outside`)."""
    target = link_outside(path, *roots)
    if target is not None and target == Path(os.path.abspath(path)):  # no link: a path named outside
        raise InputError(
            f"{what or path.name}: {path} lies outside the inbox; dropflow reads only what is in it",
            hint="put the file into the inbox (beside the video) or the prompts folder",
        )
    if target is not None:
        raise InputError(
            f"{what or path.name}: {path} is a link to {target}, outside the inbox; dropflow does not "
            "read through links that leave it",
            hint="copy the file into the inbox instead of linking to it (links within the inbox are fine)",
        )


NAME_MAX = 255  # bytes in one file name on ext4, xfs, btrfs, APFS and NTFS (in UTF-16 units there)


def error_sidecar(path: Path) -> Path:
    """Where the reason a job failed is left for the user: beside the input.

    `<name>.error.txt` when that fits in a file name; for a name already near the limit, its
    start, a hash of the whole name (so two long names that share a start get two sidecars) and
    the suffix: the reason must reach the user whatever the name.
    """
    name = path.name + ERROR_SUFFIX
    if len(name.encode()) <= NAME_MAX:
        return path.with_name(name)
    tag = "~" + hashlib.sha1(path.name.encode(), usedforsecurity=False).hexdigest()[:8]
    room = NAME_MAX - len((tag + ERROR_SUFFIX).encode())
    head = path.name.encode()[:room].decode(errors="ignore")
    return path.with_name(head + tag + ERROR_SUFFIX)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def atomic_writer(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on clean exit fsync it and rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    # mkstemp makes the file owner-only; an output gets the permissions a plain open() would
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - some filesystems refuse to open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
    return path


def write_text(path: Path, text: str) -> Path:
    with atomic_writer(path, "w") as fh:
        fh.write(text)
    return path


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def copy_file(src: Path, dst: Path) -> Path:
    """Copy atomically (temp + rename), keeping the modification time."""
    with atomic_writer(dst, "wb") as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, 1024 * 1024)
    shutil.copystat(src, dst)
    return dst


def unique_path(path: Path) -> Path:
    """`path`, or `name (2).ext`, `name (3).ext`, ... whichever does not exist yet."""
    if not path.exists():
        return path
    stem, suffix = (path.name, "") if path.is_dir() else (path.stem, path.suffix)
    n = 2
    while True:
        candidate = path.with_name(f"{stem} ({n}){suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def move(src: Path, dst_dir: Path) -> Path:
    """Move a file or folder into `dst_dir` under a name that does not clobber anything."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = unique_path(dst_dir / src.name)
    try:
        os.rename(src, dst)
    except OSError:
        # another filesystem: copy then remove, so the original survives a crash mid-way
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=shutil.copy2)
            shutil.rmtree(src)
        else:
            copy_file(src, dst)
            os.unlink(src)
    return dst


def file_hash(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def content_hash(path: Path) -> str:
    """sha256 of a file's bytes; for a folder, of every file's relative path and hash, sorted."""
    if not path.is_dir():
        return file_hash(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(b"\0")
        h.update(file_hash(f).encode())
        h.update(b"\n")
    return h.hexdigest()


def unit_hash(paths: Sequence[Path]) -> str:
    """The content hash of a unit: its primary file or folder first, then the files that belong to
    it (a video's sidecars, an image's prompt) in the order its engine's `inputs_for` gives them.

    One definition for every way a unit arrives (a drop, `dropflow submit`, the TUI), so that the
    same unit is the same work, deduplicated, whichever way it came.
    Raises OSError (FileNotFoundError when a file is gone).
    """
    return combine_hashes([content_hash(p) for p in paths])


def combine_hashes(digests: Sequence[str]) -> str:
    """A unit's hash from the `content_hash` of each of its paths, in order (see `unit_hash`).

    A unit of one path keeps that path's own hash (a file's sha256), the hash every job of a lone
    file has been registered with: they stay deduplicated against. Raises ValueError when empty.
    """
    if not digests:
        raise ValueError("a unit has at least one path")
    if len(digests) == 1:
        return digests[0]
    # a unit of several files (an image and its prompt) is "the same" only if every file is
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


# File times come from the kernel's coarse clock (up to a tick behind `time.time()`) and, on some
# filesystems, in whole seconds (two on FAT): a change that close before a job was registered is
# hashed rather than trusted to predate it. The cost is one read of a unit registered within
# seconds of its last change, and only when its job is checked.
CHANGE_SLACK_SECONDS = 2.0


def changed_since(paths: Sequence[Path], since: float) -> bool:
    """Whether the unit at `paths` may have changed since `since` (seconds since the epoch, as a
    job's `created_at`): a path is gone, or the newest mtime or ctime of a path (for a folder, of
    anything below it) is not clearly older. Stats only, never reads a file.

    The ctime counts because it cannot be set back: a file copied with its old mtime kept
    (`cp -p`) or renamed into place gets a new ctime.
    """
    limit = int((since - CHANGE_SLACK_SECONDS) * 1e9)
    for path in paths:
        try:
            if _newest_change_ns(path) >= limit:
                return True
        except FileNotFoundError:
            return True
    return False


def _newest_change_ns(path: Path) -> int:
    st = path.stat()
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    if not stat.S_ISDIR(st.st_mode):
        return newest
    # a file removed from a folder changes the folder's times, so the walk sees every change
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                st = os.stat(os.path.join(dirpath, name), follow_symlinks=False)
            except FileNotFoundError:
                continue
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    return newest


def same_content(paths: Sequence[Path], digest: str) -> bool:
    """Whether the unit at `paths` hashes to `digest` now (reads every file: use `changed_since`
    first). False when a file is gone or unreadable, or `digest` is no hash at all (the stand-in
    key of a job that failed at intake: a link out of the inbox, an unreadable file)."""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        return False
    try:
        return unit_hash(paths) == digest
    except OSError:
        return False


def clean_temp_files(root: Path) -> int:
    """Remove temp files left by a crash mid-write below `root`; returns how many."""
    n = 0
    if not root.exists():
        return 0
    for p in root.rglob(TEMP_PREFIX + "*"):
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n
