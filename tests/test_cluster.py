"""The cluster engine end to end: real daemon, real files, real SQLite, stand-in InsightFace pack."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dropflow.daemon.core import config as config_mod
from dropflow.daemon.core.config import Config
from dropflow.daemon.core.jobs import Job
from dropflow.daemon.core.store import Store
from tests import onnx_standins as st
from tests.conftest import RunningDaemon, running_daemon, write_config

# photo -> identities in it (identity 2 is seen once: noise; 'empty' has no face)
PARTY: dict[str, list[int]] = {
    "a1.jpg": [0],
    "sub/a2.jpg": [0],
    "sub/deeper/a3.png": [0, 3],
    "b1.jpg": [1],
    "b2.jpg": [1, 3],
    "group.jpg": [0, 1],
    "stranger.jpg": [2],
    "empty.jpg": [],
}
OUR_FOLDERS = {"unsorted", "no_faces", "unreadable", "contact_sheets"}


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return st.build_pack(tmp_path_factory.mktemp("insightface"))


def cluster_config(tmp: Path, model_root: Path, params: str = "") -> Config:
    """The spine's test config plus a cluster route whose model root holds the stand-in pack."""
    path = write_config(
        tmp / "proj",
        extra=f"""
  - name: cluster
    folder: cluster
    engine: cluster
    params: {{model_root: "{model_root}"{", " + params if params else ""}}}
""",
    )
    cfg = config_mod.load(path)
    (cfg.paths.inbox / "cluster").mkdir(parents=True, exist_ok=True)
    return cfg


def make_photos(folder: Path, spec: dict[str, list[int]], seed: int = 0) -> None:
    for i, (rel, identities) in enumerate(spec.items()):
        fmt = "PNG" if rel.endswith(".png") else "JPEG"
        st.write_photo(folder / rel, st.layout(identities, seed=seed * 100 + i), fmt=fmt)


def drop_folder(cfg: Config, name: str, spec: dict[str, list[int]], seed: int = 0, extra: Any = None) -> Path:
    """Build the folder elsewhere, then move it in whole (as a copy tool finishing would)."""
    staging = cfg.paths.inbox.parent / "staging" / name
    make_photos(staging, spec, seed)
    if extra:
        extra(staging)
    target = cfg.paths.inbox / "cluster" / name
    os.rename(staging, target)
    return target


async def finished(d: RunningDaemon, n: int, timeout: float = 60) -> list[Job]:
    return await d.wait_status(n, ("succeeded", "failed", "cancelled"), timeout=timeout)


def person_folders(batch_dir: Path) -> dict[str, set[str]]:
    return {
        p.name: {f.name for f in p.iterdir() if not f.name.startswith(".")}
        for p in batch_dir.iterdir()
        if p.is_dir() and p.name not in OUR_FOLDERS and not p.name.startswith(".")
    }


def identity_of_folder(photos: set[str], spec: dict[str, list[int]]) -> int:
    """The one identity every photo in a person folder shows."""
    by_name = {Path(k).name: v for k, v in spec.items()}
    common = set.intersection(*(set(by_name[p]) for p in photos))
    assert len(common) == 1, (photos, common)
    return common.pop()


def assert_sorted(batch_dir: Path, spec: dict[str, list[int]]) -> dict[int, str]:
    """Every identity seen twice or more has one folder with exactly its photos; returns identity -> folder."""
    folders = person_folders(batch_dir)
    owner = {identity_of_folder(photos, spec): name for name, photos in folders.items()}
    assert len(owner) == len(folders), "one folder per identity"
    seen: dict[int, int] = {}
    for ids in spec.values():
        for i in ids:
            seen[i] = seen.get(i, 0) + 1
    assert set(owner) == {i for i, n in seen.items() if n >= 2}
    for ident, name in owner.items():
        expected = {Path(k).name for k, ids in spec.items() if ident in ids}
        assert folders[name] == expected, (ident, name)
    return owner


async def test_folder_is_sorted_per_person_and_every_photo_is_accounted_for(
    tmp_path: Path, model_root: Path
) -> None:
    cfg = cluster_config(tmp_path, model_root)

    def extras(folder: Path) -> None:
        (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a photo")
        (folder / "notes.txt").write_text("not an image: left alone")
        st.write_photo(folder / "общие" / "shared.jpg", st.layout([0], seed=77))

    unit = drop_folder(cfg, "party", PARTY, extra=extras)
    async with running_daemon(cfg) as d:
        [job] = await finished(d, 1)
    assert job.status == "succeeded", job.error
    out = cfg.paths.outputs / "cluster" / "party"
    owner = assert_sorted(out, PARTY)
    # a photo of two persons is copied into both folders, and the original is gone
    assert "group.jpg" in person_folders(out)[owner[0]] and "group.jpg" in person_folders(out)[owner[1]]
    assert (out / owner[0] / "group.jpg").read_bytes() == (out / owner[1] / "group.jpg").read_bytes()
    assert [p.name for p in (out / "unsorted").iterdir()] == ["stranger.jpg"]
    assert [p.name for p in (out / "no_faces").iterdir()] == ["empty.jpg"]
    assert [p.name for p in (out / "unreadable").iterdir()] == ["broken.jpg"]
    # the inbox: photos gone, emptied folders gone, the excluded folder and the non-image left
    left = sorted(p.relative_to(unit).as_posix() for p in unit.rglob("*"))
    assert left == ["notes.txt", "общие", "общие/shared.jpg"]
    assert not (cfg.paths.archive / "cluster").exists(), "a folder unit is moved by the engine, not archived"
    report = json.loads((out / "clusters.json").read_text())
    photos = report["photos"]
    assert set(photos) == {f"party/{k}" for k in PARTY} | {"party/broken.jpg"}
    assert photos["party/group.jpg"]["persons"] == sorted([owner[0], owner[1]])
    assert sorted(photos["party/group.jpg"]["files"]) == sorted(
        [f"{owner[0]}/group.jpg", f"{owner[1]}/group.jpg"]
    )
    assert photos["party/stranger.jpg"]["status"] == "unsorted"
    assert photos["party/stranger.jpg"]["faces"][0]["person"] is None
    assert (
        photos["party/broken.jpg"]["status"] == "unreadable"
        and "broken.jpg" in photos["party/broken.jpg"]["error"]
    )
    for key, identities in PARTY.items():
        entry = photos[f"party/{key}"]
        assert len(entry["faces"]) == len(identities)
        assert all(len(f["box"]) == 4 and f["score"] > 0.5 for f in entry["faces"])
    assert {"path": "общие/", "reason": "excluded folder"} in report["runs"][0]["skipped"]
    assert {p["folder"] for p in report["persons"]} == set(owner.values())
    # pictures: a contact sheet per person and one overview, all real JPEGs
    sheets = {p.name for p in (out / "contact_sheets").iterdir()}
    assert sheets == {f"{f}.jpg" for f in owner.values()} | {"overview.jpg"}
    from PIL import Image

    with Image.open(out / "contact_sheets" / "overview.jpg") as im:
        assert im.format == "JPEG" and im.width > 96
    assert job.usage["photos"] == 9 and job.usage["new_persons"] == 3
    assert Path(job.outputs[0]) == out / "clusters.json"


async def test_later_photos_join_known_persons_and_renamed_folders_keep_their_name(
    tmp_path: Path, model_root: Path
) -> None:
    cfg = cluster_config(tmp_path, model_root)
    drop_folder(cfg, "party", PARTY)
    out = cfg.paths.outputs / "cluster" / "party"
    async with running_daemon(cfg) as d:
        await finished(d, 1)
        owner = assert_sorted(out, PARTY)
        os.rename(out / owner[0], out / "Alice")  # the user names person 0 by hand
        before = {
            p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.jpg") if "contact" not in str(p)
        }
        # a second drop into the same batch: person 0 again, person 1 again, and a new face (4) twice
        later = {"c1.jpg": [0], "c2.jpg": [4], "c3.jpg": [4, 1], "c4.jpg": [2]}
        drop_folder(cfg, "party", later, seed=5)
        jobs = await finished(d, 2)
    assert [j.status for j in jobs] == ["succeeded", "succeeded"], jobs[1].error
    folders = person_folders(out)
    assert "Alice" in folders and owner[0] not in folders
    assert "c1.jpg" in folders["Alice"] and "group.jpg" in folders["Alice"]
    assert "c3.jpg" in folders[owner[1]]
    new = set(folders) - {"Alice", owner[1], owner[3]}
    assert len(new) == 1 and folders[new.pop()] == {"c2.jpg", "c3.jpg"}
    # earlier photos were not touched: same inode, same mtime, same place
    for p, stat in before.items():
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stat, p
    # the stranger seen once in each run stays unsorted (earlier photos are not re-clustered)
    assert sorted(p.name for p in (out / "unsorted").iterdir()) == ["c4.jpg", "stranger.jpg"]
    assert jobs[1].usage["joined"] == 2 and jobs[1].usage["new_persons"] == 1
    report = json.loads((out / "clusters.json").read_text())
    assert len(report["runs"]) == 2 and len(report["photos"]) == len(PARTY) + len(later)
    assert report["photos"]["party/a1.jpg"]["persons"] == ["Alice"]
    assert (out / "contact_sheets" / "Alice.jpg").exists() and not (
        out / "contact_sheets" / f"{owner[0]}.jpg"
    ).exists()


async def test_into_adds_a_folder_to_an_existing_batch(tmp_path: Path, model_root: Path) -> None:
    cfg = cluster_config(tmp_path, model_root)
    drop_folder(cfg, "party", {"a.jpg": [5], "b.jpg": [5]})

    def into(folder: Path) -> None:
        (folder / "dropflow.yaml").write_text("params: {into: party}\n")

    async with running_daemon(cfg) as d:
        await finished(d, 1)
        drop_folder(cfg, "more", {"c.jpg": [5]}, seed=3, extra=into)
        jobs = await finished(d, 2)
    assert all(j.status == "succeeded" for j in jobs)
    out = cfg.paths.outputs / "cluster"
    assert not (out / "more").exists()
    assert person_folders(out / "party") == {"person_001": {"a.jpg", "b.jpg", "c.jpg"}}


async def test_a_photo_showing_one_person_twice_never_puts_both_faces_in_that_person(
    tmp_path: Path, model_root: Path
) -> None:
    cfg = cluster_config(tmp_path, model_root)
    spec = {"one.jpg": [6], "two.jpg": [6], "mirror.jpg": [6, 6], "three.jpg": [6]}
    drop_folder(cfg, "twins", spec)
    async with running_daemon(cfg) as d:
        [job] = await finished(d, 1)
    assert job.status == "succeeded", job.error
    out = cfg.paths.outputs / "cluster" / "twins"
    report = json.loads((out / "clusters.json").read_text())
    mirror = report["photos"]["twins/mirror.jpg"]
    assert [f["person"] for f in mirror["faces"]].count("person_001") == 1
    assert person_folders(out) == {"person_001": {"one.jpg", "two.jpg", "three.jpg", "mirror.jpg"}}


def _zip(path: Path, entries: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # a symbolic link
            zf.writestr(info, "../../etc/passwd")
    return path


async def test_zip_is_unpacked_sorted_and_archived(tmp_path: Path, model_root: Path) -> None:
    cfg = cluster_config(tmp_path, model_root)
    entries = {f"trip/{k}": st.encode(st.layout(v, seed=i)) for i, (k, v) in enumerate(PARTY.items())}
    entries["trip/readme.md"] = b"ignored"
    staging = tmp_path / "trip.zip"
    _zip(staging, entries)
    os.rename(staging, cfg.paths.inbox / "cluster" / "trip.zip")
    async with running_daemon(cfg) as d:
        [job] = await finished(d, 1)
        assert job.status == "succeeded", job.error
        await asyncio.sleep(0.3)
        job = await d.store.get(job.id)  # type: ignore[assignment]
    out = cfg.paths.outputs / "cluster" / "trip"
    assert_sorted(out, {k: v for k, v in PARTY.items()})
    assert not (cfg.paths.inbox / "cluster" / "trip.zip").exists()
    assert job.archived_path and Path(job.archived_path).read_bytes()[:2] == b"PK"
    assert not list((cfg.paths.state / "cluster").iterdir()), "the unpacked copy and the chunks are gone"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert "trip.zip/trip/a1.jpg" in json.loads((out / "clusters.json").read_text())["photos"]


@pytest.mark.parametrize(
    ("entries", "links", "needle"),
    [
        ({"../evil.jpg": b"x"}, (), "climbs out"),
        ({"/abs.jpg": b"x"}, (), "absolute"),
        ({}, ("trip/link.jpg",), "link"),
        ({"bomb.jpg": b"\0" * 4_000_000}, (), "expands"),
    ],
)
async def test_unsafe_zips_fail_alone_and_stay_with_the_reason(
    tmp_path: Path, model_root: Path, entries: dict[str, bytes], links: tuple[str, ...], needle: str
) -> None:
    cfg = cluster_config(tmp_path, model_root)
    bad = _zip(tmp_path / "bad.zip", {**entries, "ok.jpg": st.encode(st.layout([1], seed=1))}, links)
    target = cfg.paths.inbox / "cluster" / "bad.zip"
    os.rename(bad, target)
    async with running_daemon(cfg) as d:
        [job] = await finished(d, 1)
    assert job.status == "failed" and job.error_kind == "input" and job.attempts == 1
    assert needle in (job.error_message or "")
    assert target.exists() and (target.parent / "bad.zip.error.txt").exists()
    assert not (tmp_path / "proj" / "outputs" / "evil.jpg").exists() and not (tmp_path / "evil.jpg").exists()
    assert not list((cfg.paths.outputs / "cluster").rglob("*.jpg"))
    assert not list(cfg.paths.state.rglob("*.jpg")), "nothing unpacked is left behind"


async def test_missing_model_fails_at_once_and_moves_nothing(tmp_path: Path) -> None:
    cfg = cluster_config(tmp_path, tmp_path / "no-models-here")
    unit = drop_folder(cfg, "party", {"a.jpg": [1], "b.jpg": [1]})
    async with running_daemon(cfg) as d:
        [job] = await finished(d, 1)
        await asyncio.sleep(0.5)
        assert len(await d.jobs()) == 1
    assert job.status == "failed" and job.error_kind == "model_missing" and job.attempts == 1
    assert str(tmp_path / "no-models-here" / "models" / "buffalo_l") in (job.error_message or "")
    assert "downloads it" in (job.error_hint or "") and "non-commercial" in (job.error_hint or "")
    assert sorted(p.name for p in unit.iterdir()) == ["a.jpg", "b.jpg"]
    assert (unit.parent / "party.error.txt").exists()


async def test_excluded_unit_and_empty_unit_do_nothing(tmp_path: Path, model_root: Path) -> None:
    cfg = cluster_config(tmp_path, model_root, params="exclude_folders: [общие, Private]")
    drop_folder(cfg, "private", {"a.jpg": [1], "b.jpg": [1]})
    async with running_daemon(cfg) as d:
        [job] = await finished(d, 1)
    assert job.status == "succeeded" and "excluded" in job.progress_message
    assert len(list((cfg.paths.inbox / "cluster" / "private").iterdir())) == 2
    assert not (cfg.paths.outputs / "cluster" / "private").exists()


def test_persons_cli_lists_renames_and_merges(
    tmp_path: Path, model_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dropflow.daemon.cli import main
    from dropflow.daemon.core.store.persons import SqlitePersons

    cfg = cluster_config(tmp_path, model_root)
    drop_folder(cfg, "party", PARTY)

    async def run() -> None:
        async with running_daemon(cfg) as d:
            await finished(d, 1)

    asyncio.run(run())
    out = cfg.paths.outputs / "cluster" / "party"
    owner = assert_sorted(out, PARTY)
    conf = ["--config", str(cfg.source)]
    assert main([*conf, "persons"]) == 0 and "party" in capsys.readouterr().out
    assert main([*conf, "persons", "party", "--json"]) == 0
    listed = {p["folder"]: p for p in json.loads(capsys.readouterr().out)}
    assert set(listed) == set(owner.values())
    id0, id1 = listed[owner[0]]["id"], listed[owner[1]]["id"]
    assert listed[owner[0]]["photos"] == 4

    assert main([*conf, "persons", "rename", "party", str(id0), "Alice"]) == 0
    assert (out / "Alice").is_dir() and not (out / owner[0]).exists()
    assert (out / "contact_sheets" / "Alice.jpg").exists()
    assert json.loads((out / "clusters.json").read_text())["photos"]["party/a1.jpg"]["persons"] == ["Alice"]
    assert main([*conf, "persons", "rename", "party", str(id1), "unsorted"]) == 1
    assert "reserved" in capsys.readouterr().err
    assert main([*conf, "persons", "rename", "party", "999", "Bob"]) == 4

    # merging person 1 into Alice: the group photo they share is kept once
    alice_before = person_folders(out)["Alice"]
    assert main([*conf, "persons", "merge", "party", str(id0), str(id1)]) == 0
    merged = person_folders(out)
    assert owner[1] not in merged
    assert merged["Alice"] == alice_before | {"b1.jpg", "b2.jpg"}
    assert not (out / "contact_sheets" / f"{owner[1]}.jpg").exists()

    async def check() -> None:
        async with Store.open(cfg.paths.database) as store:
            people = {p.folder: p for p in await SqlitePersons(store).persons("party", with_counts=True)}
            # the group photo had a face of each: both are Alice's now
            assert owner[1] not in people and people["Alice"].photos == 6 and people["Alice"].faces == 7

    asyncio.run(check())
    report = json.loads((out / "clusters.json").read_text())
    assert report["photos"]["party/b1.jpg"]["files"] == ["Alice/b1.jpg"]
    assert report["photos"]["party/group.jpg"]["persons"] == ["Alice"]
    assert main([*conf, "persons", "nosuchbatch"]) == 4
    shutil.rmtree(out / "Alice")  # nothing below needs it; the database still knows the person


async def test_pause_mid_detection_resumes_without_detecting_twice(
    tmp_path: Path, model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from dropflow.engine.cluster import engine as cluster

    monkeypatch.setattr(cluster, "DETECT_CHUNK", 2)
    analysed: list[str] = []
    gate, holding = threading.Event(), threading.Event()
    real = cluster._detect_chunk

    def counting(model: Any, items: Any, *rest: Any) -> int:
        if len(analysed) >= 4:
            holding.set()
            gate.wait(10)  # hold the job in detection until the test has asked for the pause
        done = real(model, items, *rest)  # it may stop early once the pause is seen
        analysed.extend(k for k, _ in items[:done])
        return done

    monkeypatch.setattr(cluster, "_detect_chunk", counting)
    cfg = cluster_config(tmp_path, model_root)
    spec = {f"p{i:02d}.jpg": [i % 3] for i in range(12)}
    drop_folder(cfg, "party", spec)
    async with running_daemon(cfg) as d:
        [job] = await d.wait_status(1, ("running",))
        assert await asyncio.to_thread(holding.wait, 20)
        assert await d.store.pause(job.id) == "requested"
        gate.set()
        [job] = await d.wait_status(1, ("paused",), timeout=20)
        assert job.attempts == 0
        chunks = list((cfg.paths.state / "cluster" / f"job-{job.id}" / "detections").glob("chunk-*.npz"))
        assert chunks, "detection results so far are kept for the resume"
        assert await d.store.resume(job.id) == "resumed"
        [job] = await finished(d, 1)
    assert job.status == "succeeded", job.error
    assert sorted(analysed) == sorted(spec), "every photo analysed exactly once across the pause"
    assert len(analysed) > 4
    assert_sorted(cfg.paths.outputs / "cluster" / "party", spec)


def test_submitted_folder_is_copied_into_the_batch_and_left_in_place(
    tmp_path: Path, model_root: Path
) -> None:
    from dropflow.daemon.cli import main

    cfg = cluster_config(tmp_path, model_root)
    outside = tmp_path / "camera"
    make_photos(outside, {"x1.jpg": [7], "x2.jpg": [7], "sub/x3.jpg": [8], "x4.jpg": [8]})
    before = sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*"))
    assert (
        main(
            ["--config", str(cfg.source), "submit", str(outside), "--engine", "cluster", "--set", "into=trip"]
        )
        == 0
    )

    async def run() -> list[Job]:
        async with running_daemon(cfg) as d:
            return await finished(d, 1)

    [job] = asyncio.run(run())
    assert job.status == "succeeded" and job.source == "submit", job.error
    assert sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*")) == before, (
        "originals untouched"
    )
    folders = person_folders(cfg.paths.outputs / "cluster" / "trip")
    assert sorted(folders.values(), key=sorted) == [{"x1.jpg", "x2.jpg"}, {"x3.jpg", "x4.jpg"}]
    copy = next(iter((cfg.paths.outputs / "cluster" / "trip").rglob("x1.jpg")))
    assert copy.stat().st_ino != (outside / "x1.jpg").stat().st_ino, "a copy, not a hard link to the original"
