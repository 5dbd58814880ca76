"""Choosing each person's references and, for every target face, the reference to use.

References are gated (size, quality), ranked by quality and kept diverse: a new reference must
differ in pose from those already chosen and must not be a near-duplicate crop of one of them.
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


class CandidatePool:
    """Keeps the best ``k`` candidates per group (a video track) by quality, bounded in memory."""

    def __init__(self, k: int):
        self.k = k
        self._heaps: dict[int, list[tuple[float, int, Candidate]]] = {}
        self._tick = 0

    def would_keep(self, group: int, quality: float) -> bool:
        """Cheap check before the crop is cut: is there room, or is this better than the worst?"""
        heap = self._heaps.get(group, [])
        return len(heap) < self.k or quality > heap[0][0]

    def offer(self, group: int, cand: Candidate) -> None:
        heap = self._heaps.setdefault(group, [])
        self._tick += 1  # tie-breaker: candidates themselves are not comparable
        item = (cand.face.quality, self._tick, cand)
        if len(heap) < self.k:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)

    def candidates(self, groups: list[int] | None = None) -> list[Candidate]:
        keys = self._heaps if groups is None else [g for g in groups if g in self._heaps]
        return [c for g in keys for _, _, c in self._heaps[g]]


def _pose_gap(a: Face | Reference, b: Face | Reference) -> float:
    return float(np.hypot(a.yaw - b.yaw, a.pitch - b.pitch))


def _crop_dist(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two aligned crops on a small grey copy, 0..1."""
    import cv2

    def small(x: np.ndarray) -> np.ndarray:
        return cv2.resize(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), (64, 64), interpolation=cv2.INTER_AREA)

    return float(np.abs(small(a).astype(np.float32) - small(b).astype(np.float32)).mean() / 255)


def _diverse(ranked: list, cfg: ReferenceConfig, pose_of, crop_of) -> list:
    """Up to ``cfg.top_k`` of ``ranked`` (best first): first pass each new one at least
    ``min_pose_gap`` degrees from the chosen ones, second pass by rank alone; both refuse crops
    within ``min_crop_dist`` of a chosen one."""
    chosen: list = []
    for need_pose_gap in (True, False):
        for cand in ranked:
            if len(chosen) >= cfg.top_k:
                break
            if any(cand is c for c in chosen):
                continue
            if need_pose_gap and any(_pose_gap(pose_of(cand), pose_of(c)) < cfg.min_pose_gap for c in chosen):
                continue
            if any(_crop_dist(crop_of(cand), crop_of(c)) < cfg.min_crop_dist for c in chosen):
                continue
            chosen.append(cand)
    return chosen


def select_references(identity: int, candidates: list[Candidate], cfg: ReferenceConfig) -> list[Reference]:
    """Top-``cfg.top_k`` references of one identity, best first: gated (size, quality), ranked by
    quality, diverse in pose, no near-duplicate crops (see ``_diverse``)."""
    ok = [c for c in candidates
          if c.face.size >= cfg.min_face_px and c.face.quality >= cfg.min_quality]
    ok.sort(key=lambda c: -c.face.quality)
    chosen = _diverse(ok, cfg, lambda c: c.face, lambda c: c.crop)
    return [
        Reference(ref_id=f"{identity}/{rank}", identity=identity, rank=rank, frame=c.face.frame,
                  pts=c.face.pts, source=c.face.source, quality=c.face.quality, yaw=c.face.yaw,
                  pitch=c.face.pitch, crop=c.crop, quality_parts=dict(c.face.quality_parts))
        for rank, c in enumerate(chosen)
    ]


def pool_references(identity: int, pooled: list[Reference], cfg: ReferenceConfig) -> list[Reference]:
    """One person's references chosen again from the references several items found for them
    (already gated), by the same rules, renumbered for ``identity``; ``origin`` is kept."""
    ranked = sorted(pooled, key=lambda r: (-r.quality, r.origin, r.frame, r.source))
    chosen = _diverse(ranked, cfg, lambda r: r, lambda r: r.crop)
    return [dataclasses.replace(r, ref_id=f"{identity}/{rank}", identity=identity, rank=rank)
            for rank, r in enumerate(chosen)]


def choose_reference(face: Face, refs: list[Reference]) -> Reference | None:
    """The reference nearest in pose to ``face`` (ties go to the better reference).

    A face never uses a reference cut from itself: a reference restored with itself as guide
    learns nothing, so it takes the next nearest when there is one.
    """
    pool = [r for r in refs if not (r.frame == face.frame and r.source == face.source
                                    and abs(r.quality - face.quality) < 1e-9)] or refs
    if not pool:
        return None
    return min(pool, key=lambda r: (_pose_gap(face, r), -r.quality))
