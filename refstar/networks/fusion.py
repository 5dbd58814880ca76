"""Transfer: masked dual-stream fusion at one decoder scale.

Two streams see disjoint sources:
- the input stream is a ResBlock on the decoder feature (the degraded face only);
- the reference stream is window cross-attention whose queries come from the input but whose
  keys and values come only from the reference, followed by convolutions on that result alone.
The fused feature is ``m * ref_stream + (1 - m) * input_stream``, with ``m`` the RefSel mask.
There is no ``x + attention(x, ref)`` residual: inside the mask the only path from this scale
on is through reference values, so the network cannot learn to ignore the reference (the trivial
solution of plain cross-attention that the RefSTAR paper describes).

The attention is local ("halo" windows, as in HaloNet): each ``window x window`` block of queries
attends to a ``(window + 2 halo)^2`` block of reference keys around the same place, which covers
the residual misalignment of landmark-aligned faces and keeps 512 px crops affordable
(attention memory H * W * (window + 2 halo)^2 logits per head, not (H * W)^2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refstar.networks.blocks import LayerNorm2d, ResBlock, conv1x1
from refstar.networks.refsel import RefSelHead


def _rel_index(window: int, halo: int) -> torch.Tensor:
    """[window^2, K^2] index into a (2(window + halo) - 1)^2 table of relative offsets,
    K = window + 2 halo; offset = key position - halo - query position, per axis."""
    k = window + 2 * halo
    r = 2 * (window + halo) - 1
    qy, qx = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    dy = ky.reshape(1, -1) - halo - qy.reshape(-1, 1) + (window + halo - 1)
    dx = kx.reshape(1, -1) - halo - qx.reshape(-1, 1) + (window + halo - 1)
    return dy * r + dx


class WindowCrossAttention(nn.Module):
    """Multi-head halo-window attention from input queries to reference keys/values.

    ``project_ref(ref_feat [B,C,H,W]) -> (k, v)`` runs once per reference (reusable across
    frames). ``forward(x [B,C,H,W], k, v [B or 1,C,H,W]) -> (out [B,C,H,W], peak [B,1,H,W])``:
    ``out`` is a convex combination of reference values per position, ``peak`` the best
    (head-averaged) attention logit, i.e. the matching confidence. Any H, W (padded internally).
    """

    def __init__(self, channels: int, heads: int, window: int, halo: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} not divisible by heads {heads}")
        self.heads, self.window, self.halo = heads, window, halo
        self.norm_q = LayerNorm2d(channels)
        self.norm_kv = LayerNorm2d(channels)
        self.q = conv1x1(channels, channels)
        self.kv = conv1x1(channels, 2 * channels)
        self.proj = conv1x1(channels, channels)
        r = 2 * (window + halo) - 1
        # locality prior: aligned faces match near the same position, so the bias starts as a
        # Gaussian in the offset (std = window / 2 feature pixels) and is learned from there
        d = torch.arange(r, dtype=torch.float32) - (window + halo - 1)
        prior = -(d[:, None] ** 2 + d[None, :] ** 2) / (2 * (window / 2) ** 2)
        self.rel_bias = nn.Parameter(prior.reshape(1, -1).repeat(heads, 1))
        self.register_buffer("rel_index", _rel_index(window, halo), persistent=False)

    def project_ref(self, ref_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(self.norm_kv(ref_feat)).chunk(2, dim=1)
        return k, v

    def forward(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        win, halo, nh = self.window, self.halo, self.heads
        d, kk = c // nh, win + 2 * halo
        q = self.q(self.norm_q(x))
        ph, pw = (-h) % win, (-w) % win
        if k.shape[0] != b:
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        if ph or pw:
            q, k, v = (F.pad(t, (0, pw, 0, ph)) for t in (q, k, v))
        gh, gw = (h + ph) // win, (w + pw) // win
        n = gh * gw
        # [B, n windows, heads, win^2, d], windows in row-major order (as F.unfold lists them)
        q = q.reshape(b, nh, d, gh, win, gw, win).permute(0, 3, 5, 1, 4, 6, 2)
        q = q.reshape(b, n, nh, win * win, d)

        def halo_windows(t: torch.Tensor) -> torch.Tensor:
            t = F.unfold(t, kk, padding=halo, stride=win)  # [B, C*kk*kk, n]
            return t.reshape(b, nh, d, kk * kk, n).permute(0, 4, 1, 3, 2)

        kw, vw = halo_windows(k), halo_windows(v)
        # keys in the zero padding (outside the image) must get no weight
        ones = torch.ones(1, 1, h, w, device=x.device, dtype=kw.dtype)
        valid = F.unfold(F.pad(ones, (0, pw, 0, ph)), kk, padding=halo, stride=win) > 0.5
        valid = valid.reshape(1, kk * kk, n).permute(0, 2, 1)[:, :, None, None, :]

        logits = (q * d**-0.5) @ kw.transpose(-1, -2)  # [B, n, heads, win^2, kk^2]
        bias = self.rel_bias[:, self.rel_index]  # [heads, win^2, kk^2]
        logits = (logits + bias.to(logits.dtype)).masked_fill(~valid, float("-inf"))
        peak = logits.amax(-1).mean(2)  # [B, n, win^2]
        out = logits.softmax(-1).to(vw.dtype) @ vw  # [B, n, heads, win^2, d]

        out = out.reshape(b, gh, gw, nh, win, win, d).permute(0, 3, 6, 1, 4, 2, 5)
        out = out.reshape(b, c, gh * win, gw * win)[:, :, :h, :w]
        peak = peak.reshape(b, gh, gw, win, win).permute(0, 1, 3, 2, 4)
        peak = peak.reshape(b, 1, gh * win, gw * win)[:, :, :h, :w]
        return self.proj(out), peak


class DualStreamFusion(nn.Module):
    """Masked dual-stream fusion with its RefSel head, at one scale of ``channels`` channels.

    forward(x [B,C,H,W], kv (k, v) | None, valid [B] bool | None, prev_logit [B,1,h,w] | None,
    mask_override float | None) -> (fused [B,C,H,W], mask [B,1,H,W] in 0..1, logit | None).

    ``kv is None`` (no reference for the whole batch): the input stream alone, mask zeros, and
    the reference branch is not run. ``valid[b] == False``: that sample gets exactly the input
    stream and mask 0. ``mask_override`` replaces RefSel's mask by a constant (diagnostics: with
    1.0 the output at this scale comes from the reference alone).
    """

    def __init__(self, channels: int, heads: int, window: int, halo: int, hidden: int) -> None:
        super().__init__()
        self.input_stream = ResBlock(channels)
        self.attn = WindowCrossAttention(channels, heads, window, halo)
        # refines the gathered reference features using nothing but them
        self.ref_stream = ResBlock(channels)
        self.refsel = RefSelHead(channels, hidden)

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None,
        valid: torch.Tensor | None = None,
        prev_logit: torch.Tensor | None = None,
        mask_override: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x_in = self.input_stream(x)
        b, _, h, w = x.shape
        if kv is None:
            return x_in, x.new_zeros(b, 1, h, w), None
        aligned, peak = self.attn(x, *kv)
        x_ref = self.ref_stream(aligned)
        logit = self.refsel(x, aligned, peak, prev_logit)
        if mask_override is None:
            mask = torch.sigmoid(logit)
        else:
            mask = torch.full_like(logit, float(mask_override))
        if valid is not None:
            mask = mask * valid.view(b, 1, 1, 1).to(mask.dtype)
        fused = mask * x_ref + (1.0 - mask) * x_in
        if valid is not None:  # exact input-stream output for "no reference" samples
            fused = torch.where(valid.view(b, 1, 1, 1), fused, x_in)
        return fused, mask, logit
