"""The blind degradation model: shapes, dtypes, determinism, ranges, and that it degrades."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from refstar.align import estimate_affine, warp_face
from refstar.degradations import (
    DegradationParams,
    DegradationRanges,
    blur_kernel,
    clean,
    degrade,
    sample_params,
)
from refstar.metrics import psnr
from tests.refstar.test_align import S, astronaut

P = DegradationParams(blur_sigma=2.0, scale=4.0, noise_sigma=5.0, jpeg_quality=50, seed=7)


def _crop() -> np.ndarray:
    img, kps = astronaut()
    return warp_face(img, estimate_affine(kps, S), S)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_shape_and_dtype_are_kept(dtype):
    x = _crop() if dtype == np.uint8 else _crop().astype(np.float32) / 255
    y = degrade(x, P)
    assert y.shape == x.shape and y.dtype == x.dtype
    if dtype == np.float32:
        assert 0.0 <= y.min() and y.max() <= 1.0
    grey = degrade(x[..., 0], P)  # single-channel images work too
    assert grey.shape == x.shape[:2]


def test_deterministic_given_params_and_seed():
    x = _crop()
    assert (degrade(x, P) == degrade(x, P)).all()
    assert (degrade(x, P, seed=3) == degrade(x, replace(P, seed=3))).all()
    assert (degrade(x, P, seed=3) != degrade(x, P, seed=4)).any()


def test_identity_params_leave_the_image_alone():
    x = _crop()
    assert (degrade(x, DegradationParams()) == x).all()


def test_stronger_degradations_lose_more():
    x = _crop()
    mild = DegradationParams(blur_sigma=0.5, scale=1.5, noise_sigma=2, jpeg_quality=95)
    values = [psnr(degrade(x, p), x) for p in (mild, P, replace(P, blur_sigma=6, scale=8))]
    assert values[0] > values[1] > values[2]
    assert values[0] > 30 and values[2] < 25


def test_clean_params_drop_noise_and_jpeg():
    c = clean(P)
    assert c.noise_sigma == 0 and c.jpeg_quality is None and not c.gray
    assert (c.blur_sigma, c.scale) == (P.blur_sigma, P.scale)
    x = _crop()
    assert psnr(degrade(x, c), degrade(x, P)) < 40  # the noise and JPEG were real
    assert (degrade(x, c, seed=1) == degrade(x, c, seed=2)).all()  # nothing random is left


def test_gray_and_poisson_options():
    x = _crop()
    g = degrade(x, replace(P, gray=True))
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    dark = np.full((64, 64, 3), 10, np.uint8)
    bright = np.full((64, 64, 3), 240, np.uint8)
    p = DegradationParams(noise_sigma=10, poisson=True)
    assert degrade(dark, p).astype(float).std() < degrade(bright, p).astype(float).std()


def test_sample_params_stay_in_the_recipe_ranges():
    rng = np.random.default_rng(0)
    draws = [sample_params(rng) for _ in range(300)]
    assert all(0.1 <= d.blur_sigma <= 10 for d in draws)
    assert all(0.8 <= d.scale <= 8 for d in draws)
    assert all(0 <= d.noise_sigma <= 20 for d in draws)
    assert all(d.jpeg_quality is not None and 60 <= d.jpeg_quality <= 100 for d in draws)
    assert len({d.seed for d in draws}) == len(draws)
    assert max(d.scale for d in draws) > 7 and min(d.scale for d in draws) < 1.2
    again = [sample_params(np.random.default_rng(0)) for _ in range(1)]
    assert again[0] == draws[0]
    r = DegradationRanges(
        blur_sigma=(1, 2),
        scale=(2, 3),
        anisotropic_prob=1.0,
        jpeg_prob=0.0,
        gray_prob=1.0,
        poisson_prob=1.0,
    )
    d = sample_params(rng, r)
    assert 1 <= d.blur_sigma <= 2 and d.blur_sigma2 is not None and 2 <= d.scale <= 3
    assert d.jpeg_quality is None and d.gray and d.poisson
    assert degrade(_crop(), d).shape == (S, S, 3)


def test_blur_kernel_is_normalised_and_oriented():
    k = blur_kernel(3.0)
    assert k.shape == (19, 19) and abs(k.sum() - 1) < 1e-5
    np.testing.assert_allclose(k, k.T, atol=1e-7)
    horiz = blur_kernel(4.0, 1.0, 0.0)
    c = horiz.shape[0] // 2
    assert horiz[c, c + 4] > 10 * horiz[c + 4, c]  # wide along x
    vert = blur_kernel(4.0, 1.0, np.pi / 2)
    np.testing.assert_allclose(vert, horiz.T, atol=1e-6)


def test_rescale_ranges_follow_the_image_size():
    from refstar.degradations import DegradationRanges, rescale_ranges

    r = DegradationRanges(blur_sigma=(1.0, 3.0), scale=(3.0, 5.0), noise_sigma=(0.0, 8.0),
                          jpeg_quality=(40, 80))
    half = rescale_ranges(r, 0.5)
    assert half.blur_sigma == (0.5, 1.5) and half.scale == (1.5, 2.5) and half.noise_sigma == (0.0, 4.0)
    assert half.jpeg_quality == (40, 80)
    assert rescale_ranges(r, 0.25).scale == (1.0, 1.25)  # never an upscale
    assert rescale_ranges(r, 1.0) == r
