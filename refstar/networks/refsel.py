"""RefSel: the Selection stage, a soft mask of where the reference's texture may be transferred.

At one decoder scale the head sees
- ``x``: the input stream's feature (degraded face, plus what coarser scales already decided),
- ``aligned``: the reference feature gathered at each input position by the window
  cross-attention (the reference *as it would be pasted here*),
- ``peak``: the best attention logit per position, i.e. how well the best reference match agrees
  with the input (high on the same person's static regions, low where expression, occlusion or
  lighting conflict),
- ``prev``: the coarser scale's mask logit, upsampled (coarse-to-fine consistency),
and returns a mask logit. The mask is supervised by ``refstar.losses.refsel_mask_loss`` with
masks from ``refstar.masks``, and it gates the fusion in ``refstar.networks.fusion``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refstar.networks.blocks import conv3x3


class RefSelHead(nn.Module):
    """Mask logit from input/aligned-reference agreement at one scale.

    forward(x [B,C,H,W], aligned [B,C,H,W], peak [B,1,H,W], prev [B,1,h,w] | None)
    -> logit [B,1,H,W] (any real; sigmoid gives the mask in 0..1).
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        # x, aligned, |x - aligned|, peak, prev logit
        self.conv1 = conv3x3(3 * channels + 2, hidden)
        self.conv2 = conv3x3(hidden, hidden)
        self.out = conv3x3(hidden, 1)
        # start undecided (mask 0.5): both streams get gradient from the first step
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        x: torch.Tensor,
        aligned: torch.Tensor,
        peak: torch.Tensor,
        prev: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if prev is None:
            prev = torch.zeros_like(peak)
        elif prev.shape[-2:] != x.shape[-2:]:
            prev = F.interpolate(prev, size=x.shape[-2:], mode="bilinear", align_corners=False)
        h = torch.cat([x, aligned, (x - aligned).abs(), peak.to(x.dtype), prev.to(x.dtype)], 1)
        h = F.gelu(self.conv1(h))
        h = F.gelu(self.conv2(h))
        return self.out(h) + prev.to(h.dtype)  # residual on the coarse decision
