"""The face analyser interface shared by all detector/embedder backends.

A backend turns an upright BGR ``uint8`` image into :class:`~worker.records.Face` records:
box, five landmarks in insightface order, detector score (0..1) and a unit-norm embedding.
Backends are imported lazily so that a missing optional dependency (insightface, onnxruntime)
only fails when that backend is chosen.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from worker.config import DetectConfig
from worker.records import Face

BACKENDS = ("dlib", "insightface")


@runtime_checkable
class FaceAnalyzer(Protocol):
    """Detects, landmarks and embeds faces. Implementations are cheap to call repeatedly; their
    models are loaded once per process."""

    name: str  # backend name, e.g. "dlib-hog", "insightface-buffalo_l"
    embed_dim: int  # length of Face.embedding
    identity_max_dist: float  # calibrated cosine distance for IdentityConfig.max_dist
    track_max_embed_dist: float  # calibrated cosine distance for TrackConfig.max_embed_dist

    def analyze(self, image: np.ndarray, embed: bool = True, min_face: float = 0.0,
                near: float = 0.0) -> list[Face]:
        """Detect every face in ``image`` (H, W, 3 BGR uint8, upright) and return them sorted by
        the left edge of their box (x1, pixels), each with landmarks and (``embed``) an
        embedding; without ``embed`` the embedding is None, for :meth:`embed` to fill in.
        ``min_face``: the smallest box side (pixels) the caller needs found; a backend may then
        search a cheaper, coarser scale (0: every size it can find). ``near``: the box side
        (pixels) of the faces the caller looks for: a backend may leave out faces under about
        half that, provided those it returns are found as a search for every size finds them."""
        ...

    def refine(
        self, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None = None,
        embed: bool = True,
    ) -> list[Face]:
        """Landmarks and (``embed``) embeddings for given ``boxes`` ((N, 4) float x1, y1, x2, y2
        pixels) without running the full-image detector; one Face per box, in box order, with
        ``detected=False``. ``scores`` ((N,), 0..1) become ``det_score`` (the tracker carries the
        score of the track's last detection); 0 when omitted."""
        ...

    def embed(self, image: np.ndarray, faces: list[Face]) -> None:
        """Set the embedding of ``faces`` of ``image`` as :meth:`analyze` or :meth:`refine`
        returned them (their boxes and landmarks unchanged since), in one batched run."""
        ...


def make_analyzer(cfg: DetectConfig) -> FaceAnalyzer:
    """Build the backend named by ``cfg.backend``; raises ValueError for an unknown name."""
    if cfg.backend == "dlib":
        from worker.faces.dlib_backend import DlibAnalyzer

        return DlibAnalyzer(cfg)
    if cfg.backend == "insightface":
        from worker.faces.insightface_backend import InsightFaceAnalyzer

        return InsightFaceAnalyzer(cfg)
    raise ValueError(f"unknown face backend {cfg.backend!r}; choose one of: {', '.join(BACKENDS)}")


def sort_by_x(faces: list[Face]) -> list[Face]:
    """Faces ordered by the left edge of their box, so outputs are deterministic."""
    return sorted(faces, key=lambda f: (float(f.bbox[0]), float(f.bbox[1])))


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` as float32 scaled to unit L2 norm (unchanged direction; zeros stay zeros)."""
    v = np.asarray(v, dtype=np.float32).ravel()
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
