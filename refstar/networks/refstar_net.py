"""The RefSTAR network: a U-Net over the degraded face whose decoder fuses a reference face.

    lq --Encoder--> e_0..e_{L-1} --mid--> decoder, coarse to fine:
        level i: up, merge skip e_i, then at fused levels DualStreamFusion(x, ref k/v) with its
        RefSel mask, then ResBlocks
    image = clamp(lq + conv(x_0), 0, 1)        (a residual over the input; clamp documented below)
    ref --Encoder(ref weights)--> r_i --> (k_i, v_i) per fused level = RefFeatures (reusable)

Level i has resolution S / 2^i and ``channels[i]`` channels (level 0 is full resolution).
Skips at *unfused* levels finer than a fused one are multiplied by ``1 - mask`` (upsampled):
otherwise the input's skip would be a residual bypass around the mask and the network could
again learn to ignore the reference. The image-level residual over ``lq`` stays: it carries the
low frequencies, which a reference of another moment (pose, lighting) must not replace.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from refstar.networks.blocks import Encoder, Up, conv1x1, conv3x3, res_stack
from refstar.networks.fusion import DualStreamFusion


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a ``RefSTARNet``. JSON-safe through ``to_dict`` / ``from_dict``.

    The net is fully convolutional: ``size`` is the training crop side (and what checkpoints
    record), but any square input whose side is a multiple of ``multiple`` = 2^(L-1) runs
    (L = len(channels)); attention windows are padded internally.
    """

    size: int = 512  # crop side, px; a multiple of 2^(len(channels) - 1)
    channels: tuple[int, ...] = (32, 64, 128, 256)  # per encoder level, level 0 = full res
    blocks_per_level: int = 2  # ResBlocks per encoder level and per decoder level
    fusion_levels: tuple[int, ...] = (1, 2, 3)  # decoder levels that fuse the reference
    attn_heads: int = 4  # heads of the window cross-attention (divides every fused channel count)
    window: int = 8  # attention query window side, in feature pixels of that level
    halo: int = 4  # extra reference context around each window (misalignment it can absorb)
    refsel_hidden: int = 32  # hidden channels of each RefSel head

    def __post_init__(self) -> None:
        n = len(self.channels)
        if n < 1 or min(self.channels) < 1:
            raise ValueError(f"channels must be non-empty positive ints, got {self.channels}")
        if not self.fusion_levels or any(not 0 <= i < n for i in self.fusion_levels):
            raise ValueError(f"fusion_levels {self.fusion_levels} must be in [0, {n})")
        if len(set(self.fusion_levels)) != len(self.fusion_levels):
            raise ValueError(f"fusion_levels {self.fusion_levels} has duplicates")
        for i in self.fusion_levels:
            if self.channels[i] % self.attn_heads:
                raise ValueError(f"channels[{i}]={self.channels[i]} % heads {self.attn_heads}")
        if self.window < 1 or self.halo < 0 or self.blocks_per_level < 0:
            raise ValueError("window >= 1, halo >= 0 and blocks_per_level >= 0 required")
        if self.size % self.multiple:
            raise ValueError(f"size {self.size} is not a multiple of {self.multiple}")

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (2^(levels - 1))."""
        return 2 ** (len(self.channels) - 1)

    @classmethod
    def preset(cls, name: str) -> NetConfig:
        """Presets: "tiny" (tests, 0.18 M params), "adapt" (per-job adaptation on CPU, 2.4 M),
        "small" (2.7 M), "base" (GPU training, 45 M). Change single fields with ``dataclasses.replace(NetConfig.preset(...), size=...)``."""
        presets = {
            "tiny": cls(
                size=64, channels=(8, 16, 32), blocks_per_level=1, fusion_levels=(0, 1, 2),
                attn_heads=2, window=4, halo=2, refsel_hidden=8,
            ),
            # full resolution kept narrow and the reference fused only at 1/4 and 1/8: measured
            # 0.36 s per batch-4 step at 128 px on 2 cores vs 0.52 s for "small", and better
            # after 400 steps of adaptation (bench/bench_adapt.py)
            "adapt": cls(
                size=128, channels=(16, 32, 96, 96), blocks_per_level=1, fusion_levels=(2, 3),
                attn_heads=2, window=8, halo=4, refsel_hidden=16,
            ),
            "small": cls(
                size=256, channels=(16, 32, 64, 128), blocks_per_level=1,
                fusion_levels=(1, 2, 3), attn_heads=2, window=8, halo=4, refsel_hidden=16,
            ),
            "base": cls(
                size=512, channels=(64, 128, 256, 384), blocks_per_level=2,
                fusion_levels=(1, 2, 3), attn_heads=4, window=8, halo=4, refsel_hidden=64,
            ),
        }  # fmt: skip
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        """Inverse of ``to_dict``; unknown keys are an error (a checkpoint from another net)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown NetConfig fields: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class RefFeatures:
    """A reference encoded once (``RefSTARNet.encode_reference``) and reused for many targets.

    kv: per fused level, in ``cfg.fusion_levels`` order, the attention keys and values
    ([Br, C_i, S/2^i, S/2^i] each). valid: [Br] bool, False for an all-zero ("no reference")
    sample. size: the reference side S. Br is the target batch B, or 1 (shared by all targets).
    """

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    valid: torch.Tensor
    size: int

    @property
    def batch(self) -> int:
        return int(self.valid.shape[0])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> RefFeatures:
        """Move (and cast the float tensors); returns a new RefFeatures."""
        kv = [
            (k.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype)) for k, v in self.kv
        ]
        return replace(self, kv=kv, valid=self.valid.to(device=device))


@dataclass
class NetOutput:
    """What ``RefSTARNet.forward`` returns (dtype of ``lq``).

    image: [B, 3, S, S] in 0..1: ``clamp(lq + residual, 0, 1)``.
    mask: [B, 1, S, S] in 0..1, the RefSel mask at full resolution (the finest fused scale's mask,
        bilinearly upsampled when level 0 is not fused); exactly 0 without a reference.
    masks: per fused scale, coarse to fine (decoding order), [B, 1, S/2^i, S/2^i] in 0..1.
    """

    image: torch.Tensor
    mask: torch.Tensor
    masks: list[torch.Tensor]


class RefSTARNet(nn.Module):
    """Reference-based face restorer (Selection + Transfer; Reconstruction is a loss).

    forward(lq [B,3,S,S] RGB 0..1, ref [B or 1,3,S,S] | None, ref_feats | None) -> NetOutput.
    Give ``ref`` or ``ref_feats`` (from ``encode_reference``), not both. No reference, or an
    all-zero reference sample, means mask 0 and an output from the input stream only.
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch, nb = cfg.channels, cfg.blocks_per_level
        self.encoder = Encoder(ch, nb)
        self.mid = res_stack(ch[-1], nb)
        # the reference pyramid only needs to reach the coarsest fused level
        self.ref_encoder = Encoder(ch[: max(cfg.fusion_levels) + 1], nb)
        self.ups = nn.ModuleList(Up(ch[i + 1], ch[i]) for i in range(len(ch) - 1))
        self.merges = nn.ModuleList(conv1x1(2 * ch[i], ch[i]) for i in range(len(ch) - 1))
        self.fusions = nn.ModuleDict(
            {
                str(i): DualStreamFusion(
                    ch[i], cfg.attn_heads, cfg.window, cfg.halo, cfg.refsel_hidden
                )
                for i in cfg.fusion_levels
            }
        )
        self.dec_blocks = nn.ModuleList(res_stack(c, nb) for c in ch)
        self.out = conv3x3(ch[0], 3)
        # a small output at init: the net starts near the identity (image ~= lq) but every
        # parameter still gets gradient from the first step (a zero init would block it)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def _check(self, t: torch.Tensor, what: str) -> None:
        m = self.cfg.multiple
        if t.ndim != 4 or t.shape[1] != 3 or t.shape[2] != t.shape[3] or t.shape[2] % m:
            raise ValueError(
                f"{what} must be [B, 3, S, S] with S a multiple of {m}, got {tuple(t.shape)}"
            )

    def encode_reference(self, ref: torch.Tensor) -> RefFeatures:
        """ref: [Br, 3, S, S] RGB 0..1 (an all-zero sample = no reference) -> RefFeatures."""
        self._check(ref, "ref")
        valid = ref.detach().flatten(1).abs().amax(1) > 0
        feats = self.ref_encoder(ref)
        kv = [self.fusions[str(i)].attn.project_ref(feats[i]) for i in self.cfg.fusion_levels]
        return RefFeatures(kv=kv, valid=valid, size=int(ref.shape[-1]))

    def forward(
        self,
        lq: torch.Tensor,
        ref: torch.Tensor | None = None,
        ref_feats: RefFeatures | None = None,
        *,
        mask_override: float | None = None,
    ) -> NetOutput:
        """See the class docstring. ``mask_override`` (diagnostics/tests) replaces every RefSel
        mask by that constant for samples that have a reference."""
        self._check(lq, "lq")
        b, _, s, _ = lq.shape
        if ref is not None and ref.numel() == 0:
            ref = None
        if ref is not None and ref_feats is not None:
            raise ValueError("give ref or ref_feats, not both")
        if ref is not None:
            ref_feats = self.encode_reference(ref)
        valid = None
        if ref_feats is not None:
            if ref_feats.size != s or ref_feats.batch not in (1, b):
                raise ValueError(
                    f"reference of side {ref_feats.size}, batch {ref_feats.batch} does not fit "
                    f"targets of side {s}, batch {b}"
                )
            valid = ref_feats.valid.to(lq.device).expand(b)
            if not bool(valid.any()):
                ref_feats, valid = None, None  # nothing to transfer: skip the reference branch

        feats = self.encoder(lq)
        x = self.mid(feats[-1])
        masks: list[torch.Tensor] = []
        prev_logit = None
        n = len(self.cfg.channels)
        for i in reversed(range(n)):
            if i < n - 1:
                x = self.ups[i](x)
                skip = feats[i]
                if masks and i not in self.cfg.fusion_levels:
                    m = F.interpolate(
                        masks[-1], size=skip.shape[-2:], mode="bilinear", align_corners=False
                    )
                    skip = skip * (1.0 - m)
                x = self.merges[i](torch.cat([x, skip], 1))
            if i in self.cfg.fusion_levels:
                kv = None if ref_feats is None else ref_feats.kv[self.cfg.fusion_levels.index(i)]
                x, m, prev_logit = self.fusions[str(i)](x, kv, valid, prev_logit, mask_override)
                masks.append(m)
            x = self.dec_blocks[i](x)

        image = (lq + self.out(x)).clamp(0.0, 1.0).to(lq.dtype)
        mask = masks[-1]
        if mask.shape[-1] != s:
            mask = F.interpolate(mask, size=(s, s), mode="bilinear", align_corners=False)
        return NetOutput(image=image, mask=mask.to(lq.dtype), masks=[m.to(lq.dtype) for m in masks])


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the meta device too)."""
    return sum(p.numel() for p in module.parameters())
