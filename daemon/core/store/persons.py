"""Persons of cluster batches: the repository over the daemon's store connection (SQLite or
PostgreSQL: the SQL here is what both accept).

Implements `dropflow.daemon.core.persons.PersonsRepository`; see there for the tables.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dropflow.daemon.core.persons import (
    ACTIVE_JOB,
    JournalEntry,
    Person,
    Plan,
)

if TYPE_CHECKING:
    from dropflow.daemon.core.store.store import Store


class SqlitePersons:
    """Reads and writes the cluster tables through the store's connection and write lock
    (named for the store it was first written for; it serves both)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    # --- persons ------------------------------------------------------------------------------

    async def persons(self, batch: str, *, with_counts: bool = False) -> list[Person]:
        """The batch's persons (merged ones excluded), oldest first."""
        cur = await self.db.execute(
            "SELECT id, batch, seq, name, mean, faces FROM cluster_persons"
            " WHERE batch = ? AND merged_into IS NULL ORDER BY seq",
            (batch,),
        )
        out = [
            Person(r[0], r[1], r[2], r[3], np.frombuffer(r[4], dtype=np.float32).copy(), r[5])
            for r in await cur.fetchall()
        ]
        if with_counts and out:
            cur = await self.db.execute(
                "SELECT f.person_id, COUNT(DISTINCT f.photo_id) FROM cluster_faces f"
                " JOIN cluster_persons p ON p.id = f.person_id WHERE p.batch = ? GROUP BY f.person_id",
                (batch,),
            )
            counts = {r[0]: r[1] for r in await cur.fetchall()}
            for p in out:
                p.photos = counts.get(p.id, 0)
        return out

    async def next_seq(self, batch: str) -> int:
        """The number the batch's next new person gets (`person_<seq>`)."""
        cur = await self.db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM cluster_persons WHERE batch = ?", (batch,)
        )
        row = await cur.fetchone()
        return int(row[0]) + 1 if row else 1

    async def person(self, batch: str, person_id: int) -> Person | None:
        return next((p for p in await self.persons(batch) if p.id == person_id), None)

    async def batches(self) -> list[dict[str, Any]]:
        cur = await self.db.execute(
            "SELECT r.batch, COUNT(*), MAX(r.created_at),"
            " (SELECT COUNT(*) FROM cluster_persons p WHERE p.batch = r.batch AND p.merged_into IS NULL),"
            " (SELECT COUNT(*) FROM cluster_photos ph WHERE ph.batch = r.batch)"
            " FROM cluster_runs r GROUP BY r.batch ORDER BY r.batch"
        )
        return [
            {"batch": r[0], "runs": r[1], "last_run": r[2], "persons": r[3], "photos": r[4]}
            for r in await cur.fetchall()
        ]

    async def rename(self, person_id: int, name: str | None) -> None:
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE cluster_persons SET name = ?, updated_at = ? WHERE id = ?",
                (name, time.time(), person_id),
            )

    async def merge(self, keep: Person, gone: Person, files: dict[int, str | None]) -> None:
        """Fold `gone` into `keep`: its faces (with their new file names), its mean, its name."""
        total = keep.faces + gone.faces
        mean = (keep.mean * keep.faces + gone.mean * gone.faces) / max(total, 1)
        now = time.time()
        async with self.store.transaction() as db:
            await db.executemany(
                "UPDATE cluster_faces SET person_id = ?, file = ? WHERE id = ?",
                [(keep.id, f, face_id) for face_id, f in files.items()],
            )
            await db.execute(
                "UPDATE cluster_persons SET mean = ?, faces = ?, updated_at = ? WHERE id = ?",
                (mean.astype(np.float32).tobytes(), total, now, keep.id),
            )
            await db.execute(
                "UPDATE cluster_persons SET merged_into = ?, faces = 0, updated_at = ? WHERE id = ?",
                (keep.id, now, gone.id),
            )

    async def faces_of(self, person_id: int) -> list[dict[str, Any]]:
        cur = await self.db.execute(
            "SELECT f.id, f.file, f.photo_id, ph.job_id, ph.photo FROM cluster_faces f"
            " JOIN cluster_photos ph ON ph.id = f.photo_id WHERE f.person_id = ? ORDER BY f.id",
            (person_id,),
        )
        return [
            {"id": r[0], "file": r[1], "photo_id": r[2], "job_id": r[3], "photo": r[4]}
            for r in await cur.fetchall()
        ]

    async def thumbs(self, person_id: int, limit: int) -> list[bytes]:
        cur = await self.db.execute(
            "SELECT thumb FROM cluster_faces WHERE person_id = ? AND thumb IS NOT NULL"
            " ORDER BY score DESC, id LIMIT ?",
            (person_id, limit),
        )
        return [bytes(r[0]) for r in await cur.fetchall()]

    async def prune_thumbs(self, person_ids: Iterable[int], keep: int) -> None:
        """Keep the crops of each person's `keep` best faces (what a contact sheet shows)."""
        async with self.store.transaction() as db:
            await self._prune(db, person_ids, keep)

    @staticmethod
    async def _prune(db: Any, person_ids: Iterable[int], keep: int) -> None:
        for pid in person_ids:
            await db.execute(
                "UPDATE cluster_faces SET thumb = NULL WHERE person_id = ? AND thumb IS NOT NULL AND id NOT IN"
                " (SELECT id FROM cluster_faces WHERE person_id = ? AND thumb IS NOT NULL"
                " ORDER BY score DESC, id LIMIT ?)",
                (pid, pid, keep),
            )

    # --- runs ---------------------------------------------------------------------------------

    async def phase(self, job_id: int) -> str | None:
        cur = await self.db.execute("SELECT phase FROM cluster_runs WHERE job_id = ?", (job_id,))
        row = await cur.fetchone()
        return str(row[0]) if row else None

    async def unfinished_runs(self, batch: str) -> list[int]:
        cur = await self.db.execute(
            "SELECT job_id FROM cluster_runs WHERE batch = ? AND phase != 'done'", (batch,)
        )
        return [int(r[0]) for r in await cur.fetchall()]

    async def commit(self, plan: Plan, keep_thumbs: int) -> dict[int, int]:
        """Write a run's plan in one transaction; returns {person ref: person id}."""
        now = time.time()
        refs: dict[int, int] = {}
        async with self.store.transaction() as db:
            # ids are handed out below and inserted in bulk: no other writer may take one meanwhile
            await self.store._exclusive(db, "cluster_ids")
            cur = await db.execute("SELECT COALESCE(MAX(id), 0) FROM cluster_persons")
            next_person = int((await cur.fetchone() or (0,))[0]) + 1
            new_rows, updates = [], []
            for p in plan.persons:
                blob = np.asarray(p.mean, dtype=np.float32).tobytes()
                if p.ref > 0:
                    refs[p.ref] = p.ref
                    updates.append((blob, p.faces, now, p.ref))
                else:
                    refs[p.ref] = next_person
                    new_rows.append((next_person, plan.batch, p.seq, blob, p.faces, now, now))
                    next_person += 1
            await db.executemany(
                "INSERT INTO cluster_persons(id, batch, seq, mean, faces, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?)",
                new_rows,
            )
            await db.executemany(
                "UPDATE cluster_persons SET mean = ?, faces = ?, updated_at = ? WHERE id = ?", updates
            )
            # the write lock is held: ids can be handed out here and inserted in bulk
            cur = await db.execute("SELECT COALESCE(MAX(id), 0) FROM cluster_photos")
            next_photo = int((await cur.fetchone() or (0,))[0]) + 1
            photo_rows, face_rows = [], []
            # crops only for each person's best new faces: the rest would be pruned right away
            ranked: dict[int, list[tuple[float, int]]] = {}
            for ph in plan.photos:
                for f in ph.faces:
                    if f.person is not None and f.thumb:
                        ranked.setdefault(f.person, []).append((-float(f.score), id(f)))
            keep = {key for faces in ranked.values() for _, key in sorted(faces)[:keep_thumbs]}
            for ph in plan.photos:
                w, h = ph.size or (None, None)
                photo_rows.append(
                    (
                        next_photo,
                        plan.job_id,
                        plan.batch,
                        ph.photo,
                        ph.source,
                        ph.status,
                        json.dumps(ph.dests, ensure_ascii=False),
                        w,
                        h,
                        ph.error,
                    )
                )
                for f in ph.faces:
                    person = refs[f.person] if f.person is not None else None
                    face_rows.append(
                        (
                            next_photo,
                            f.idx,
                            json.dumps([round(float(v), 1) for v in f.box]),
                            round(float(f.score), 4),
                            person,
                            f.file,
                            f.thumb if id(f) in keep else None,
                        )
                    )
                next_photo += 1
            await db.executemany(
                "INSERT INTO cluster_photos(id, job_id, batch, photo, source, status, dests, width, height, error)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                photo_rows,
            )
            await db.executemany(
                "INSERT INTO cluster_faces(photo_id, idx, box, score, person_id, file, thumb) VALUES (?,?,?,?,?,?,?)",
                face_rows,
            )
            await self._prune(db, refs.values(), keep_thumbs)
            await db.execute(
                "INSERT INTO cluster_runs(job_id, batch, phase, source, summary, created_at)"
                " VALUES (?, ?, 'distribute', ?, ?, ?)",
                (plan.job_id, plan.batch, plan.source, json.dumps(plan.summary, ensure_ascii=False), now),
            )
        return refs

    async def journal(self, job_id: int) -> list[JournalEntry]:
        cur = await self.db.execute(
            "SELECT id, photo, source, status, dests FROM cluster_photos WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return [JournalEntry(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in await cur.fetchall()]

    async def run_info(self, job_id: int) -> dict[str, Any]:
        cur = await self.db.execute(
            "SELECT batch, phase, source, summary FROM cluster_runs WHERE job_id = ?", (job_id,)
        )
        row = await cur.fetchone()
        if row is None:
            return {}
        return {"batch": row[0], "phase": row[1], "source": row[2], "summary": json.loads(row[3])}

    async def record_outcomes(self, changes: Sequence[tuple[int, str, list[str], str | None]]) -> None:
        """Photos whose distribution differed from the plan: (photo id, status, dests, error).

        A destination taken by a different file in the meantime got another name: the faces'
        file names follow it.
        """
        if not changes:
            return
        async with self.store.transaction() as db:
            for photo_id, status, dests, error in changes:
                cur = await db.execute("SELECT dests FROM cluster_photos WHERE id = ?", (photo_id,))
                row = await cur.fetchone()
                before = json.loads(row[0]) if row else []
                await db.execute(
                    "UPDATE cluster_photos SET status = ?, dests = ?, error = ? WHERE id = ?",
                    (status, json.dumps(dests, ensure_ascii=False), error, photo_id),
                )
                for old, new in zip(before, dests, strict=False):
                    if old != new:
                        await db.execute(
                            "UPDATE cluster_faces SET file = ? WHERE photo_id = ? AND file = ?",
                            (new.rsplit("/", 1)[-1], photo_id, old.rsplit("/", 1)[-1]),
                        )

    async def finish(self, job_id: int) -> None:
        """Mark the run done; its first `finished_at` stays (a resumed job finishes it again)."""
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE cluster_runs SET phase = 'done', finished_at = COALESCE(finished_at, ?) WHERE job_id = ?",
                (time.time(), job_id),
            )

    # --- the batch report -----------------------------------------------------------------------

    async def report(self, batch: str) -> dict[str, Any]:
        """Everything clusters.json holds: runs, persons, and every photo with its faces."""
        persons = await self.persons(batch, with_counts=True)
        folder = {p.id: p.folder for p in persons}
        cur = await self.db.execute(
            "SELECT id, merged_into FROM cluster_persons WHERE batch = ? AND merged_into IS NOT NULL",
            (batch,),
        )
        merged = {r[0]: r[1] for r in await cur.fetchall()}
        cur = await self.db.execute(
            "SELECT job_id, source, summary, created_at, finished_at FROM cluster_runs WHERE batch = ? ORDER BY job_id",
            (batch,),
        )
        runs = [
            {"job": r[0], "source": r[1], **json.loads(r[2]), "started_at": r[3], "finished_at": r[4]}
            for r in await cur.fetchall()
        ]
        cur = await self.db.execute(
            "SELECT f.photo_id, f.box, f.score, f.person_id, f.file FROM cluster_faces f"
            " JOIN cluster_photos ph ON ph.id = f.photo_id WHERE ph.batch = ? ORDER BY f.photo_id, f.idx",
            (batch,),
        )
        faces: dict[int, list[dict[str, Any]]] = {}
        for pid, box, score, person, file in await cur.fetchall():
            while person in merged:  # follow merges to the surviving person
                person = merged[person]
            faces.setdefault(pid, []).append(
                {
                    "box": json.loads(box),
                    "score": score,
                    "person": folder.get(person) if person else None,
                    "person_id": person,
                    "file": f"{folder[person]}/{file}" if person in folder and file else None,
                }
            )
        cur = await self.db.execute(
            "SELECT id, job_id, photo, status, dests, width, height, error FROM cluster_photos"
            " WHERE batch = ? ORDER BY id",
            (batch,),
        )
        unit = {r["job"]: r.get("input", "").replace("\\", "/").rsplit("/", 1)[-1] for r in runs}
        photos: dict[str, dict[str, Any]] = {}
        for pid, job_id, photo, status, dests, w, h, error in await cur.fetchall():
            fs = faces.get(pid, [])
            files = sorted({f["file"] for f in fs if f["file"]}) if status == "person" else json.loads(dests)
            # keyed by where it was dropped: "<folder or ZIP>/<path inside>"
            key = f"{unit.get(job_id) or job_id}/{photo}"
            if key in photos:
                key = f"{key} (job {job_id})"
            photos[key] = {
                "job": job_id,
                "status": status,
                "persons": sorted({f["person"] for f in fs if f["person"]}),
                "files": files,
                "size": [w, h] if w else None,
                "faces": [{k: v for k, v in f.items() if k not in ("person_id", "file")} for f in fs],
                **({"error": error} if error else {}),
            }
        return {
            "persons": [
                {"id": p.id, "folder": p.folder, "name": p.name, "faces": p.faces, "photos": p.photos}
                for p in persons
            ],
            "runs": runs,
            "photos": photos,
        }

    # --- jobs ---------------------------------------------------------------------------------

    async def active_cluster_jobs(self) -> list[dict[str, Any]]:
        cur = await self.db.execute(
            "SELECT id, status, batch, input_path, params FROM jobs WHERE engine = 'cluster' AND status IN (?,?,?,?)",
            ACTIVE_JOB,
        )
        return [
            {"id": r[0], "status": r[1], "batch": r[2], "input_path": r[3], "params": json.loads(r[4])}
            for r in await cur.fetchall()
        ]
