"""A tiny insightface model pack built with ``onnx.helper``: graphs with the real buffalo_l file
names, input/output names, shapes and counts, computing something checkable instead of faces.

- ``det_10g.onnx`` (SCRFD: input ``input.1`` [1, 3, ?, ?]; nine outputs, scores / box distances /
  landmark distances at strides 8, 16, 32, two anchors per cell): a *face* is a square of one
  saturated primary colour (a *slot*: red, green or blue, that channel at least ``_DOMINANCE``
  above the other two). Each present slot fires one anchor per stride, the one whose cell holds
  the centre of the slot's pixels, with score ``SLOT_SCORES[slot]``, the box of those pixels and
  landmarks at the ArcFace template fitted to that box. The box is the pixels' extent at the
  detector's input size, so a face comes back at its source box within one detector pixel after
  the backend's resizing and insightface's letterbox, at any scale.
- ``w600k_r50.onnx`` (ArcFace: input [N, 3, 112, 112], output [N, 512]): a fixed random
  projection of the crop average-pooled to 4x4, so an embedding is a known function of the
  aligned crop (:func:`expected_embedding`).
- ``1k3d68``, ``2d106det``, ``genderage``: heads with the real shapes that the backend must load
  past and ignore (it allows only detection and recognition).

Every graph is a few KB to 100 KB and builds in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STRIDES = (8, 16, 32)
SLOT_SCORES = (0.9, 0.8, 0.7)  # red, green, blue (RGB order, as the detector sees the blob)
_DOMINANCE = 0.75  # normalised units (x - 127.5) / 128: about 96 grey levels
_DET_OUTPUTS = ("448", "471", "494", "451", "474", "497", "454", "477", "500")  # det_10g's
_POOL = 4  # the recognizer pools the 112 px crop to _POOL x _POOL cells per channel
EMBED_DIM = 512
# insightface.utils.face_align.arcface_dst / 112: the landmarks of a face filling its box
TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]], np.float32) / 112.0
_OPSET = [helper.make_opsetid("", 17)]
_IR = 8  # what onnxruntime 1.17 (the floor in pyproject) reads


class _Graph:
    """Node list with generated value names; names avoid ArcFaceONNX's 'Sub'/'Mul' prefixes,
    which would switch it to MXNet preprocessing (mean 0, std 1) instead of w600k's 127.5."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes, self.inits, self.n = prefix, [], [], 0

    def const(self, value, dtype=np.float32) -> str:
        name = f"{self.prefix}_c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        self.n += 1
        out = out or f"{self.prefix}_v{self.n}"
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [out], f"{self.prefix}_{self.n}", **attrs))
        return out

    def model(self, inputs, outputs) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.prefix, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=_OPSET, ir_version=_IR)
        onnx.checker.check_model(model)
        return model


def _slot_box(g: _Graph, x: str, k: int) -> tuple[str, list[str]]:
    """(present [1], [x1, y1, x2, y2] each [1] float) of the pixels where channel k dominates."""
    chans = [g.op("Gather", x, g.const(c, np.int64), axis=1) for c in range(3)]  # [1, H, W]
    others = g.op("Max", *[chans[c] for c in range(3) if c != k])
    dominant = g.op("Greater", g.op("Sub", chans[k], others), g.const(_DOMINANCE))
    mask = g.op("Cast", dominant, to=TensorProto.FLOAT)
    cols = g.op("ReduceMax", mask, axes=[1], keepdims=0)  # [1, W]
    rows = g.op("ReduceMax", mask, axes=[2], keepdims=0)  # [1, H]
    present = g.op("ReduceMax", cols, axes=[1], keepdims=0)  # [1]
    one = g.const([1.0])
    edges = []
    for prof in (cols, rows):
        first = g.op("Cast", g.op("ArgMax", prof, axis=1, keepdims=0), to=TensorProto.FLOAT)
        last = g.op("ArgMax", prof, axis=1, keepdims=0, select_last_index=1)
        edges.append((first, g.op("Add", g.op("Cast", last, to=TensorProto.FLOAT), one)))
    (x1, x2), (y1, y2) = edges
    return present, [x1, y1, x2, y2]


def _stride_outputs(g: _Graph, x: str, slots, s: int, names: tuple[str, str, str]) -> None:
    """Scores [h*w*2, 1], box distances [h*w*2, 4] and landmark distances [h*w*2, 10] at
    stride s, anchors in SCRFD's order (row, column, anchor); distances in stride units."""
    shape = g.op("Shape", x)
    side = [g.op("Div", g.op("Gather", shape, g.const(i, np.int64)), g.const(s, np.int64))
            for i in (2, 3)]  # h, w cells
    ay, ax = (g.op("Mul", g.op("Cast", g.op("Range", g.const(0, np.int64), n,
                                            g.const(1, np.int64)), to=TensorProto.FLOAT),
                   g.const(float(s))) for n in side)  # anchor centres (cell top-left), px
    ay = g.op("Unsqueeze", ay, g.const([1], np.int64))  # [h, 1]
    ax = g.op("Unsqueeze", ax, g.const([0], np.int64))  # [1, w]
    zero = g.op("Add", g.op("Mul", ay, g.const(0.0)), g.op("Mul", ax, g.const(0.0)))  # [h, w]
    gx, gy = g.op("Add", ax, zero), g.op("Add", ay, zero)
    inv = g.const(1.0 / s)
    score, dist, kps = zero, None, None
    for k, (present, (x1, y1, x2, y2)) in enumerate(slots):
        half = g.const(0.5)
        cx = g.op("Mul", g.op("Add", x1, x2), half)
        cy = g.op("Mul", g.op("Add", y1, y2), half)
        cell = [g.op("Mul", g.op("Floor", g.op("Mul", c, inv)), g.const(float(s)))
                for c in (cx, cy)]
        hit = g.op("Mul", g.op("Cast", g.op("Equal", gx, cell[0]), to=TensorProto.FLOAT),
                   g.op("Cast", g.op("Equal", gy, cell[1]), to=TensorProto.FLOAT))
        hit = g.op("Mul", hit, present)
        score = g.op("Add", score, g.op("Mul", hit, g.const(SLOT_SCORES[k])))
        w, h = g.op("Sub", x2, x1), g.op("Sub", y2, y1)
        parts = [g.op("Sub", gx, x1), g.op("Sub", gy, y1), g.op("Sub", x2, gx),
                 g.op("Sub", y2, gy)]
        for tx, ty in TEMPLATE:
            parts.append(g.op("Sub", g.op("Add", x1, g.op("Mul", w, g.const(float(tx)))), gx))
            parts.append(g.op("Sub", g.op("Add", y1, g.op("Mul", h, g.const(float(ty)))), gy))
        parts = [g.op("Unsqueeze", g.op("Mul", g.op("Mul", p, inv), hit),
                      g.const([2], np.int64)) for p in parts]  # [h, w, 1]; 0 off the hit cell
        d, kp = g.op("Concat", *parts[:4], axis=2), g.op("Concat", *parts[4:], axis=2)
        dist = d if dist is None else g.op("Add", dist, d)
        kps = kp if kps is None else g.op("Add", kps, kp)
    # the second anchor of each cell never fires; its distances repeat the first's
    score = g.op("Concat", g.op("Unsqueeze", score, g.const([2], np.int64)),
                 g.op("Unsqueeze", g.op("Mul", zero, g.const(0.0)), g.const([2], np.int64)),
                 axis=2)
    for value, width, name in ((score, 1, names[0]), (dist, 4, names[1]), (kps, 10, names[2])):
        if width > 1:
            value = g.op("Concat", value, value, axis=2)
        g.op("Reshape", value, g.const([-1, width], np.int64), out=name)


def detector(det_side: int = 640) -> onnx.ModelProto:
    """The SCRFD-shaped detector; output shapes are declared for a det_side square input, as
    det_10g declares them for 640."""
    g = _Graph("det")
    slots = [_slot_box(g, "input.1", k) for k in range(3)]
    outputs = []
    for i, s in enumerate(STRIDES):
        names = (_DET_OUTPUTS[i], _DET_OUTPUTS[3 + i], _DET_OUTPUTS[6 + i])
        _stride_outputs(g, "input.1", slots, s, names)
    for j, width in enumerate((1, 4, 10)):
        for i, s in enumerate(STRIDES):
            rows = (det_side // s) ** 2 * 2
            outputs.append(helper.make_tensor_value_info(
                _DET_OUTPUTS[3 * j + i], TensorProto.FLOAT, [rows, width]))
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])
    return g.model([inp], outputs)


def projection(dim: int = EMBED_DIM) -> np.ndarray:
    """The recognizer's fixed (3 * _POOL**2, dim) projection."""
    return np.random.default_rng(112).standard_normal((3 * _POOL * _POOL, dim)).astype(np.float32)


def _head(prefix: str, side: int, out_dim: int, batch: int | str, out_name: str,
          weights: np.ndarray | None = None) -> onnx.ModelProto:
    """[batch, 3, side, side] -> average-pool -> flatten -> @ weights: _POOL x _POOL cells with
    ``weights``, else one cell and constant weights (a head nobody reads, kept small)."""
    g = _Graph(prefix)
    pool = _POOL if weights is not None else 1
    k = side // pool
    pooled = g.op("AveragePool", "input.1", kernel_shape=[k, k], strides=[k, k])
    flat = g.op("Flatten", pooled, axis=1)
    w = weights if weights is not None else np.full((3, out_dim), 0.01)
    g.op("MatMul", flat, g.const(w), out=out_name)
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, side, side])
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, out_dim])
    return g.model([inp], [out])


def write_pack(root: Path, pack: str = "buffalo_l", rec_batch: int | str = "None",
               detector_file: bool = True) -> Path:
    """Write the pack to ``root/models/<pack>/`` (the layout ``detect.insightface_root`` names)
    and return that folder. ``rec_batch=1`` gives a recognizer with a fixed batch of one."""
    folder = Path(root) / "models" / pack
    folder.mkdir(parents=True, exist_ok=True)
    models = {
        "1k3d68.onnx": _head("lmk3d", 192, 3309, "None", "fc1"),
        "2d106det.onnx": _head("lmk2d", 192, 212, "None", "fc1"),
        "genderage.onnx": _head("ga", 96, 3, "None", "fc1"),
        "w600k_r50.onnx": _head("rec", 112, EMBED_DIM, rec_batch, "683", projection()),
    }
    if detector_file:
        models["det_10g.onnx"] = detector()
    for name, model in models.items():
        onnx.save(model, str(folder / name))
    return folder


def expected_embedding(chip_bgr: np.ndarray) -> np.ndarray:
    """What the recognizer gives for one aligned 112x112 BGR crop, computed without onnx:
    RGB, (x - 127.5) / 127.5, 4x4 average pool, projection; unit length."""
    x = (chip_bgr[..., ::-1].astype(np.float32) - 127.5) / 127.5
    k = 112 // _POOL
    pooled = x.reshape(_POOL, k, _POOL, k, 3).mean(axis=(1, 3)).transpose(2, 0, 1).ravel()
    v = pooled @ projection()
    return v / np.linalg.norm(v)


def template_box_kps(box) -> np.ndarray:
    """(5, 2) landmarks the detector gives a face whose box is ``box`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (TEMPLATE * [x2 - x1, y2 - y1] + [x1, y1]).astype(np.float32)


# -- images the tiny detector reads ---------------------------------------------------------------
def background(w: int, h: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) BGR uint8 grey texture: no channel dominates, so nothing here is a face."""
    rng = np.random.default_rng(seed)
    grey = rng.integers(40, 200, (h // 8 + 1, w // 8 + 1), np.uint8)
    grey = cv2.resize(grey, (w, h), interpolation=cv2.INTER_LINEAR)
    jitter = rng.integers(-10, 11, (h, w, 3))
    return np.clip(grey[..., None].astype(int) + jitter, 0, 255).astype(np.uint8)


def paint_face(image: np.ndarray, slot: int, box, seed: int) -> None:
    """Paint a face of ``slot`` (0 red, 1 green, 2 blue) filling ``box`` (x1, y1, x2, y2 ints):
    its dominant channel a 4x4 pattern given by ``seed`` (the same seed is the same person), the
    other two dark."""
    x1, y1, x2, y2 = box
    rng = np.random.default_rng(seed)
    pattern = rng.integers(170, 256, (_POOL, _POOL)).astype(np.uint8)
    face = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
    face[..., 2 - slot] = cv2.resize(pattern, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
    face[..., [c for c in range(3) if c != 2 - slot]] = rng.integers(0, 40, 2, np.uint8)
    image[y1:y2, x1:x2] = face
