"""Faces with no reference that lost most of their detail: the shipped prior's detail on top.

Without a reference the guided restorer can only denoise and sharpen a little. On a face that
lost most of its detail the shipped face prior (``refstar/weights``) rebuilds some, run on the
guided result: only its change above the face's own blur is kept (below it sit its tone and
colour casts, which the input knows better), and only on faces whose edges look blurred wider
than ``RAMP`` (a sharper face keeps guided's result: there the prior costs PSNR).

Measured on 60 aligned 512 px faces of the ten clips the prior never saw (the suite's
degradation of the face region, no reference), PSNR gain on the central 384 px, guided alone ->
with this stage (worst clip): x2 +0.53 -> +0.53 (no face reaches the ramp), x4 +0.28 -> +0.28
(+0.12 -> +0.13), x8 +0.10 -> +0.20 (+0.03 -> +0.05); dlib identity similarity to the clean face
unchanged (0.9819 / 0.9403 at x4 / x8). README, "Faces with no reference".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from refstar.degradations import DegradationParams
from refstar.degradations_torch import blur_torch
from refstar.restorer import Restored, has_reference

# Edge blur (``guided.edge_blur``), share of the crop side: none of the prior's change below the
# first, all of it above the second (4.5 and 6 px of a 512 crop: between the x4 and x8 faces).
# Ramps 4.0-5.5 px gained 0.01 dB more at x4 and lost its x8 worst clip's.
RAMP = (4.5 / 512, 6.0 / 512)
# The prior's change is kept above a Gaussian of LOCK x the edge blur: 0.5 -> x8 +0.20 dB (worst
# clip +0.05); 0.75 -> +0.24 (worst +0.01); 1.0 -> +0.24 (worst -0.08).
LOCK = 0.5


def prior_weight(blur_share: float) -> float:
    """How much of the prior's change a face gets (0..1), from its edge blur (share of the side)."""
    lo, hi = RAMP
    return float(np.clip((blur_share - lo) / (hi - lo), 0.0, 1.0))


class PriorFinish:
    """``Restorer``: ``inner``'s result, then, on faces given no reference whose edges look
    blurred past ``RAMP``, the change ``prior`` (a ``RefSTARRestorer`` of the shipped prior)
    makes to it, above ``LOCK`` x the blur. Faces with a reference are ``inner``'s alone.
    ``Restored.prior`` says how much of the prior's change each face got (0: none);
    ``finished``: faces the prior changed so far (tests and benchmarks read it)."""

    def __init__(self, inner: Any, prior: Any):
        self.inner, self.prior = inner, prior
        self.name = inner.name
        self.finished = 0

    def pick_reference(self, lq: torch.Tensor, refs: torch.Tensor) -> int:
        return self.inner.pick_reference(lq, refs)

    def restore(self, lq: torch.Tensor, ref: torch.Tensor | None) -> Restored:
        from refstar.guided import _luma, edge_blur

        first = self.inner.restore(lq, ref)
        image = first.image.clamp(0, 1)
        weights = torch.zeros(lq.shape[0])
        side = lq.shape[-1]
        picked = []  # (row, edge blur px, weight) of the faces the prior finishes
        for i, given in enumerate(has_reference(ref, lq.shape[0])):
            if given:
                continue
            b = edge_blur(_luma(lq[i].permute(1, 2, 0).detach().float().cpu().numpy()))
            if (w := prior_weight(b / side)) > 0:
                picked.append((i, b, w))
        if not picked:
            return Restored(image=image, mask=first.mask, prior=weights)
        rows = [i for i, _, _ in picked]
        base = image[rows]
        change = self.prior.restore(base, None).image.to(base) - base
        out = image.clone()
        for j, (i, b, w) in enumerate(picked):
            ch = change[j: j + 1]
            ch = ch - blur_torch(ch, DegradationParams(blur_sigma=max(LOCK * b, 1.0)))
            out[i] = (base[j] + w * ch[0]).clamp(0, 1)
            weights[i] = w
        self.finished += len(picked)
        return Restored(image=out, mask=first.mask, prior=weights)
