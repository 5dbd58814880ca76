"""insightface backend: SCRFD detector with 5 landmarks and an ArcFace embedding (512-d for
buffalo_l), through ``insightface.app.FaceAnalysis`` on onnxruntime (CUDA when available and
``cfg.insightface_ctx >= 0``).

Model packs are never downloaded at run time: ``FaceAnalysis`` would fetch a missing pack from
GitHub, so the pack folder is checked first and a missing one is a ModelError naming where to
put it.

``analyze`` runs the pack's detector (on a copy no larger than ``max_side``) and then embeds all
of the frame's faces from the full-resolution frame in one recognizer run; ``refine`` embeds the
same way, and either can leave embedding to a later ``embed`` call.

``refine`` choice: detection on a crop around each given box (the box grown by 50 % each side,
upscaled to at least 160 px). SCRFD is cheap on a small crop and gives landmarks consistent with
full-frame detections, whereas the recognition model alone needs landmarks it cannot produce.
When the crop yields no face centred inside the box (the crop also holds parts of neighbours),
the landmarks are placed from the ArcFace template fitted to the box, so the tracker still gets
one Face per box (its embedding is then approximate).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from worker.config import DetectConfig
from worker.errors import ModelError
from worker.faces.base import sort_by_x, unit
from worker.records import Face

# ArcFace 112x112 template (insightface ``face_align.arcface_dst``), as fractions of the side.
_TEMPLATE = (
    np.array(
        [
            [38.2946, 51.6963],
            [73.5318, 51.5014],
            [56.0252, 71.7366],
            [41.5493, 92.3655],
            [70.7299, 92.2041],
        ],
        dtype=np.float32,
    )
    / 112.0
)

_REFINE_GROW = 0.5  # grow each refine box by this fraction of its side on every side
_REFINE_MIN_SIDE = 160  # px: small crops are upscaled so SCRFD's smallest anchors still fit


def pack_dir(cfg: DetectConfig) -> Path:
    """Where the configured model pack must be: ``<insightface_root>/models/<insightface_pack>``."""
    return Path(cfg.insightface_root).expanduser() / "models" / cfg.insightface_pack


def check_pack(cfg: DetectConfig) -> Path:
    """The pack folder, or ModelError saying where to put the pack when it has no .onnx file."""
    path = pack_dir(cfg)
    if not path.is_dir() or not any(path.glob("*.onnx")):
        raise ModelError(
            f"insightface model pack {cfg.insightface_pack!r} not found: put its .onnx files in "
            f"{path}/ (unzip {cfg.insightface_pack}.zip there, or set detect.insightface_root). "
            "Nothing is downloaded at run time."
        )
    return path


@lru_cache(maxsize=4)
def _face_analysis(root: str, pack: str, ctx: int):
    # Cached per process: building the onnxruntime sessions takes seconds.
    from insightface.app import FaceAnalysis

    providers = ["CPUExecutionProvider"]
    if ctx >= 0:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    folder = Path(root) / "models" / pack
    try:
        # The folder, not the pack's name: insightface reads a name that is also a folder in the
        # working directory as that folder, so ./buffalo_l/ would be loaded instead of the pack
        # that check_pack found.
        app = FaceAnalysis(
            name=str(folder),
            root=root,
            allowed_modules=["detection", "recognition"],
            providers=providers,
        )
    except AssertionError as err:  # FaceAnalysis asserts that it found a detection model
        raise ModelError(f"insightface pack in {folder} has no detection model") from err
    app.prepare(ctx_id=ctx, det_thresh=0.5, det_size=(640, 640))
    return app


class InsightFaceAnalyzer:
    """:class:`~worker.faces.base.FaceAnalyzer` backed by an insightface model pack."""

    # ArcFace cosine distances: Immich's default for starting a person is 0.5
    identity_max_dist = 0.5
    track_max_embed_dist = 0.6

    def __init__(self, cfg: DetectConfig):
        check_pack(cfg)
        self.cfg = cfg
        self.name = f"insightface-{cfg.insightface_pack}"
        root = str(Path(cfg.insightface_root).expanduser())
        self.app = _face_analysis(root, cfg.insightface_pack, cfg.insightface_ctx)
        if "recognition" not in self.app.models:
            raise ModelError(f"insightface pack in {pack_dir(cfg)} has no recognition model")
        self.embed_dim = int(self.app.models["recognition"].output_shape[-1])

    def analyze(self, image: np.ndarray, embed: bool = True, min_face: float = 0.0,
                near: float = 0.0) -> list[Face]:
        # min_face and near are not used: SCRFD runs at one fixed input size whatever the faces' size.
        # Detected on a copy whose longer side is at most cfg.max_side; detection only, since
        # FaceAnalysis.get would also embed each face, one run per face and from that copy.
        h, w = image.shape[:2]
        scale = min(1.0, self.cfg.max_side / max(h, w))
        small = image
        if scale < 1.0:
            small = cv2.resize(
                image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
        dets, kpss = self.app.det_model.detect(np.ascontiguousarray(small), max_num=0)
        faces = [
            Face(
                bbox=(d[:4] / scale).astype(np.float32),
                kps=(k / scale).astype(np.float32),
                det_score=float(d[4]),
                detected=True,
            )
            for d, k in zip(dets, kpss, strict=True)
            if d[4] >= self.cfg.min_score
        ]
        if embed:
            self.embed(image, faces)
        return sort_by_x(faces)

    def embed(self, image: np.ndarray, faces: list[Face]) -> None:
        from insightface.utils import face_align

        if not faces:
            return

        rec = self.app.models["recognition"]
        chips = [
            face_align.norm_crop(image, landmark=f.kps, image_size=rec.input_size[0]) for f in faces
        ]
        # one run for all faces (what a GPU wants), one chip a run where the graph fixes its batch
        step = 1 if isinstance(rec.input_shape[0], int) else max(1, len(chips))
        feats = [
            feat for i in range(0, len(chips), step) for feat in rec.get_feat(chips[i : i + step])
        ]
        for face, feat in zip(faces, feats, strict=True):
            face.embedding = unit(feat)

    def refine(
        self, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None = None,
        embed: bool = True,
    ) -> list[Face]:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        h, w = image.shape[:2]
        out = []
        for i, box in enumerate(boxes):
            score = 0.0 if scores is None else float(scores[i])
            side = max(box[2] - box[0], box[3] - box[1], 1.0)
            x1, y1 = (int(max(0, v - _REFINE_GROW * side)) for v in box[:2])
            x2 = int(min(w, box[2] + _REFINE_GROW * side))
            y2 = int(min(h, box[3] + _REFINE_GROW * side))
            # a box wholly outside the frame gives an empty crop: a negative end would wrap
            # round to the far side, and cv2.resize fails on an empty one
            crop = image[y1:max(y1, y2), x1:max(x1, x2)]
            kps = template_kps(box)
            if crop.size:
                up = max(1.0, _REFINE_MIN_SIDE / min(crop.shape[:2]))
                if up > 1.0:
                    crop = cv2.resize(crop, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
                dets, kpss = self.app.det_model.detect(np.ascontiguousarray(crop), max_num=0)
                offset = np.array([x1, y1], np.float32)
                centres = (dets[:, :2] + dets[:, 2:4]) / 2 / up + offset
                centre = (box[:2] + box[2:]) / 2
                # the grown crop also holds neighbours: only a face centred inside the box is its face
                near = [
                    (float(np.linalg.norm(c - centre)), k)
                    for k, c in enumerate(centres)
                    if np.all(c >= box[:2]) and np.all(c <= box[2:])
                ]
                if near:
                    kps = kpss[min(near)[1]] / up + offset
            # the tracker owns the box; only landmarks are refined
            out.append(Face(bbox=box.copy(), kps=np.asarray(kps, np.float32), det_score=score,
                            detected=False))
        if embed:
            self.embed(image, out)  # from the full frame, one run for all, as analyze does
        return out


def template_kps(box: np.ndarray) -> np.ndarray:
    """(5, 2) float32 landmarks of a frontal face filling ``box`` (x1, y1, x2, y2 px)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (_TEMPLATE * [x2 - x1, y2 - y1] + [x1, y1]).astype(np.float32)
