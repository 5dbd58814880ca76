"""Metrics for restored face crops: PSNR, SSIM, identity similarity and temporal flicker.

Images are (H, W, 3) or (H, W) arrays, either uint8 0..255 or float 0..1 (both arguments of one
call in the same convention); channel order does not matter for PSNR and is taken as BGR for the
grey conversion of SSIM.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    """To float64 on the 0..1 scale."""
    x = np.asarray(x)
    return x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB (peak 1.0 on the 0..1 scale, i.e. 255 for uint8).

    mask: optional (H, W) weights 0..1; the mean squared error is the mask-weighted mean over
    pixels (channels averaged). Identical images give ``inf``.
    """
    x, y = _unit(a), _unit(b)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    se = (x - y) ** 2
    if se.ndim == 3:
        se = se.mean(-1)
    if mask is None:
        mse = float(se.mean())
    else:
        w = np.asarray(mask, np.float64)
        mse = float((se * w).sum() / max(w.sum(), 1e-12))
    return float("inf") if mse <= 0 else float(10.0 * np.log10(1.0 / mse))


def _grey(x: np.ndarray) -> np.ndarray:
    x = _unit(x)
    if x.ndim == 3:
        x = x @ np.array([0.114, 0.587, 0.299])  # BGR -> luma (Rec. 601)
    return x


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004) of the grey images: Gaussian window sigma 1.5,
    K1 0.01, K2 0.03, dynamic range 1; mean over the valid (unpadded) area. 1.0 = identical."""
    x, y = _grey(a), _grey(b)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    c1, c2 = 0.01**2, 0.03**2

    def f(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5)[5:-5, 5:-5]

    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def identity_similarity(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Cosine similarity of face embeddings (any backend: dlib 128-d, ArcFace 512-d, ...).

    a, b: (D,) vectors -> a float; or (N, D) and (N, D) -> (N,) float64, row by row; (N, D)
    against one (D,) vector also gives (N,). Embeddings need not be unit norm. 1.0 = same
    direction; a zero vector gives 0.0. What counts as "the same person" depends on the backend
    (e.g. dlib ~0.9 and above, ArcFace ~0.5 and above).
    """
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"embedding lengths differ: {x.shape} vs {y.shape}")
    dot = (x * y).sum(-1)
    norms = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
    sim = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    return float(sim) if np.ndim(sim) == 0 else sim


def temporal_change(seq: Sequence[np.ndarray]) -> float:
    """Mean absolute frame-to-frame change, 0..1 scale: mean over t of mean |seq[t+1] - seq[t]|.

    seq: crops of one track over consecutive frames (equal shapes). Fewer than two give 0."""
    if len(seq) < 2:
        return 0.0
    frames = [_unit(f) for f in seq]
    return float(np.mean([np.abs(b - a).mean() for a, b in zip(frames, frames[1:], strict=False)]))


def flicker(seq_restored: Sequence[np.ndarray], seq_original: Sequence[np.ndarray]) -> float:
    """Temporal flicker added by restoration, on the 0..1 scale.

    Both sequences are the same track's aligned crops over consecutive frames (equal length,
    equal shapes). Returns mean |crop[t+1] - crop[t]| of the restored crops minus the same for the
    originals: ~0 when restoration follows the video's own motion, > 0 when it adds frame-to-frame
    change (texture that boils, masks that jump), < 0 when it smooths the original's changes
    (e.g. removes noise). Fewer than two frames give 0.
    """
    if len(seq_restored) != len(seq_original):
        raise ValueError(f"sequence lengths differ: {len(seq_restored)} vs {len(seq_original)}")
    return temporal_change(seq_restored) - temporal_change(seq_original)
