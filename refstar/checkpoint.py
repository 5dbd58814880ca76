"""RefSTAR checkpoints: safetensors weights + a JSON sidecar, no pickle on the inference path.

One checkpoint is a directory::

    model.safetensors   the network's state_dict (float32 as trained; bit-exact round trip)
    ema.safetensors     EMA weights (optional; what inference uses when present)
    meta.json           {"format", "config": NetConfig.to_dict(), "step", "metrics", "extra"}
    optimizer.pt        optimizer / LR schedule / grad-scaler state (training only; saved with
                        torch.save, read back with ``torch.load(..., weights_only=True)``)

A training run writes ``<out>/checkpoints/step_0000123/``; ``load_net`` and ``latest`` accept
either a checkpoint directory, its ``model.safetensors`` / ``meta.json``, or the run's ``<out>``
(the highest step is taken). Directories are written under a temporary name and renamed, so a
crash never leaves a half-written checkpoint where a reader looks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from refstar.errors import ModelError

FORMAT = "refstar-checkpoint/1"
WEIGHTS, EMA, META, OPTIM = "model.safetensors", "ema.safetensors", "meta.json", "optimizer.pt"


def _tensors(module_or_state: torch.nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict safetensors can store: CPU, contiguous, no shared storage (cloned)."""
    state = (module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module)
             else module_or_state)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(path: str | Path, net: torch.nn.Module, *, config: dict[str, Any],
                    step: int = 0, ema: torch.nn.Module | dict | None = None,
                    optimizer_state: dict[str, Any] | None = None,
                    metrics: dict[str, float] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory at ``path`` (replacing one already there); returns it.

    config: ``NetConfig.to_dict()``; optimizer_state: any dict of tensors/numbers/lists (e.g.
    ``{"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}``).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_tensors(net), str(tmp / WEIGHTS), metadata={"format": FORMAT})
    if ema is not None:
        save_file(_tensors(ema), str(tmp / EMA), metadata={"format": FORMAT})
    if optimizer_state is not None:
        torch.save(optimizer_state, tmp / OPTIM)
    meta = {"format": FORMAT, "config": config, "step": int(step), "metrics": metrics or {},
            "extra": extra or {}, "has_ema": ema is not None}
    (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def latest(path: str | Path) -> Path:
    """Resolve ``path`` to one checkpoint directory (see the module doc); ModelError if none."""
    p = Path(path).expanduser()
    if p.is_file() and p.name in (WEIGHTS, EMA, META):
        p = p.parent
    if (p / META).is_file():
        return p
    runs = p / "checkpoints"
    steps = sorted(runs.glob("step_*")) if runs.is_dir() else []
    steps = [s for s in steps if (s / META).is_file()]
    if not steps:
        raise ModelError(f"no RefSTAR checkpoint at {p} (expected {META} + {WEIGHTS}, "
                         f"or a training run folder with checkpoints/step_*)")
    return steps[-1]


def read_meta(path: str | Path) -> dict[str, Any]:
    """The sidecar of the checkpoint at ``path`` (resolved with ``latest``), plus its ``path``."""
    d = latest(path)
    meta = json.loads((d / META).read_text())
    if meta.get("format") != FORMAT:
        raise ModelError(f"{d / META}: unknown checkpoint format {meta.get('format')!r}")
    meta["path"] = str(d)
    return meta


def load_weights(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu"
                 ) -> dict[str, torch.Tensor]:
    """State dict of the checkpoint: the EMA weights when ``ema`` and present, else the raw."""
    d = latest(path)
    f = d / EMA if ema and (d / EMA).is_file() else d / WEIGHTS
    if not f.is_file():
        raise ModelError(f"checkpoint weights missing: {f}")
    return load_file(str(f), device=str(device))


def load_optimizer_state(path: str | Path) -> dict[str, Any] | None:
    """The training state saved with the checkpoint (None when it has none); pickle-free."""
    f = latest(path) / OPTIM
    return torch.load(f, map_location="cpu", weights_only=True) if f.is_file() else None


def load_net(path: str | Path, device: str | torch.device = "cpu", *, ema: bool = True
             ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the RefSTARNet a checkpoint describes and load its weights (EMA when present and
    ``ema``). Returns ``(net in eval mode on device, meta)``; ModelError when missing/invalid."""
    from refstar.networks import NetConfig, RefSTARNet

    meta = read_meta(path)
    try:
        net = RefSTARNet(NetConfig.from_dict(meta["config"]))
        net.load_state_dict(load_weights(meta["path"], ema=ema))
    except (KeyError, TypeError, RuntimeError) as e:
        raise ModelError(f"{meta['path']}: checkpoint does not match the network: {e}") from e
    return net.to(device).eval(), meta
