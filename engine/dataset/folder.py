"""One dataset on disk: the item records it is made of and the files rendered from them (the
coalescing of those renders while items stream in is `coalescer.RenderCoalescer`).

    outputs/dataset/<name>/
      .records/<sha256>.json          one finished item (the source of truth), written atomically
      .records/failed/<sha256>.json   one item that failed for good, with the reason and its cost
      images/<ab>/<sha256>.jpg        the image as the model saw it
      videos/<ab>/<sha256>.mp4        a video item: a copy of the video as it was dropped
      train.jsonl, val.jsonl, ... , summary.json     rendered from the records
    outputs/dataset/dataset_info.json   LLaMA-Factory's entries of every dataset, merged (`info`)

Why records plus re-rendering rather than appending to the JSONL: an item's record is keyed by
its content hash, so it exists at most once whatever crashed when; every rendered file is
rebuilt from all records and renamed into place, so a reader never sees half a line and a render
interrupted at any point is repaired by the next one.

`DatasetFolder`'s methods block (file I/O): call them from a worker thread.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropflow.engine import files
from dropflow.engine.dataset import info, split
from dropflow.engine.dataset.formats import (
    FORMAT_FILES,
    FORMAT_NAMES,
    IMAGEFOLDER_DIR,
    VIDEOFOLDER_DIR,
    FormatName,
    ImageLink,
    Plan,
    RenderOptions,
    render,
)
from dropflow.engine.dataset.records import FailedItem, ItemRecord, ordered
from dropflow.engine.dataset.summary import carry_over, summarize

log = logging.getLogger("dropflow.engine.dataset.folder")

DEFAULT_DATASET = "default"  # the dataset of images dropped straight into inbox/dataset/
RECORDS = ".records"
FAILED = ".records/failed"
IMAGES = "images"
VIDEOS = "videos"
SUMMARY = "summary.json"


@dataclass
class RecordCache:
    """Parsed records by file name and (mtime, size): a render re-reads only what changed."""

    entries: dict[str, tuple[tuple[int, int], ItemRecord]] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderResult:
    covered: dict[str, float]  # content hash -> `created` of each record version the render saw
    summary: dict[str, Any]
    rendered: list[FormatName] = field(default_factory=list)  # the formats whose files were rewritten


class DatasetFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def name(self) -> str:
        return self.root.name

    # --- items --------------------------------------------------------------------------------

    @staticmethod
    def image_rel(content_hash: str, ext: str) -> str:
        return f"{IMAGES}/{content_hash[:2]}/{content_hash}{ext}"

    @staticmethod
    def video_rel(content_hash: str, ext: str) -> str:
        return f"{VIDEOS}/{content_hash[:2]}/{content_hash}{ext.lower()}"

    def record_path(self, content_hash: str) -> Path:
        return self.root / RECORDS / f"{content_hash}.json"

    def failure_path(self, content_hash: str) -> Path:
        return self.root / FAILED / f"{content_hash}.json"

    def load_record(self, content_hash: str) -> ItemRecord | None:
        """The item's record, or None when it has none (a damaged file counts as none)."""
        return _read_record(self.record_path(content_hash))

    def write_item(self, record: ItemRecord, image: bytes) -> Path:
        """Store the image, then the record (so a record never points at a missing image)."""
        image_path = self.root / record.image
        if not (image_path.exists() and image_path.stat().st_size == len(image)):
            files.write_bytes(image_path, image)
        path = files.write_json(self.record_path(record.hash), record.to_json())
        self.failure_path(record.hash).unlink(missing_ok=True)  # a retry that worked
        return path

    def write_video_item(self, record: ItemRecord, source: Path) -> Path:
        """Copy the video (file to file: it may be large), then write the record.

        A copy, not a link: the dropped file is archived afterwards and stays the user's to edit.
        Raises OSError when the copy or the record cannot be written.
        """
        video_path = self.root / record.video
        if not (video_path.exists() and video_path.stat().st_size == source.stat().st_size):
            with source.open("rb") as src, files.atomic_writer(video_path, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        path = files.write_json(self.record_path(record.hash), record.to_json())
        self.failure_path(record.hash).unlink(missing_ok=True)
        return path

    def write_failure(self, failure: FailedItem) -> Path:
        return files.write_json(self.failure_path(failure.hash), failure.to_json())

    def records(self, cache: RecordCache | None = None) -> list[ItemRecord]:
        cache = cache if cache is not None else RecordCache()
        folder = self.root / RECORDS
        seen: set[str] = set()
        out: list[ItemRecord] = []
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        for entry in entries:
            # temp files of a write in progress start with a dot; `failed` is a folder
            if entry.name.startswith(".") or not entry.name.endswith(".json") or not entry.is_file():
                continue
            st = entry.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            seen.add(entry.name)
            hit = cache.entries.get(entry.name)
            if hit is not None and hit[0] == stamp:
                out.append(hit[1])
                continue
            rec = _read_record(Path(entry.path))
            if rec is not None:
                cache.entries[entry.name] = (stamp, rec)
                out.append(rec)
        for gone in set(cache.entries) - seen:
            del cache.entries[gone]
        return out

    def failures(self, exclude: Iterable[str] = ()) -> list[FailedItem]:
        skip = set(exclude)
        out = []
        folder = self.root / FAILED
        if not folder.is_dir():
            return []
        for path in folder.glob("*.json"):
            if path.name.startswith(".") or path.stem in skip:
                continue
            try:
                out.append(FailedItem.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("ignoring damaged failure record %s: %s", path, exc)
        return out

    def summary(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def kept_formats(self, summary: dict[str, Any] | None = None) -> list[FormatName]:
        """Formats the last render wrote: an export adds one, and later renders keep it fresh."""
        prev = (summary if summary is not None else self.summary() or {}).get("format") or []
        return [f for f in FORMAT_NAMES if f in prev]

    # --- rendering ----------------------------------------------------------------------------

    def render(
        self,
        formats: Sequence[FormatName],
        options: RenderOptions,
        cache: RecordCache | None = None,
        *,
        only: bool = False,
    ) -> RenderResult:
        """Rewrite every file of `formats` (plus those kept from earlier renders) and summary.json.

        `only` (an export): rewrite the files of `formats` alone; the other kept formats' files stay
        byte for byte, and summary.json keeps what it said of them. Unless the options change the
        split or the system turn: then every kept format is rewritten, or the formats would
        disagree on which item is in which split.

        Raises OSError when a file cannot be written (the previous version stays in place).
        """
        records = self.records(cache)
        failures = self.failures(exclude={r.hash for r in records})
        previous = self.summary() or {}
        wanted = [f for f in FORMAT_NAMES if f in set(formats) | set(self.kept_formats(previous))]
        same_rows = (
            float(previous.get("val_ratio", options.val_ratio)) == options.val_ratio
            and previous.get("record_system", options.system) == options.system
        )
        todo = [f for f in wanted if f in formats] if only and same_rows else wanted
        stored_ratio, known = split.load(self.root)
        if stored_ratio != options.val_ratio:
            known = {}  # another ratio: drawn again (items move once, on purpose)
        order = [r.hash for r in ordered(records)]
        assigned = split.assign(order, options.val_ratio, known)
        keep = not only or stored_ratio in (None, options.val_ratio)
        if keep and (assigned != known or stored_ratio != options.val_ratio):
            # an export with another ratio is a one-off: the daemon's split stays as it was
            split.save(self.root, options.val_ratio, assigned)
        options = dataclasses.replace(options, splits=assigned)
        plans: list[Plan] = []
        for fmt in todo:
            plan = render(fmt, records, options)
            self._write_plan(plan)
            plans.append(plan)
        summary = summarize(
            records,
            failures,
            options,
            plans,
            updated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        if todo != wanted:
            summary = carry_over(summary, previous, wanted)
        files.write_json(self.root / SUMMARY, summary)
        # an item a format had to leave out (listed under `skipped`) is settled all the same:
        # waiting would not bring it in
        return RenderResult({r.hash: r.created for r in records}, summary, todo)

    def _write_plan(self, plan: Plan) -> None:
        if plan.links:
            self._sync_links(plan.links)
        for out in plan.files:
            with files.atomic_writer(self.root / out.path, "w") as fh:
                for chunk in out.chunks():
                    fh.write(chunk)
        if plan.info is not None:
            info.merge_info(self.root.parent / info.INFO_FILE, plan.info, plan.info_drop)
            self._retire_legacy_info(plan.info_drop + list(plan.info))
        current = {f.path for f in plan.files}
        for stale in FORMAT_FILES[plan.format]:
            if stale not in current:
                (self.root / stale).unlink(missing_ok=True)

    def _retire_legacy_info(self, ours: Sequence[str]) -> None:
        """Before issue 13, dataset_info.json sat in the dataset folder, with paths relative to it: our
        entries there would now point at the wrong images. Drop them; keep the file if a user
        added entries of their own."""
        legacy = self.root / info.INFO_FILE
        if not legacy.exists():
            return
        left = info.merge_info(legacy, {}, ours)
        if not left:
            legacy.unlink(missing_ok=True)

    def _sync_links(self, links: Sequence[ImageLink]) -> None:
        """Hard-link each image where the format wants it (a copy across filesystems); prune the rest."""
        wanted = {link.path for link in links}
        for link in links:
            dst = self.root / link.path
            if dst.exists():
                continue
            src = self.root / link.target
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(files.TEMP_PREFIX + dst.name)
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        for tree, media in ((IMAGEFOLDER_DIR, IMAGES), (VIDEOFOLDER_DIR, VIDEOS)):
            base = self.root / tree
            for split_dir in base.iterdir() if base.is_dir() else ():
                folder = split_dir / media
                if not folder.is_dir():
                    continue
                for path in folder.rglob("*"):
                    if path.is_file() and path.relative_to(self.root).as_posix() not in wanted:
                        path.unlink()  # moved to the other split (val_ratio changed)


def _read_record(path: Path) -> ItemRecord | None:
    try:
        return ItemRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        # records are written by rename, so this is damage from outside; the item is redone
        log.warning("ignoring damaged record %s: %s", path, exc)
        return None
