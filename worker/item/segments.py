"""Work on one video segment: analyse it, merge the segments' analyses, restore and encode it.

Pure functions (the pipeline's stages on ``worker.media.segments``, no Ray), so that a segment
of a film can be analysed or restored anywhere and the pieces put back together into exactly
the item the single-machine path (``worker.item.video_item``) would have produced.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from worker.config import Config, OutputConfig
from worker.media.segments import Segment, iter_segment
from worker.media.video import VideoInfo, VideoRewriter
from worker.outputs.report import WHOLE, frame_views, thumbnails
from worker.records import Face, Frame, Reference
from worker.stages.analyse import Analysis, analyse_video
from worker.stages.references import CandidatePool, reference_pool
from worker.stages.restore import FaceRestoreStage, restore_stream
from worker.stages.track import ShotCutDetector, TrackSummary, iou


# -- analysis -------------------------------------------------------------------------------------
@dataclass
class SegmentAnalysis:
    """One segment's ``Analysis`` plus what the merge needs to see across its borders."""

    segment: Segment
    analysis: Analysis
    first_small: np.ndarray | None = None  # first/last frame at shot-cut-detector size
    last_small: np.ndarray | None = None


def _small(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (96, 54), interpolation=cv2.INTER_AREA)


def analyse_segment(path: str, info: VideoInfo, seg: Segment, analyzer, cfg: Config) -> SegmentAnalysis:
    """Pass 1 on one segment; ``cfg`` must carry the backend-calibrated thresholds."""
    out = SegmentAnalysis(seg, Analysis())

    def frames() -> Iterator[Frame]:
        for frame in iter_segment(path, info, seg):
            if out.first_small is None:
                out.first_small = _small(frame.image)
            out.last_small = frame.image
            yield frame
        if out.last_small is not None:
            out.last_small = _small(out.last_small)

    out.analysis = analyse_video(path, info, analyzer, replace(cfg, progress=False), frames())
    return out


def merge_analyses(parts: list[SegmentAnalysis], cfg: Config) -> Analysis:
    """One ``Analysis`` equal to a full pass: faces in frame order, tracks continued across a
    border where the single-pass tracker would have continued them (same IoU/embedding rules,
    no shot cut at the border), track ids renumbered in order of first appearance, candidate
    pools merged (the best ``k`` of a joined track are among the best ``k`` of its parts)."""
    parts = sorted(parts, key=lambda p: p.segment.index)
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def root(key: tuple[int, int]) -> tuple[int, int]:
        while key in parent:
            key = parent[key]
        return key

    out = Analysis()
    for s, part in enumerate(parts):
        a = part.analysis
        out.n_frames += a.n_frames
        out.detector_frames += a.detector_frames
        out.searched |= a.searched
        out.embedded += a.embedded
        out.errors.extend(a.errors)
        cut = s > 0 and _cut_between(parts[s - 1], part, cfg)
        if cut:
            out.cuts.append(part.segment.start)
        out.cuts.extend(a.cuts)
        if s > 0 and not cut:
            for old, new in _continuations(parts[s - 1].analysis, a, cfg, part.segment.start):
                parent[(s, new)] = root((s - 1, old))
    # renumber: a track's id is its rank of first appearance, as Tracker._next_id hands them out
    ids: dict[tuple[int, int], int] = {}
    sums: dict[int, np.ndarray] = {}
    pool = reference_pool(cfg.references)
    adapt = CandidatePool(cfg.restore.adapt_crops_per_track) if parts and parts[0].analysis.adapt_pool else None
    for s, part in enumerate(parts):
        for face in part.analysis.faces:
            if face.track >= 0:
                key = root((s, face.track))
                face.track = ids.setdefault(key, len(ids))
            out.faces.append(face)
        out.confirmed |= {ids[root((s, t))] for t in part.analysis.confirmed if root((s, t)) in ids}
        for tid, tr in part.analysis.tracks.items():
            new = ids.get(root((s, tid)))
            if new is not None and tr.embedding is not None:
                # the tracker keeps an unnormalised sum; n_faces x unit mean is its close stand-in
                sums[new] = sums.get(new, 0) + tr.embedding * tr.n_faces
        if part.analysis.pool is not None:  # faces already carry their new track ids
            for cand in sorted(part.analysis.pool.candidates(), key=lambda c: c.face.frame):
                pool.offer(cand.face.track, cand)
        if adapt is not None and part.analysis.adapt_pool is not None:  # RefSTAR adapts on these
            for cand in sorted(part.analysis.adapt_pool.candidates(), key=lambda c: c.face.frame):
                adapt.offer(cand.face.track, cand)
    out.pool, out.adapt_pool = pool, adapt
    out.tracks = _summaries(out.faces, sums)
    return out


def _cut_between(prev: SegmentAnalysis, nxt: SegmentAnalysis, cfg: Config) -> bool:
    if prev.last_small is None or nxt.first_small is None:
        return False
    detector = ShotCutDetector(cfg.track.cut_threshold)
    detector(prev.last_small)
    return detector(nxt.first_small)


def _continuations(prev: Analysis, nxt: Analysis, cfg: Config, border: int) -> list[tuple[int, int]]:
    """(previous-segment track, next-segment track) pairs the single-pass tracker would link:
    the old track is still alive at the border (``max_gap``) and the new one starts on the
    border frame, with enough box overlap and agreeing embeddings; greedy by IoU like
    ``Tracker._match``."""
    alive = [t for t in prev.tracks.values()
             if t.embedding is not None and border - t.last_frame <= cfg.track.max_gap]
    born = [t for t in nxt.tracks.values() if t.first_frame == border and t.embedding is not None]
    if not alive or not born:
        return []
    last_box = np.stack([prev.faces[t.faces[-1]].bbox for t in alive])
    first_box = np.stack([nxt.faces[t.faces[0]].bbox for t in born])
    overlap = iou(first_box, last_box)
    pairs, used_b, used_a = [], set(), set()
    limit = cfg.track.max_embed_dist
    for bi, ai in zip(*np.unravel_index(np.argsort(-overlap, axis=None), overlap.shape), strict=True):
        if overlap[bi, ai] < cfg.track.iou_min:
            break
        if bi in used_b or ai in used_a:
            continue
        dist = 1 - float(alive[ai].embedding @ born[bi].embedding)
        if limit is not None and dist > limit:
            continue
        pairs.append((alive[ai].id, born[bi].id))
        used_b.add(bi)
        used_a.add(ai)
    return pairs


def _summaries(faces: list[Face], sums: dict[int, np.ndarray]) -> dict[int, TrackSummary]:
    out: dict[int, TrackSummary] = {}
    for i, face in enumerate(faces):
        if face.track < 0:
            continue
        tr = out.get(face.track)
        if tr is None:
            s = sums.get(face.track)
            emb = None if s is None else (s / max(np.linalg.norm(s), 1e-12)).astype(np.float32)
            tr = out[face.track] = TrackSummary(face.track, face.frame, face.frame, 0, emb)
        tr.last_frame = face.frame
        tr.n_faces += 1
        tr.faces.append(i)
    return dict(sorted(out.items()))


# -- restoration ----------------------------------------------------------------------------------
@dataclass
class SegmentRestored:
    """What restoring one segment produced (the pixels are in ``path``)."""

    segment: Segment
    path: str
    # the faces restored: (frame, position in frame, the reference the restore stage chose, the
    # share of the face prior's detail it was given)
    restored: list[tuple[int, int, str | None, float]] = field(default_factory=list)
    # report views (frame, face position or WHOLE, before, after)
    samples: list[tuple[int, int, np.ndarray, np.ndarray]] = field(default_factory=list)


def restore_segment(src: str, info: VideoInfo, seg: Segment, faces: list[Face],
                    refs: dict[str, Reference], stage: FaceRestoreStage, dst: str, cfg: OutputConfig,
                    want_samples: set[tuple[int, int]] = frozenset()) -> SegmentRestored:
    """Decode ``seg``, restore and paste its faces (batched as the single-machine path batches
    them), encode it on its own into ``dst`` (video only; audio is added by the join).
    ``want_samples``: the ``(frame, face position)`` pairs to keep for the report, and
    ``(frame, WHOLE)`` for whole frames."""
    by_frame: dict[int, list[Face]] = {}
    for face in faces:
        by_frame.setdefault(face.frame, []).append(face)
    pos = {id(f): (f.frame, k) for fs in by_frame.values() for k, f in enumerate(fs)}
    out = SegmentRestored(seg, dst)

    def sink(face: Face, before: np.ndarray, after: np.ndarray) -> None:
        key = pos[id(face)]
        if key in want_samples:
            out.samples.append((*key, *thumbnails(before, after)))

    def whole(frame: int, before: np.ndarray, after: np.ndarray) -> None:
        if (frame, WHOLE) in want_samples:
            out.samples.append((frame, WHOLE, *frame_views(before, after)))

    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with VideoRewriter(src, dst, replace(info, has_audio=False), cfg) as writer:
        restore_stream(iter_segment(src, info, seg), by_frame, refs, stage, writer.write, sink, whole=whole)
    out.restored = [(*pos[id(f)], f.reference, f.prior) for fs in by_frame.values() for f in fs if f.restored]
    return out
