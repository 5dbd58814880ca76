"""Inference API shared by every restorer: aligned crops in, restored crops and a mask out.

Tensors are float32 RGB in 0..1, shaped [B, 3, S, S]; the worker's crops are BGR uint8, so
``bgr_to_tensor`` / ``tensor_to_bgr`` convert at the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from refstar.errors import ModelError

CHOICES = ("guided", "none", "refstar")


@dataclass
class Restored:
    """What a restorer returns."""

    image: torch.Tensor  # [B, 3, S, S] float32 RGB 0..1, restored crops
    mask: torch.Tensor  # [B, 1, S, S] float32 0..1, where the reference was used (RefSel mask)
    # [B] float32 0..1: the share of the face prior's detail each face was given with no
    # reference (refstar.blind); None when the restorer has no such stage
    prior: torch.Tensor | None = None


@runtime_checkable
class Restorer(Protocol):
    """A face restorer. ``lq``: [B, 3, S, S] float32 RGB 0..1 aligned input crops. ``ref``: None
    (no references), or [B, 3, S, S] aligned references, one per sample; a sample whose reference
    is all zeros, or a zero-sized ``ref`` tensor, means "no reference" for that sample.

    A restorer may also offer ``pick_reference(lq [1, 3, S, S], refs [K, 3, S, S]) -> int``:
    which of one person's references it restores that face best with (the restore stage asks
    it among the references nearest the face's look); without it the nearest in look is used."""

    name: str

    def restore(self, lq: torch.Tensor, ref: torch.Tensor | None) -> Restored: ...


def has_reference(ref: torch.Tensor | None, batch: int) -> list[bool]:
    """Per sample: whether a usable reference was given (see ``Restorer``)."""
    if ref is None or ref.numel() == 0:
        return [False] * batch
    if ref.shape[0] != batch:
        raise ValueError(f"ref batch {ref.shape[0]} != lq batch {batch}")
    return [bool(v) for v in (ref.flatten(1).abs().amax(1) > 0).tolist()]


class PassThrough:
    """``restorer=none``: returns the input unchanged and an empty mask (pipeline tests, A/B)."""

    name = "none"

    def restore(self, lq: torch.Tensor, ref: torch.Tensor | None) -> Restored:
        b, _, h, w = lq.shape
        return Restored(image=lq.clone(), mask=torch.zeros(b, 1, h, w, dtype=lq.dtype))


def resolve_device(device: str) -> torch.device:
    """Resolve "auto" to cuda when available, else cpu. A device this machine does not have is a
    ModelError (running on the CPU instead while the manifest says "cuda" would mislead)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ModelError(f"device {device!r} is not a torch device ({e})") from e
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index is not None and dev.index >= n):
            have = f"{n} CUDA GPU(s)" if n else "no CUDA GPU"
            raise ModelError(f"device {device!r} is not on this machine: torch {torch.__version__} "
                             f"sees {have}; use auto or cpu")
    return dev


def make_restorer(
    name: str, *, device: str = "auto", checkpoint: str = "", strength: float = 1.0, blind: str = "none"
) -> Restorer:
    """Build the restorer named in ``RestoreConfig.restorer``; ``blind="prior"``: guided's faces
    with no reference that lost most of their detail get the shipped prior's (``refstar.blind``).

    Raises ValueError for an unknown name and ModelError when a model or the device cannot be used.
    """
    resolve_device(device)
    if name == "none":
        return PassThrough()
    if name == "guided":
        from refstar.guided import GuidedRestorer

        guided = GuidedRestorer(strength=strength)
        if blind != "prior":
            return guided
        from refstar.blind import PriorFinish
        from refstar.prior import require_prior
        from refstar.refstar_restorer import RefSTARRestorer

        path = require_prior("restore.blind=prior", "use restore.blind=none")
        return PriorFinish(guided, RefSTARRestorer.from_checkpoint(str(path), device=device))
    if name == "refstar":
        if not checkpoint:
            raise ModelError(
                "restorer=refstar needs a checkpoint (restore.checkpoint=PATH: a checkpoint "
                "folder with meta.json + model.safetensors, or a training run folder); "
                "or use restorer=guided"
            )
        from pathlib import Path

        from refstar.refstar_restorer import RefSTARRestorer

        if not Path(checkpoint).expanduser().exists():
            raise ModelError(f"RefSTAR checkpoint not found: {checkpoint}")
        return RefSTARRestorer.from_checkpoint(str(Path(checkpoint).expanduser()), device=device)
    raise ValueError(f"unknown restorer {name!r}; choose one of: {', '.join(CHOICES)}")


def bgr_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """List of (S, S, 3) BGR uint8 -> [B, 3, S, S] float32 RGB 0..1."""
    if not images:
        return torch.zeros(0, 3, 0, 0)
    arr = np.stack([im[..., ::-1] for im in images]).astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def tensor_to_bgr(t: torch.Tensor) -> list[np.ndarray]:
    """[B, 3, S, S] float RGB 0..1 -> list of (S, S, 3) BGR uint8 (rounded, clipped)."""
    arr = t.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(a[..., ::-1]) for a in arr]
