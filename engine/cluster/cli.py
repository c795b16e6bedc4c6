"""`dropflow persons [BATCH] | rename BATCH ID NAME | merge BATCH KEEP OTHER`.

The persons of a cluster batch live in the database and in outputs/cluster/<batch>/<folder>/.
A rename renames the folder (and its contact sheet) and records the name, so later runs keep it;
a merge moves the other person's photos into the kept person's folder (a photo both were in is
kept once) and folds the two into one. Both refuse while a job of that batch is running or has a
distribution to finish. Only light modules load at import; the engine's code loads when a
command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.engine.errors import EXIT_MISSING, EXIT_OK, EXIT_STATE, EXIT_USAGE

if TYPE_CHECKING:
    from dropflow.daemon.core.config import Config
    from dropflow.daemon.core.store import Store
    from dropflow.daemon.core.store.persons import SqlitePersons

ACTIONS = ("list", "rename", "merge")


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "persons",
        help="persons of cluster batches: list, rename, merge",
        description="dropflow persons                         every batch with its persons\n"
        "dropflow persons BATCH                   the persons of a batch (same as `list BATCH`)\n"
        "dropflow persons rename BATCH ID NAME    rename a person's folder; later runs keep the name\n"
        "dropflow persons merge BATCH KEEP OTHER  move OTHER's photos into KEEP and make them one",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "words", nargs="*", metavar="ARG", help="[list] BATCH | rename BATCH ID NAME | merge BATCH KEEP OTHER"
    )
    p.add_argument("--json", action="store_true", help="JSON output, stable for scripts")
    p.set_defaults(fn=cmd_persons)


def _usage(message: str) -> int:
    print(f"dropflow persons: {message}", file=sys.stderr)
    print("usage: dropflow persons [BATCH] | rename BATCH ID NAME | merge BATCH KEEP OTHER", file=sys.stderr)
    return EXIT_USAGE


def cmd_persons(args: argparse.Namespace) -> int:
    from dropflow.daemon.core.config import find_config, load
    from dropflow.daemon.core.store import with_store

    words = list(args.words)
    action = words.pop(0) if words and words[0] in ACTIONS else "list"
    cfg = load(find_config(args.config))
    if action == "list":
        if len(words) > 1:
            return _usage("list takes one BATCH")
        return with_store(cfg, lambda s: _list(s, cfg, words[0] if words else None, args.json))
    if action == "rename":
        if len(words) != 3 or not words[1].isdigit():
            return _usage("rename takes BATCH ID NAME")
        return with_store(cfg, lambda s: _rename(s, cfg, words[0], int(words[1]), words[2]))
    if len(words) != 3 or not (words[1].isdigit() and words[2].isdigit()):
        return _usage("merge takes BATCH KEEP OTHER (two person ids)")
    return with_store(cfg, lambda s: _merge(s, cfg, words[0], int(words[1]), int(words[2])))


def _batch_dir(cfg: Config, batch: str) -> Path:
    return cfg.paths.outputs / "cluster" / batch


async def _list(store: Store, cfg: Config, batch: str | None, as_json: bool) -> int:
    from dropflow.daemon.core.store.persons import SqlitePersons

    repo = SqlitePersons(store)
    if batch is None:
        rows = await repo.batches()
        if as_json:
            print(json.dumps(rows, ensure_ascii=False, indent=1))
        elif not rows:
            print("no cluster batches yet")
        else:
            print(f"{'BATCH':<24} {'PERSONS':>7} {'PHOTOS':>7} {'RUNS':>5}  FOLDER")
            for r in rows:
                print(
                    f"{r['batch']:<24} {r['persons']:>7} {r['photos']:>7} {r['runs']:>5}  {_batch_dir(cfg, r['batch'])}"
                )
        return EXIT_OK
    if batch not in {r["batch"] for r in await repo.batches()}:
        print(f"no cluster batch {batch!r} (see `dropflow persons`)", file=sys.stderr)
        return EXIT_MISSING
    persons = await repo.persons(batch, with_counts=True)
    if as_json:
        print(
            json.dumps(
                [
                    {"id": p.id, "folder": p.folder, "name": p.name, "faces": p.faces, "photos": p.photos}
                    for p in persons
                ],
                ensure_ascii=False,
                indent=1,
            )
        )
        return EXIT_OK
    print(f"{'ID':>6}  {'FOLDER':<28} {'FACES':>6} {'PHOTOS':>7}")
    for p in persons:
        print(f"{p.id:>6}  {p.folder:<28} {p.faces:>6} {p.photos:>7}")
    print(f"\n{len(persons)} persons in {_batch_dir(cfg, batch)}")
    return EXIT_OK


async def _busy(repo: SqlitePersons, batch: str) -> list[int]:
    """Jobs of this batch that are running or still have photos to file."""
    from dropflow.engine.cluster.params import batch_name

    busy = set(await repo.unfinished_runs(batch))
    for j in await repo.active_cluster_jobs():
        if (
            j["status"] == "running"
            and batch_name(j["batch"], j["input_path"], j["params"].get("into")) == batch
        ):
            busy.add(j["id"])
    return sorted(busy)


def _outcome(outcome: str, batch: str, person_ids: Sequence[int], busy: Sequence[int]) -> int:
    """Print why a rename or merge did not happen; its exit code."""
    if outcome == "busy":
        print(
            f"batch {batch!r} has job(s) {list(busy)} in progress: try again when they are done",
            file=sys.stderr,
        )
        return EXIT_STATE
    if outcome == "missing":
        print(
            f"no such person in batch {batch!r}: {list(person_ids)} (see `dropflow persons {batch}`)",
            file=sys.stderr,
        )
        return EXIT_MISSING
    if outcome == "taken":
        print(f"batch {batch!r} already has a folder by that name: choose another", file=sys.stderr)
        return EXIT_STATE
    return EXIT_OK


async def _rename(store: Store, cfg: Config, batch: str, person_id: int, name: str) -> int:
    from dropflow.daemon.core.store.persons import SqlitePersons

    root = _batch_dir(cfg, batch)
    busy = await _busy(SqlitePersons(store), batch)
    outcome, old = await rename_person(store, root, batch, person_id, name)
    if outcome != "renamed":
        return _outcome(outcome, batch, [person_id], busy)
    print(f"person {person_id}: {old} -> {name.strip()} ({root / name.strip()})")
    return EXIT_OK


async def _merge(store: Store, cfg: Config, batch: str, keep_id: int, other_id: int) -> int:
    from dropflow.daemon.core.store.persons import SqlitePersons

    if keep_id == other_id:
        return _usage("KEEP and OTHER are the same person")
    root = _batch_dir(cfg, batch)
    busy = await _busy(SqlitePersons(store), batch)
    outcome, photos = await merge_persons(store, root, batch, keep_id, other_id)
    if outcome != "merged":
        return _outcome(outcome, batch, [keep_id, other_id], busy)
    print(f"person {other_id} merged into {keep_id}: {photos} photo(s) moved into its folder")
    return EXIT_OK


async def rename_person(
    store: Store, batch_dir: Path, batch: str, person_id: int, name: str
) -> tuple[str, str]:
    """Rename a person's folder (and contact sheet) and record the name; later runs keep it.

    Returns (outcome, old folder): outcome is renamed | missing | busy (a job of the batch is
    running or filing) | taken (another person's or an existing folder has that name). For the
    CLI and the TUI.

    Raises:
        InputError: the name cannot be a folder name, or is reserved.
    """
    import asyncio

    from dropflow.daemon.core.persons import check_folder_name
    from dropflow.daemon.core.store.persons import SqlitePersons
    from dropflow.engine.cluster.params import SHEETS
    from dropflow.engine.cluster.report import refresh_batch

    clean = check_folder_name(name)
    repo = SqlitePersons(store)
    if await _busy(repo, batch):
        return "busy", ""
    person = await repo.person(batch, person_id)
    if person is None:
        return "missing", ""
    if clean == person.folder:
        return "renamed", person.folder
    others = {p.folder for p in await repo.persons(batch) if p.id != person_id}
    old, new = batch_dir / person.folder, batch_dir / clean
    if clean in others or await asyncio.to_thread(new.exists):
        return "taken", person.folder
    # the folder first: if we stop before the database, the next run reads the rename from the
    # marker file inside the folder
    if await asyncio.to_thread(old.is_dir):
        await asyncio.to_thread(os.rename, old, new)
    await asyncio.to_thread((batch_dir / SHEETS / f"{person.folder}.jpg").unlink, True)
    await repo.rename(person_id, clean)
    await refresh_batch(repo, batch, batch_dir, {clean})
    return "renamed", person.folder


async def merge_persons(
    store: Store, batch_dir: Path, batch: str, keep_id: int, other_id: int
) -> tuple[str, int]:
    """Move `other_id`'s photos into `keep_id`'s folder and fold the two persons into one.

    Returns (outcome, photos moved): outcome is merged | missing | busy. For the CLI and the TUI.
    """
    import asyncio

    from dropflow.daemon.core.persons import MARKER
    from dropflow.daemon.core.store.persons import SqlitePersons
    from dropflow.engine.cluster.params import SHEETS
    from dropflow.engine.cluster.report import refresh_batch

    repo = SqlitePersons(store)
    if await _busy(repo, batch):
        return "busy", 0
    keep = await repo.person(batch, keep_id)
    other = await repo.person(batch, other_id)
    if keep is None or other is None or keep_id == other_id:
        return "missing", 0
    in_keep = {(f["job_id"], f["photo"]): f["file"] for f in await repo.faces_of(keep.id)}
    plan = [
        (f["id"], f["file"], in_keep.get((f["job_id"], f["photo"]))) for f in await repo.faces_of(other.id)
    ]
    files_after = await asyncio.to_thread(
        _move_photos, batch_dir / other.folder, batch_dir / keep.folder, plan, MARKER
    )
    await repo.merge(keep, other, files_after)
    await asyncio.to_thread((batch_dir / SHEETS / f"{other.folder}.jpg").unlink, True)
    await refresh_batch(repo, batch, batch_dir, {keep.folder})
    return "merged", len({v for v in files_after.values() if v})


def _move_photos(
    src_dir: Path, dst_dir: Path, plan: list[tuple[int, str | None, str | None]], marker: str
) -> dict[int, str | None]:
    """Move a merged person's photos (blocking); returns {face id: file name in the kept folder}.

    A photo the kept person already has (a group photo copied into both folders) is not moved
    twice: the other copy is removed once the kept one is confirmed on disk. Files we do not know
    (added by hand) move too. Re-running after an interruption finishes the job.
    """
    from dropflow.engine import files

    dst_dir.mkdir(parents=True, exist_ok=True)
    renamed: dict[str, str] = {}
    out: dict[int, str | None] = {}
    for face_id, name, already in plan:
        if name is None:
            out[face_id] = None
            continue
        src = src_dir / name
        if already is not None and (dst_dir / already).exists() and _same_or_gone(src, dst_dir / already):
            src.unlink(missing_ok=True)  # a second copy of a photo the kept person has
            out[face_id] = already
            continue
        if name in renamed:
            out[face_id] = renamed[name]
            continue
        if not src.exists():  # moved by an interrupted earlier merge
            out[face_id] = name if (dst_dir / name).exists() else None
            continue
        moved = files.move(src, dst_dir)
        renamed[name] = moved.name
        out[face_id] = moved.name
    if src_dir.is_dir():
        for left in sorted(src_dir.iterdir()):
            if left.name == marker:
                left.unlink()
            elif left.is_file():
                files.move(left, dst_dir)
        try:
            src_dir.rmdir()
        except OSError:
            pass  # something we could not move (a subfolder): the folder stays
    return out


def _same_or_gone(a: Path, b: Path) -> bool:
    from dropflow.engine import files

    if not a.exists():
        return True
    return a.stat().st_size == b.stat().st_size and files.file_hash(a) == files.file_hash(b)
