"""The issue's yardstick for per-job adaptation: a plain ~0.3 M-parameter U-Net trained with L1.

Issue 3 quotes "a 0.3M-parameter U-Net trained this way for 400 steps ... gained +3.2 to +3.5 dB
over the degraded input". This module rebuilds that baseline so ``bench_adapt`` can measure it
beside RefSTAR on the same crops, degradations, steps and machine, instead of comparing with a
figure taken elsewhere. ``ref=True`` is the issue's variant with the clip's sharpest face as a
second input (channels concatenated). It is a benchmark fixture, not part of the library.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from refstar.training.dataset import FacePairs, collate_pairs


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))


class PlainUNet(nn.Module):
    """Three-level U-Net predicting a residual over the LQ input; RGB 0..1 in and out."""

    def __init__(self, ref: bool = False, ch: tuple[int, int, int] = (26, 52, 104)):
        super().__init__()
        self.ref = ref
        c0, c1, c2 = ch
        self.e0, self.e1, self.e2 = _block(6 if ref else 3, c0), _block(c0, c1), _block(c1, c2)
        self.u1, self.d1 = nn.ConvTranspose2d(c2, c1, 2, 2), _block(2 * c1, c1)
        self.u0, self.d0 = nn.ConvTranspose2d(c1, c0, 2, 2), _block(2 * c0, c0)
        self.out = nn.Conv2d(c0, 3, 1)

    def forward(self, lq: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.cat([lq, ref if ref is not None else torch.zeros_like(lq)], 1) if self.ref else lq
        h0 = self.e0(x)
        h1 = self.e1(F.avg_pool2d(h0, 2))
        h2 = self.e2(F.avg_pool2d(h1, 2))
        d1 = self.d1(torch.cat([self.u1(h2), h1], 1))
        d0 = self.d0(torch.cat([self.u0(d1), h0], 1))
        return (lq + self.out(d0)).clamp(0, 1)


def train_baseline(data: FacePairs, *, ref: bool, steps: int, batch_size: int = 4,
                   lr: float = 2e-3, seed: int = 0) -> tuple[PlainUNet, float]:
    """Adam + cosine LR, L1 on the GT; returns the net (eval mode) and the seconds it took."""
    torch.manual_seed(seed)
    net = PlainUNet(ref=ref)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                        collate_fn=collate_pairs)
    t0, step, epoch = time.perf_counter(), 0, 0
    while step < steps:
        data.set_epoch(epoch)
        for batch in loader:
            for g in opt.param_groups:
                g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
            out = net(batch["lq"], batch["ref"] if ref else None)
            loss = F.l1_loss(out, batch["gt"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
        epoch += 1
    return net.eval(), time.perf_counter() - t0
