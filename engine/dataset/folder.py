"""One dataset on disk: the item records it is made of, the files rendered from them, and the
coalescing of those renders while items stream in (`RenderCoalescer`).

    outputs/dataset/<name>/
      .records/<sha256>.json          one finished item (the source of truth), written atomically
      .records/failed/<sha256>.json   one item that failed for good, with the reason and its cost
      images/<ab>/<sha256>.jpg        the image as the model saw it
      train.jsonl, dataset_info.json, ... , summary.json     rendered from the records

Why records plus re-rendering rather than appending to the JSONL: an item's record is keyed by
its content hash, so it exists at most once whatever crashed when; every rendered file is
rebuilt from all records and renamed into place, so a reader never sees half a line and a render
interrupted at any point is repaired by the next one.

`DatasetFolder`'s methods block (file I/O): call them from a worker thread.
"""

from __future__ import annotations

import asyncio
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
from dropflow.engine.dataset.formats import (
    FORMAT_FILES,
    FORMAT_NAMES,
    IMAGEFOLDER_DIR,
    FormatName,
    ImageLink,
    Plan,
    RenderOptions,
    render,
)
from dropflow.engine.dataset.records import FailedItem, ItemRecord
from dropflow.engine.dataset.summary import carry_over, summarize

log = logging.getLogger("dropflow.engine.dataset.folder")

RENDER_MAX_DELAY = 1.0  # while items stream in, the files are rewritten at least this often
RENDER_WAIT = 1.0  # a guard (see RenderCoalescer) comes back after this long
GUARD_TTL = 5 * RENDER_WAIT  # a guard not back by then is presumed cancelled: rows find a new one
GUARD_FORGET = 600.0  # seconds after which a guard that never came back is dropped from memory

DEFAULT_DATASET = "default"  # the dataset of images dropped straight into inbox/dataset/
RECORDS = ".records"
FAILED = ".records/failed"
IMAGES = "images"
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
        same_rows = float(previous.get("val_ratio", options.val_ratio)) == options.val_ratio and bool(
            previous.get("include_system", options.include_system)
        ) == bool(options.include_system)
        todo = [f for f in wanted if f in formats] if only and same_rows else wanted
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
        current = {f.path for f in plan.files}
        for stale in FORMAT_FILES[plan.format]:
            if stale not in current:
                (self.root / stale).unlink(missing_ok=True)

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
        base = self.root / IMAGEFOLDER_DIR
        for split_dir in base.iterdir() if base.is_dir() else ():
            images = split_dir / IMAGES
            if not images.is_dir():
                continue
            for path in images.rglob("*"):
                if path.is_file() and path.relative_to(self.root).as_posix() not in wanted:
                    path.unlink()  # moved to the other split (val_ratio changed)


# --- coalesced renders -----------------------------------------------------------------------------


class RenderCoalescer:
    """Rewrites one dataset's files from its records: one render at a time, and not one per item.

    A render starts at once when nothing else of the dataset is in flight in this daemon (the last
    item of a batch, or a lone drop); otherwise within `max_delay`, or as soon as the items in
    flight are done. Each render covers every record written before it started.

    Why items need not wait for the render: the first item that finishes while a render is
    pending becomes a *guard*: its job waits (`settle` says False) until a render that includes
    every row that leaned on it is on disk. Items finishing meanwhile lean on it and finish at
    once. A guard stops taking new rows when it comes back to check (the next item to finish
    becomes the next guard), so no job waits longer than about one render. If the daemon dies,
    the guard is still unfinished in the store, runs again on the next start, and its render
    writes every row: all jobs of a dataset finished means all their rows are in the files.
    """

    def __init__(self, folder: DatasetFolder, *, max_delay: float = RENDER_MAX_DELAY) -> None:
        self.folder = folder
        self.max_delay = max_delay
        self.cache = RecordCache()
        self.covered: dict[str, float] = {}
        self.renders = 0
        self.write_seq = 0  # records written by this daemon so far
        self.rendered_seq = 0  # write_seq when the last finished render started
        self._guards: dict[int, tuple[int, float]] = {}  # job id -> (write_seq it waits for, since)
        self._open_guard: int | None = None  # the guard that finishing items may lean on
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._formats: list[FormatName] = ["llamafactory"]
        self._options = RenderOptions(name=folder.name, root=folder.root)

    def begin(self) -> None:
        """An item of this dataset started working towards a record."""
        self._in_flight += 1
        self._idle.clear()

    def end(self, *, wrote: bool) -> None:
        """That item is done; `wrote`: its record is on disk (renders from now on include it)."""
        if wrote:
            self.write_seq += 1
        self._in_flight = max(0, self._in_flight - 1)
        if self._in_flight == 0:
            self._idle.set()

    def covers(self, record: ItemRecord) -> bool:
        """True when the files on disk hold this version of the record (a --force run makes a new one)."""
        return self.covered.get(record.hash) == record.created

    def cached(self, content_hash: str) -> ItemRecord | None:
        """The record as the last render read it (saves a file read when a job comes back)."""
        hit = self.cache.entries.get(f"{content_hash}.json")
        return hit[1] if hit is not None else None

    async def settle(
        self, job_id: int, record: ItemRecord, formats: list[FormatName], options: RenderOptions
    ) -> bool:
        """May the job of `record` finish now? False: it guards rows not yet rendered; come back later.

        Raises OSError when a render done right here cannot write its files.
        """
        now = time.monotonic()
        guard = self._guards.get(job_id)
        if guard is not None:
            if self._open_guard == job_id:
                self._open_guard = None  # take no new rows: the next item to finish guards those
            if self.rendered_seq < guard[0]:
                await self.request(formats, options)
            if self.rendered_seq >= guard[0]:
                del self._guards[job_id]
                return True
            return False
        if self.covers(record):
            return True
        await self.request(formats, options)
        if self.covers(record):
            return True
        open_id = self._open_guard
        open_guard = self._guards.get(open_id) if open_id is not None else None
        if open_id is not None and open_guard is not None and now - open_guard[1] < GUARD_TTL:
            self._guards[open_id] = (self.write_seq, open_guard[1])
            return True
        # no guard, or one that never came back (cancelled or paused while waiting)
        self._guards = {k: v for k, v in self._guards.items() if now - v[1] < GUARD_FORGET}
        self._guards[job_id] = (self.write_seq, now)
        self._open_guard = job_id
        return False

    async def request(self, formats: list[FormatName], options: RenderOptions) -> None:
        """Ask for a render with these settings (the newest job's win).

        Raises OSError when a render done right here cannot write its files.
        """
        self._formats, self._options = list(formats), options
        self._dirty = True
        if self._in_flight == 0:
            await self._render()
        elif self._task is None or self._task.done():
            self._task = asyncio.create_task(
                self._later(), name=f"dropflow-dataset-render:{self.folder.name}"
            )

    async def _later(self) -> None:
        while self._dirty:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=self.max_delay)
            except TimeoutError:
                pass
            try:
                await self._render()
            except Exception as exc:  # a full disk must not kill the loop; the guards wait and retry
                log.error("dataset %s: cannot write its files: %s", self.folder.name, exc)
                await asyncio.sleep(self.max_delay)

    async def _render(self) -> None:
        async with self._lock:
            if not self._dirty:
                return  # a render that started after our record was written just finished
            self._dirty = False
            seq = self.write_seq
            try:
                result = await asyncio.to_thread(self.folder.render, self._formats, self._options, self.cache)
            except BaseException:
                self._dirty = True
                raise
            self.covered = result.covered
            self.rendered_seq = seq
            self.renders += 1


def _read_record(path: Path) -> ItemRecord | None:
    try:
        return ItemRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        # records are written by rename, so this is damage from outside; the item is redone
        log.warning("ignoring damaged record %s: %s", path, exc)
        return None
