"""Linking per-frame detections into tracks, shot-cut detection and landmark smoothing.

A track is one person across consecutive frames of one shot. Tracks end at shot cuts, after
``max_gap`` frames unseen, or when a box jumps to a face whose embedding disagrees. Between
frames a track's box moves with the image (:func:`moved_box`), both for matching detections and
for following the face by landmarks where no detection has it.

Embedding a face costs far more than finding its landmarks (dlib: ~70 ms against ~1-3 ms), so a
tracked face is embedded at its track's start, every ``embed_every`` frames (half as many under
``SMALL_FACE_PX``: a small face's embedding is noisier, and a track's mean of a few of them put
two people of the crowd clip within the clustering distance), and whenever the
track is in doubt: its box overlaps another face or track, or the face no longer looks like the
track's last one (:func:`look`, a 32 px aligned grey patch, normalised correlation under
``LOOK_MIN``). In between, the patch vouches that the landmarks still sit on the same face.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from refstar.align import estimate_affine, warp_face
from worker.config import TrackConfig
from worker.records import Face

LOOK_SIZE = 32  # px of the grey patch compared between frames
# Normalised correlation of consecutive frames' patches: the same face 0.87-0.999 (median 0.99)
# on five dev clips; the patch one face width beside it, or half a width diagonally, at most 0.70.
LOOK_MIN = 0.85


def look(image: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """(LOOK_SIZE, LOOK_SIZE) float32 zero-mean unit-norm grey patch of the face at ``kps``
    (aligned like the restoration crop), for :func:`alike`."""
    g = cv2.cvtColor(warp_face(image, estimate_affine(kps, LOOK_SIZE), LOOK_SIZE), cv2.COLOR_BGR2GRAY)
    g = g.astype(np.float32)
    g -= g.mean()
    return g / max(float(np.linalg.norm(g)), 1e-6)


def alike(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Whether two :func:`look` patches show the same face (correlation >= ``LOOK_MIN``)."""
    return a is not None and b is not None and float((a * b).sum()) >= LOOK_MIN


MOTION_SIZE = 32  # px: a face box is matched between frames at this width
MOTION_SEARCH = 0.5  # box widths searched each side of the last box
MOTION_MIN = 0.5  # normalised correlation below which the box is not moved


def _box_patch(grey: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """The grey box region widened by ``margin`` box widths each side, resampled so that the box
    is MOTION_SIZE px wide (border pixels replicated)."""
    w, h = max(float(box[2] - box[0]), 1.0), max(float(box[3] - box[1]), 1.0)
    s = MOTION_SIZE / w
    out_w = round(MOTION_SIZE * (1 + 2 * margin))
    out_h = round(h * s + 2 * margin * MOTION_SIZE)
    m = np.array([[s, 0, -(box[0] - margin * w) * s], [0, s, -(box[1] - margin * w) * s]], np.float32)
    return cv2.warpAffine(grey, m, (out_w, out_h), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def moved_box(prev: np.ndarray, cur: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``box`` (x1 y1 x2 y2 px of a face in grey frame ``prev``) moved to where its content is in
    grey frame ``cur``: the best normalised-correlation match within MOTION_SEARCH box widths,
    interpolated below a pixel; unmoved when nothing there correlates MOTION_MIN.

    The landmark model refits a face only near the box it is given: a face that moves half its
    width between frames would otherwise leave its box behind (and the look check lets the
    landmarks settle on what remains of the face in the old box)."""
    box = np.asarray(box, np.float32)
    tmpl = _box_patch(prev, box, 0.0)
    area = _box_patch(cur, box, MOTION_SEARCH)
    if tmpl.std() < 1.0:  # a flat patch matches anywhere
        return box
    r = cv2.matchTemplate(area, tmpl, cv2.TM_CCOEFF_NORMED)
    _, best, _, (x, y) = cv2.minMaxLoc(r)
    if best < MOTION_MIN:
        return box

    def vertex(a: float, b: float, c: float) -> float:
        d = a - 2 * b + c
        return 0.0 if d >= 0 else 0.5 * (a - c) / d

    dx = x + (vertex(r[y, x - 1], r[y, x], r[y, x + 1]) if 0 < x < r.shape[1] - 1 else 0.0)
    dy = y + (vertex(r[y - 1, x], r[y, x], r[y + 1, x]) if 0 < y < r.shape[0] - 1 else 0.0)
    scale = (box[2] - box[0]) / MOTION_SIZE
    shift = (np.array([dx, dy], np.float32) - MOTION_SEARCH * MOTION_SIZE) * scale
    return box + np.tile(shift, 2)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N,4) and ``b`` (M,4), x1 y1 x2 y2 -> (N,M) in 0..1."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)


class ShotCutDetector:
    """Flags a frame whose colour histogram differs sharply from the previous frame's.

    Bhattacharyya distance (0 = same, 1 = disjoint) of 2-D hue/saturation histograms on a small
    copy; hard cuts in film score 0.5-1, camera motion within a shot stays under ~0.3.
    """

    def __init__(self, threshold: float):
        self.threshold = threshold
        self._prev: np.ndarray | None = None

    def __call__(self, image: np.ndarray) -> bool:
        small = cv2.resize(image, (96, 54), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
        cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)
        prev, self._prev = self._prev, hist
        if prev is None:
            return False
        return cv2.compareHist(prev, hist, cv2.HISTCMP_BHATTACHARYYA) > self.threshold


# box side, px, under which a followed face is embedded twice as often (``Tracker._fresh``; dlib's
# 150 px chip is upsampled from such a face, and its embedding is noisier): on the
# 1080p crowd clip (faces of 50-150 px) the fast settings then find the per-frame path's 7 people,
# not 6, at x2.03 the per-frame speed against x2.07 before (bench/bench_analysis.py, beside a suite)
SMALL_FACE_PX = 100


@dataclass
class _Track:
    id: int
    box: np.ndarray  # last box, (4,) px
    last_frame: int
    emb_sum: np.ndarray | None = None
    n_faces: int = 0
    n_detected: int = 0
    first_frame: int = 0
    kps_offset: np.ndarray | None = None  # landmark centre minus box centre, in box widths
    score: float = 0.0  # detector score of its last detected face, 0..1
    lost: bool = False  # landmarks could not follow it; waits for a detection to pick it up
    embedded_at: int = -(10**9)  # frame of its last embedded face
    patch: np.ndarray | None = None  # look() of its last face
    moved: tuple[int, np.ndarray] | None = None  # (frame, box) where moved_box puts it there
    detected_at: int = -(10**9)  # frame of its last detected face

    def predicted(self, frame: int) -> np.ndarray:
        # no velocity model: HOG boxes jump by ~10% between frames, and a velocity learned from
        # those jumps drifts off the face; the image itself says where the face went
        if self.moved is not None and self.moved[0] == frame:
            return self.moved[1]
        return self.box

    def mean_embedding(self) -> np.ndarray | None:
        if self.emb_sum is None:
            return None
        return self.emb_sum / max(np.linalg.norm(self.emb_sum), 1e-12)


@dataclass
class TrackSummary:
    """What the planner needs of a finished track."""

    id: int
    first_frame: int
    last_frame: int
    n_faces: int
    embedding: np.ndarray | None  # (D,) unit-norm mean of its faces' embeddings
    faces: list[int] = field(default_factory=list)  # indices into the item's face list


class Tracker:
    """Greedy IoU + embedding linker. Call :meth:`update` once per frame, in order."""

    def __init__(self, cfg: TrackConfig):
        self.cfg = cfg
        self._active: dict[int, _Track] = {}
        self._finished: dict[int, _Track] = {}
        self._next_id = 0

    def active_boxes(self, frame: int) -> tuple[list[int], np.ndarray]:
        """Track ids and their predicted boxes (N,4) for ``frame`` (to refine between detections)."""
        self._expire(frame)
        ids = list(self._active)
        boxes = np.array([self._active[t].predicted(frame) for t in ids], np.float32).reshape(-1, 4)
        return ids, boxes

    def move(self, frame: int, prev: np.ndarray, cur: np.ndarray) -> None:
        """Predict where the tracks seen in the previous frame (grey image ``prev``) are in
        ``frame`` (grey image ``cur``), by :func:`moved_box`."""
        for tr in self._active.values():
            if tr.last_frame == frame - 1:
                tr.moved = (frame, moved_box(prev, cur, tr.box))

    def missing(self, frame: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Active tracks not seen in ``frame`` yet (the detector missed them: blur, occlusion):
        ids, predicted boxes (N,4) and last detector scores (N,), to be looked for with the
        landmark model."""
        ids, boxes = self.active_boxes(frame)
        keep = [k for k, t in enumerate(ids)
                if self._active[t].last_frame < frame and not self._active[t].lost]
        scores = np.array([self._active[ids[k]].score for k in keep], np.float32)
        return [ids[k] for k in keep], boxes[keep].reshape(-1, 4), scores

    def follow(self, tid: int, face: Face) -> bool:
        """Check a face found by landmarks alone at track ``tid``'s predicted box: move its box
        to where the landmarks say the face is, and accept it only if its embedding still agrees
        with the track (the landmark model always answers, even on background). A face without
        an embedding is one :meth:`in_doubt` let through on its look."""
        tr = self._active.get(tid)
        if tr is None:
            return False
        dist, limit = self._distance(tr, face), self.cfg.max_embed_dist
        if face.embedding is not None and (dist is None or (limit is not None and dist > limit)):
            tr.lost = True  # one failed look per miss streak: each look costs a landmark+embed
            return False
        if tr.kps_offset is not None:
            w = face.bbox[2] - face.bbox[0]
            centre = face.kps.mean(axis=0) - tr.kps_offset * w
            half = (face.bbox[2:] - face.bbox[:2]) / 2
            face.bbox = np.concatenate([centre - half, centre + half]).astype(np.float32)
        return True

    def rank(self, ids: list[int]) -> list[int]:
        """Positions of track ``ids``, the most recently detected first: where two tracks
        follow onto one face, the one whose detector box is freshest keeps it."""
        return sorted(range(len(ids)), key=lambda k: -self._active[ids[k]].detected_at)

    def drop(self, tid: int) -> None:
        """Stop following track ``tid`` (its face went to another track) until a detection
        picks it up again."""
        if tid in self._active:
            self._active[tid].lost = True

    def to_embed(self, frame: int, faces: list[Face], patches: list[np.ndarray]) -> list[bool]:
        """Which detected ``faces`` of ``frame`` (with their :func:`look` patches) need an
        embedding before :meth:`update`: all but a face that overlaps exactly one active track,
        no other face overlapping that track, looks like it and was embedded less than
        ``embed_every`` frames ago."""
        ids, pred = self.active_boxes(frame)
        if self.cfg.embed_every <= 1 or not ids or not faces:
            return [True] * len(faces)
        hits = iou(np.array([f.bbox for f in faces]), pred) >= self.cfg.iou_min
        need = []
        for fi in range(len(faces)):
            tracks = np.nonzero(hits[fi])[0]
            sure = len(tracks) == 1 and hits[:, tracks[0]].sum() == 1
            need.append(not (sure and self._fresh(self._active[ids[tracks[0]]], frame, patches[fi])))
        return need

    def in_doubt(self, tid: int, frame: int, patch: np.ndarray) -> bool:
        """Whether a face refined at track ``tid``'s box needs an embedding for :meth:`follow`."""
        tr = self._active.get(tid)
        return tr is None or self.cfg.embed_every <= 1 or not self._fresh(tr, frame, patch)

    def _fresh(self, tr: _Track, frame: int, patch: np.ndarray) -> bool:
        side = max(tr.box[2] - tr.box[0], tr.box[3] - tr.box[1])
        every = self.cfg.embed_every if side >= SMALL_FACE_PX else max(1, self.cfg.embed_every // 2)
        return frame - tr.embedded_at < every and alike(patch, tr.patch)

    def cut(self) -> None:
        """A shot cut: no track continues across it."""
        self._finished.update(self._active)
        self._active.clear()

    def update(self, frame: int, faces: list[Face], track_ids: list[int] | None = None,
               patches: list[np.ndarray] | None = None) -> int:
        """Assign ``face.track`` for the faces of ``frame``; returns how many started a track.

        ``track_ids`` pins faces to tracks (faces refined from :meth:`active_boxes`); otherwise
        faces are matched to active tracks greedily by IoU with the predicted box, rejecting pairs
        whose embeddings disagree. ``patches``: the faces' :func:`look`, kept for the next frame.
        """
        self._expire(frame)
        if track_ids is None:
            track_ids = self._match(frame, faces)
        new = 0
        for k, (face, tid) in enumerate(zip(faces, track_ids, strict=True)):
            if tid < 0 or tid not in self._active:
                new += 1
                tid = self._next_id
                self._next_id += 1
                self._active[tid] = _Track(tid, face.bbox.copy(), frame, first_frame=frame)
            tr = self._active[tid]
            tr.box, tr.last_frame, tr.lost = face.bbox.astype(np.float32).copy(), frame, False
            tr.n_faces += 1
            tr.n_detected += int(face.detected)
            if face.detected:
                tr.score, tr.detected_at = face.det_score, frame
                w = max(float(face.bbox[2] - face.bbox[0]), 1.0)
                offset = (face.kps.mean(axis=0) - (face.bbox[:2] + face.bbox[2:]) / 2) / w
                tr.kps_offset = offset if tr.kps_offset is None else 0.7 * tr.kps_offset + 0.3 * offset
            if face.embedding is not None:
                tr.emb_sum = face.embedding.copy() if tr.emb_sum is None else tr.emb_sum + face.embedding
                tr.embedded_at = frame
            if patches is not None:
                tr.patch = patches[k]
            face.track = tid
        return new

    def _match(self, frame: int, faces: list[Face]) -> list[int]:
        ids = list(self._active)
        out = [-1] * len(faces)
        if not ids or not faces:
            return out
        pred = np.array([self._active[t].predicted(frame) for t in ids], np.float32)
        overlap = iou(np.array([f.bbox for f in faces]), pred)
        used_f, used_t = set(), set()
        for fi, ti in zip(*np.unravel_index(np.argsort(-overlap, axis=None), overlap.shape), strict=True):
            if overlap[fi, ti] < self.cfg.iou_min:
                break
            if fi in used_f or ti in used_t:
                continue
            dist, limit = self._distance(self._active[ids[ti]], faces[fi]), self.cfg.max_embed_dist
            if dist is not None and limit is not None and dist > limit:
                continue
            out[fi] = ids[ti]
            used_f.add(fi)
            used_t.add(ti)
        return out

    @staticmethod
    def _distance(tr: _Track, face: Face) -> float | None:
        """Cosine distance of ``face`` to the track's mean embedding; None when either is missing.
        (A None ``max_embed_dist`` disables the check; the worker always fills it in.)"""
        mean = tr.mean_embedding()
        if mean is None or face.embedding is None:
            return None
        return 1 - float(mean @ face.embedding)

    def _expire(self, frame: int) -> None:
        for tid in [t for t, tr in self._active.items() if frame - tr.last_frame > self.cfg.max_gap]:
            self._finished[tid] = self._active.pop(tid)

    def summaries(self, faces: list[Face]) -> dict[int, TrackSummary]:
        """All tracks (finished and active) with the indices of their faces in ``faces``."""
        tracks = {**self._finished, **self._active}
        out = {t: TrackSummary(t, tr.first_frame, tr.last_frame, tr.n_faces, tr.mean_embedding())
               for t, tr in tracks.items()}
        for i, face in enumerate(faces):
            if face.track in out:
                out[face.track].faces.append(i)
        return out


def smooth_landmarks(faces: list[Face], indices: list[int], window: int) -> None:
    """Centred moving average of the landmarks of one track's faces, in place.

    Averaging only runs across consecutive frames (a gap restarts it) so a face that reappears
    elsewhere is not dragged; the window shrinks at the ends so the first/last frames stay put.
    ``window`` is in frames; 1 disables smoothing.
    """
    if window <= 1 or len(indices) < 3:
        return
    half = window // 2
    order = sorted(indices, key=lambda i: faces[i].frame)
    frames = np.array([faces[i].frame for i in order])
    kps = np.stack([faces[i].kps for i in order]).astype(np.float64)
    runs = np.split(np.arange(len(order)), np.nonzero(np.diff(frames) != 1)[0] + 1)
    for run in runs:
        for j, pos in enumerate(run):
            h = min(half, j, len(run) - 1 - j)
            faces[order[pos]].kps = kps[run[j - h: j + h + 1]].mean(axis=0).astype(np.float32)


def cannot_link_tracks(tracks: dict[int, TrackSummary], faces: list[Face]) -> list[set[int]]:
    """Groups of track ids that appear together in some frame (two faces in one frame are two
    people), as sets of positions in ``sorted(tracks)``."""
    pos = {t: i for i, t in enumerate(sorted(tracks))}
    by_frame: dict[int, set[int]] = {}
    for face in faces:
        if face.track in pos:
            by_frame.setdefault(face.frame, set()).add(pos[face.track])
    groups = {frozenset(g) for g in by_frame.values() if len(g) > 1}
    return [set(g) for g in groups]
