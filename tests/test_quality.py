"""Quality scores on real faces (insightface's t1.jpg, the astronaut) and on known geometry."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from refstar.align import estimate_affine, warp_face
from worker.config import DetectConfig, ReferenceConfig
from worker.faces.base import make_analyzer
from worker.records import Face
from worker.stages.quality import exposure, face_quality, frontalness, head_pose, sharpness

IMAGES = (
    Path(next(iter(importlib.util.find_spec("insightface").submodule_search_locations)))
    / "data"
    / "images"
)
CFG = ReferenceConfig()


def align(image: np.ndarray, kps: np.ndarray, side: int = 512) -> np.ndarray:
    """The crop the worker scores: the restoration template's alignment."""
    return warp_face(image, estimate_affine(kps, side), side)


def degrade(image: np.ndarray, sigma: float, jpeg: int) -> np.ndarray:
    ok, buf = cv2.imencode(
        ".jpg", cv2.GaussianBlur(image, (0, 0), sigma), [cv2.IMWRITE_JPEG_QUALITY, jpeg]
    )
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


@pytest.fixture(scope="module")
def astronaut_face():
    from skimage.data import astronaut

    image = np.ascontiguousarray(cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    face = make_analyzer(DetectConfig(min_score=0.9)).analyze(image)[0]
    return image, face


def _project(yaw: float, pitch: float) -> np.ndarray:
    """Five landmarks of a rough 3-D head (units: half eye distance) seen at yaw/pitch, px."""
    pts = np.array([[-1, 0, 0], [1, 0, 0], [0, 1.0, 1.0], [-0.8, 2.2, 0.2], [0.8, 2.2, 0.2]], float)
    y, p = math.radians(yaw), math.radians(pitch)
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    q = pts @ (rx @ ry).T
    return (q[:, :2] * 30 + 200).astype(np.float32)


@pytest.mark.parametrize("yaw", [-60, -30, 0, 30, 60])
def test_head_pose_recovers_yaw(yaw):
    est_yaw, est_pitch = head_pose(_project(yaw, 0))
    assert est_yaw == pytest.approx(yaw, abs=12)
    assert abs(est_pitch) < 15


def test_head_pose_signs_roll_and_profile():
    assert head_pose(_project(0, 25))[1] > 5  # looking down -> + pitch
    assert head_pose(_project(0, -25))[1] < -5
    assert abs(head_pose(_project(85, 0))[0]) > 60  # near profile
    # In-plane rotation does not change the estimate.
    k = _project(30, 0)
    c, s = math.cos(0.5), math.sin(0.5)
    rolled = (k - 200) @ np.array([[c, -s], [s, c]]).T + 200
    assert head_pose(rolled)[0] == pytest.approx(head_pose(k)[0], abs=1)
    assert head_pose(np.zeros((5, 2))) == (0.0, 0.0)


def test_real_faces_pose():
    image = cv2.imread(str(IMAGES / "t1.jpg"))
    faces = make_analyzer(DetectConfig()).analyze(image)
    yaws = [head_pose(f.kps)[0] for f in faces]
    # Left to right: frontal, turned to image-left, frontal-ish, turned left, turned left, 3/4.
    assert abs(yaws[0]) < 15 and yaws[1] < -25 and yaws[4] < -25
    # A mirrored face turns the other way.
    w = image.shape[1]
    mirrored = np.stack([[w - x, y] for x, y in faces[1].kps[[1, 0, 2, 4, 3]]])
    assert head_pose(mirrored)[0] == pytest.approx(-yaws[1], abs=0.5)


def test_sharp_beats_degraded(astronaut_face):
    image, face = astronaut_face
    sharp_q, sharp = face_quality(face, align(image, face.kps), CFG)
    soft_q, soft = face_quality(face, align(degrade(image, 1.5, 40), face.kps), CFG)
    assert all(0.0 <= v <= 1.0 for v in sharp.values())
    assert set(sharp) == {"sharpness", "size", "frontal", "exposure", "det"}
    # Measured on the worker's crops: sharpness 0.97 -> 0.17, overall 0.53 -> 0.09.
    assert sharp["sharpness"] > 0.8
    assert soft["sharpness"] < 0.65 * sharp["sharpness"]
    assert soft_q < 0.7 * sharp_q
    assert 0.3 < sharp_q <= 1.0


def test_sharpness_moves_smoothly_with_the_faces_size(astronaut_face):
    """The same crop measured for nearby native sizes: no jumps (resampling the crop to the
    size made the score swing by half between sizes a pixel apart), and a face said to be
    smaller counts as sharper."""
    image, face = astronaut_face
    crop = align(image, face.kps)
    for sizes in (np.arange(88.0, 100.0, 0.5), np.arange(240.0, 262.0, 0.5)):
        v = np.array([sharpness(crop, s) for s in sizes])
        assert np.all(np.diff(v) <= 0)
        assert np.max(-np.diff(v) / v[:-1]) < 0.03


def test_one_bad_component_drags_down(astronaut_face):
    image, face = astronaut_face
    crop = align(image, face.kps)
    good, _ = face_quality(face, crop, CFG)
    tiny = Face(
        bbox=face.bbox,
        kps=(face.kps - face.kps.mean(0)) * 0.2 + face.kps.mean(0),
        det_score=face.det_score,
    )
    assert tiny.size < 32
    assert face_quality(tiny, crop, CFG)[0] == 0.0
    profile = Face(bbox=face.bbox, kps=_project(80, 0), det_score=face.det_score)
    assert face_quality(profile, crop, CFG)[0] < 0.3 * good
    dark = (crop * 0.15).astype(np.uint8)
    assert face_quality(face, dark, CFG)[0] < 0.5 * good


def test_exposure_and_frontalness():
    mid = np.full((64, 64, 3), 128, np.uint8)
    assert exposure(mid) > 0.95
    assert exposure(np.full((64, 64, 3), 255, np.uint8)) == 0.0
    assert exposure(np.full((64, 64, 3), 20, np.uint8)) < 0.3
    assert frontalness(0, 0) == 1.0 and frontalness(90, 0) < 1e-6
    assert frontalness(30, 0) == pytest.approx(0.75)
