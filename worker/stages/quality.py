"""Face quality scores for choosing references: pure functions of landmarks and aligned crops.

Every component is in 0..1 (1 = best). The overall score is a weighted product
``prod(c_i ** w_i)`` rather than a mean, so a single very bad component (a tiny, blurred or
profile face) drags the whole score down instead of being averaged away.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from worker.config import ReferenceConfig
from worker.records import Face

# Exponents of the overall product. Sharpness and size decide whether a reference can carry
# detail at all, pose decides whether its texture lines up with frontal targets; exposure and the
# detector score are weaker cues.
WEIGHTS: dict[str, float] = {
    "sharpness": 1.0,
    "size": 1.0,
    "frontal": 0.7,
    "exposure": 0.5,
    "det": 0.5,
}

# Head model for pose from 2-D landmarks, in units of half the eye distance (~32 mm): the nose
# tip sits ~1.0 in front of the eye/mouth plane. Pitch uses an empirical gain on the nose's
# position between eye line and mouth line (anatomy says ~2.5, but smiles and open mouths move
# the mouth corners; 1.5 keeps the smiling-but-level faces of insightface's t1.jpg under ~25 deg).
_NOSE_DEPTH = 1.0
_PITCH_GAIN = 1.5
# Fraction of the eye-line -> mouth-line distance where a frontal nose tip sits: 0.50 in the
# insightface/ArcFace template, median 0.56 for dlib's points on 40 face-api.js crops.
_NOSE_T0 = 0.53

SHARP_SIDE = 256  # px: sharpness is measured as if the face were at most this size
SHARP_REF = 100.0  # Laplacian variance at which sharpness reaches 0.5
# the resampled measure's variance over this one's, median per clip over faces of four dev clips:
# 0.38 (faces of 280-300 px, which it enlarged a little, losing fine detail) to 0.91 (47-135 px)
SHARP_SCALE = 0.6
SIZE_REF = 256.0  # px of Face.size at which the size component saturates


def head_pose(kps: np.ndarray) -> tuple[float, float]:
    """Approximate (yaw, pitch) in degrees from five insightface-order landmarks ((5, 2) px).

    Yaw: nose offset from the eye/mouth midline, across the face, relative to half the eye
    distance; + = facing image right, 0 frontal, profiles approach +-90. Pitch: where the nose
    tip sits between the eye line and the mouth line; + = looking down. In-plane roll is removed
    first. Rough (+-15 deg) but monotonic, which is all reference ranking needs.
    """
    k = np.asarray(kps, dtype=np.float64).reshape(5, 2)
    eye_l, eye_r, nose, mouth_l, mouth_r = k
    eyes, mouth = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    across = eye_r - eye_l
    half_eye = np.linalg.norm(across) / 2
    down = mouth - eyes
    height = np.linalg.norm(down)
    if half_eye < 1e-6 or height < 1e-6:
        return 0.0, 0.0
    u = across / (2 * half_eye)  # unit vector along the eye line (roll removed)
    v = np.array([-u[1], u[0]])  # perpendicular, pointing down the face
    # Midline point at the nose's height: interpolate between eye and mouth centres.
    t = float(np.dot(nose - eyes, v) / max(np.dot(down, v), 1e-6))
    mid = eyes + t * down
    offset = float(np.dot(nose - mid, u))
    # Projected eye distance shrinks with cos(yaw) and the offset grows with sin(yaw), so
    # offset / half_eye = depth * tan(yaw).
    yaw = math.degrees(math.atan2(offset / half_eye, _NOSE_DEPTH))
    # Pitch: the protruding nose tip slides towards the mouth line when the head tips down.
    pitch = math.degrees(math.atan((t - _NOSE_T0) * _PITCH_GAIN))
    return yaw, pitch


@functools.cache
def _face_fill() -> float:
    """Face size (``Face.size``: 2.5 x eye-to-mouth distance) over the side of an aligned crop."""
    from refstar.align import template

    t = template(512)
    return float(2.5 * np.linalg.norm((t[3] + t[4]) / 2 - (t[0] + t[1]) / 2) / 512)


def sharpness(crop: np.ndarray, native_px: float | None = None) -> float:
    """0..1 from the variance of the Laplacian of the grey central half of an aligned crop, as
    the face would show it at its native size.

    ``native_px`` is the face's size in its source (clipped to 64..SHARP_SIDE px; SHARP_SIDE when
    omitted): an aligned crop of a small face is upsampled and would always look soft, which the
    size component already accounts for; measured at its own resolution a small but crisp face
    scores as sharp. The crop is not resampled to that size: the Laplacian of an image resampled
    by a non-integer ratio swings with the ratio (on a 252 px face of video-retalking face_1 the
    score went 0.044..0.077 as the size moved by a pixel), and the per-frame and the followed
    measures of one frame differ by that much. Instead the crop is blurred by the area filter's
    variance at that ratio and the variance scaled by its fourth power (a second derivative per
    axis), which moves smoothly with the size. ``SHARP_SCALE`` keeps the scores near the resampled
    measure's on the dev clips. Saturating curve v^2 / (v^2 + SHARP_REF^2): on the astronaut's
    worker crop, blur of 1.5 px with JPEG 40 takes it from 0.97 to 0.17. Heavy JPEG alone is not
    caught: its block edges add Laplacian energy.
    """
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    n = grey.shape[0]
    # the face fills only part of a restoration-template crop: the side at which the face
    # itself, not the whole crop, comes out at its native size
    fill = _face_fill()
    side = float(np.clip((native_px or SHARP_SIDE) / fill, 64, SHARP_SIDE / fill))
    k = n / side
    sigma = math.sqrt(max(k * k - 1.0, 0.0) / 12.0)
    c, m = n // 4, int(3 * sigma) + 2
    centre = grey[c - m : n - c + m, c - m : n - c + m].astype(np.float32)
    if sigma > 0.05:
        centre = cv2.GaussianBlur(centre, (0, 0), sigma)
    var = float(cv2.Laplacian(centre, cv2.CV_32F)[m:-m, m:-m].var()) * k**4 * SHARP_SCALE
    return var**2 / (var**2 + SHARP_REF**2)


def exposure(crop: np.ndarray) -> float:
    """0..1: mid-tone mean brightness of the central half of the crop, times a penalty for
    clipped shadows/highlights (each 1 % of clipped pixels costs 4 %)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    h, w = grey.shape
    centre = grey[h // 4 : h - h // 4, w // 4 : w - w // 4].astype(np.float64) / 255.0
    mean_term = math.exp(-(((centre.mean() - 0.5) / 0.35) ** 2))
    clipped = float(np.mean((centre <= 0.02) | (centre >= 0.98)))
    return mean_term * max(0.0, 1.0 - 4.0 * clipped)


def frontalness(yaw: float, pitch: float) -> float:
    """0..1: cos^2 of yaw times cos^2 of pitch (30 deg -> 0.75, 60 deg -> 0.25, 90 -> 0)."""

    def c2(a: float) -> float:
        return math.cos(math.radians(min(abs(a), 90.0))) ** 2

    return c2(yaw) * c2(pitch)


def size_score(size_px: float, cfg: ReferenceConfig) -> float:
    """0..1: sqrt of Face.size / SIZE_REF (64 px -> 0.5); 0 below cfg.min_face_px, where no
    detail is left to transfer."""
    if size_px < cfg.min_face_px:
        return 0.0
    return min(1.0, size_px / SIZE_REF) ** 0.5


def face_quality(
    face: Face, crop: np.ndarray, cfg: ReferenceConfig
) -> tuple[float, dict[str, float]]:
    """Overall quality (0..1) and its named components for ``face`` with its aligned crop
    ((S, S, 3) BGR uint8, restoration template)."""
    yaw, pitch = head_pose(face.kps)
    parts = {
        "sharpness": sharpness(crop, face.size),
        "size": size_score(face.size, cfg),
        "frontal": frontalness(yaw, pitch),
        "exposure": exposure(crop),
        "det": float(np.clip(face.det_score, 0.0, 1.0)),
    }
    overall = 1.0
    for name, w in WEIGHTS.items():
        overall *= max(parts[name], 0.0) ** w
    return overall, parts
