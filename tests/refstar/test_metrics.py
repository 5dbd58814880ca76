"""PSNR, SSIM and flicker against hand-computed values and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest

from refstar.align import estimate_affine, warp_face
from refstar.metrics import flicker, psnr, ssim
from tests.refstar.test_align import S, astronaut


def _crop() -> np.ndarray:
    img, kps = astronaut()
    return warp_face(img, estimate_affine(kps, S), S)


def test_psnr_known_values():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255), abs=1e-9)  # 48.13 dB
    # float 0..1 and uint8 agree
    x = _crop()
    y = np.clip(x.astype(int) + np.random.default_rng(0).integers(-9, 10, x.shape), 0, 255)
    assert psnr(x, y.astype(np.uint8)) == pytest.approx(psnr(x / 255.0, y / 255.0), rel=1e-9)


def test_psnr_mask_weights_pixels():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[:, :2] = 10
    mask = np.zeros((4, 4), np.float32)
    mask[:, 2:] = 1
    assert psnr(a, b, mask) == float("inf")
    assert psnr(a, b, 1 - mask) == pytest.approx(20 * np.log10(255 / 10))
    with pytest.raises(ValueError):
        psnr(a, np.zeros((5, 4), np.uint8))


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    x = _crop()
    rng = np.random.default_rng(1)
    y = np.clip(x.astype(float) + rng.normal(0, 12, x.shape), 0, 255).astype(np.uint8)
    assert ssim(x, x) == pytest.approx(1.0)
    gx = x.astype(float) @ [0.114, 0.587, 0.299] / 255
    gy = y.astype(float) @ [0.114, 0.587, 0.299] / 255
    ref = structural_similarity(
        gx, gy, gaussian_weights=True, sigma=1.5, data_range=1.0, use_sample_covariance=False
    )
    assert ssim(x, y) == pytest.approx(ref, abs=0.01)
    assert ssim(x, y) < 0.9


def test_flicker_is_the_added_frame_to_frame_change():
    x = _crop()
    still = [x] * 5
    assert flicker(still, still) == 0.0
    rng = np.random.default_rng(2)
    boiling = [
        np.clip(x.astype(int) + rng.integers(-8, 9, x.shape), 0, 255).astype(np.uint8)
        for _ in range(5)
    ]
    assert flicker(boiling, still) > 0.01  # restoration that boils adds flicker
    assert flicker(still, boiling) < -0.01  # one that steadies a noisy clip removes it
    assert flicker([x], [x]) == 0.0
    with pytest.raises(ValueError):
        flicker(still, still[:3])
