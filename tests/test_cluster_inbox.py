"""The cluster engine and the inbox: what a job may read, what it leaves, and what it tells.

Links out of the folders a job may read fail it (never read); links within the inbox are followed.
What a run leaves in a dropped folder (non-photos, `dropflow.yaml`, excluded folders) is no new
drop. Job-level warnings (a CUDA fallback, a refused rename) are job events that name the pack.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dropflow.daemon.core.jobs import Job
from dropflow.engine.cluster.engine import ClusterEngine
from dropflow.engine.cluster.faces import FaceModel
from dropflow.engine.errors import ModelMissingError
from tests import onnx_standins as st
from tests.conftest import RunningDaemon, running_daemon
from tests.test_cluster import PARTY, assert_sorted, cluster_config, drop_folder, finished, person_folders


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return st.build_pack(tmp_path_factory.mktemp("insightface"))


@pytest.fixture(scope="session")
def sc_root(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in models as a `buffalo_sc` pack, under the names insightface gives that pack's files."""
    root = tmp_path_factory.mktemp("insightface-sc")
    pack = root / "models" / "buffalo_sc"
    pack.mkdir(parents=True)
    shutil.copyfile(model_root / "models" / "buffalo_l" / "det_10g.onnx", pack / "det_500m.onnx")
    shutil.copyfile(model_root / "models" / "buffalo_l" / "w600k_r50.onnx", pack / "w600k_mbf.onnx")
    return root


async def warnings_of(d: RunningDaemon, job_id: int) -> list[str]:
    return [e.message for e in await d.store.events(job_id) if e.kind == "warning"]


# --- links ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["photo", "folder"])
async def test_a_link_out_of_the_inbox_fails_the_job_and_is_never_read(
    tmp_path: Path, model_root: Path, kind: str
) -> None:
    cfg = cluster_config(tmp_path, model_root)
    outside = tmp_path / "private"
    st.write_photo(outside / "secret.jpg", st.layout([4], seed=40))
    st.write_photo(outside / "other.jpg", st.layout([4], seed=41))
    link = "secret.jpg" if kind == "photo" else "album"
    target = outside / "secret.jpg" if kind == "photo" else outside

    def add_link(folder: Path) -> None:
        os.symlink(target, folder / link)

    unit = drop_folder(cfg, "party", {"a.jpg": [1], "b.jpg": [1]}, extra=add_link)
    before = sorted(p.relative_to(unit).as_posix() for p in unit.rglob("*"))
    async with running_daemon(cfg) as d:
        [job] = await finished(d, 1)
    assert job.status == "failed" and job.error_kind == "input" and job.attempts == 1, job.error
    message = job.error_message or ""
    assert str(unit / link) in message and str(target) in message, message
    assert sorted(p.relative_to(unit).as_posix() for p in unit.rglob("*")) == before, "nothing moved"
    assert (unit.parent / "party.error.txt").exists()
    assert not list((cfg.paths.outputs / "cluster").rglob("*.jpg")), "nothing filed, nothing read"
    assert sorted(p.name for p in outside.iterdir()) == ["other.jpg", "secret.jpg"]


def test_a_photo_that_becomes_a_link_after_collection_is_not_read(tmp_path: Path, model_root: Path) -> None:
    """Detection checks each photo again right before it opens it (and the filing before it moves it)."""
    from dropflow.daemon.core.persons import JournalEntry
    from dropflow.engine.cluster.distribute import apply_entry
    from dropflow.engine.cluster.faces import DetectOptions, detect_photos
    from dropflow.engine.errors import InputError
    from dropflow.engine.files import check_inside

    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    st.write_photo(outside / "secret.jpg", st.layout([4], seed=40))
    inbox.mkdir()
    os.symlink(outside / "secret.jpg", inbox / "a.jpg")  # swapped in after collection

    def check(path: Path) -> None:
        check_inside(path, inbox, what="photo")

    model = FaceModel.load(model_root)
    with pytest.raises(InputError, match="outside the inbox"):
        list(detect_photos(model, [("a.jpg", inbox / "a.jpg")], DetectOptions(), check=check))
    entry = JournalEntry(1, "a.jpg", str(inbox / "a.jpg"), "person", ["person_001/a.jpg"])
    with pytest.raises(InputError, match="outside the inbox"):
        apply_entry(entry, tmp_path / "batch", check=check)
    assert not (tmp_path / "batch").exists()


async def test_links_within_the_inbox_are_followed_and_their_targets_stay(
    tmp_path: Path, model_root: Path
) -> None:
    cfg = cluster_config(tmp_path, model_root)
    shared = cfg.paths.inbox / "shared"  # no route's folder: nothing else takes it
    st.write_photo(shared / "b1.jpg", st.layout([1], seed=11))
    st.write_photo(shared / "more" / "b2.jpg", st.layout([1], seed=12))

    def add_links(folder: Path) -> None:
        os.symlink(shared / "b1.jpg", folder / "b1.jpg")
        os.symlink(shared / "more", folder / "more")
        os.symlink(".", folder / "loop")  # not followed: what it leads to is collected anyway

    unit = drop_folder(cfg, "party", {"a1.jpg": [0], "a2.jpg": [0], "b3.jpg": [1]}, extra=add_links)
    async with running_daemon(cfg) as d:
        [job] = await finished(d, 1)
    assert job.status == "succeeded", job.error
    out = cfg.paths.outputs / "cluster" / "party"
    assert sorted(person_folders(out).values(), key=sorted) == [
        {"a1.jpg", "a2.jpg"},
        {"b1.jpg", "b2.jpg", "b3.jpg"},
    ]
    for name in ("b1.jpg", "b2.jpg"):
        filed = next(out.rglob(name))
        assert not filed.is_symlink() and filed.stat().st_ino != next(shared.rglob(name)).stat().st_ino
    # the links went with the drop (the emptied folder is gone); their targets stay where they are
    assert sorted(p.relative_to(shared).as_posix() for p in shared.rglob("*")) == [
        "b1.jpg",
        "more",
        "more/b2.jpg",
    ]
    assert not os.path.lexists(unit)
    skipped = json.loads((out / "clusters.json").read_text())["runs"][0]["skipped"]
    assert {"path": "loop/", "reason": "a link to a folder inside this one"} in skipped


# --- what a run leaves --------------------------------------------------------------------------------


def test_a_folder_is_a_unit_only_with_a_photo_in_it(tmp_path: Path) -> None:
    engine = ClusterEngine()
    empty = tmp_path / "empty"
    empty.mkdir()
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "notes.txt").write_text("x")
    (notes / "dropflow.yaml").write_text("params: {}\n")
    (notes / ".hidden.jpg").write_bytes(b"x")
    (notes / "sub" / "IMG_1.jpg.part").write_bytes(b"x")
    (notes / "общие").mkdir()
    (notes / "общие" / "shared.jpg").write_bytes(b"x")
    deep = tmp_path / "deep"
    (deep / "a" / "b").mkdir(parents=True)
    (deep / "a" / "b" / "IMG_2.JPG").write_bytes(b"x")
    excluded = tmp_path / "Общие"
    excluded.mkdir()
    (excluded / "c.jpg").write_bytes(b"x")
    looped = tmp_path / "looped"
    looped.mkdir()
    os.symlink(looped, looped / "again")
    zipped = tmp_path / "trip.ZIP"
    with zipfile.ZipFile(zipped, "w"):
        pass
    assert engine.inputs_for(empty) is None and engine.inputs_for(notes) is None
    assert engine.inputs_for(excluded) is None, "a unit named like an excluded folder is no unit"
    assert engine.inputs_for(looped) is None
    assert engine.inputs_for(deep) == [deep] and engine.inputs_for(zipped) == [zipped]
    assert engine.inputs_for(notes / "notes.txt") is None


async def test_what_a_run_leaves_in_the_folder_stays_and_starts_no_job(
    tmp_path: Path, model_root: Path
) -> None:
    cfg = cluster_config(tmp_path, model_root)

    def extras(folder: Path) -> None:
        (folder / "notes.txt").write_text("not an image: left alone")
        (folder / "dropflow.yaml").write_text("params: {det_threshold: 0.5}\n")
        st.write_photo(folder / "общие" / "shared.jpg", st.layout([0], seed=77))

    unit = drop_folder(cfg, "party", PARTY, extra=extras)
    async with running_daemon(cfg) as d:
        [job] = await finished(d, 1)
        assert job.status == "succeeded", job.error
        # the job's end makes the watcher look at the folder again (rescans every 2 s here)
        await asyncio.sleep(cfg.watch.rescan_seconds * 2 + 1)
        jobs = await d.jobs()
    assert len(jobs) == 1, [(j.id, j.progress_message) for j in jobs]
    left = sorted(p.relative_to(unit).as_posix() for p in unit.rglob("*"))
    assert left == ["dropflow.yaml", "notes.txt", "общие", "общие/shared.jpg"]
    assert not (cfg.paths.archive / "cluster").exists()
    out = cfg.paths.outputs / "cluster" / "party"
    assert_sorted(out, PARTY)
    # the run is finished in clusters.json, not only in the database
    [run] = json.loads((out / "clusters.json").read_text())["runs"]
    assert run["job"] == job.id and run["finished_at"] >= run["started_at"] > 0


# --- warnings ---------------------------------------------------------------------------------------------


async def test_cuda_fallback_is_a_job_warning_naming_the_pack(
    tmp_path: Path, sc_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    cfg = cluster_config(tmp_path, sc_root, params="model_pack: buffalo_sc, device: cuda")
    drop_folder(cfg, "party", {"a.jpg": [1], "b.jpg": [1]})
    async with running_daemon(cfg) as d:
        [job] = await finished(d, 1)
        assert job.status == "succeeded", job.error
        drop_folder(cfg, "more", {"c.jpg": [2], "d.jpg": [2]})  # the loaded model is reused: warned again
        jobs = await finished(d, 2)
        warned = [await warnings_of(d, j.id) for j in jobs]
    for messages in warned:
        [message] = messages
        assert "cuda" in message and "no CUDA provider" in message, message
        assert "buffalo_sc" in message and "det_500m.onnx, w600k_mbf.onnx" in message, message
        assert "buffalo_l" not in message and "det_10g" not in message


def test_a_failing_cuda_provider_falls_back_to_the_cpu(
    model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import insightface.app
    import onnxruntime

    real = insightface.app.FaceAnalysis

    def no_gpu(*args: Any, providers: list[str], **kw: Any) -> Any:
        if "CUDAExecutionProvider" in providers:
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")
        return real(*args, providers=providers, **kw)

    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(insightface.app, "FaceAnalysis", no_gpu)
    model = FaceModel.load(model_root, device="cuda")
    assert model.providers == ["CPUExecutionProvider"]
    assert model.fallback and "CUDA provider failed" in model.fallback and "driver version" in model.fallback
    assert "buffalo_l" in model.fallback and "det_10g.onnx, w600k_r50.onnx" in model.fallback
    assert FaceModel.load(model_root).fallback is None, "the CPU asked for: nothing to say"


@pytest.mark.parametrize(
    ("pack", "files"),
    [
        ("buffalo_sc", "det_500m.onnx, w600k_mbf.onnx"),
        ("antelopev2", "scrfd_10g_bnkps.onnx, glintr100.onnx"),
        ("my_pack", "its detection and recognition .onnx models"),
    ],
)
def test_model_messages_name_the_configured_pack(tmp_path: Path, pack: str, files: str) -> None:
    with pytest.raises(ModelMissingError) as info:
        FaceModel.load(tmp_path, pack)
    err = info.value
    assert str(tmp_path / "models" / pack) in err.message
    assert f"put the {pack} pack ({files})" in err.hint and f"licence of {pack}" in err.hint
    assert "buffalo_l" not in err.hint + err.message and "det_10g" not in err.hint


async def test_a_person_folder_renamed_to_a_reserved_name_is_a_job_warning(
    tmp_path: Path, model_root: Path
) -> None:
    cfg = cluster_config(tmp_path, model_root)
    drop_folder(cfg, "party", {"a.jpg": [5], "b.jpg": [5]})
    out = cfg.paths.outputs / "cluster" / "party"
    async with running_daemon(cfg) as d:
        await finished(d, 1)
        os.rename(out / "person_001", out / "person_999")  # reserved: person_<n> is dropflow's
        drop_folder(cfg, "more", {"c.jpg": [5]}, seed=3, extra=_into("party"))
        jobs: list[Job] = await finished(d, 2)
        [message] = await warnings_of(d, jobs[1].id)
    assert jobs[1].status == "succeeded", jobs[1].error
    assert "person_999" in message and "keeps person_001" in message, message


def _into(batch: str) -> Any:
    def write(folder: Path) -> None:
        (folder / "dropflow.yaml").write_text(f"params: {{into: {batch}}}\n")

    return write


def test_a_photo_reached_through_several_links_is_collected_once(tmp_path: Path) -> None:
    """A link to a photo of the same folder (or two links to one photo elsewhere) is one photo:
    filed once, by the photo itself where it is in the unit; the other links go with the drop."""
    from dropflow.engine.cluster.collect import collect

    unit = tmp_path / "party"
    unit.mkdir()
    (unit / "m.jpg").write_bytes(b"photo m")
    os.symlink(unit / "m.jpg", unit / "a_link.jpg")  # sorted before the photo it leads to
    os.symlink("m.jpg", unit / "z_link.jpg")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "s.jpg").write_bytes(b"photo s")
    os.symlink(shared / "s.jpg", unit / "s1.jpg")
    os.symlink(shared / "s.jpg", unit / "s2.jpg")

    source = collect(unit, tmp_path / "staging", exclude=())
    assert [key for key, _ in source.photos] == ["m.jpg", "s1.jpg"]
    assert sorted(source.links) == ["a_link.jpg", "s2.jpg", "z_link.jpg"]
