"""The cluster engine: photo folders and ZIPs dropped into inbox/cluster/ are sorted per person.

One job per unit (a folder, with every image below it, or a `.zip`), in four steps:

1. detect: every photo goes through InsightFace (`faces`); results are saved in chunk files under
   the state folder as they come, so a restart continues where it stopped;
2. plan: faces join the batch's known persons when close to a person's mean (later runs), the rest
   are clustered (`clustering`, HDBSCAN); each photo gets its destinations (one person: moved;
   several: copied into each; none: `unsorted/`; no face: `no_faces/`; unreadable: `unreadable/`).
   Persons, faces and destinations are committed in one transaction before any file moves;
3. distribute: the journal is replayed idempotently: a destination that exists is done, a source
   is removed only once all of its destinations exist (hard link or copy, then unlink), so a
   SIGKILL at any point loses and duplicates nothing;
4. finish: contact sheets, `clusters.json` (every photo of every run of the batch), emptied source
   folders removed, the unpacked ZIP and the chunk files deleted.

Results go to outputs/cluster/<batch>/; the batch is the folder's name (or the ZIP's stem), or
`params.into` to add photos to an existing batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from dropflow.engine import files
from dropflow.engine.base import Done, JobContext, Params
from dropflow.engine.errors import ConfigError, InputError, JobCancelled
from dropflow.engine.media import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job
    from dropflow.daemon.core.persons import JournalEntry, Person, PersonsRepository, Plan
    from dropflow.engine.cluster.faces import DetectOptions, ModelCache, PhotoResult

log = logging.getLogger("dropflow.engine.cluster.engine")

UNSORTED, NO_FACES, UNREADABLE, SHEETS = "unsorted", "no_faces", "unreadable", "contact_sheets"
REPORT = "clusters.json"
DETECTIONS, UNZIPPED = "detections", "unzipped"  # in the job's folder under the state folder
DETECT_CHUNK = 16  # photos per detection step (saved, then progress and cancel checks)
MOVE_CHUNK = 200  # journal entries per distribution step
JUNK = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # OS litter that alone keeps a folder


class ClusterParams(Params):
    into: str | None = Field(
        None, description="Add the photos to this existing batch instead of one named after the folder/ZIP."
    )
    model_root: str | None = Field(
        None, description="Folder holding models/<pack>/ (default: insightface's own, ~/.insightface)."
    )
    model_pack: str = Field(
        "buffalo_l", description="InsightFace model pack (detection + recognition are used)."
    )
    download_models: bool = Field(
        False, description="Let insightface download a missing pack (needs internet)."
    )
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="onnxruntime device; cuda falls back to cpu if absent."
    )
    det_size: int = Field(
        640,
        ge=128,
        le=2048,
        multiple_of=32,
        description="Detector input size (pixels, square, a multiple of 32).",
    )
    det_threshold: float = Field(0.5, gt=0, lt=1, description="Minimum detection score of a face.")
    min_face_size: int = Field(0, ge=0, description="Ignore faces whose box is smaller than this (pixels).")
    min_cluster_size: int = Field(2, ge=2, description="HDBSCAN min_cluster_size: faces needed for a person.")
    min_samples: int = Field(1, ge=1, description="HDBSCAN min_samples.")
    cluster_selection_epsilon: float = Field(
        1.0,
        ge=0,
        le=2,
        description="HDBSCAN cluster_selection_epsilon (1.0 = cosine 0.5): keeps bursts in one person.",
    )
    member_similarity: float = Field(
        0.3,
        ge=-1,
        lt=1,
        description="A face whose closest face in its person is less similar than this is unsorted.",
    )
    join_threshold: float = Field(
        0.5,
        gt=-1,
        lt=1,
        description="Cosine similarity to a person's mean at which a later face joins that person.",
    )
    exclude_folders: list[str] = Field(
        default_factory=lambda: ["общие"], description="Folder names skipped (left in place), any depth."
    )
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="Photos with more pixels are unreadable.")
    sheet_faces: int = Field(36, ge=1, le=400, description="Faces on a person's contact sheet.")

    @field_validator("into")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        clean = value.strip()
        if not clean or clean in (".", "..") or clean.startswith(".") or "/" in clean or "\\" in clean:
            raise ValueError("must be a plain folder name (no '/', not starting with '.')")
        return clean


def batch_name(job_batch: str, input_path: str, into: str | None) -> str:
    """The batch (output folder) a job feeds: `into`, else the unit's name without `.zip`."""
    if into:
        return into
    name = job_batch or Path(input_path).name
    return name[:-4] if name.lower().endswith(".zip") else name


# --- sources --------------------------------------------------------------------------------------


@dataclass
class Source:
    root: Path  # photos are read (and moved) from here: the unit, or the unpacked ZIP
    photos: list[tuple[str, Path]]  # (key = path relative to root, path)
    skipped: list[dict[str, str]]  # left in place: excluded folders, files that are not images
    staging: Path | None  # the unpacked ZIP, removed when the job is done


def collect(unit: Path, staging: Path, exclude: Sequence[str]) -> Source:
    """Photos of a unit (blocking). A ZIP is unpacked (safely) into `staging` first.

    Raises:
        InputError: the unit is gone, or the ZIP is unreadable or unsafe.
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
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for d in sorted(dirnames):
            if d.casefold() in excluded:
                skipped.append(
                    {"path": (here / d).relative_to(root).as_posix() + "/", "reason": "excluded folder"}
                )
        dirnames[:] = sorted(d for d in dirnames if d.casefold() not in excluded and not is_ignored_name(d))
        for name in sorted(filenames):
            if is_ignored_name(name):
                continue
            path = here / name
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                skipped.append({"path": key, "reason": "a symbolic link"})
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                photos.append((key, path))
            else:
                skipped.append({"path": key, "reason": "not an image"})
    return Source(root, photos, skipped, kept)


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


def _detect_chunk(
    model: Any,
    items: list[tuple[str, Path]],
    options: DetectOptions,
    store: Detections,
    number: int,
    should_stop: Any,
) -> int:
    from dropflow.engine.cluster.faces import detect_photos

    results = list(detect_photos(model, items, options, should_stop))
    store.save(number, results)
    return len(results)


# --- planning ---------------------------------------------------------------------------------------


class _Names:
    """Unique file names per destination folder: what is on disk plus what is already planned."""

    def __init__(self, batch_dir: Path) -> None:
        self.batch_dir = batch_dir
        self.taken: dict[str, set[str]] = {}

    def claim(self, folder: str, name: str) -> str:
        used = self.taken.get(folder)
        if used is None:
            d = self.batch_dir / folder
            # compared case-insensitively: on macOS and Windows disks IMG.JPG and img.jpg are one file
            used = self.taken[folder] = {n.casefold() for n in os.listdir(d)} if d.is_dir() else set()
        stem, suffix = os.path.splitext(name)
        candidate, n = name, 2
        while candidate.casefold() in used:
            candidate, n = f"{stem} ({n}){suffix}", n + 1
        used.add(candidate.casefold())
        return candidate


def make_plan(
    job_id: int,
    batch: str,
    batch_dir: Path,
    source: Source,
    results: dict[str, PhotoResult],
    known: list[Person],
    next_seq: int,
    params: ClusterParams,
) -> Plan:
    """Who is who, and where every photo goes (blocking; the clustering runs here)."""
    from dropflow.daemon.core.persons import Plan, PlannedFace, PlannedPerson, PlannedPhoto
    from dropflow.engine.cluster import clustering

    photos = [(key, path, results[key]) for key, path in source.photos if key in results]
    owner = np.array([i for i, (_, _, r) in enumerate(photos) for _ in r.faces], dtype=np.int64)
    faces = [f for _, _, r in photos for f in r.faces]
    x = np.array([f.embedding for f in faces], dtype=np.float32).reshape(len(faces), -1)
    person_of = np.full(len(faces), 0, dtype=np.int64)  # > 0 known id, < 0 new key, 0 none
    planned: list[PlannedPerson] = []
    joined = 0
    if len(faces):
        x = clustering.normalise(x)
        if known:
            means = np.stack([p.mean for p in known])
            idx = clustering.assign_to_known(x, owner, means, params.join_threshold)
            hit = idx >= 0
            person_of[hit] = np.array([p.id for p in known])[idx[hit]]
            joined = int(hit.sum())
            for j, p in enumerate(known):
                mine = idx == j
                if mine.any():
                    total = p.faces + int(mine.sum())
                    mean = (p.mean * p.faces + x[mine].sum(axis=0)) / total
                    planned.append(PlannedPerson(p.id, p.seq, mean.astype(np.float32), total))
        rest = np.flatnonzero(person_of == 0)
        settings = clustering.Settings(
            min_cluster_size=params.min_cluster_size,
            min_samples=params.min_samples,
            cluster_selection_epsilon=params.cluster_selection_epsilon,
            member_distance=clustering.cosine_to_distance(params.member_similarity),
        )
        labels = clustering.cluster(
            x[rest], settings, groups=owner[rest], relink_threshold=params.join_threshold
        )
        if labels.max(initial=-1) >= 0:
            means, sizes = clustering.centres(x[rest], labels)
            first = np.full(len(sizes), len(faces))
            np.minimum.at(first, labels[labels >= 0], rest[labels >= 0])
            # person_001 is the largest new person; ties by first appearance
            for rank, label in enumerate(sorted(range(len(sizes)), key=lambda c: (-sizes[c], first[c]))):
                ref = -(rank + 1)
                person_of[rest[labels == label]] = ref
                planned.append(PlannedPerson(ref, next_seq + rank, means[label], int(sizes[label])))
    folder = {p.id: p.folder for p in known}
    folder.update({p.ref: f"person_{p.seq:03d}" for p in planned if p.ref < 0})
    names = _Names(batch_dir)
    out: list[PlannedPhoto] = []
    counts = {"photos": len(source.photos), "faces": len(faces), "joined": joined}
    face_at = 0
    for key, path, r in ((k, p, results.get(k)) for k, p in source.photos):
        base = Path(key).name
        if r is None:  # not analysed: cannot happen once detection finished, kept as a guard
            continue
        if r.error is not None:
            out.append(
                PlannedPhoto(
                    key,
                    str(path),
                    "unreadable",
                    [f"{UNREADABLE}/{names.claim(UNREADABLE, base)}"],
                    None,
                    r.error,
                )
            )
            continue
        if not r.faces:
            out.append(
                PlannedPhoto(
                    key, str(path), "no_faces", [f"{NO_FACES}/{names.claim(NO_FACES, base)}"], r.size, None
                )
            )
            continue
        refs = person_of[face_at : face_at + len(r.faces)]
        face_at += len(r.faces)
        file_in: dict[int, str] = {}
        for ref in refs:  # faces are sorted by score: the best face's person comes first
            if ref != 0 and int(ref) not in file_in:
                file_in[int(ref)] = names.claim(folder[int(ref)], base)
        if file_in:
            status, dests = "person", [f"{folder[ref]}/{name}" for ref, name in file_in.items()]
        else:
            status, dests = "unsorted", [f"{UNSORTED}/{names.claim(UNSORTED, base)}"]
        pf = [
            PlannedFace(i, f.box, f.score, int(ref) if ref else None, file_in.get(int(ref)), f.thumb)
            for i, (f, ref) in enumerate(zip(r.faces, refs, strict=True))
        ]
        out.append(PlannedPhoto(key, str(path), status, dests, r.size, None, pf))
    for status in ("person", "unsorted", "no_faces", "unreadable"):
        counts[status] = sum(1 for ph in out if ph.status == status)
    counts["new_persons"] = sum(1 for p in planned if p.ref < 0)
    counts["skipped"] = len(source.skipped)
    summary = {"counts": counts, "skipped": source.skipped}
    return Plan(job_id, batch, str(source.root), planned, out, summary)


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


# --- pictures ---------------------------------------------------------------------------------------


def contact_sheet(thumbs: Sequence[bytes], title: str, *, tile: int = 112, columns: int = 6) -> bytes:
    """A JPEG grid of face crops with the person's folder name on top."""
    from PIL import Image, ImageDraw

    columns = max(1, min(columns, len(thumbs) or 1))
    rows = max(1, -(-len(thumbs) // columns))
    pad, head = 4, 24
    sheet = Image.new("RGB", (columns * (tile + pad) + pad, head + rows * (tile + pad) + pad), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad + 2, 6), title, fill=(235, 235, 235))
    for i, data in enumerate(thumbs):
        with Image.open(io.BytesIO(data)) as im:
            face = im.convert("RGB").resize((tile, tile))
        r, c = divmod(i, columns)
        sheet.paste(face, (pad + c * (tile + pad), head + pad + r * (tile + pad)))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def overview_sheet(entries: Sequence[tuple[str, bytes | None]]) -> bytes:
    """One tile per person (its best face) with its folder name underneath."""
    from PIL import Image, ImageDraw

    tile = 96 if len(entries) <= 400 else 64
    label = 14
    columns = max(1, min(12 if tile == 96 else 24, len(entries)))
    rows = max(1, -(-len(entries) // columns))
    pad = 4
    sheet = Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + label + pad) + pad), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for i, (name, data) in enumerate(entries):
        r, c = divmod(i, columns)
        x, y = pad + c * (tile + pad), pad + r * (tile + label + pad)
        if data:
            with Image.open(io.BytesIO(data)) as im:
                sheet.paste(im.convert("RGB").resize((tile, tile)), (x, y))
        draw.text((x + 1, y + tile + 1), name[: tile // 6], fill=(235, 235, 235))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


# --- the engine -------------------------------------------------------------------------------------


class ClusterEngine:
    name: ClassVar[str] = "cluster"
    unit: ClassVar[Literal["file", "folder"]] = "folder"
    extensions: ClassVar[frozenset[str]] = frozenset({".zip"})
    Params: ClassVar[type[ClusterParams]] = ClusterParams
    supports_cancel: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = True

    def __init__(self) -> None:
        # shared by every job of the daemon (the router keeps one engine instance)
        self._models: ModelCache | None = None  # created on first use: faces loads onnxruntime
        self._batch_locks: dict[str, asyncio.Lock] = {}  # jobs of one batch plan and file one at a time
        self._warm: Future[None] | None = None

    def inputs_for(self, path: Path) -> list[Path] | None:
        """A folder is a unit (the router asks only for files): a `.zip` directly in the route folder."""
        if path.is_dir() or path.suffix.lower() == ".zip":
            return [path]
        return None

    async def run(self, job: Job, ctx: JobContext) -> Done:
        params = ClusterParams.model_validate(job.params)
        repo = ctx.persons
        if repo is None:
            raise ConfigError("the cluster engine needs the daemon's store", hint="run it through the daemon")
        batch = batch_name(job.batch, job.input_path, params.into)
        batch_dir = ctx.output_dir / batch
        unit = Path(job.input_path)
        if unit.name.casefold() in {e.casefold() for e in params.exclude_folders}:
            return Done([], message=f"{unit.name} is an excluded folder: left as it is", archive_input=False)
        warm = self._warm_clustering()
        source = None
        if await repo.phase(job.id) is None:
            try:
                source = await self._detect(job, ctx, params)
            except JobCancelled:
                if ctx.cancel_reason == "cancel":  # a pause keeps the results so far for the resume
                    await asyncio.to_thread(shutil.rmtree, self._workdir(ctx, job), True)
                raise
            except BaseException:
                # a failed job keeps its input where it was dropped: the unpacked copy can go
                await asyncio.to_thread(shutil.rmtree, self._workdir(ctx, job) / UNZIPPED, True)
                raise
            if source is None:
                await asyncio.to_thread(shutil.rmtree, self._workdir(ctx, job), True)
                # an empty folder stays (it may be about to be filled); a ZIP without photos is archived
                return Done([], message="nothing to cluster: no photos", archive_input=_is_zip(unit))
            await ctx.progress(0.86, "clustering")
        # one job of a batch at a time from here: its persons, file names and folders
        async with self._batch_locks.setdefault(batch, asyncio.Lock()):
            if source is not None and await repo.phase(job.id) is None:
                await self._plan(job, ctx, repo, params, batch, batch_dir, source, warm)
            if await repo.phase(job.id) == "distribute":
                await self._distribute(job, ctx, repo, batch, batch_dir)
            return await self._finish(job, ctx, repo, batch, batch_dir, params)

    def _warm_clustering(self) -> Future[None]:
        """Load the clustering kernels once per daemon, in the background, while faces are detected."""
        fut = self._warm
        if fut is None or (fut.done() and fut.exception() is not None):
            from dropflow.engine.cluster import clustering

            pool = ThreadPoolExecutor(1, thread_name_prefix="dropflow-warm")
            fut = self._warm = pool.submit(clustering.warm_up)
            pool.shutdown(wait=False)
        return fut

    def _workdir(self, ctx: JobContext, job: Job) -> Path:
        """The job's own folder under the state folder: detection chunks, the unpacked ZIP."""
        return ctx.state_dir / "cluster" / f"job-{job.id}"

    async def _detect(self, job: Job, ctx: JobContext, params: ClusterParams) -> Source | None:
        """Collect the unit's photos and analyse those not done before a restart."""
        from dropflow.engine.cluster.faces import DetectOptions, ModelCache, default_root, get_model

        unit = Path(job.input_path)
        store = Detections(self._workdir(ctx, job) / DETECTIONS)
        done = await asyncio.to_thread(store.load)
        if _is_zip(unit):
            await ctx.progress(0.0, "unpacking")
        source = await asyncio.to_thread(
            collect, unit, self._workdir(ctx, job) / UNZIPPED, params.exclude_folders
        )
        if not source.photos:
            return None  # nothing is removed: an empty folder may be one the user is about to fill
        todo = [(k, p) for k, p in source.photos if k not in done]
        if todo:
            if self._models is None:
                self._models = ModelCache()
            model = await get_model(
                self._models,
                _model_root(params, default_root),
                params.model_pack,
                device=params.device,
                download=params.download_models,
            )
            options = DetectOptions(
                params.det_size, params.det_threshold, params.min_face_size, params.max_pixels
            )
            number = await asyncio.to_thread(store.next_chunk)
            total, finished = len(source.photos), len(source.photos) - len(todo)
            for s in range(0, len(todo), DETECT_CHUNK):
                ctx.check_cancelled()
                part = todo[s : s + DETECT_CHUNK]
                finished += await asyncio.to_thread(
                    _detect_chunk, model, part, options, store, number, lambda: ctx.cancelled
                )
                number += 1
                await ctx.progress(0.85 * finished / total, f"faces: {finished}/{total} photos")
        return source

    async def _plan(
        self,
        job: Job,
        ctx: JobContext,
        repo: PersonsRepository,
        params: ClusterParams,
        batch: str,
        batch_dir: Path,
        source: Source,
        warm: Any,
    ) -> None:
        """Decide who is who and where each photo goes; commit it all in one transaction."""
        known = await repo.persons(batch)
        renamed = await asyncio.to_thread(detect_renames, known, batch_dir)
        for pid, name in renamed.items():
            await repo.rename(pid, name)
            log.info("batch %s: person %d now lives in %s (renamed by hand)", batch, pid, name)
        known = await repo.persons(batch)
        await asyncio.wrap_future(warm)
        results = await asyncio.to_thread(Detections(self._workdir(ctx, job) / DETECTIONS).load)
        # photos that another job of this batch filed while this one was detecting are its own
        present = await asyncio.to_thread(lambda: [(k, p) for k, p in source.photos if p.exists()])
        if len(present) < len(source.photos):
            log.info(
                "job %d: %d photo(s) were taken by another job", job.id, len(source.photos) - len(present)
            )
        source.photos = present
        next_seq = await repo.next_seq(batch)
        plan = await asyncio.to_thread(
            make_plan, job.id, batch, batch_dir, source, results, known, next_seq, params
        )
        plan.summary["input"] = job.input_path
        plan.summary["renamed"] = sorted(renamed)
        # a folder submitted in place keeps its photos: they are copied, not moved
        plan.summary["move"] = job.source == "inbox" or source.staging is not None
        plan.summary["staging"] = str(source.staging) if source.staging else None
        await repo.commit(plan, params.sheet_faces)
        await ctx.save({"phase": "distribute", "batch": batch})

    async def _distribute(
        self, job: Job, ctx: JobContext, repo: PersonsRepository, batch: str, batch_dir: Path
    ) -> None:
        entries = await repo.journal(job.id)
        move = bool((await repo.run_info(job.id)).get("summary", {}).get("move", True))
        persons = await repo.persons(batch)
        folders = _person_folders(entries)
        for p in persons:
            if p.folder in folders:
                await asyncio.to_thread((batch_dir / p.folder).mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(write_markers, [p for p in persons if p.folder in folders], batch_dir, batch)
        total = len(entries)
        for s in range(0, total, MOVE_CHUNK):
            if ctx.cancelled:
                raise JobCancelled(
                    f"stopped during distribution after {s} of {total} photos; "
                    f"`dropflow retry {job.id}` (or resume) finishes it"
                )
            changes = await asyncio.to_thread(distribute, entries[s : s + MOVE_CHUNK], batch_dir, move=move)
            await repo.record_outcomes(changes)
            await ctx.progress(0.88 + 0.08 * min(total, s + MOVE_CHUNK) / total, "filing photos")

    async def _finish(
        self,
        job: Job,
        ctx: JobContext,
        repo: PersonsRepository,
        batch: str,
        batch_dir: Path,
        params: ClusterParams,
    ) -> Done:
        await ctx.progress(0.97, "contact sheets")
        info = await repo.run_info(job.id)
        persons = await repo.persons(batch)
        touched = _person_folders(await repo.journal(job.id))
        touched |= {p.folder for p in persons if p.id in set(info.get("summary", {}).get("renamed", []))}
        out = await refresh_batch(repo, batch, batch_dir, touched, params.sheet_faces)
        sheets = batch_dir / SHEETS
        await repo.finish(job.id)
        await asyncio.to_thread(self._cleanup, info, ctx, job, params)
        counts = info.get("summary", {}).get("counts", {})
        message = (
            f"{counts.get('photos', 0)} photos, {counts.get('faces', 0)} faces: {counts.get('new_persons', 0)} new "
            f"persons, {counts.get('joined', 0)} faces joined known ones; {counts.get('unsorted', 0)} unsorted, "
            f"{counts.get('no_faces', 0)} without faces, {counts.get('unreadable', 0)} unreadable"
        )
        return Done(
            [out, sheets / "overview.jpg"],
            usage={k: v for k, v in counts.items() if isinstance(v, int)},
            message=message,
            # a folder's photos were moved out of the inbox by the distribution; a ZIP is archived
            archive_input=_is_zip(Path(job.input_path)),
        )

    def _cleanup(self, info: dict[str, Any], ctx: JobContext, job: Job, params: ClusterParams) -> None:
        """After the distribution: the job's folder (chunks, unpacked ZIP) goes; a dropped folder
        goes too if the distribution emptied it."""
        root = Path(info["source"])
        if not info.get("summary", {}).get("staging") and root.is_dir() and job.source == "inbox":
            remove_emptied(root, params.exclude_folders)
        shutil.rmtree(self._workdir(ctx, job), ignore_errors=True)


async def refresh_batch(
    repo: PersonsRepository, batch: str, batch_dir: Path, folders: set[str], sheet_faces: int = 36
) -> Path:
    """Re-render the contact sheets of `folders` (and any missing one), the overview and
    clusters.json from the database; returns the clusters.json path."""
    persons = await repo.persons(batch)
    sheets = batch_dir / SHEETS
    for p in persons:
        if p.folder in folders or not (sheets / f"{p.folder}.jpg").exists():
            data = contact_sheet(await repo.thumbs(p.id, sheet_faces), p.folder)
            await asyncio.to_thread(files.write_bytes, sheets / f"{p.folder}.jpg", data)
    best = [(p.folder, next(iter(await repo.thumbs(p.id, 1)), None)) for p in persons]
    await asyncio.to_thread(files.write_bytes, sheets / "overview.jpg", overview_sheet(best))
    await asyncio.to_thread(_remove_stale_sheets, sheets, {p.folder for p in persons})
    report = await repo.report(batch)
    report = {"batch": batch, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **report}
    return await asyncio.to_thread(files.write_json, batch_dir / REPORT, report)


def _is_zip(unit: Path) -> bool:
    return unit.suffix.lower() == ".zip"


def _model_root(params: ClusterParams, default: Any) -> Path:
    return Path(params.model_root).expanduser() if params.model_root else Path(default())


def _person_folders(entries: Sequence[JournalEntry]) -> set[str]:
    return {d.split("/", 1)[0] for e in entries if e.status == "person" for d in e.dests}


def _remove_stale_sheets(sheets: Path, folders: set[str]) -> None:
    for f in sheets.glob("*.jpg"):
        if f.stem != "overview" and f.stem not in folders:
            f.unlink(missing_ok=True)
