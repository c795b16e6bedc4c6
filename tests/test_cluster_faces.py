"""Faces: the stand-in buffalo_l pack through insightface's real loading and inference path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dropflow.engine.cluster import faces
from dropflow.engine.cluster.faces import DetectOptions, FaceModel, detect_photos
from dropflow.engine.errors import ModelMissingError
from tests import onnx_standins as st


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return st.build_pack(tmp_path_factory.mktemp("insightface"))


@pytest.fixture(scope="module")
def model(model_root: Path) -> FaceModel:
    return FaceModel.load(model_root)


def _identity(embedding: np.ndarray) -> int:
    return int(np.argmax(st.identity_embeddings() @ embedding))


def test_pack_is_routed_by_signature_through_faceanalysis(model: FaceModel) -> None:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.scrfd import SCRFD

    assert set(model.app.models) == {"detection", "recognition"}
    assert isinstance(model.detector, SCRFD) and isinstance(model.recognizer, ArcFaceONNX)
    # 9 outputs: keypoints on, 3 strides, 2 anchors per cell; ArcFace normalisation, 112x112 input
    assert model.detector.use_kps and model.detector.fmc == 3 and model.detector._num_anchors == 2
    assert (model.recognizer.input_mean, model.recognizer.input_std) == (127.5, 127.5)
    assert model.recognizer.input_size == (112, 112)
    assert model.providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize("size", [(640, 480), (1024, 768), (480, 640)])
def test_finds_every_face_and_embeds_its_identity(model: FaceModel, size: tuple[int, int]) -> None:
    for seed in range(4):
        photo = st.layout([seed, seed + 5, seed + 11], seed=seed, size=size)
        found = model.analyze(st.render(photo), DetectOptions())
        assert len(found) == 3
        for f in found:
            truth = min(photo.faces, key=lambda t: abs(t.box[0] - f.box[0]) + abs(t.box[1] - f.box[1]))
            assert np.allclose(f.box, truth.box, atol=3), (f.box, truth.box)
            assert _identity(f.embedding) == truth.identity
            assert abs(np.linalg.norm(f.embedding) - 1) < 1e-5 and f.score > 0.9
            assert f.thumb[:2] == b"\xff\xd8"  # a JPEG crop for the contact sheet


def test_same_person_is_close_and_strangers_are_far(model: FaceModel) -> None:
    embs, ids = [], []
    for seed in range(12):
        photo = st.layout([seed % 4, 4 + seed % 3], seed=100 + seed)
        for f in model.analyze(st.render(photo), DetectOptions()):
            embs.append(f.embedding)
            ids.append(_identity(f.embedding))
    e, i = np.array(embs), np.array(ids)
    sims = e @ e.T
    same = (i[:, None] == i[None, :]) & ~np.eye(len(i), dtype=bool)
    assert sims[same].min() > 0.6 and sims[same].max() < 0.9999  # close, not identical
    assert sims[i[:, None] != i[None, :]].max() < 0.35


def test_exif_orientation_is_honoured(model: FaceModel, tmp_path: Path) -> None:
    from PIL import Image

    photo = st.layout([2], seed=9)
    upright = Image.fromarray(st.render(photo))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera held sideways writes it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "sideways.jpg"
    stored.save(path, exif=exif.tobytes(), quality=95)
    [result] = list(detect_photos(model, [("sideways.jpg", path)], DetectOptions()))
    assert result.size == (640, 480)
    assert np.allclose(result.faces[0].box, photo.faces[0].box, atol=3)


def test_min_face_size_and_threshold(model: FaceModel) -> None:
    photo = st.Photo(faces=[st.Face(1, (40, 40, 70, 70)), st.Face(3, (300, 200, 400, 300))], seed=4)
    assert len(model.analyze(st.render(photo), DetectOptions())) == 2
    assert [
        _identity(f.embedding) for f in model.analyze(st.render(photo), DetectOptions(min_face_size=40))
    ] == [3]
    assert model.analyze(st.render(photo), DetectOptions(det_threshold=0.99)) == []


def test_unreadable_photos_are_results_not_failures(model: FaceModel, tmp_path: Path) -> None:
    good = st.write_photo(tmp_path / "good.jpg", st.layout([1], seed=1))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    big = st.write_photo(tmp_path / "big.png", st.Photo(size=(900, 900), faces=[], seed=2), fmt="PNG")
    items = [("broken.jpg", broken), ("good.jpg", good), ("big.png", big)]
    out = list(detect_photos(model, items, DetectOptions(max_pixels=800 * 800)))
    assert [r.photo for r in out] == ["broken.jpg", "good.jpg", "big.png"]
    assert out[0].error and "broken.jpg" in out[0].error and out[0].size is None
    assert out[1].error is None and len(out[1].faces) == 1
    assert out[2].error and "pixel" in out[2].error


def test_missing_pack_says_where_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError) as info:
        FaceModel.load(tmp_path / "nowhere")
    err = info.value
    assert str(tmp_path / "nowhere" / "models" / "buffalo_l") in err.message
    assert "downloads it" in err.hint and "download_models" in err.hint
    assert "non-commercial" in err.hint


def test_pack_without_a_recogniser_is_missing(tmp_path: Path) -> None:
    import onnx

    folder = tmp_path / "models" / "buffalo_l"
    folder.mkdir(parents=True)
    onnx.save(st.detector_model(), str(folder / "det_10g.onnx"))
    with pytest.raises(ModelMissingError, match="no recognition model"):
        FaceModel.load(tmp_path)


def test_a_same_named_folder_in_the_working_directory_is_not_loaded_instead(
    model_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    decoy = tmp_path / "buffalo_l"  # insightface would take `name` as this path first
    decoy.mkdir()
    onnx.save(st.detector_model(), str(decoy / "det_10g.onnx"))  # no recogniser: would fail to load
    monkeypatch.chdir(tmp_path)
    model = FaceModel.load(model_root)
    assert "recognition" in model.app.models
    assert Path(model.app.model_dir) == (model_root / "models" / "buffalo_l").resolve()


async def test_model_loads_once_per_daemon_off_the_event_loop(
    model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    calls: list[Path] = []
    real = FaceModel.load

    def slow_counting(root: Path, *a: Any, **kw: Any) -> FaceModel:
        calls.append(root)
        time.sleep(0.3)  # a real pack takes seconds: the loop must keep running meanwhile
        return real(root, *a, **kw)

    monkeypatch.setattr(FaceModel, "load", staticmethod(slow_counting))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick = asyncio.create_task(ticker())
    cache = faces.ModelCache()
    got = await asyncio.gather(*(faces.get_model(cache, model_root, "buffalo_l") for _ in range(3)))
    tick.cancel()
    assert got[0] is got[1] is got[2] and len(calls) == 1
    assert ticks >= 10, "loading blocked the event loop"
    assert await faces.get_model(cache, model_root, "buffalo_l") is got[0] and len(calls) == 1
