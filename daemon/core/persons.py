"""Persons of cluster batches: the values the store keeps, the folder-name rules, and the repository
interface the cluster engine is lent on `JobContext.persons`.

The SQLite implementation is `dropflow.daemon.core.store.persons`. Tables (migration 2 in
`dropflow.daemon.core.store.migrations`): `cluster_persons` (one row per person, with
the running mean of its embeddings, so later photos can join it), `cluster_runs` (one per job:
its phase), `cluster_photos` (every photo of a run and its destinations: the distribution
journal) and `cluster_faces` (every face, its person and the photo's file in that person's
folder). A run's persons, photos and faces are written in one transaction: a job either has its
whole plan or none of it.

Folder names: a person's folder is `name` when the user gave one, else `person_<seq>`; the
folder itself carries a marker file with the person's id, so a rename by hand is noticed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dropflow.engine.errors import InputError

RESERVED = frozenset({"unsorted", "no_faces", "unreadable", "contact_sheets", "clusters.json"})
MARKER = ".dropflow-person"
ACTIVE_JOB = ("queued", "running", "waiting", "paused")


def default_folder(seq: int) -> str:
    return f"person_{seq:03d}"


def check_folder_name(name: str) -> str:
    """A person's folder name as the user gave it, validated.

    Raises:
        InputError: empty, a path, hidden, too long, or one of the batch's own folder names.
    """
    clean = name.strip()
    if (
        not clean
        or clean in (".", "..")
        or clean.startswith(".")
        or re.search(r"[/\\\x00]", clean)
        or len(clean.encode()) > 200
    ):
        raise InputError(
            f"{name!r} cannot be a folder name", hint="use a plain name: no '/', not starting with '.'"
        )
    if clean.lower() in RESERVED or re.fullmatch(r"person_\d+", clean):
        raise InputError(f"{clean!r} is reserved in a cluster batch", hint="choose another name")
    return clean


@dataclass
class Person:
    id: int
    batch: str
    seq: int
    name: str | None
    mean: np.ndarray
    faces: int
    photos: int = 0

    @property
    def folder(self) -> str:
        return self.name or default_folder(self.seq)


@dataclass
class PlannedFace:
    idx: int
    box: Sequence[float]
    score: float
    person: int | None  # an existing person's id (> 0), a new person's key (< 0), or None (noise)
    file: str | None  # the photo's file name in that person's folder
    thumb: bytes | None


@dataclass
class PlannedPhoto:
    photo: str
    source: str
    status: str  # person | unsorted | no_faces | unreadable
    dests: list[str]  # relative to the batch folder
    size: tuple[int, int] | None
    error: str | None
    faces: list[PlannedFace] = field(default_factory=list)


@dataclass
class PlannedPerson:
    ref: int  # existing id (> 0) or new key (< 0)
    seq: int
    mean: np.ndarray
    faces: int


@dataclass
class Plan:
    job_id: int
    batch: str
    source: str
    persons: list[PlannedPerson]
    photos: list[PlannedPhoto]
    summary: dict[str, Any]


@dataclass(frozen=True)
class JournalEntry:
    id: int
    photo: str
    source: str
    status: str
    dests: list[str]


class PersonsRepository(Protocol):
    """The persons of cluster batches and the journal of each run (what `JobContext.persons` lends).

    Every write is one transaction. Raises the store's driver error when the store fails.
    """

    async def persons(self, batch: str, *, with_counts: bool = False) -> list[Person]:
        """The batch's persons (merged ones excluded), oldest first."""
        ...

    async def next_seq(self, batch: str) -> int:
        """The number the batch's next new person gets (`person_<seq>`)."""
        ...

    async def person(self, batch: str, person_id: int) -> Person | None: ...

    async def batches(self) -> list[dict[str, Any]]: ...

    async def rename(self, person_id: int, name: str | None) -> None: ...

    async def merge(self, keep: Person, gone: Person, files: dict[int, str | None]) -> None:
        """Fold `gone` into `keep`: its faces (with their new file names), its mean, its name."""
        ...

    async def faces_of(self, person_id: int) -> list[dict[str, Any]]: ...

    async def thumbs(self, person_id: int, limit: int) -> list[bytes]: ...

    async def prune_thumbs(self, person_ids: Iterable[int], keep: int) -> None:
        """Keep the crops of each person's `keep` best faces (what a contact sheet shows)."""
        ...

    async def phase(self, job_id: int) -> str | None: ...

    async def unfinished_runs(self, batch: str) -> list[int]: ...

    async def commit(self, plan: Plan, keep_thumbs: int) -> dict[int, int]:
        """Write a run's plan in one transaction; returns {person ref: person id}."""
        ...

    async def journal(self, job_id: int) -> list[JournalEntry]: ...

    async def run_info(self, job_id: int) -> dict[str, Any]: ...

    async def record_outcomes(self, changes: Sequence[tuple[int, str, list[str], str | None]]) -> None:
        """Photos whose distribution differed from the plan: (photo id, status, dests, error).

        A destination taken by a different file in the meantime got another name: the faces'
        file names follow it.
        """
        ...

    async def finish(self, job_id: int) -> None:
        """Mark the run done (distributed) with its `finished_at`, kept if it was finished before;
        the engine calls it before it writes clusters.json, which shows that time."""
        ...

    async def report(self, batch: str) -> dict[str, Any]:
        """Everything clusters.json holds: runs, persons, and every photo with its faces."""
        ...

    async def active_cluster_jobs(self) -> list[dict[str, Any]]: ...
