"""Stand-in `buffalo_l` models, synthetic photos whose faces map to known identities, and
labelled synthetic embedding sets (for the tests and the benches).

InsightFace weights cannot be downloaded here, so the tests (and bench/faces.py) generate two tiny
ONNX models with the signatures insightface's model router expects, put them under
`<root>/models/buffalo_l/` and load them through the real `FaceAnalysis`:

- `det_10g.onnx`, a detector in SCRFD's layout: input `[1, 3, H, W]` (dynamic H, W, like the real
  one), 9 outputs (scores, boxes, 5-point keypoints for strides 8, 16, 32; 2 anchors per cell).
  A "face" is a saturated colour patch on a low-saturation background. For each anchor the graph
  sums the patch mask and its first and second moments over a window centred on the anchor; the
  window holds a whole patch when nothing of it lies in a margin around the window and it fills
  the box its moments describe (the score), and then the moments give the patch's centre and size
  (the box) exactly. Keypoints sit where ArcFace's alignment template expects eyes, nose and mouth
  corners inside that box.
- `w600k_r50.onnx`, a recogniser: input `[N, 3, 112, 112]`, one `[N, 512]` output. It reads the
  mean colour of the aligned crop's centre, softly matches it against a palette (one colour per
  identity) and returns that identity's 512-d embedding, plus an offset in a random direction
  proportional to how far the colour is from the palette's: photos of one identity are similar
  but not identical (cosine ~0.8-1.0), strangers stay apart.

`backbone` adds convolution layers whose result enters the outputs with a negligible weight: the
same answers, with a compute load closer to the real models' (`REALISTIC`: buffalo_l's FLOPs; the
bench uses it so that what our pipeline adds around inference is measured against a realistic
inference cost).
"""

from __future__ import annotations

import colorsys
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PACK = "buffalo_l"
DIM = 512
STRIDES = (8, 16, 32)
WINDOW = {8: 64, 16: 128, 32: 256}  # pixels: a patch must fit in it, with room for the anchor grid
# where ArcFace's template puts the five landmarks in a 112x112 crop (insightface face_align)
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def palette() -> list[tuple[int, int, int]]:
    """One saturated RGB colour per identity: 12 hues, then 6 darker ones."""
    out = []
    for i in range(12):
        r, g, b = colorsys.hsv_to_rgb(i / 12, 1.0, 1.0)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    for i in range(6):
        r, g, b = colorsys.hsv_to_rgb(i / 6 + 1 / 24, 1.0, 0.6)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


IDENTITIES = len(palette())


def identity_embeddings(seed: int = 6) -> np.ndarray:
    """The unit 512-d embedding the recogniser returns for each identity."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((IDENTITIES, DIM)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


# --- ONNX graphs -----------------------------------------------------------------------------------


class _Graph:
    """A small builder over onnx.helper: named constants and nodes, unique names."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list = []  # type: ignore[type-arg]
        self.inits: list = []  # type: ignore[type-arg]
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{self.prefix}{hint}_{self.n}"

    def const(self, value: object, dtype: type = np.float32) -> str:
        from onnx import numpy_helper

        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: object) -> str:
        from onnx import helper

        out = self.name(op_type.lower())
        # node names never start with Sub/Mul: insightface reads that as an mxnet-era model
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"n_{out}", **attrs))
        return out

    def op_to(self, out: str, op_type: str, *inputs: str, **attrs: object) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"n_{out}", **attrs))
        return out


def _backbone(g: _Graph, x: str, channels: int, layers: int, stride_first: int) -> str:
    """Convolutions on the input whose mean feeds the outputs at weight 1e-6: compute, same answer."""
    rng = np.random.default_rng(1)
    cur, cin = x, 3
    for i in range(layers):
        w = rng.standard_normal((channels, cin, 3, 3)).astype(np.float32) * (1.0 / np.sqrt(cin * 9))
        cur = g.op(
            "Conv",
            cur,
            g.const(w),
            g.const(np.zeros(channels)),
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[stride_first, stride_first] if i == 0 else [1, 1],
        )
        cur = g.op("Relu", cur)
        cin = channels
    m = g.op("ReduceMean", cur, axes=[1, 2, 3], keepdims=0)  # [N]
    return g.op("Mul", g.op("Tanh", m), g.const(1e-6))


def detector_model(*, backbone: int = 0):  # type: ignore[no-untyped-def]
    # backbone: 4 conv layers of `backbone` channels at half resolution, ~5.5e6 * backbone^2 FLOPs
    """SCRFD-layout stand-in detector (see the module docstring)."""
    from onnx import TensorProto, helper

    g = _Graph("d")
    x = "input.1"
    # SCRFD feeds (pixel - 127.5) / 128 in RGB order: saturation = max - min over channels
    sat = g.op("Sub", g.op("ReduceMax", x, axes=[1], keepdims=1), g.op("ReduceMin", x, axes=[1], keepdims=1))
    mask = g.op("Sigmoid", g.op("Mul", g.op("Sub", sat, g.const(0.35)), g.const(30.0)))  # [1,1,H,W]
    shape = g.op("Shape", x)
    h = g.op("Cast", g.op("Gather", shape, g.const(2, np.int64), axis=0), to=TensorProto.FLOAT)
    w = g.op("Cast", g.op("Gather", shape, g.const(3, np.int64), axis=0), to=TensorProto.FLOAT)
    half = g.const(0.5)
    # pixel centres, in a frame centred on the image (keeps the float32 moments well conditioned)
    xs = g.op("Sub", g.op("Add", g.op("Range", g.const(0.0), w, g.const(1.0)), half), g.op("Mul", w, half))
    ys = g.op("Sub", g.op("Add", g.op("Range", g.const(0.0), h, g.const(1.0)), half), g.op("Mul", h, half))
    xs = g.op("Reshape", xs, g.const([1, 1, 1, -1], np.int64))
    ys = g.op("Reshape", ys, g.const([1, 1, -1, 1], np.int64))
    mx = g.op("Mul", mask, xs)
    my = g.op("Mul", mask, ys)
    feats = g.op("Concat", mask, mx, my, g.op("Mul", mx, xs), g.op("Mul", my, ys), axis=1)  # [1,5,H,W]
    # exact sums per 8x8 cell: everything after this runs on a map 64x smaller
    cells = g.op("Mul", g.op("AveragePool", feats, kernel_shape=[8, 8], strides=[8, 8]), g.const(64.0))
    aux = _backbone(g, x, backbone, 4, 2) if backbone else None
    scores, boxes, kpss = [], [], []
    eps = g.const(1e-6)
    for s in STRIDES:
        r = s // 8
        k1 = WINDOW[s] // 8
        sums = []
        # the window, and the same window with a margin of k1/4 cells all round
        for k in (k1, k1 + 2 * max(1, k1 // 4)):
            # window of k cells centred on the anchor at pixel s*i: output size stays H/s
            pooled = g.op(
                "AveragePool",
                cells,
                kernel_shape=[k, k],
                strides=[r, r],
                pads=[k // 2, k // 2, k // 2 - 1, k // 2 - 1],
                count_include_pad=1,
            )
            sums.append(g.op("Mul", pooled, g.const(float(k * k))))
        win, wide = sums

        def channel(t: str, i: int) -> str:
            return g.op(
                "Slice", t, g.const([i], np.int64), g.const([i + 1], np.int64), g.const([1], np.int64)
            )

        area = channel(win, 0)
        cx = g.op("Div", channel(win, 1), g.op("Add", area, eps))
        cy = g.op("Div", channel(win, 2), g.op("Add", area, eps))
        varx = g.op("Sub", g.op("Div", channel(win, 3), g.op("Add", area, eps)), g.op("Mul", cx, cx))
        vary = g.op("Sub", g.op("Div", channel(win, 4), g.op("Add", area, eps)), g.op("Mul", cy, cy))
        # a uniform run of n pixels has variance (n^2 - 1) / 12
        bw = g.op("Sqrt", g.op("Relu", g.op("Add", g.op("Mul", varx, g.const(12.0)), g.const(1.0))))
        bh = g.op("Sqrt", g.op("Relu", g.op("Add", g.op("Mul", vary, g.const(12.0)), g.const(1.0))))
        # whole: nothing of the patch in the margin; one patch: it fills the box its moments describe
        complete = g.op("Div", area, g.op("Add", channel(wide, 0), eps))
        fill = g.op("Div", area, g.op("Add", g.op("Mul", bw, bh), eps))
        logit = g.op("Mul", g.op("Sub", complete, g.const(0.95)), g.const(60.0))
        compact = g.op("Sigmoid", g.op("Mul", g.op("Sub", fill, g.const(0.8)), g.const(40.0)))
        big_enough = g.op("Sigmoid", g.op("Mul", g.op("Sub", area, g.const(144.0)), g.const(0.1)))
        score = g.op("Mul", g.op("Mul", g.op("Sigmoid", logit), big_enough), compact)
        if aux is not None:
            score = g.op("Add", score, aux)
        # anchor positions (insightface puts them at s*j, s*i), in the centred frame
        hs = g.op("Div", h, g.const(float(s)))
        ws = g.op("Div", w, g.const(float(s)))
        ax = g.op(
            "Sub",
            g.op("Mul", g.op("Range", g.const(0.0), ws, g.const(1.0)), g.const(float(s))),
            g.op("Mul", w, half),
        )
        ay = g.op(
            "Sub",
            g.op("Mul", g.op("Range", g.const(0.0), hs, g.const(1.0)), g.const(float(s))),
            g.op("Mul", h, half),
        )
        ax = g.op("Reshape", ax, g.const([1, 1, 1, -1], np.int64))
        ay = g.op("Reshape", ay, g.const([1, 1, -1, 1], np.int64))
        x1 = g.op("Sub", cx, g.op("Mul", bw, half))
        y1 = g.op("Sub", cy, g.op("Mul", bh, half))
        inv_s = g.const(1.0 / s)
        dist = [
            g.op("Mul", g.op("Sub", ax, x1), inv_s),
            g.op("Mul", g.op("Sub", ay, y1), inv_s),
            g.op("Mul", g.op("Sub", g.op("Add", x1, bw), ax), inv_s),
            g.op("Mul", g.op("Sub", g.op("Add", y1, bh), ay), inv_s),
        ]
        kps = []
        for u, v in ARCFACE_DST / 112.0:
            px = g.op("Add", x1, g.op("Mul", bw, g.const(float(u))))
            py = g.op("Add", y1, g.op("Mul", bh, g.const(float(v))))
            kps += [g.op("Mul", g.op("Sub", px, ax), inv_s), g.op("Mul", g.op("Sub", py, ay), inv_s)]

        def rows(t: str, width: int) -> str:
            # [1, C, Hs, Ws] -> [Hs*Ws*2, C]: cell-major, both anchors of a cell share the answer
            t = g.op("Transpose", t, perm=[0, 2, 3, 1])
            t = g.op("Reshape", t, g.const([-1, 1, width], np.int64))
            t = g.op("Concat", t, t, axis=1)
            return g.op("Reshape", t, g.const([-1, width], np.int64))

        scores.append(rows(score, 1))
        boxes.append(rows(g.op("Concat", *dist, axis=1), 4))
        kpss.append(rows(g.op("Concat", *kps, axis=1), 10))
    outputs = []
    for kind, group, width in (("score", scores, 1), ("bbox", boxes, 4), ("kps", kpss, 10)):
        for s, t in zip(STRIDES, group, strict=True):
            name = f"{kind}_{s}"
            g.op_to(name, "Identity", t)
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{kind}{s}", width]))
    graph = helper.make_graph(
        g.nodes,
        "standin_scrfd",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, "?", "?"])],
        outputs,
        g.inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def recognizer_model(*, backbone: int = 0, spread: float = 6.0):  # type: ignore[no-untyped-def]
    # backbone: 6 conv layers of `backbone` channels on the 112x112 crop, ~1.1e6 * backbone^2 FLOPs
    """ArcFace-layout stand-in recogniser (see the module docstring)."""
    from onnx import TensorProto, helper

    g = _Graph("r")
    x = "input.1"
    # ArcFaceONNX feeds (pixel - 127.5) / 127.5 in RGB order
    centre = g.op(
        "Slice", x, g.const([40, 40], np.int64), g.const([72, 72], np.int64), g.const([2, 3], np.int64)
    )
    colour = g.op("ReduceMean", centre, axes=[2, 3], keepdims=0)  # [N, 3]
    pal = (np.asarray(palette(), dtype=np.float32) - 127.5) / 127.5  # [K, 3]
    beta = 40.0
    # softmax(-beta/2 |c - p|^2) == softmax(beta c.p - beta/2 |p|^2)
    logits = g.op("Gemm", colour, g.const(pal.T * beta), g.const(-0.5 * beta * (pal * pal).sum(1)))
    weights = g.op("Softmax", logits, axis=1)
    ident = g.op("MatMul", weights, g.const(identity_embeddings()))
    # how far this photo's colour is from the identity's: a per-photo offset in a random direction
    # (lighting, pose, age in a real model); independent of the identity, so strangers stay apart
    deviation = g.op("Sub", colour, g.op("MatMul", weights, g.const(pal)))
    rng = np.random.default_rng(2)
    proj = rng.standard_normal((3, DIM)).astype(np.float32)
    proj *= spread / np.linalg.norm(proj, axis=1, keepdims=True)
    out = g.op("Add", ident, g.op("MatMul", deviation, g.const(proj)))
    if backbone:
        aux = _backbone(g, x, backbone, 6, 1)
        out = g.op("Add", out, g.op("Unsqueeze", aux, g.const([1], np.int64)))
    g.op_to("embedding", "Identity", out)
    graph = helper.make_graph(
        g.nodes,
        "standin_arcface",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", DIM])],
        g.inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


# buffalo_l's cost: det_10g ~13 GFLOPs per 640x640 detection, w600k_r50 ~6 GFLOPs per face
REALISTIC = (48, 72)


def build_pack(root: Path, *, backbone: tuple[int, int] = (0, 0)) -> Path:
    """Write the stand-in pack to `<root>/models/buffalo_l/` (where insightface looks); returns root.

    `backbone`: (detector, recogniser) channels of the compute-only convolutions; `REALISTIC`
    gives both models roughly buffalo_l's FLOPs.
    """
    import onnx

    pack = root / "models" / PACK
    pack.mkdir(parents=True, exist_ok=True)
    det, rec = detector_model(backbone=backbone[0]), recognizer_model(backbone=backbone[1])
    onnx.checker.check_model(det)
    onnx.checker.check_model(rec)
    onnx.save(det, str(pack / "det_10g.onnx"))
    onnx.save(rec, str(pack / "w600k_r50.onnx"))
    return root


# --- synthetic photos ------------------------------------------------------------------------------


@dataclass
class Face:
    identity: int
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive)


@dataclass
class Photo:
    size: tuple[int, int] = (640, 480)
    faces: list[Face] = field(default_factory=list)
    seed: int = 0


def render(photo: Photo) -> np.ndarray:
    """RGB uint8 array: a grey, softly noisy background with one flat colour patch per face."""
    rng = np.random.default_rng(photo.seed)
    w, h = photo.size
    base = rng.integers(70, 190)
    grad = np.linspace(-20, 20, w, dtype=np.float32)[None, :]
    grey = base + grad + rng.normal(0, 4, (h, w)).astype(np.float32)
    img = np.repeat(grey[:, :, None], 3, axis=2)
    img += rng.normal(0, 3, (h, w, 3)).astype(np.float32)  # a little colour noise, far below a face
    pal = palette()
    for f in photo.faces:
        x1, y1, x2, y2 = f.box
        colour = np.asarray(pal[f.identity], dtype=np.float32) + rng.uniform(-6, 6, 3)
        img[y1:y2, x1:x2] = colour
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(photo: Photo, fmt: str = "JPEG", **save: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(render(photo)).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}) | save)
    return buf.getvalue()


def layout(identities: list[int], *, seed: int, size: tuple[int, int] = (640, 480)) -> Photo:
    """A photo with one face per identity, placed apart so that every face is detected."""
    rng = np.random.default_rng(seed)
    w, h = size
    faces: list[Face] = []
    slots = [(x, y) for y in (40, 250) for x in (40, 250, 460)]
    order = rng.permutation(len(slots))
    if len(identities) > len(slots):
        raise ValueError("at most 6 faces per synthetic photo")
    for ident, slot in zip(identities, order, strict=False):
        sx, sy = slots[slot]
        side = int(rng.integers(64, 110))
        dx, dy = (int(v) for v in rng.integers(0, 30, 2))
        x1, y1 = min(sx + dx, w - side - 1), min(sy + dy, h - side - 1)
        faces.append(Face(ident, (x1, y1, x1 + side, y1 + side)))
    return Photo(size=size, faces=faces, seed=seed)


def write_photo(path: Path, photo: Photo, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(photo, fmt))
    return path


# --- labelled synthetic identity embeddings (clustering tests and bench/cluster.py) ---------------


def identity_dataset(
    n: int, *, seed: int = 0, dim: int = DIM, bursts: float = 0.1, largest: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`n` unit embeddings with ground-truth identities, shaped like ArcFace output on photo collections.

    - identity sizes follow a power law (Zipf, exponent 1.9): a few people in hundreds of photos,
      many in a handful, many strangers seen once; a stranger is noise (label -1);
    - identity centres come from an anisotropic Gaussian plus a shared mean direction (real
      embeddings are not isotropic): strangers have cosine ~0.05 on average, ~0.2 at the 99th
      percentile;
    - each face is its centre plus Gaussian noise of a per-identity spread: same-person cosine
      ~0.45-0.8 (mean ~0.64);
    - a share `bursts` of the faces are burst shots or re-saved copies of another face of the same
      person (cosine ~0.97), as phones produce them. Returns (x float32 [n, dim], labels [n]).
    """
    rng = np.random.default_rng(seed)
    largest = largest or max(2, n // 40)
    sizes: list[int] = []
    base = round(n / (1 + bursts))
    while sum(sizes) < base:
        sizes.append(min(int(rng.zipf(1.9)), largest, base - sum(sizes)))
    k = len(sizes)
    scales = np.arange(1, dim + 1, dtype=np.float32) ** -0.35
    scales /= np.sqrt((scales**2).sum())
    mean = rng.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    centres = rng.standard_normal((k, dim)).astype(np.float32) * scales
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres += 0.3 * mean
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(k), sizes)
    spread = rng.uniform(0.5, 1.0, size=k)[labels] * rng.uniform(0.9, 1.1, size=len(labels))
    x = centres[labels] + spread[:, None] * rng.standard_normal((len(labels), dim)).astype(
        np.float32
    ) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    extra = n - len(x)
    if extra > 0:
        src = rng.choice(len(x), extra, replace=True)
        dup = x[src] + 0.25 * rng.standard_normal((extra, dim)).astype(np.float32) / np.sqrt(dim)
        dup /= np.linalg.norm(dup, axis=1, keepdims=True)
        x = np.vstack([x, dup])
        labels = np.concatenate([labels, labels[src]])
    perm = rng.permutation(n)
    x, labels = x[perm].astype(np.float32), labels[perm]
    counts = np.bincount(labels)
    labels = np.where(counts[labels] == 1, -1, labels)
    return x, labels


def adjusted_rand(truth: np.ndarray, pred: np.ndarray) -> float:
    """ARI with every noise point (-1) as a cluster of its own, in the truth and in the prediction."""
    from sklearn.metrics import adjusted_rand_score

    t, p = truth.copy(), pred.copy()
    t[t < 0] = np.arange((t < 0).sum()) + t.max(initial=0) + 1
    p[p < 0] = np.arange((p < 0).sum()) + p.max(initial=0) + 1
    return float(adjusted_rand_score(t, p))
