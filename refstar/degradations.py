"""Blind face degradation model (the common GFPGAN/BasicSR recipe) with its parameters kept.

    y = up( JPEG_q( down_s( x * k_sigma ) + n_sigma ) )

blur -> downsample -> noise -> JPEG -> (grey) -> upsample back to the input size. Everything is a
pure function of the image and a ``DegradationParams`` (whose ``seed`` fixes the noise), so the
same degradation can be applied again to a restored output (the cycle-consistency term).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class DegradationParams:
    """One sampled degradation. Units are pixels of the (high-quality) input image."""

    blur_sigma: float = 0.0  # Gaussian blur std along the first axis, px; 0 = no blur (0.1-10)
    blur_sigma2: float | None = None  # std along the second axis (anisotropic); None = isotropic
    blur_angle: float = 0.0  # rotation of the first axis, radians
    scale: float = 1.0  # downscale factor, 0.8-8 (1 = none, <1 upscales a little)
    noise_sigma: float = 0.0  # Gaussian noise std on the 0..255 scale, 0-20
    poisson: bool = False  # noise is signal dependent (shot-noise-like): std scales with sqrt(I)
    jpeg_quality: int | None = None  # 60-100 in the recipe; None = no JPEG
    gray: bool = False  # output converted to grey (3 equal channels)
    seed: int = 0  # noise seed; the same params and seed always give the same output


@dataclass(frozen=True)
class DegradationRanges:
    """Sampling ranges for ``sample_params`` (defaults: the blind-face recipe)."""

    blur_sigma: tuple[float, float] = (0.1, 10.0)
    anisotropic_prob: float = 0.0
    scale: tuple[float, float] = (0.8, 8.0)
    noise_sigma: tuple[float, float] = (0.0, 20.0)
    poisson_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (60, 100)
    jpeg_prob: float = 1.0
    gray_prob: float = 0.0


def rescale_ranges(r: DegradationRanges, factor: float) -> DegradationRanges:
    """The same degradations seen after resizing the image by ``factor`` (< 1 = smaller): blur
    widths and downscale factors shrink with the image (a downscale never drops below 1), and
    noise averages out under area resizing. JPEG is left as it is."""
    def mul(lo_hi: tuple[float, float], floor: float = 0.0) -> tuple[float, float]:
        return (max(floor, lo_hi[0] * factor), max(floor, lo_hi[1] * factor))

    return replace(r, blur_sigma=mul(r.blur_sigma), scale=mul(r.scale, 1.0),
                   noise_sigma=mul(r.noise_sigma))


def sample_params(
    rng: np.random.Generator, ranges: DegradationRanges | None = None
) -> DegradationParams:
    """Draw one degradation uniformly inside ``ranges`` (defaults: sigma 0.1-10, down 0.8-8x,
    noise 0-20, JPEG 60-100)."""
    r = ranges or DegradationRanges()
    sigma = float(rng.uniform(*r.blur_sigma))
    sigma2 = float(rng.uniform(*r.blur_sigma)) if rng.random() < r.anisotropic_prob else None
    return DegradationParams(
        blur_sigma=sigma,
        blur_sigma2=sigma2,
        blur_angle=float(rng.uniform(0, np.pi)) if sigma2 is not None else 0.0,
        scale=float(rng.uniform(*r.scale)),
        noise_sigma=float(rng.uniform(*r.noise_sigma)),
        poisson=bool(rng.random() < r.poisson_prob),
        jpeg_quality=int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1))
        if rng.random() < r.jpeg_prob
        else None,
        gray=bool(rng.random() < r.gray_prob),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def blur_kernel(sigma: float, sigma2: float | None = None, angle: float = 0.0) -> np.ndarray:
    """Normalised (anisotropic) Gaussian kernel, (k, k) float32 with k = 2 * ceil(3 sigma) + 1."""
    s1 = max(float(sigma), 1e-3)
    s2 = s1 if sigma2 is None else max(float(sigma2), 1e-3)
    half = int(np.ceil(3 * max(s1, s2)))
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xs + s * ys, -s * xs + c * ys
    k = np.exp(-0.5 * ((u / s1) ** 2 + (v / s2) ** 2))
    return (k / k.sum()).astype(np.float32)


def blur(img: np.ndarray, p: DegradationParams) -> np.ndarray:
    """The blur step alone on a float32 (H, W, C) image."""
    if p.blur_sigma <= 0 and not p.blur_sigma2:
        return img
    if p.blur_sigma2 is None:  # separable: much faster for large sigma
        return cv2.GaussianBlur(img, (0, 0), p.blur_sigma, borderType=cv2.BORDER_REFLECT_101)
    return cv2.filter2D(
        img,
        -1,
        blur_kernel(p.blur_sigma, p.blur_sigma2, p.blur_angle),
        borderType=cv2.BORDER_REFLECT_101,
    )


def degrade(img: np.ndarray, params: DegradationParams, *, seed: int | None = None) -> np.ndarray:
    """Apply ``params`` to ``img`` and return an image of the same shape and dtype.

    img: (H, W, 3) or (H, W) BGR, either uint8 0..255 or float32 0..1. ``seed`` overrides
    ``params.seed`` for the noise. Deterministic: equal inputs give equal outputs.
    """
    dtype = img.dtype
    h, w = img.shape[:2]
    x = img.astype(np.float32) / 255.0 if dtype == np.uint8 else img.astype(np.float32, copy=True)
    x = blur(x, params)
    if params.scale != 1.0:
        dw, dh = max(1, round(w / params.scale)), max(1, round(h / params.scale))
        x = cv2.resize(x, (dw, dh), interpolation=cv2.INTER_LINEAR)
    if params.noise_sigma > 0:
        rng = np.random.default_rng(params.seed if seed is None else seed)
        n = rng.standard_normal(x.shape, dtype=np.float32) * (params.noise_sigma / 255.0)
        if params.poisson:  # std proportional to sqrt(intensity), equal to sigma at mid grey
            n *= np.sqrt(np.clip(x, 0, 1) / 0.5)
        x = x + n
    x = np.clip(x, 0.0, 1.0)
    if params.jpeg_quality is not None:
        u8 = np.rint(x * 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(params.jpeg_quality)])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        x = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    if params.gray and x.ndim == 3:
        g = cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)
        x = np.repeat(g[..., None], 3, axis=2)
    if x.shape[:2] != (h, w):
        x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    if x.ndim == 2 and img.ndim == 3:
        x = x[..., None]
    if dtype == np.uint8:
        return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    return np.clip(x, 0.0, 1.0).astype(dtype)


def clean(params: DegradationParams) -> DegradationParams:
    """The deterministic, noise-free part of ``params`` (blur and resampling only): the forward
    operator to compare a restored output against its input."""
    return replace(params, noise_sigma=0.0, poisson=False, jpeg_quality=None, gray=False)
