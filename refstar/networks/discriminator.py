"""A small PatchGAN discriminator for the optional adversarial term.

Spectral-normalised strided convs (stable with the hinge loss of ``refstar.losses``); the output
is a grid of logits, one per overlapping patch, so it judges local texture (pores, hair, iris),
which is what the pixel losses blur away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """forward(img [B, 3, S, S] RGB 0..1) -> logits [B, 1, S / 2^levels, S / 2^levels].

    channels: width of the first layer (doubled per level, capped at 8x). levels: strided convs.
    """

    def __init__(self, channels: int = 32, levels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(levels):
            c_out = channels * min(2**i, 8)
            layers.append(spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)))
            c_in = c_out
        self.body = nn.ModuleList(layers)
        self.head = spectral_norm(nn.Conv2d(c_in, 1, 3, padding=1))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img * 2.0 - 1.0
        for conv in self.body:
            x = F.leaky_relu(conv(x), 0.2)
        return self.head(x)
