"""Faces: InsightFace `FaceAnalysis` (detection + recognition of a model pack) on onnxruntime.

Loading is insightface's own: `FaceAnalysis(name, root, allowed_modules=['detection',
'recognition'])` finds `<root>/models/<pack>/*.onnx` and routes each file to a model class by its
input/output signature. A pack without a `manifest.json` (buffalo_l has none) is loaded without
signature or licence checks; insightface only reads licences in its GUI, and an absent
`MODEL.LICENSE` means its default non-commercial terms, which we log once at load. Only a missing
pack would make insightface download (and without a timeout), so we check for the pack first and
fail with `ModelMissingError` unless `download` was asked for.

Per face we run what `FaceAnalysis.get` runs, minus its per-face loop: the detector's `detect`,
then ArcFace's five-point alignment (insightface's template and least-squares fit; its own
`face_align.norm_crop` calls the `estimate` that scikit-image 0.26 deprecates, and costs more
than the fit) and one batched `get_feat` for all faces of the photo. A loaded model is kept per daemon in
the cluster engine instance, and every call here blocks: callers run it in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dropflow.engine.errors import DropflowError, InputError, ModelMissingError

log = logging.getLogger("dropflow.engine.cluster.engine")

ALLOWED_MODULES = ["detection", "recognition"]
THUMB = 112  # contact-sheet crop size, pixels
Device = Literal["cpu", "cuda"]
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
# the detection and recognition models of insightface's packs (the files dropflow uses)
PACK_MODELS = {
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"),
    "buffalo_m": ("det_2.5g.onnx", "w600k_r50.onnx"),
    "buffalo_s": ("det_500m.onnx", "w600k_mbf.onnx"),
    "buffalo_sc": ("det_500m.onnx", "w600k_mbf.onnx"),
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
}


def default_root() -> Path:
    """Where insightface keeps its models unless told otherwise (`FaceAnalysis(root=...)`)."""
    return Path("~/.insightface").expanduser()


def pack_dir(root: Path, pack: str) -> Path:
    return root / "models" / pack


def pack_models(pack: str) -> str:
    """The pack's files that dropflow uses, for messages."""
    known = PACK_MODELS.get(pack)
    return ", ".join(known) if known else "its detection and recognition .onnx models"


def licence_note(pack: str) -> str:
    return (
        f"insightface's model packs are licensed for non-commercial research use only: check the "
        f"licence of {pack} before any commercial use"
    )


def missing_error(root: Path, pack: str, detail: str) -> ModelMissingError:
    where = pack_dir(root, pack)
    return ModelMissingError(
        f"InsightFace model pack {pack!r} {detail} (looked in {where})",
        hint=f"put the {pack} pack ({pack_models(pack)}) into {where}/. insightface "
        f"downloads it there by itself on first use when the machine is online, e.g. `python -c "
        f"\"from insightface.app import FaceAnalysis; FaceAnalysis(name='{pack}', root='{root}')\"`, "
        f"or set params.download_models: true; or point params.model_root at a folder that holds "
        f"models/{pack}/. Note: {licence_note(pack)}.",
    )


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in upright image pixels
    score: float
    embedding: np.ndarray  # float32 (512,), L2-normalised
    thumb: bytes  # JPEG crop for contact sheets


@dataclass(frozen=True)
class PhotoResult:
    photo: str  # the photo's key (its path relative to the unit)
    size: tuple[int, int] | None  # upright width, height; None when unreadable
    faces: list[Face]
    error: str | None = None  # why it could not be read


@dataclass(frozen=True)
class DetectOptions:
    det_size: int = 640
    det_threshold: float = 0.5
    min_face_size: int = 0
    max_pixels: int = 64_000_000


class FaceModel:
    """A prepared `FaceAnalysis` with its detector and recogniser."""

    def __init__(
        self, app: Any, root: Path, pack: str, providers: list[str], fallback: str | None = None
    ) -> None:
        self.app = app
        self.root = root
        self.pack = pack
        self.providers = providers
        # why the device asked for is not the one used (CUDA absent or failing), for each job's warning
        self.fallback = fallback
        self.detector = app.det_model
        self.recognizer = app.models["recognition"]

    @classmethod
    def load(
        cls,
        root: Path,
        pack: str = "buffalo_l",
        *,
        device: Device = "cpu",
        download: bool = False,
        threads: int = 0,
    ) -> FaceModel:
        """Load the pack through insightface (blocking).

        `device="cuda"` runs on onnxruntime's CUDA provider when it is there and starts; else on
        the CPU, with the reason in `fallback` (each job that asked for CUDA warns with it).

        Raises:
            ModelMissingError: insightface is not installed, or the pack (or its detection or
            recognition model) is absent and `download` is off, or the download failed.
        """
        try:
            import insightface.app  # noqa: F401  (here, so that its absence gets this hint)
            import onnxruntime
        except ImportError as exc:
            raise ModelMissingError(
                f"insightface cannot be imported: {exc}",
                hint="install it with `pip install --no-deps insightface==2.1` (see the Makefile)",
            ) from exc
        folder = pack_dir(root, pack)
        if not download and not any(folder.glob("*.onnx")):
            raise missing_error(root, pack, "is not installed")
        providers, why = [CPU], None
        if device == "cuda":
            if CUDA in onnxruntime.get_available_providers():
                providers = [CUDA, CPU]
            else:
                why = "onnxruntime has no CUDA provider here (is onnxruntime-gpu installed?)"
        try:
            app = _face_analysis(root, pack, providers, session_options(threads), download)
        except ModelMissingError as exc:
            if providers[0] != CUDA:
                raise
            # CUDA is listed but does not start (driver, CUDA or cuDNN libraries): the CPU still works
            why = f"the CUDA provider failed ({exc.message})"
            providers = [CPU]
            app = _face_analysis(root, pack, providers, session_options(threads), download)
        used = app.det_model.session.get_providers()
        if device == "cuda" and CUDA not in used and why is None:
            why = "onnxruntime could not start its CUDA provider"  # it fell back by itself
        fallback = (
            f"device: cuda was asked for, but {why}: the {pack} models ({pack_models(pack)}) run on the CPU"
            if why
            else None
        )
        # ctx_id < 0 would make insightface rebuild every session for the CPU: ours already are
        app.prepare(ctx_id=0, det_size=(640, 640))
        _log_licence(folder, pack)
        log.info("face model %s loaded from %s on %s", pack, folder, used[0] if used else providers[0])
        return cls(app, root, pack, [p for p in providers if p in used] or providers, fallback)

    def analyze(self, image: Any, options: DetectOptions) -> list[Face]:
        """Faces of one upright RGB image (PIL or HxWx3 uint8), best score first (blocking)."""
        rgb = np.asarray(image, dtype=np.uint8)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # insightface works on OpenCV's BGR
        boxes, kpss = self.detector.detect(
            bgr, input_size=(options.det_size, options.det_size), det_thresh=options.det_threshold
        )
        keep = [
            i
            for i in range(len(boxes))
            if min(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]) >= options.min_face_size
        ]
        if not keep:
            return []
        if kpss is None:  # a detector without landmarks: the box, squashed to the crop size
            crops = [box_crop(bgr, boxes[i, :4]) for i in keep]
        else:
            crops = [align(bgr, kpss[i]) for i in keep]
        feats = np.asarray(self.recognizer.get_feat(crops), dtype=np.float32).reshape(len(keep), -1)
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        out = []
        for j, i in enumerate(keep):
            x1, y1, x2, y2, score = (float(v) for v in boxes[i, :5])
            box = (max(0.0, x1), max(0.0, y1), min(float(rgb.shape[1]), x2), min(float(rgb.shape[0]), y2))
            out.append(Face(box, score, feats[j], thumbnail(rgb, box)))
        out.sort(key=lambda f: -f.score)
        return out


def _face_analysis(root: Path, pack: str, providers: list[str], options: Any, download: bool) -> Any:
    """insightface's `FaceAnalysis` over the pack (blocking).

    Raises:
        ModelMissingError: the pack lacks a detection or recognition model, could not be
        downloaded, or does not load (truncated files, not ONNX, a provider that fails).
    """
    from insightface.app import FaceAnalysis

    folder = pack_dir(root, pack)
    try:
        app = FaceAnalysis(
            # insightface takes `name` as a folder first: an installed pack is named by its
            # absolute path, so a same-named folder in the working directory cannot stand in
            name=str(folder.resolve()) if any(folder.glob("*.onnx")) else pack,
            root=str(root),
            allowed_modules=ALLOWED_MODULES,
            providers=providers,
            sess_options=options,
        )
    except AssertionError as exc:  # FaceAnalysis asserts that a detector was found
        raise missing_error(root, pack, "has no detection model") from exc
    except Exception as exc:  # a failed download, a corrupt .onnx, a provider that does not start
        if download and not any(folder.glob("*.onnx")):
            raise missing_error(root, pack, f"could not be downloaded ({exc})") from exc
        raise ModelMissingError(
            f"InsightFace model pack {pack!r} in {folder} cannot be loaded: {exc}",
            hint=f"the files ({pack_models(pack)}) may be truncated or not ONNX: replace the pack. "
            f"Note: {licence_note(pack)}.",
        ) from exc
    if "recognition" not in app.models:
        raise missing_error(root, pack, "has no recognition model")
    return app


def session_options(threads: int = 0) -> Any:
    """onnxruntime options for our sessions: worker threads that sleep instead of spinning.

    Spinning threads hold a core while they wait; the photo decoded ahead of time (and the rest
    of the daemon) then competes with them: on 2 cores a photo took twice as long.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return options


def align(bgr: np.ndarray, kps: np.ndarray, size: int = 112) -> np.ndarray:
    """ArcFace's similarity-aligned crop: insightface's `norm_crop` (same template, same Umeyama
    least-squares fit), without its deprecated scikit-image call and its per-call overhead."""
    import cv2
    from insightface.utils.face_align import arcface_dst

    matrix = umeyama(np.asarray(kps, dtype=np.float64), arcface_dst.astype(np.float64) * (size / 112.0))
    return cv2.warpAffine(bgr, matrix, (size, size), borderValue=0.0)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform (rotation, uniform scale, shift) that best maps `src` onto `dst`
    in the least-squares sense (Umeyama 1991, as scikit-image's SimilarityTransform estimates it)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rot = u @ sign @ vt
    var = (s * s).sum() / len(src)
    scale = float((sv * np.diag(sign)).sum() / var) if var > 0 else 1.0
    out = np.empty((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def box_crop(bgr: np.ndarray, box: np.ndarray, size: int = 112) -> np.ndarray:
    import cv2

    h, w = bgr.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, max(x1 + 1, int(box[2]))), min(h, max(y1 + 1, int(box[3])))
    return cv2.resize(bgr[y1:y2, x1:x2], (size, size))


def thumbnail(rgb: np.ndarray, box: tuple[float, float, float, float]) -> bytes:
    """A square JPEG crop around the face, with some margin."""
    import cv2

    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * 0.65
    h, w = rgb.shape[:2]
    a, b = max(0, int(cx - half)), max(0, int(cy - half))
    c, d = min(w, int(cx + half) + 1), min(h, int(cy + half) + 1)
    crop: np.ndarray = np.zeros((THUMB, THUMB, 3), dtype=np.uint8)
    if c > a and d > b:
        crop = cv2.resize(rgb[b:d, a:c], (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(crop[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise InputError("cannot encode a face crop")
    return bytes(data)


def _log_licence(folder: Path, pack: str) -> None:
    try:
        from insightface.model_zoo.model_license import inspect_model_package_license

        status = inspect_model_package_license(folder, expected_model_id=pack)
        log.info(
            "%s licence: %s (%s); %s", pack, status.grant or status.status, status.message, licence_note(pack)
        )
    except Exception as exc:  # informational only: never a reason to fail a job
        log.debug("licence inspection failed: %s", exc)


def detect_photos(
    model: FaceModel,
    items: Sequence[tuple[str, Path]],
    options: DetectOptions,
    should_stop: Callable[[], bool] = lambda: False,
    check: Callable[[Path], None] = lambda _p: None,
) -> Iterator[PhotoResult]:
    """Analyse photos in order (blocking); the next one is decoded while the current one runs.

    An unreadable photo yields a result with `error` set: it never stops the others.

    Raises:
        InputError: from `check`, called on each photo right before it is opened (a photo that
        became a link out of the inbox since it was collected fails the job, it is not read).
    """
    from dropflow.engine.media import load_image

    def read(path: Path) -> Any:
        check(path)  # outside the try: a link out of the inbox is the job's failure, not the photo's
        try:
            return load_image(path, max_pixels=options.max_pixels)
        except DropflowError as exc:
            return exc
        except OSError as exc:
            return InputError(f"{path.name} cannot be read: {exc.strerror or exc}")

    if not items:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="dropflow-decode") as pool:
        pending = pool.submit(read, items[0][1])
        for i, (key, _path) in enumerate(items):
            image = pending.result()
            if i + 1 < len(items):
                pending = pool.submit(read, items[i + 1][1])
            if isinstance(image, DropflowError):
                yield PhotoResult(key, None, [], error=image.message)
                continue
            faces = model.analyze(image, options)
            yield PhotoResult(key, (image.width, image.height), faces)
            if should_stop():
                return


class ModelCache:
    """Loaded face models of one daemon, by (root, pack, device): loaded once, shared by its jobs."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, str, str], FaceModel] = {}
        self.lock = asyncio.Lock()


async def get_model(
    cache: ModelCache,
    root: Path,
    pack: str,
    *,
    device: Device = "cpu",
    download: bool = False,
) -> FaceModel:
    """The daemon's loaded model for (root, pack, device), loading it in a thread the first time.

    Raises:
        ModelMissingError: see `FaceModel.load`; a failure is not cached, so a pack installed
        later is picked up by the next job.
    """
    key = (str(root), pack, device)
    async with cache.lock:
        if key not in cache.models:
            cache.models[key] = await asyncio.to_thread(
                FaceModel.load, root, pack, device=device, download=download
            )
        return cache.models[key]
