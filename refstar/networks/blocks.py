"""Building blocks shared by the RefSTAR encoder/decoder, fusion and discriminator.

All blocks take and return [B, C, H, W] feature maps; none uses batch statistics (no BatchNorm),
so one sample's output never depends on the rest of the batch (per-sample "no reference" stays
exact) and training with batch 1 behaves like inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


def conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1)


class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over channels of a [B, C, H, W] map (what attention needs: each token
    normalised on its own, unlike GroupNorm which mixes positions)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ResBlock(nn.Module):
    """conv3x3 -> GELU -> conv3x3, plus identity. The second conv's output is scaled by a learned
    per-channel factor initialised small, so a deep stack starts close to identity (stable
    training without normalisation layers)."""

    def __init__(self, channels: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), float(init_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.conv2(F.gelu(self.conv1(x)))


def res_stack(channels: int, n: int) -> nn.Sequential:
    """``n`` ResBlocks (an empty Sequential, i.e. identity, for n == 0)."""
    return nn.Sequential(*[ResBlock(channels) for _ in range(n)])


class Down(nn.Module):
    """Halve the resolution: strided conv3x3, c_in -> c_out."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = conv3x3(c_in, c_out, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(x))


class Up(nn.Module):
    """Double the resolution: bilinear x2 then conv3x3 (no transposed conv: no checkerboard)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = conv3x3(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.gelu(self.conv(x))


class Encoder(nn.Module):
    """A conv pyramid: stem, then per level ``blocks`` ResBlocks, with a Down between levels.

    forward: [B, 3, S, S] in 0..1 -> list of L maps, level i shaped [B, channels[i], S/2^i, S/2^i]
    (index 0 is full resolution).
    """

    def __init__(self, channels: tuple[int, ...], blocks: int) -> None:
        super().__init__()
        self.stem = conv3x3(3, channels[0])
        self.levels = nn.ModuleList(res_stack(c, blocks) for c in channels)
        self.downs = nn.ModuleList(
            Down(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True)
        )

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        # centre the input so the stem sees zero-mean data (0..1 RGB -> -1..1)
        x = self.stem(img * 2.0 - 1.0)
        feats = []
        for i, level in enumerate(self.levels):
            if i > 0:
                x = self.downs[i - 1](x)
            x = level(x)
            feats.append(x)
        return feats
