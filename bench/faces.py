"""Faces end to end (our pipeline) against raw onnxruntime runs of the same models, side by side.

Ours: `dropflow.engine.cluster.faces.detect_photos` over JPEG files: decode with EXIF handling (prefetched
in a thread), insightface's SCRFD detection (resize, pad, blob, decode, NMS), ArcFace alignment
and one batched embedding run per photo, crops for the contact sheets. Raw: the same two ONNX
files in plain `onnxruntime.InferenceSession`s (same provider and session options), fed the ready
detector blob of each photo and the ready batch of its aligned face crops: inference and nothing
else. Ratio = our images/s / raw images/s (1.0 = no overhead at all), as the median over short
alternating rounds (ours, then raw, on the same photos), which a shared machine's load swings
affect least.

The stand-in pack (tests/onnx_standins.py) carries compute-only convolutions here sized like
buffalo_l (~13 GFLOPs per detection, ~6 per face), so that the ratio says what our pipeline adds
around inference of the real weights; `--light` measures the bare stand-ins (tiny models: the
ratio is then mostly decode and insightface's own pre/post-processing against almost nothing).

    python bench/faces.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from tests import onnx_standins as st


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer photos")
    ap.add_argument(
        "--light", action="store_true", help="the bare stand-ins, without buffalo_l-sized compute"
    )
    ap.add_argument("--photos", type=int, help="photos per measurement")
    args = ap.parse_args()
    count = args.photos or (8 if args.quick else 16)
    rounds = 7 if args.quick else 15

    import cv2
    import onnxruntime

    from dropflow.engine.cluster.faces import DetectOptions, FaceModel, align, detect_photos, session_options
    from dropflow.engine.media import load_image

    with tempfile.TemporaryDirectory(prefix="dropflow-bench-faces-") as tmp:
        root = st.build_pack(Path(tmp), backbone=(0, 0) if args.light else st.REALISTIC)
        items = []
        for i in range(count):
            identities = [(i + k * 5) % st.IDENTITIES for k in range(1 + i % 3)]
            path = Path(tmp) / "photos" / f"p{i:03d}.jpg"
            st.write_photo(path, st.layout(identities, seed=i, size=(1024, 768)))
            items.append((path.name, path))
        model = FaceModel.load(root)
        options = DetectOptions()
        # raw: the same models with the same session options as ours (threads that sleep rather
        # than spin), fed inputs prepared beforehand: only session.run is timed
        # insightface runs the detector through a session with the input size fixed (640x640):
        # so does the raw one (ONNX Runtime's free-dimension override), or ours would look faster
        fixed = session_options()
        for dim in {d for d in _input_dims(root / "models" / st.PACK / "det_10g.onnx") if isinstance(d, str)}:
            fixed.add_free_dimension_override_by_name(dim, 640)
        det = onnxruntime.InferenceSession(
            str(root / "models" / st.PACK / "det_10g.onnx"),
            sess_options=fixed,
            providers=["CPUExecutionProvider"],
        )
        rec = onnxruntime.InferenceSession(
            str(root / "models" / st.PACK / "w600k_r50.onnx"),
            sess_options=session_options(),
            providers=["CPUExecutionProvider"],
        )
        det_in, rec_in = det.get_inputs()[0].name, rec.get_inputs()[0].name
        inputs = []
        for _, path in items:
            bgr = np.ascontiguousarray(np.asarray(load_image(path))[:, :, ::-1])
            scale = 640 / max(bgr.shape[:2])
            small = cv2.resize(bgr, (int(bgr.shape[1] * scale), int(bgr.shape[0] * scale)))
            canvas = np.zeros((640, 640, 3), dtype=np.uint8)
            canvas[: small.shape[0], : small.shape[1]] = small
            blob = cv2.dnn.blobFromImage(canvas, 1 / 128, (640, 640), (127.5,) * 3, swapRB=True)
            _, kpss = model.detector.detect(bgr, input_size=(640, 640))
            crops = [align(bgr, k) for k in kpss]
            batch = cv2.dnn.blobFromImages(crops, 1 / 127.5, (112, 112), (127.5,) * 3, swapRB=True)
            inputs.append((blob, batch))

        def ours_pass(part: list[int]) -> float:
            t = time.perf_counter()
            for r in detect_photos(model, [items[i] for i in part], options):
                assert r.faces, r.photo
            return time.perf_counter() - t

        def raw_pass(part: list[int]) -> float:
            t = time.perf_counter()
            for i in part:
                blob, batch = inputs[i]
                det.run(None, {det_in: blob})
                rec.run(None, {rec_in: batch})
            return time.perf_counter() - t

        # short rounds over the same few photos, ours then raw, so that both halves of a pair see
        # about the same load on a shared machine; the median of the paired ratios is reported
        ours_pass([0, 1])
        raw_pass([0, 1])
        size = 4
        pairs: list[tuple[float, float]] = []
        for r in range(rounds):
            part = [(r * size + j) % count for j in range(size)]
            pairs.append((ours_pass(part), raw_pass(part)))
        faces = sum(len(b) for _, b in inputs)

    ratios = sorted(raw / ours for ours, raw in pairs)
    ratio = statistics.median(ratios)
    ours_ms = 1000 * sum(o for o, _ in pairs) / (size * rounds)
    raw_ms = 1000 * sum(r for _, r in pairs) / (size * rounds)
    kind = "bare" if args.light else "buffalo_l-sized"
    print(f"photos: {count} (1024x768 JPEG, {faces} faces), models: {kind}; {rounds} rounds of {size} photos")
    print(
        f"ours (decode + detect + align + embed + crops): {1000 / ours_ms:6.2f} images/s ({ours_ms:.0f} ms each)"
    )
    print(
        f"raw onnxruntime (detector + recogniser runs):   {1000 / raw_ms:6.2f} images/s ({raw_ms:.0f} ms each)"
    )
    print(f"paired ratios: min {ratios[0]:.3f}, median {ratio:.3f}, max {ratios[-1]:.3f}")
    print("RESULT " + json.dumps({"ratio": round(ratio, 3)}))


def _input_dims(path: Path) -> list[int | str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


if __name__ == "__main__":
    main()
