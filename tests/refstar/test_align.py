"""Face alignment geometry on real photos (landmarks from dlib's 68-point model, used directly).

The helpers at the top (photos, landmarks) are shared by the paste and guided-restorer tests.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from refstar.align import (
    estimate_affine,
    face_mask,
    invert_affine,
    native_side,
    template,
    transform_points,
    umeyama,
    warp_face,
)

S = 256  # crop side used by the tests (CPU budget)


def _site_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed")
    return Path(list(spec.submodule_search_locations)[0], *parts)


@lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    path = _site_file("face_recognition_models", "models", "shape_predictor_68_face_landmarks.dat")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))


def dlib_kps(image: np.ndarray) -> list[np.ndarray]:
    """Five insightface-order landmarks (5, 2) float32 of every face dlib finds, largest first."""
    det, pred = _dlib_models()
    rgb = np.ascontiguousarray(image[..., ::-1])
    out = []
    for rect in det(rgb, 1):
        p = np.array([[q.x, q.y] for q in pred(rgb, rect).parts()], np.float32)
        out.append(np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]))
    return sorted(out, key=lambda k: -float(np.linalg.norm(k[1] - k[0])))


@lru_cache(maxsize=1)
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's astronaut as BGR uint8 (512, 512, 3) and her landmarks (5, 2)."""
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[..., ::-1])
    return img, dlib_kps(img)[0]


@lru_cache(maxsize=2)
def insightface_photo(name: str) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """One of insightface's sample photos (BGR) and the landmarks of its faces."""
    img = cv2.imread(str(_site_file("insightface", "data", "images", name)))
    assert img is not None, name
    return img, tuple(dlib_kps(img))


def test_template_scales_with_size():
    t = template(512)
    assert t.dtype == np.float32 and t.shape == (5, 2)
    np.testing.assert_allclose(t[0], [192.98138, 239.94708])
    np.testing.assert_allclose(template(256), t / 2, rtol=1e-6)


def test_native_side_is_the_crop_side_at_the_faces_own_scale():
    # landmarks where a 300 px crop puts them: any crop of them covers 300 source px
    kps = template(300) + np.float32([40, 25])
    assert native_side(kps, 512) == pytest.approx(300, rel=1e-4)
    assert native_side(kps, 128) == pytest.approx(300, rel=1e-4)
    ang = np.deg2rad(30)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    assert native_side(kps @ rot.T * 0.5, 512) == pytest.approx(150, rel=1e-4)


def test_estimate_affine_recovers_a_known_similarity():
    ang, scale, shift = np.deg2rad(17), 2.7, np.array([40.0, -12.0])
    rot = scale * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    kps = (template(S).astype(np.float64) - shift) @ np.linalg.inv(rot).T  # crop -> source
    m = estimate_affine(kps, S)
    assert m.shape == (2, 3) and m.dtype == np.float64
    np.testing.assert_allclose(transform_points(m, kps), template(S), atol=1e-3)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-6)
    assert estimate_affine(kps, S).tobytes() == m.tobytes()  # deterministic


def test_umeyama_is_a_similarity_even_for_noisy_points():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    m = umeyama(src, src * 0.5 + rng.normal(0, 2, (5, 2)))
    a = m[:, :2]
    assert abs(a[0, 0] - a[1, 1]) < 1e-9 and abs(a[0, 1] + a[1, 0]) < 1e-9
    assert np.linalg.det(a) > 0  # no reflection


def test_invert_affine_round_trip():
    img, kps = astronaut()
    m = estimate_affine(kps, S)
    pts = np.array([[0, 0], [S, 0], [100, 200]], np.float64)
    np.testing.assert_allclose(
        transform_points(m, transform_points(invert_affine(m), pts)), pts, atol=1e-6
    )


def test_aligned_crop_puts_the_real_landmarks_on_the_template():
    img, kps = astronaut()
    m = estimate_affine(kps, S)
    crop = warp_face(img, m, S)
    assert crop.shape == (S, S, 3) and crop.dtype == np.uint8
    found = dlib_kps(crop)
    assert found, "dlib must find the aligned face again"
    # the crop's own landmarks are where the affine sends the source ones...
    moved = np.linalg.norm(found[0] - transform_points(m, kps), axis=1)
    assert moved.max() < 3.0, moved  # px of a 256 crop
    # ...and near the template (a smile widens the mouth: the similarity fit leaves residuals)
    assert np.linalg.norm(found[0] - template(S), axis=1).mean() < 7.0


def test_large_faces_are_area_downscaled_without_aliasing():
    img, kps = astronaut()
    big = cv2.resize(img, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    ref = warp_face(img, estimate_affine(kps, S), S)
    crop = warp_face(big, estimate_affine(kps * 3 + 1, S), S)  # +1: pixel-centre convention
    err = np.abs(crop.astype(float) - ref.astype(float))[40:-40, 40:-40].mean()
    assert err < 4.0, err


def test_face_mask_covers_the_face_and_never_the_border():
    m = face_mask(S, 0.08)
    assert m.shape == (S, S) and m.dtype == np.float32
    assert m.min() == 0.0 and m.max() == 1.0
    margin = int(0.04 * S)
    border = np.ones_like(m, bool)
    border[margin:-margin, margin:-margin] = False
    assert (m[border] == 0).all()
    t = template(S)
    for x, y in t:  # eyes, nose, mouth fully inside
        assert m[int(y), int(x)] == 1.0
    eye_y, mouth_y = t[:2, 1].mean(), t[3:, 1].mean()
    assert m[int(eye_y - 0.35 * (mouth_y - eye_y)), S // 2] > 0.9  # brows
    assert m[int(mouth_y + 0.55 * (mouth_y - eye_y)), S // 2] > 0.9  # chin
    assert m[int(eye_y), int(t[0, 0] - 0.4 * (t[1, 0] - t[0, 0]))] > 0.5  # cheek beside the eye
    # feather: a wider feather gives a softer, never larger footprint
    soft = face_mask(S, 0.2)
    assert (soft <= m + 1e-6).all() and soft.sum() < m.sum()
