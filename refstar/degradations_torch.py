"""A differentiable torch version of the deterministic part of ``refstar.degradations.degrade``.

The cycle-consistency loss degrades the network's *output* with the degradation that made the
input, and needs gradients through it. Blur, down/up-sampling and greying are linear, so they
are written here in torch and match the OpenCV implementation numerically (same kernels,
reflect-101 borders, half-pixel bilinear resampling):

    y = up( grey?( clip( down( x * k ) [+ n] ) ) )

- noise: omitted by default; with ``noise=True`` the *same* noise tensor that ``degrade`` drew
  from ``params.seed`` is added (a constant: the restored face is compared with an input that
  carries exactly that noise). Poisson-like scaling uses the degraded image, as in ``degrade``.
- JPEG: always omitted (not differentiable); the cycle term sees its residual as error, which is
  why the cycle loss is a robust Charbonnier.

Tensors are RGB (the numpy model works on BGR; blur and resampling are per channel, only grey
needs the order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from refstar.degradations import DegradationParams, blur_kernel

# cv2.COLOR_BGR2GRAY weights, in RGB order
_GREY_RGB = (0.299, 0.587, 0.114)


def _reflect101_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a reflect-101 padding (OpenCV's BORDER_REFLECT_101) of any width, even wider
    than the image (torch's 'reflect' mode refuses pad >= n)."""
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def _pad101(x: torch.Tensor, py: int, px: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    x = x.index_select(-2, _reflect101_index(h, py, x.device))
    return x.index_select(-1, _reflect101_index(w, px, x.device))


def gaussian_kernel1d(sigma: float) -> np.ndarray:
    """cv2.GaussianBlur's kernel for float images with ksize (0, 0): side round(8 sigma + 1) | 1."""
    k = int(round(sigma * 8 + 1)) | 1
    t = np.arange(k, dtype=np.float64) - (k - 1) / 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def blur_torch(x: torch.Tensor, p: DegradationParams) -> torch.Tensor:
    """The blur of ``degrade``. x: [B, C, H, W] float -> same shape."""
    if p.blur_sigma <= 0 and not p.blur_sigma2:
        return x
    c = x.shape[1]
    if p.blur_sigma2 is None:  # separable, as cv2.GaussianBlur
        g = torch.from_numpy(gaussian_kernel1d(p.blur_sigma)).to(x)
        r = g.numel() // 2
        x = _pad101(x, r, r)
        x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    k = torch.from_numpy(blur_kernel(p.blur_sigma, p.blur_sigma2, p.blur_angle)).to(x)
    r = k.shape[0] // 2
    return F.conv2d(_pad101(x, r, r), k.expand(c, 1, -1, -1), groups=c)


def _noise(p: DegradationParams, c: int, h: int, w: int) -> torch.Tensor:
    """The noise ``degrade`` adds, [1, C, h, w] RGB, in 0..1 units (before Poisson scaling)."""
    rng = np.random.default_rng(p.seed)
    n = rng.standard_normal((h, w, c), dtype=np.float32) * (p.noise_sigma / 255.0)
    return torch.from_numpy(np.ascontiguousarray(n[..., ::-1].transpose(2, 0, 1)))[None]


def degrade_torch(x: torch.Tensor, p: DegradationParams, *, noise: bool = False) -> torch.Tensor:
    """Apply the differentiable part of ``p`` to a batch that shares it.

    x: [B, 3, H, W] float RGB 0..1 -> [B, 3, H, W] float RGB 0..1. JPEG is skipped; noise only
    with ``noise=True`` (the same draw for every sample of the batch, as ``degrade`` would give).
    """
    h, w = x.shape[-2:]
    y = blur_torch(x, p)
    if p.scale != 1.0:
        dw, dh = max(1, round(w / p.scale)), max(1, round(h / p.scale))
        y = F.interpolate(y, size=(dh, dw), mode="bilinear", align_corners=False)
    if noise and p.noise_sigma > 0:
        n = _noise(p, y.shape[1], y.shape[2], y.shape[3]).to(y)
        if p.poisson:
            n = n * torch.sqrt(y.clamp(1e-6, 1.0) / 0.5)
        y = y + n
    y = y.clamp(0.0, 1.0)
    if p.gray and y.shape[1] == 3:
        wts = torch.tensor(_GREY_RGB, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
        y = (y * wts).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    if y.shape[-2:] != (h, w):
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
    return y.clamp(0.0, 1.0)


class TorchDegradation:
    """A callable ``[B, 3, H, W] -> [B, 3, H, W]`` that re-applies sampled degradations.

    params: one ``DegradationParams`` for the whole batch, or a sequence of B (one per sample,
    as the training data sampled them). Deterministic: no randomness is drawn at call time.
    """

    def __init__(
        self,
        params: DegradationParams | Sequence[DegradationParams],
        *,
        noise: bool = False,
    ) -> None:
        self.params = params
        self.noise = noise

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.params, DegradationParams):
            return degrade_torch(x, self.params, noise=self.noise)
        if len(self.params) != x.shape[0]:
            raise ValueError(f"{len(self.params)} degradations for a batch of {x.shape[0]}")
        return torch.cat(
            [degrade_torch(x[i : i + 1], p, noise=self.noise) for i, p in enumerate(self.params)]
        )
