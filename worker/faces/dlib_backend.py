"""dlib face backend: HOG (default) or MMOD-CNN detector, 68-point landmarks reduced to the five
insightface points, and dlib's 128-d ResNet embedding. CPU-only, offline: the model files come
from the ``face-recognition-models`` wheel.

Measured on the 2-core development machine: HOG on a 1280x886 photo 0.38 s (upsample 1),
landmarks about 1-3 ms per face, the embedding about 70 ms per face (so videos embed a tracked
face only now and then: ``worker.stages.analyse``); the CNN detector takes ~30 s per photo on CPU.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from worker.config import DetectConfig
from worker.errors import ModelError
from worker.faces.base import sort_by_x, unit
from worker.faces.hog_levels import levels_to_skip, run_from_level
from worker.records import Face

EMBED_DIM = 128

# 68-point (iBUG 300-W) indices. Points 36-41 are the subject's right eye, which is the
# image-left eye of an upright, unmirrored face: the same anatomical order insightface uses.
_LEFT_EYE = slice(36, 42)
_RIGHT_EYE = slice(42, 48)
_NOSE_TIP = 30
_MOUTH_LEFT = 48
_MOUTH_RIGHT = 54
# HOG's window is 80 px: without upsampling it finds every face of a 70 px box and more in the
# detection image (59 of 59 photo faces at 70 px, 57 at 60 px); a margin over that
QUICK_FACE_PX = 90
# The box HOG draws around a face, from its 68 points: centre = their mean + (dx, dy) times their
# RMS radius, side = that radius times the last number. Medians over HOG's boxes of 510 faces:
# 323 in every dev clip (every 10th of 150 frames), 187 in the labelled photos, which alone give
# (-0.0009, -0.1115, 2.7849); the side varies by 8 % around it, the centre by 0.1 radius.
BOX_FROM_68 = (0.0028, -0.1175, 2.7912)


@lru_cache(maxsize=1)
def models_dir() -> Path:
    """Folder holding the .dat files of ``face-recognition-models``. Located without importing
    the package, whose ``__init__`` needs ``pkg_resources``."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "dlib models not found: install the 'face-recognition-models' package "
            "(pip install face-recognition-models)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _model_path(name: str) -> str:
    path = models_dir() / name
    if not path.is_file():
        raise ModelError(f"dlib model file missing: {path} (reinstall face-recognition-models)")
    return str(path)


# One instance of each model per process: loading the ResNet takes ~0.5 s.
@lru_cache(maxsize=1)
def _hog():
    import dlib

    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=1)
def _cnn():
    import dlib

    return dlib.cnn_face_detection_model_v1(_model_path("mmod_human_face_detector.dat"))


@lru_cache(maxsize=1)
def _shape68():
    import dlib

    return dlib.shape_predictor(_model_path("shape_predictor_68_face_landmarks.dat"))


@lru_cache(maxsize=1)
def _encoder():
    import dlib

    return dlib.face_recognition_model_v1(_model_path("dlib_face_recognition_resnet_model_v1.dat"))


def margin_to_score(margin: float) -> float:
    """Map a dlib detector margin (HOG SVM margin or MMOD confidence, unbounded, 0 = dlib's
    default threshold) to 0..1 with a logistic: margin 0 -> 0.73, 1 -> 0.95, -0.5 -> 0.5."""
    return 1.0 / (1.0 + math.exp(-(2.0 * margin + 1.0)))


def kps5_from_68(points: np.ndarray) -> np.ndarray:
    """(68, 2) dlib landmarks -> (5, 2) float32 insightface-order points: eye centres (mean of
    the six eye-contour points), nose tip, mouth corners."""
    return np.stack(
        [
            points[_LEFT_EYE].mean(axis=0),
            points[_RIGHT_EYE].mean(axis=0),
            points[_NOSE_TIP],
            points[_MOUTH_LEFT],
            points[_MOUTH_RIGHT],
        ]
    ).astype(np.float32)


def points68(shape) -> np.ndarray:
    """(68, 2) float32 px of a dlib ``full_object_detection``."""
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def box_from_68(points: np.ndarray) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) px: the box HOG would draw around a face with these (68, 2) points."""
    centre = points.mean(axis=0)
    radius = float(np.sqrt(((points - centre) ** 2).sum(axis=1).mean()))
    dx, dy, side = BOX_FROM_68
    cx, cy, half = centre[0] + dx * radius, centre[1] + dy * radius, side * radius / 2
    return cx - half, cy - half, cx + half, cy + half


def to_dlib_rgb(image: np.ndarray) -> np.ndarray:
    """BGR (H, W, 3) uint8 -> C-contiguous RGB; dlib silently finds nothing on strided views."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB))


class DlibAnalyzer:
    """:class:`~worker.faces.base.FaceAnalyzer` backed by dlib."""

    embed_dim = EMBED_DIM
    # cosine distances in dlib's space (measured on ../shared/data and generated clips; see
    # IdentityConfig / TrackConfig)
    identity_max_dist = 0.075
    track_max_embed_dist = 0.1

    def __init__(self, cfg: DetectConfig):
        if cfg.dlib_detector not in ("hog", "cnn"):
            raise ValueError(f"unknown dlib detector {cfg.dlib_detector!r}; choose hog or cnn")
        self.cfg = cfg
        self.name = f"dlib-{cfg.dlib_detector}"
        # Load eagerly so a missing model file fails at construction, not on the first frame.
        (_hog if cfg.dlib_detector == "hog" else _cnn)()
        _shape68()
        _encoder()

    def detect(self, rgb: np.ndarray, min_face: float = 0.0, near: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ((N, 4) float32 x1, y1, x2, y2 full-resolution pixels) and scores ((N,) 0..1) of
        the faces in an RGB image, detected on a copy whose longer side is <= cfg.max_side.
        ``min_face`` (box side, full-resolution px): when faces that small are still
        ``QUICK_FACE_PX`` wide without upsampling, HOG runs without it, on a copy scaled so that
        such a face is that wide (each halving of the side makes it about 4x cheaper).
        ``near`` (box side, full-resolution px; with HOG and no ``min_face``): the faces that wide
        come out at the boxes and scores of a full search, while the pyramid levels that only
        hold faces under about half that are skipped (``worker.faces.hog_levels``)."""
        h, w = rgb.shape[:2]
        scale = min(1.0, self.cfg.max_side / max(h, w))
        upsample = self.cfg.upsample
        if min_face > 0 and self.cfg.dlib_detector == "hog" and min_face * scale >= QUICK_FACE_PX:
            upsample, scale = 0, QUICK_FACE_PX / min_face
        small = rgb
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
        found = None
        if near > 0 and not min_face and self.cfg.dlib_detector == "hog":
            skip = levels_to_skip(near * scale, upsample)
            found = run_from_level(_hog(), small, upsample, skip) if skip else None
        if found is not None:
            rects, margins = found
        elif self.cfg.dlib_detector == "hog":
            rects, margins, _ = _hog().run(small, upsample, 0.0)
        else:
            dets = _cnn()(small, self.cfg.upsample)
            rects, margins = [d.rect for d in dets], [d.confidence for d in dets]
        boxes = np.array(
            [[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], dtype=np.float32
        ).reshape(-1, 4)
        boxes /= scale
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        scores = np.array([margin_to_score(m) for m in margins], dtype=np.float32)
        keep = scores >= self.cfg.min_score
        return boxes[keep], scores[keep]

    def _shapes(self, rgb: np.ndarray, boxes) -> object:
        """The 68 points fitted in each box, then ``landmark_refits`` times again in the box they
        imply (``box_from_68``). The fit starts from the box and ends near it, and a tracker's
        box is not HOG's: the strided analysis measured a face from other points than the
        per-frame one, and kept other references. From boxes moved by up to 5 % and scaled by
        up to 7 % around HOG's, on 51 faces of seven dev clips, two refits took the spread of
        the face's size from 1.2 % to 0.3 % and of its sharpness from 3.9 % to 2.4 % (means; one
        face, whose fit has two answers, spreads more). About 3 ms a fit on a core."""
        import dlib

        def fit(x1: float, y1: float, x2: float, y2: float):
            rect = dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)) - 1, int(round(y2)) - 1)
            return _shape68()(rgb, rect)

        shapes = dlib.full_object_detections()
        for box in boxes:
            shape = fit(*box)
            for _ in range(self.cfg.landmark_refits):
                shape = fit(*box_from_68(points68(shape)))
            shapes.append(shape)
        return shapes

    def _describe(
        self, rgb: np.ndarray, boxes: np.ndarray, scores: np.ndarray, detected: bool, embed: bool
    ) -> list[Face]:
        if len(boxes) == 0:
            return []
        shapes = self._shapes(rgb, boxes)
        # One batched call: the ResNet runs on all 150x150 face chips together.
        descriptors = _encoder().compute_face_descriptor(rgb, shapes) if embed else [None] * len(boxes)
        faces = []
        for box, score, shape, desc in zip(boxes, scores, shapes, descriptors, strict=True):
            pts = points68(shape)
            faces.append(
                Face(
                    bbox=np.asarray(box, dtype=np.float32),
                    kps=kps5_from_68(pts),
                    det_score=float(score),
                    embedding=None if desc is None else unit(np.array(desc)),
                    detected=detected,
                )
            )
        return faces

    def analyze(self, image: np.ndarray, embed: bool = True, min_face: float = 0.0,
                near: float = 0.0) -> list[Face]:
        rgb = to_dlib_rgb(image)
        boxes, scores = self.detect(rgb, min_face, near)
        return sort_by_x(self._describe(rgb, boxes, scores, detected=True, embed=embed))

    def refine(
        self, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None = None,
        embed: bool = True,
    ) -> list[Face]:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = (
            np.zeros(len(boxes), np.float32) if scores is None else np.asarray(scores, np.float32)
        )
        return self._describe(to_dlib_rgb(image), boxes, scores, detected=False, embed=embed)

    def embed(self, image: np.ndarray, faces: list[Face]) -> None:
        # the 68 points are fitted again from each box (about 1 ms a face): the same box gives
        # the same points, hence the same embedding analyze or refine would have given
        if not faces:
            return
        rgb = to_dlib_rgb(image)
        shapes = self._shapes(rgb, [f.bbox for f in faces])
        for face, desc in zip(faces, _encoder().compute_face_descriptor(rgb, shapes), strict=True):
            face.embedding = unit(np.array(desc))
