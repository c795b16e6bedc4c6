"""A unit's photos, and the detection journal.

A unit is a folder or a ZIP (unpacked safely into the job's folder first). Face detection results
are saved chunk by chunk as they come, so a restart continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dropflow.engine import files
from dropflow.engine.errors import InputError
from dropflow.engine.media import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from dropflow.engine.cluster.faces import PhotoResult


# --- sources --------------------------------------------------------------------------------------


@dataclass
class Source:
    root: Path  # photos are read (and moved) from here: the unit, or the unpacked ZIP
    photos: list[tuple[str, Path]]  # (key = path relative to root, path)
    skipped: list[dict[str, str]]  # left in place: excluded folders, files that are not images
    staging: Path | None  # the unpacked ZIP, removed when the job is done
    links: list[str] = field(default_factory=list)  # folder links followed (relative to root)


def collect(
    unit: Path, staging: Path, exclude: Sequence[str], check: Callable[[Path], None] = lambda _p: None
) -> Source:
    """Photos of a unit (blocking). A ZIP is unpacked (safely) into `staging` first.

    Links are followed where `check` lets them be read (`JobContext.check_readable`: links that
    stay inside the inbox); a folder reached twice (two links to it) is walked once, and a link to
    a folder inside the unit (a loop, a shortcut) is not followed: its photos are the unit's own.

    Raises:
        InputError: the unit is gone, or the ZIP is unreadable or unsafe, or a photo or folder in
        it is a link out of the folders the job may read (raised by `check`, naming it).
    """
    from dropflow.engine.files import is_ignored_name
    from dropflow.engine.media import safe_unzip

    if not unit.exists():
        raise InputError(f"{unit} is gone", hint="drop the folder or ZIP again")
    if unit.is_dir():
        root, kept = unit, None
    else:
        if staging.exists():
            shutil.rmtree(staging)  # a half-unpacked ZIP from before a restart: unpack anew
        safe_unzip(unit, staging, only=IMAGE_EXTENSIONS)
        root, kept = staging, staging
    excluded = {e.casefold() for e in exclude}
    photos: list[tuple[str, Path]] = []
    skipped: list[dict[str, str]] = []
    links: list[str] = []
    top = os.path.realpath(root)
    walked = {top}  # real folders: one reached twice (two links to it, a link into a link) is walked once
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            rel = (here / d).relative_to(root).as_posix() + "/"
            if d.casefold() in excluded:
                skipped.append({"path": rel, "reason": "excluded folder"})
            elif not is_ignored_name(d):
                link = (here / d).is_symlink()
                if link:
                    check(here / d)  # before its names are even listed
                    links.append(rel[:-1])  # removed once the photos are filed; its target stays
                real = os.path.realpath(here / d)
                if link and Path(real).is_relative_to(top):
                    skipped.append({"path": rel, "reason": "a link to a folder inside this one"})
                elif real in walked:
                    skipped.append({"path": rel, "reason": "a link to a folder collected already"})
                else:
                    walked.add(real)
                    keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if is_ignored_name(name):
                continue
            path = here / name
            key = path.relative_to(root).as_posix()
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                check(path)
                photos.append((key, path))
            else:
                skipped.append({"path": key, "reason": "not an image"})
    photos, doubles = _one_per_photo(photos)
    return Source(root, photos, skipped, kept, links + doubles)


def _one_per_photo(photos: list[tuple[str, Path]]) -> tuple[list[tuple[str, Path]], list[str]]:
    """Each photo once, however many links lead to it: the photo itself where it is among them,
    else the first link. Returns the photos and the other links' keys (removed with the folder
    links once the photo is filed: they would only point at a moved file)."""
    chosen: dict[str, tuple[str, Path]] = {}
    for key, path in photos:
        real = os.path.realpath(path)
        if real not in chosen or (chosen[real][1].is_symlink() and not path.is_symlink()):
            chosen[real] = (key, path)
    kept = {key for key, _ in chosen.values()}
    return [p for p in photos if p[0] in kept], [key for key, _ in photos if key not in kept]


def has_photo(folder: Path) -> bool:
    """Whether a photo (by its name) lies anywhere below `folder`: the walk stops at the first.

    Hidden and temporary names, and folders named in the default `exclude_folders`, do not count:
    what a run leaves in a dropped folder (non-photos, excluded folders) is no new drop.
    """
    from dropflow.engine.cluster.params import DEFAULT_EXCLUDED
    from dropflow.engine.files import is_ignored_name

    excluded = {e.casefold() for e in DEFAULT_EXCLUDED}
    todo, linked = [folder], set()
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    if is_ignored_name(entry.name):
                        continue
                    if entry.is_dir():  # a link to a folder counts: its job says whether it may be read
                        if entry.name.casefold() in excluded:
                            continue
                        if entry.is_symlink():  # a loop of links is walked once
                            real = os.path.realpath(entry.path)
                            if real in linked:
                                continue
                            linked.add(real)
                        todo.append(Path(entry.path))
                    elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                        return True
        except OSError:  # gone or unreadable meanwhile: nothing to offer from it
            continue
    return False


# --- detection results, saved as they come ----------------------------------------------------------


class Detections:
    """Per-job detection results in numbered .npz chunk files (atomic writes)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def load(self) -> dict[str, PhotoResult]:
        from dropflow.engine.cluster.faces import Face, PhotoResult

        out: dict[str, PhotoResult] = {}
        if not self.folder.is_dir():
            return out
        for path in sorted(self.folder.glob("chunk-*.npz")):
            with np.load(path) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                boxes, scores, emb = z["boxes"], z["scores"], z["emb"]
                owner, offsets, blob = z["owner"], z["offsets"], bytes(z["thumbs"])
            for i, m in enumerate(meta):
                faces = [
                    Face(
                        (float(boxes[j, 0]), float(boxes[j, 1]), float(boxes[j, 2]), float(boxes[j, 3])),
                        float(scores[j]),
                        emb[j],
                        blob[offsets[j] : offsets[j + 1]],
                    )
                    for j in np.flatnonzero(owner == i)
                ]
                size = (int(m["size"][0]), int(m["size"][1])) if m["size"] else None
                out[m["photo"]] = PhotoResult(m["photo"], size, faces, m["error"])
        return out

    def next_chunk(self) -> int:
        return len(list(self.folder.glob("chunk-*.npz"))) if self.folder.is_dir() else 0

    def save(self, number: int, results: Sequence[PhotoResult]) -> None:
        meta = [{"photo": r.photo, "size": r.size, "error": r.error} for r in results]
        faces = [(i, f) for i, r in enumerate(results) for f in r.faces]
        thumbs = [f.thumb for _, f in faces]
        arrays: dict[str, Any] = {
            "meta": np.frombuffer(json.dumps(meta, ensure_ascii=False).encode(), dtype=np.uint8),
            "owner": np.array([i for i, _ in faces], dtype=np.int64),
            "boxes": np.array([f.box for _, f in faces], dtype=np.float32).reshape(-1, 4),
            "scores": np.array([f.score for _, f in faces], dtype=np.float32),
            "emb": np.array([f.embedding for _, f in faces], dtype=np.float32).reshape(len(faces), -1),
            "offsets": np.concatenate([[0], np.cumsum([len(t) for t in thumbs], dtype=np.int64)]),
            "thumbs": np.frombuffer(b"".join(thumbs), dtype=np.uint8),
        }
        with files.atomic_writer(self.folder / f"chunk-{number:05d}.npz") as fh:
            np.savez(fh, **arrays)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
