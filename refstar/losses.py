"""Training losses: pixel, frequency, RefSel mask, adversarial, and Mask-Compatible
Cycle-Consistency (the Reconstruction stage of RefSTAR).

Every function is pure and returns a scalar tensor (float32, differentiable). Images are
[B, C, H, W] floats in 0..1 unless stated; masks/weights are [B, 1, H, W] (or broadcastable)
in 0..1. Losses are computed in float32 even under autocast (FFT and logs need it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # the network imports nothing from here; keep the import graph one-way
    from refstar.networks import RefSTARNet


def _weighted_mean(err: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``err`` [B, C, H, W]; with ``weight`` (broadcastable, >= 0) the weighted mean
    over the weighted pixels only: zero-weight pixels neither count nor dilute. An all-zero
    weight gives 0 (nothing selected, nothing penalised)."""
    if weight is None:
        return err.mean()
    w = weight.float().expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1e-8)


def charbonnier(
    x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Robust L1: mean of sqrt((x - y)^2 + eps^2) - eps; exactly 0 for x == y.

    x, y: [B, C, H, W] same shape. weight: None or broadcastable to it, >= 0 (see
    ``_weighted_mean``). Gradient w.r.t. x: (x - y) / sqrt((x - y)^2 + eps^2), i.e. toward y.
    """
    d = x.float() - y.float()
    return _weighted_mean(torch.sqrt(d * d + eps * eps) - eps, weight)


def l1(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error (optionally weighted like ``charbonnier``); 0 for x == y."""
    return _weighted_mean((x.float() - y.float()).abs(), weight)


def frequency_loss(x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Focal frequency loss (Jiang et al., ICCV 2021): squared distance of the 2-D spectra,
    each frequency weighted by its own (detached, per-image max-normalised) error^alpha, so the
    hard frequencies (the fine texture a blurry output lacks) dominate. 0 for x == y.

    x, y: [B, C, H, W]. Orthonormal FFT, so the scale does not depend on the image size.
    """
    fx = torch.fft.fft2(x.float(), norm="ortho")
    fy = torch.fft.fft2(y.float(), norm="ortho")
    d = (fx - fy).abs() ** 2  # [B, C, H, W] real
    with torch.no_grad():
        w = d.sqrt() ** alpha
        w = w / w.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (w * d).mean()


def refsel_mask_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """RefSel supervision: binary cross-entropy + soft Dice.

    pred: [B, 1, h, w] mask probabilities in 0..1 (a ``NetOutput.mask`` or one of ``masks``).
    target: [B, 1, H, W] in 0..1 (binary or soft); area-resized to ``pred``'s size when they
    differ, so one target supervises every scale. The cross-entropy is written as its KL form
    (BCE minus the target's entropy: same gradient) and the Dice with squared denominators, so
    both are 0 when pred == target, also for soft targets.
    """
    p, t = pred.float(), target.float()
    if t.shape[-2:] != p.shape[-2:]:
        t = F.interpolate(t, size=p.shape[-2:], mode="area")
    pc = p.clamp(eps, 1.0 - eps)
    kl = torch.xlogy(t, t) - t * torch.log(pc)
    kl = kl + torch.xlogy(1 - t, 1 - t) - (1 - t) * torch.log1p(-pc)
    inter = (p * t).flatten(1).sum(1)
    denom = (p * p).flatten(1).sum(1) + (t * t).flatten(1).sum(1)
    dice = 1.0 - (2.0 * inter + eps) / (denom + eps)
    return bce_weight * kl.mean() + dice_weight * dice.mean()


# ---- adversarial (hinge and non-saturating), for refstar.networks.discriminator ----


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean relu(1 - D(real)) + mean relu(1 + D(fake)); logits any
    shape. 0 once real >= 1 and fake <= -1."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: -mean D(fake) (pushes the fake logits up)."""
    return -fake_logits.float().mean()


def d_nonsaturating_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator logistic loss: softplus(-D(real)) + softplus(D(fake))."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator non-saturating loss: softplus(-D(fake))."""
    return F.softplus(-fake_logits.float()).mean()


# ---- Mask-Compatible Cycle-Consistency ----


class MCCTerms(NamedTuple):
    """The two terms of ``mcc_loss`` and their weighted sum (scalars)."""

    total: torch.Tensor
    cycle: torch.Tensor  # (a) degrade(out) vs lq, everywhere
    reference: torch.Tensor  # (b) ref rebuilt from degrade(ref) with out as reference, in mask


def mcc_loss(
    net: RefSTARNet,
    out: torch.Tensor,
    lq: torch.Tensor,
    ref: torch.Tensor,
    mask: torch.Tensor,
    degrade_fn: Callable[[torch.Tensor], torch.Tensor],
    cycle_weight: float = 1.0,
    reference_weight: float = 1.0,
    eps: float = 1e-3,
) -> MCCTerms:
    """Mask-Compatible Cycle-Consistency loss.

    out: [B, 3, S, S] the restored image (graph kept: both terms push gradient into it).
    lq: [B, 3, S, S] the degraded input that produced ``out``.
    ref: [B, 3, S, S] the aligned high-quality reference used for ``out``.
    mask: [B, 1, S, S] in 0..1, where the reference is valid for this target: the training
        mask from ``refstar.masks`` or the predicted RefSel mask. Always detached here, or the
        net could shrink its mask to dodge term (b). Samples without a reference need mask 0.
    degrade_fn: [B, 3, S, S] -> [B, 3, S, S], the degradation that made ``lq`` (normally a
        ``TorchDegradation`` of the sampled params; ``noise=True`` adds the same noise draw).

    (a) cycle = charbonnier(degrade_fn(out), lq): the restoration must explain its input. JPEG
        (and noise when omitted) stays in ``lq`` as a residual the robust loss tolerates.
    (b) reference = charbonnier(net(degrade_fn(ref), ref=out).image, ref, weight=mask): the
        reference, degraded the same way and restored with ``out`` as ITS reference, must come
        back inside the mask; so ``out`` has to carry the reference's selected texture. Pixels
        where mask == 0 are not penalised at all (they do not even dilute the mean).
    """
    m = mask.detach()
    cycle = charbonnier(degrade_fn(out), lq, eps=eps)
    rebuilt = net(degrade_fn(ref), ref=out).image
    reference = charbonnier(rebuilt, ref, eps=eps, weight=m)
    return MCCTerms(cycle_weight * cycle + reference_weight * reference, cycle, reference)
