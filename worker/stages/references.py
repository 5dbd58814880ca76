"""Choosing each person's references and, for every target face, the reference to use.

Decided from the person's own faces, not from numbers tuned on a few clips: a candidate must be
``min_gain`` times sharper than the lower quartile of its person's faces (there must be faces it
can serve), and a face is restored with a reference only when that reference is ``min_gain``
times sharper than the face itself. Absolute floors only reject crops that can help no face
(``floor_reason``). The qualified candidates are ranked by quality and kept diverse: new
references are taken first where they differ in pose from those already chosen, then where they
come from another moment of the clip, and never as a near-duplicate crop of one of them. When a
person gets none, ``select_references`` says why.
"""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass

import numpy as np

from worker.config import ReferenceConfig
from worker.records import Face, Reference


@dataclass
class Candidate:
    """A face that may become a reference, with its aligned crop (S,S,3 BGR uint8)."""

    face: Face
    crop: np.ndarray
    confidence: float | None = None  # worker.faces.verify: >= 0 a face, < 0 not; None unchecked
    origin: str = ""  # "library" for a reference library's photo; "" for the item's own faces


# A talking head's sharpest moment gives the best crops of its track: with only the k best by
# quality kept, LivePortrait d6 (one 45-frame track) kept 8 near-duplicates of one expression
# and ended with a single reference. The pool also keeps the best crop of each of the k best
# windows of this many frames (half a second at 24 fps): other moments, other expressions.
CANDIDATE_WINDOW = 12


class CandidatePool:
    """Keeps, per group (a video track), the best ``k`` candidates by quality and, with
    ``window`` > 0, the best candidate of each of the ``k`` windows of ``window`` frames whose
    best is best: at most 2 ``k`` per group, bounded in memory. What is kept depends only on
    the candidates offered, not on their order (segments' pools merge into the one pass's)."""

    def __init__(self, k: int, window: int = 0):
        self.k = k
        self.window = window
        self._heaps: dict[int, list[tuple[float, int, Candidate]]] = {}
        self._best: dict[int, dict[int, tuple[float, int, Candidate]]] = {}  # group -> window -> best
        self._tick = 0

    def would_keep(self, group: int, quality: float, frame: int | None = None) -> bool:
        """Cheap check before the crop is cut: is there room, or is this better than the worst
        (of the group, or with ``frame``, of its window's best)?"""
        heap = self._heaps.get(group, [])
        if len(heap) < self.k or quality > heap[0][0]:
            return True
        if not self.window or frame is None:
            return False
        best = self._best.get(group, {})
        mine = best.get(frame // self.window)
        if mine is not None:
            return quality > mine[0]
        return len(best) < self.k or quality > min(b[0] for b in best.values())

    def offer(self, group: int, cand: Candidate) -> None:
        heap = self._heaps.setdefault(group, [])
        self._tick += 1  # tie-breaker: candidates themselves are not comparable
        item = (cand.face.quality, self._tick, cand)
        if len(heap) < self.k:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)
        if self.window:
            best = self._best.setdefault(group, {})
            w = cand.face.frame // self.window
            if w not in best or item[0] > best[w][0]:
                best[w] = item
                if len(best) > self.k:
                    del best[min(best, key=lambda x: best[x][:2])]

    def candidates(self, groups: list[int] | None = None) -> list[Candidate]:
        keys = self._heaps if groups is None else [g for g in groups if g in self._heaps]
        out: dict[int, Candidate] = {}
        for g in keys:
            for _, _, c in [*self._heaps[g], *self._best.get(g, {}).values()]:
                out.setdefault(id(c), c)
        return list(out.values())


def reference_pool(cfg: ReferenceConfig) -> CandidatePool:
    """The pool that keeps a video's reference candidates (analysis, segments, looking again)."""
    return CandidatePool(cfg.candidates_per_track, CANDIDATE_WINDOW)


def _pose_gap(a: Face | Reference, b: Face | Reference) -> float:
    return float(np.hypot(a.yaw - b.yaw, a.pitch - b.pitch))


def _crop_dist(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two aligned crops on a small grey copy, 0..1."""
    import cv2

    def small(x: np.ndarray) -> np.ndarray:
        return cv2.resize(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), (64, 64), interpolation=cv2.INTER_AREA)

    return float(np.abs(small(a).astype(np.float32) - small(b).astype(np.float32)).mean() / 255)


def _moment(x: Face | Reference) -> tuple[str, int]:
    """The moment a face or reference comes from: its file and its window of frames."""
    return x.source, x.frame // CANDIDATE_WINDOW


def _diverse(ranked: list, cfg: ReferenceConfig, face_of, crop_of) -> list:
    """Up to ``cfg.top_k`` of ``ranked`` (best first), in three passes: each new one at least
    ``min_pose_gap`` degrees from the chosen ones, then each from a moment (``_moment``) none of
    the chosen comes from, then by rank alone; every pass refuses crops within ``min_crop_dist``
    of a chosen one.

    The moment pass is there because most frames of a clip are degraded alike while its sharp
    frames come in runs: by rank alone, video-retalking face_3 kept 8 references from two moments
    (frames 0-6 and 41-44) and lost its only mid-clip one (frame 18), and with it 0.8-1 dB on the
    faces around it that no longer had a reference of their expression; with this pass the
    quality suite's x2 / x4 / x8 gains there went +0.66 / +2.00 / +2.77 -> +1.53 / +3.18 / +3.85."""
    chosen: list = []
    moments: set = set()
    for rule in ("pose", "moment", "rank"):
        for cand in ranked:
            if len(chosen) >= cfg.top_k:
                break
            if any(cand is c for c in chosen):
                continue
            face = face_of(cand)
            if rule == "pose" and any(_pose_gap(face, face_of(c)) < cfg.min_pose_gap for c in chosen):
                continue
            if rule == "moment" and _moment(face) in moments:
                continue
            if any(_crop_dist(crop_of(cand), crop_of(c)) < cfg.min_crop_dist for c in chosen):
                continue
            chosen.append(cand)
            moments.add(_moment(face))
    return chosen


def sharpness_of(x: Face | Reference) -> float:
    """The sharpness component (0..1, measured at the face's own resolution) of a face or
    reference; its overall quality when the component is missing."""
    return float(x.quality_parts.get("sharpness", x.quality))


def floor_reason(face: Face, cfg: ReferenceConfig) -> str | None:
    """Why the crop of ``face`` cannot help any face, whatever the others look like; None when
    it passes the absolute floors."""
    if face.size < cfg.min_face_px:
        return f"under {cfg.min_face_px} px"
    if abs(face.yaw) > cfg.max_yaw or abs(face.pitch) > cfg.max_pitch:
        return f"turned away (yaw over {cfg.max_yaw:g} or pitch over {cfg.max_pitch:g} degrees)"
    if face.quality_parts.get("exposure", 1.0) < cfg.min_exposure:
        return "too dark or blown out"
    if face.quality < cfg.min_quality:
        return f"quality under {cfg.min_quality:g}"
    return None


def select_references(identity: int, candidates: list[Candidate], cfg: ReferenceConfig,
                      person_sharpness: list[float] | None = None) -> tuple[list[Reference], str]:
    """Top-``cfg.top_k`` references of one identity, best first, and why there are none ("" when
    there are some). Candidates must pass the floors and be ``cfg.min_gain`` times sharper than
    the lower quartile of ``person_sharpness`` (the sharpness of all the person's faces); they
    are ranked by quality, diverse in pose, with no near-duplicate crops (see ``_diverse``)."""
    failed: dict[str, int] = {}
    ok = []
    for c in candidates:
        why = floor_reason(c.face, cfg)
        if why is None:
            ok.append(c)
        else:
            failed[why] = failed.get(why, 0) + 1
    low = float(np.percentile(person_sharpness, 25)) if person_sharpness else 0.0
    good = [c for c in ok if sharpness_of(c.face) >= cfg.min_gain * low]
    good.sort(key=lambda c: -c.face.quality)
    chosen = _diverse(good, cfg, lambda c: c.face, lambda c: c.crop)
    refs = [
        Reference(ref_id=f"{identity}/{rank}", identity=identity, rank=rank, frame=c.face.frame,
                  pts=c.face.pts, source=c.face.source, quality=c.face.quality, yaw=c.face.yaw,
                  pitch=c.face.pitch, crop=c.crop, quality_parts=dict(c.face.quality_parts),
                  origin=c.origin)
        for rank, c in enumerate(chosen)
    ]
    if refs or cfg.top_k <= 0:
        return refs, ""
    if not candidates:
        return refs, "no face to choose from"
    if not ok:
        return refs, "every candidate face is " + ", ".join(f"{why} ({n})" for why, n in failed.items())
    best = max(sharpness_of(c.face) for c in ok)
    return refs, (f"no face is {cfg.min_gain:g}x sharper than the lower quartile of this person's "
                  f"faces (sharpest {best:.3f}, lower quartile {low:.3f}): nothing sharper to "
                  f"transfer; a reference library (--references) can give one")


def pool_references(identity: int, pooled: list[Reference], cfg: ReferenceConfig) -> list[Reference]:
    """One person's references chosen again from the references several items found for them
    (already gated), by the same rules, renumbered for ``identity``; ``origin`` is kept."""
    ranked = sorted(pooled, key=lambda r: (-r.quality, r.origin, r.frame, r.source))
    chosen = _diverse(ranked, cfg, lambda r: r, lambda r: r.crop)
    return [dataclasses.replace(r, ref_id=f"{identity}/{rank}", identity=identity, rank=rank)
            for rank, r in enumerate(chosen)]


def choose_reference(face: Face, refs: list[Reference], min_gain: float = 1.0,
                     crop: np.ndarray | None = None) -> Reference | None:
    """The reference nearest to ``face`` among those ``min_gain`` times sharper than it; None
    when none is (the face is as sharp as its person gets: a reference has nothing to give it).
    Nearest in pose (ties go to the better reference), or with the face's aligned ``crop`` (BGR,
    the references' template and size), nearest in appearance on a 64 px grey copy: what a
    degraded face still shows at that size (expression, mouth, eyes, lighting) is what the
    restorer's selection must find in the reference; on the quality suite's x4 crops of six dev
    clips this took the reference gain from +2.73 to +2.94 dB (+1.0 on one clip).

    A face never uses a reference cut from itself: a reference restored with itself as guide
    learns nothing, so it takes the next nearest when there is one.
    """
    ranked = rank_references(face, refs, min_gain, crop)
    return ranked[0] if ranked else None


def rank_references(face: Face, refs: list[Reference], min_gain: float = 1.0,
                    crop: np.ndarray | None = None) -> list[Reference]:
    """The references :func:`choose_reference` may give ``face``, nearest first."""
    own = sharpness_of(face)
    pool = [r for r in refs if sharpness_of(r) >= min_gain * own
            and not (r.frame == face.frame and r.source == face.source and abs(r.quality - face.quality) < 1e-9)]
    if crop is not None:
        return sorted(pool, key=lambda r: (_crop_dist(crop, r.crop), -r.quality))
    return sorted(pool, key=lambda r: (_pose_gap(face, r), -r.quality))
