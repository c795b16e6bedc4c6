"""Planning: who is who, and where every photo goes.

Faces join the batch's known persons when close to a person's mean, the rest are clustered; the
result is one `Plan`, which the repository commits before any file moves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dropflow.engine.cluster.collect import Source
from dropflow.engine.cluster.params import NO_FACES, UNREADABLE, UNSORTED, ClusterParams

if TYPE_CHECKING:
    from dropflow.daemon.core.persons import Person, Plan
    from dropflow.engine.cluster.faces import PhotoResult


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
            # person_001 is the largest new person; ties by first appearance. A label without
            # faces is no person (the clustering hands out none; a person of 0 faces must not be)
            live = [c for c in range(len(sizes)) if sizes[c] > 0]
            for rank, label in enumerate(sorted(live, key=lambda c: (-sizes[c], first[c]))):
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
