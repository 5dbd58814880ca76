"""Losses and the torch degradation: zero when they should be, gradients that push the right
way, the cycle term blind outside its mask, and numerical agreement with the OpenCV model."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from refstar.degradations import DegradationParams, degrade
from refstar.degradations_torch import TorchDegradation, degrade_torch
from refstar.losses import (
    charbonnier,
    d_hinge_loss,
    frequency_loss,
    g_hinge_loss,
    g_nonsaturating_loss,
    l1,
    mcc_loss,
    refsel_mask_loss,
)
from refstar.networks import NetConfig, RefSTARNet


def _astronaut(side: int = 96) -> torch.Tensor:
    """scikit-image's astronaut, her face cropped and resized: [1, 3, side, side] RGB 0..1."""
    from skimage import data

    face = data.astronaut()[10:250, 140:380]
    face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(face.transpose(2, 0, 1).copy()).float()[None] / 255.0


@pytest.mark.parametrize("loss", [charbonnier, l1, frequency_loss])
def test_pixel_losses_zero_on_equal_and_push_toward_target(loss):
    y = _astronaut(32)
    assert loss(y, y.clone()).item() == 0.0
    x = (y + 0.1 * torch.randn_like(y)).requires_grad_()
    value = loss(x, y)
    value.backward()
    assert value.item() > 0
    # a small step against the gradient brings x closer to y
    assert loss((x - 1e-2 * x.grad / x.grad.abs().max()).detach(), y) < value.detach()


def test_weighted_charbonnier_ignores_zero_weight_pixels():
    y = _astronaut(32)
    w = torch.zeros(1, 1, 32, 32)
    w[..., :16, :] = 1
    x = y.clone()
    x[..., 16:, :] = 0  # wrong only where the weight is 0
    assert charbonnier(x, y, weight=w).item() == 0.0
    assert charbonnier(x, y, weight=torch.zeros_like(w)).item() == 0.0
    x[..., :16, :] += 0.2
    assert charbonnier(x, y, weight=w).item() == pytest.approx(0.2, abs=2e-3)


def test_refsel_mask_loss():
    t = (torch.rand(2, 1, 16, 16) > 0.5).float()
    soft = torch.rand(2, 1, 16, 16)
    assert refsel_mask_loss(t, t).item() == pytest.approx(0.0, abs=1e-5)
    assert refsel_mask_loss(soft, soft).item() == pytest.approx(0.0, abs=1e-5)  # soft targets too
    p = torch.full_like(t, 0.5, requires_grad=True)
    value = refsel_mask_loss(p, t)
    value.backward()
    assert value.item() > 0.5
    # the gradient raises the prediction where the target is 1 and lowers it where it is 0
    assert (p.grad[t == 1] < 0).all() and (p.grad[t == 0] > 0).all()
    # a coarser prediction is compared with the area-resized target
    coarse = torch.nn.functional.interpolate(t, size=(8, 8), mode="area")
    assert refsel_mask_loss(coarse, t).item() == pytest.approx(0.0, abs=1e-5)


def test_adversarial_losses_signs():
    real, fake = torch.full((2, 1, 4, 4), 2.0), torch.full((2, 1, 4, 4), -2.0)
    assert d_hinge_loss(real, fake).item() == 0.0
    assert d_hinge_loss(fake, real).item() > 0
    f = torch.zeros(2, 1, 4, 4, requires_grad=True)
    (g_hinge_loss(f) + g_nonsaturating_loss(f)).backward()
    assert (f.grad < 0).all()  # the generator pushes its logits up


@pytest.mark.parametrize(
    "p",
    [
        DegradationParams(blur_sigma=2.0, scale=4.0),
        DegradationParams(blur_sigma=0.4, scale=1.7),
        DegradationParams(blur_sigma=9.0, scale=7.5),  # kernel wider than the image
        DegradationParams(blur_sigma=1.0, blur_sigma2=3.0, blur_angle=0.6, scale=3.3),
        DegradationParams(blur_sigma=1.5, scale=0.8, gray=True),
    ],
)
def test_torch_degradation_matches_opencv_model(p):
    x = _astronaut(64)
    bgr = np.ascontiguousarray(x[0].permute(1, 2, 0).numpy()[..., ::-1])
    want = degrade(bgr, p)[..., ::-1].copy()
    got = TorchDegradation(p)(x)[0].permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() < 1e-4


def test_torch_degradation_fixed_noise_and_per_sample_params():
    x = _astronaut(64).repeat(2, 1, 1, 1)
    p = DegradationParams(blur_sigma=1.0, scale=2.0, noise_sigma=8.0, poisson=True, seed=11)
    bgr = np.ascontiguousarray(x[0].permute(1, 2, 0).numpy()[..., ::-1])
    got = degrade_torch(x[:1], p, noise=True)[0].permute(1, 2, 0).numpy()
    assert np.abs(got - degrade(bgr, p)[..., ::-1]).max() < 1e-4
    q = DegradationParams(blur_sigma=3.0, scale=4.0)
    both = TorchDegradation([p, q])(x)
    torch.testing.assert_close(both[1:], degrade_torch(x[1:], q))
    with pytest.raises(ValueError, match="batch"):
        TorchDegradation([p])(x)
    x.requires_grad_()
    TorchDegradation(q)(x).sum().backward()  # differentiable
    assert x.grad is not None and x.grad.abs().sum() > 0


def _mcc_setup():
    torch.manual_seed(0)
    net = RefSTARNet(NetConfig.preset("tiny"))
    gt = _astronaut(32)
    ref = torch.roll(gt, shifts=(1, 2), dims=(2, 3))
    fn = TorchDegradation(DegradationParams(blur_sigma=1.0, scale=2.0))
    return net, gt, ref, fn


def test_mcc_cycle_term_is_zero_for_a_consistent_output():
    net, gt, ref, fn = _mcc_setup()
    lq = fn(gt)
    terms = mcc_loss(net, gt, lq, ref, torch.zeros(1, 1, 32, 32), fn)
    assert terms.cycle.item() == 0.0  # gt explains its own degradation exactly
    assert terms.reference.item() == 0.0  # empty mask: nothing to rebuild
    assert terms.total.item() == 0.0


class _CopyRef:
    """A stand-in restorer whose output is its reference: term (b) becomes a plain masked
    comparison of ``out`` with ``ref``, which pins the masking exactly."""

    def __call__(self, lq: torch.Tensor, ref: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(image=ref)


def test_mcc_reference_term_ignores_unselected_regions():
    _, gt, ref, fn = _mcc_setup()
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    out = ref.clone()
    assert mcc_loss(_CopyRef(), out, fn(gt), ref, mask, fn).reference.item() == 0.0
    out[..., :8, :] = 1.0 - out[..., :8, :]  # wrong only where mask == 0: not penalised
    assert mcc_loss(_CopyRef(), out, fn(gt), ref, mask, fn).reference.item() == 0.0
    out[..., 10:12, 10:12] += 0.3  # wrong inside the mask: penalised
    assert mcc_loss(_CopyRef(), out, fn(gt), ref, mask, fn).reference.item() > 0


def test_mcc_pushes_the_output_through_the_network():
    net, gt, ref, fn = _mcc_setup()
    mask = torch.ones(1, 1, 32, 32)
    out = fn(gt).requires_grad_()  # a blurry "restoration"
    terms = mcc_loss(net, out, fn(gt), ref, mask, fn)
    assert terms.cycle.item() > 0 and terms.reference.item() > 0
    terms.total.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    # the mask is a constant: a predicted mask cannot shrink to dodge term (b)
    m = mask.clone().requires_grad_()
    mcc_loss(net, out.detach(), fn(gt), ref, m, fn).total.backward()
    assert m.grad is None
