"""Pass 1: find, embed, track and score every face; keep reference candidates.

Videos stream frame by frame: per frame we keep only small face records (boxes, landmarks,
scores) and per track the few best aligned crops, never the frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from refstar.align import estimate_affine, native_side, resize_square, warp_face
from worker.config import Config, RestoreConfig
from worker.errors import MediaError
from worker.faces.base import FaceAnalyzer
from worker.media.prefetch import prefetch
from worker.media.segments import frames_at
from worker.media.video import VideoInfo, iter_frames
from worker.progress import Progress
from worker.records import Face, Frame, ItemError
from worker.stages.quality import face_quality, head_pose
from worker.stages.references import Candidate, CandidatePool, reference_pool
from worker.stages.track import ShotCutDetector, Tracker, TrackSummary, iou, look

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    """Everything pass 1 learned about one item."""

    faces: list[Face] = field(default_factory=list)  # in frame (or file) order
    tracks: dict[int, TrackSummary] = field(default_factory=dict)  # videos only
    pool: CandidatePool | None = None  # videos: best crops per track
    adapt_pool: CandidatePool | None = None  # videos, restorer=refstar: small crops to adapt on
    n_frames: int = 0  # frames decoded (videos) or images read (albums)
    cuts: list[int] = field(default_factory=list)  # frame indices that start a new shot
    errors: list[ItemError] = field(default_factory=list)
    detector_frames: int = 0  # frames on which the detector ran
    # frame indices the detector searched for faces of every size: a face there was measured as
    # the per-frame path measures it (the others: ``look_again``)
    searched: set[int] = field(default_factory=set)
    embedded: int = 0  # embeddings computed, refused looks included (track.embed_every spares most)
    confirmed: set[int] = field(default_factory=set)  # tracks the face verifier confirmed (detect.verify)

    @property
    def quick_detections(self) -> int:
        """Detections that looked only for faces near the tracked ones' size."""
        return self.detector_frames - len(self.searched)


# a quick detection looks for faces down to this share of the smallest tracked face's box side
# (a face moving away between two detections still found)
QUICK_SHRINK = 0.8
VERIFY_TRIES = 3  # a track's best kept crops shown to the face verifier until one is confirmed


def verify_tracks(pool: CandidatePool) -> set[int]:
    """The tracks of which ``worker.faces.verify`` confirms one of the best ``VERIFY_TRIES``
    kept crops (best quality first); sets each checked candidate's ``confidence``."""
    from worker.faces.verify import face_confidence

    by_track: dict[int, list[Candidate]] = {}
    for cand in pool.candidates():
        by_track.setdefault(cand.face.track, []).append(cand)
    confirmed = set()
    for tid, cands in by_track.items():
        for cand in sorted(cands, key=lambda c: -c.face.quality)[:VERIFY_TRIES]:
            if cand.confidence is None:
                cand.confidence = face_confidence(cand.crop)
            if cand.confidence >= 0:
                confirmed.add(tid)
                break
    return confirmed


def measure(image: np.ndarray, face: Face, cfg: Config) -> np.ndarray:
    """Pose and quality of ``face`` (set in place); returns its aligned crop (S,S,3 BGR)."""
    size = cfg.restore.crop_size
    crop = warp_face(image, estimate_affine(face.kps, size), size)
    face.yaw, face.pitch = head_pose(face.kps)
    face.quality, face.quality_parts = face_quality(face, crop, cfg.references)
    return crop


def adaptation_crop(crop: np.ndarray, kps: np.ndarray, r: RestoreConfig) -> np.ndarray:
    """A face's crop_size crop as RefSTAR adapts on it: shrunk to ``adapt_size``, or with
    ``restore.native`` to the side where the face keeps its own resolution (adapt_size..crop_size)."""
    side = r.adapt_size
    if r.native:
        side = int(np.clip(round(native_side(kps, r.crop_size)), r.adapt_size, r.crop_size))
    return resize_square(crop, side)


def _embed(analyzer: FaceAnalyzer, image: np.ndarray, faces: list[Face], need: list[bool]) -> int:
    """Embed the ``faces`` that ``need`` it and lack an embedding; returns how many need one."""
    analyzer.embed(image, [f for f, n in zip(faces, need, strict=True) if n and f.embedding is None])
    return sum(need)


def _follow(image: np.ndarray, index: int, detected: list[Face], tracker: Tracker,
            analyzer: FaceAnalyzer, lazy: bool) -> tuple[list[Face], int]:
    """The faces of the tracks frame ``index`` has not seen yet, fitted by the landmark model at
    their predicted boxes and accepted by the tracker (linked to their tracks), and the number of
    embeddings that cost. Where two land on one face (or on a ``detected`` one), the track whose
    detector box is freshest keeps it."""
    ids, boxes, scores = tracker.missing(index)
    if not ids:
        return [], 0
    taken = np.stack([f.bbox for f in detected]) if detected else np.zeros((0, 4), np.float32)
    refined = analyzer.refine(image, boxes, scores, embed=not lazy)
    patches = [look(image, f.kps) for f in refined]
    doubt = [tracker.in_doubt(t, index, p) for t, p in zip(ids, patches, strict=True)]
    embedded = _embed(analyzer, image, refined, doubt)
    found = []
    for k in tracker.rank(ids):
        if not tracker.follow(ids[k], refined[k]):
            continue
        if (iou(refined[k].bbox[None], taken) > 0.3).any():
            tracker.drop(ids[k])
            continue
        found.append(k)
        taken = np.concatenate([taken, refined[k].bbox[None]])
    tracker.update(index, [refined[k] for k in found], [ids[k] for k in found],
                   [patches[k] for k in found])
    return [refined[k] for k in found], embedded


def _quick_min_face(tracker: Tracker, index: int) -> float:
    """The smallest box side (px) a quick detection of frame ``index`` must find: a little under
    the smallest tracked face's; 0 (look for every size) when nobody is tracked."""
    _, boxes = tracker.active_boxes(index)
    return QUICK_SHRINK * _smallest_side(boxes) if len(boxes) else 0.0


def _smallest_side(boxes: np.ndarray) -> float:
    """The shorter side (px) of the smallest of ``boxes`` ((N >= 1, 4) x1, y1, x2, y2 px)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return float(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).min())


def look_again(path: str, info: VideoInfo, analyzer: Callable[[], FaceAnalyzer],
               cfg: Config) -> Callable[[list[Face]], list[Candidate]]:
    """Measures faces found between detections again as the per-frame path does: their frames
    decoded again (``frames_at``), the detector run on the whole frame at the scales that can
    hold them (the boxes and scores of a full search: ``worker.faces.hog_levels``), each face
    measured from the detection it overlaps (quality and pose set in place; its landmarks, used
    for pasting, stay).
    Returns them as reference candidates with those crops; a face the detector misses there is
    left out. ``analyzer`` is called once, when there is work."""

    def run(faces: list[Face]) -> list[Candidate]:
        by_pts: dict[int, list[Face]] = {}
        for f in faces:
            by_pts.setdefault(f.pts, []).append(f)
        if not by_pts:
            return []
        model, out = analyzer(), []
        try:
            for pts, image in frames_at(path, info, by_pts):
                out += _measure_again(model, image, by_pts[pts], cfg)
        except MediaError as e:  # the analysis's own measures stand; the item goes on
            log.warning("could not look again at reference candidates: %s", e)
            return []
        log.info("looked again at %d faces on %d frames", len(faces), len(by_pts))
        return out

    return run


def _measure_again(model: FaceAnalyzer, image: np.ndarray, faces: list[Face], cfg: Config) -> list[Candidate]:
    # only the scales that can hold these faces are searched: the boxes and scores of the whole
    # search, for a face of 200 px at about a third of its cost (worker.faces.hog_levels)
    found = model.analyze(image, embed=False, near=_smallest_side(np.stack([f.bbox for f in faces])))
    boxes = np.stack([f.bbox for f in found]) if found else np.zeros((0, 4), np.float32)
    out = []
    for face in faces:
        ov = iou(face.bbox[None], boxes)[0]
        if not len(ov) or ov.max() < 0.5:
            continue  # the detector misses it here
        d = found[int(ov.argmax())]
        again = replace(face, bbox=d.bbox, kps=d.kps, det_score=d.det_score, detected=True)
        crop = measure(image, again, cfg)
        face.quality, face.quality_parts = again.quality, again.quality_parts
        face.yaw, face.pitch = again.yaw, again.pitch
        out.append(Candidate(face, crop))
    return out


def analyse_video(path: str, info: VideoInfo, analyzer: FaceAnalyzer, cfg: Config,
                  frames: Iterable[Frame] | None = None, then: float | None = None) -> Analysis:
    """Detect (at most every ``detect.stride`` frames, on the next one after a detection that
    found someone new, and at every cut), follow tracked faces in between, link tracks, score
    quality, keep the best crops per track.

    ``frames`` defaults to decoding ``path``; a caller may pass a segment of it instead.
    ``then``: restore seconds per analysis second, for the item ETA on the progress line."""
    out = Analysis(pool=reference_pool(cfg.references))
    r = cfg.restore
    if r.adapts:
        out.adapt_pool = CandidatePool(r.adapt_crops_per_track)
    tracker = Tracker(cfg.track)
    is_cut = ShotCutDetector(cfg.track.cut_threshold)
    stride = max(1, cfg.detect.stride)
    progress = Progress(f"analyse {info.path}", info.frames, enabled=cfg.progress, then=then)
    last_detect, gap = -stride, stride
    quick_left = 0  # detections left before the next one that looks for every face size
    lazy = cfg.track.embed_every > 1  # else every face is embedded as it is found
    prev = None
    # closed on every way out, so that an error here stops the decoding thread at once
    with closing(prefetch(frames if frames is not None else iter_frames(path, info))) as decoded:
        for frame in decoded:
            image = frame.image
            cut = is_cut(image)
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            if cut:
                tracker.cut()
                out.cuts.append(frame.index)
            elif prev is not None:
                tracker.move(frame.index, prev, grey)
            prev = grey
            if cut or frame.index - last_detect >= gap:
                min_face = _quick_min_face(tracker, frame.index) if quick_left and not cut else 0.0
                quick_left = quick_left - 1 if min_face else cfg.detect.thorough_every - 1
                faces = analyzer.analyze(image, embed=not lazy, min_face=min_face)
                if not min_face:
                    out.searched.add(frame.index)
                faces = faces[: cfg.limits.max_faces_per_frame]
                last_detect = frame.index
                out.detector_frames += 1
                patches = [look(image, f.kps) for f in faces]
                out.embedded += _embed(analyzer, image, faces, tracker.to_embed(frame.index, faces, patches))
                new = tracker.update(frame.index, faces, patches=patches)
                # new people keep the detector coming back on the next frame (a crowd); a scene
                # whose faces are all tracked lets the gap double up to the stride
                gap = 1 if new else min(stride, 2 * gap)
            else:
                faces = []
            # between detections, and where the detector missed a face it saw just before (blurred
            # or degraded frames: exactly the faces that need restoring), follow tracks by landmarks
            followed, embedded = _follow(image, frame.index, faces, tracker, analyzer, lazy)
            faces = faces + followed
            out.embedded += embedded
            for face in faces:
                face.frame, face.pts = frame.index, frame.pts
                crop = measure(frame.image, face, cfg)
                if out.pool.would_keep(face.track, face.quality, face.frame):
                    out.pool.offer(face.track, Candidate(face, crop))
                if out.adapt_pool and out.adapt_pool.would_keep(face.track, face.quality):
                    out.adapt_pool.offer(face.track, Candidate(face, adaptation_crop(crop, face.kps, r)))
                face.embedding = None  # the track keeps the running sum; a film's faces add up
            out.faces.extend(faces)
            out.n_frames += 1
            progress.update(1, f"{len(out.faces)} faces")
    out.tracks = tracker.summaries(out.faces)
    if cfg.detect.verify:
        out.confirmed = verify_tracks(out.pool)
    progress.done(f"{len(out.faces)} faces, {len(out.cuts)} cuts, "
                  f"{len(out.tracks) - len(out.confirmed) if cfg.detect.verify else 0} non-face tracks")
    return out
