"""The RefSTAR training loop as one class: ``Trainer(net, data, cfg, out_dir).fit()``.

Per step: a batch of (LQ, GT, reference, mask, degradation) from ``FacePairs``; the loss is

    w_pixel * charbonnier(out, gt) + w_freq * frequency_loss(out, gt)
    + w_mask * refsel_mask_loss(net mask, training mask)          (samples with a reference)
    + w_cycle * charbonnier(degrade(out), lq)                     (MCC term a)
    + w_cycle_ref * MCC term b (a second forward pass; off by default on CPU runs)

AdamW; learning rate with a linear warm-up, then a cosine decay over the run's *progress*, the
larger of step / max_steps and elapsed / time_budget_s (a time-boxed run still anneals);
bf16 autocast on CUDA (no grad scaler needed), fp32 on CPU; gradient-norm clipping; EMA weights
(what inference loads). Checkpoints go to ``<out>/checkpoints/step_XXXXXXX`` (``refstar.checkpoint``),
``resume()`` restores weights, EMA, optimizer, step and elapsed time. Distributed runs
(``ray_train``) pass a DDP-wrapped net, a prepared DataLoader, ``is_main`` and ``on_checkpoint``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from refstar import checkpoint as ckpt
from refstar.degradations_torch import TorchDegradation
from refstar.errors import ModelError
from refstar.losses import (
    charbonnier,
    d_hinge_loss,
    frequency_loss,
    g_hinge_loss,
    mcc_loss,
    refsel_mask_loss,
)
from refstar.restorer import resolve_device
from refstar.training.dataset import collate_pairs


def build_net(preset: str, size: int, init: str | None = None, seed: int = 0) -> torch.nn.Module:
    """A RefSTARNet: from the checkpoint ``init`` when given (fine-tuning), else the NetConfig
    ``preset`` with its crop ``size`` replaced, initialised from ``seed`` (a rerun with the same
    seed starts from the same weights)."""
    if init:
        return ckpt.load_net(init, "cpu", ema=True)[0].train()
    from refstar.networks import NetConfig, RefSTARNet

    torch.manual_seed(seed)
    return RefSTARNet(dataclasses.replace(NetConfig.preset(preset), size=size))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Times in seconds; loss weights are multipliers (0 = off)."""

    max_steps: int = 1000
    time_budget_s: float | None = None  # stop (and anneal the LR) by this wall time
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.05  # cosine floor, fraction of lr
    warmup_steps: int = 20
    weight_decay: float = 1e-4
    ema_decay: float = 0.999  # with a warm-up: min(decay, (1 + step) / (10 + step))
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    w_pixel: float = 1.0
    w_freq: float = 1.0  # focal frequency loss is <= MSE in scale, so weight ~1
    w_mask: float = 0.1
    w_cycle: float = 0.5
    w_cycle_ref: float = 0.0  # MCC (b): doubles the forward cost; use on GPU runs
    # hinge GAN term against a PatchDiscriminator (local texture the pixel losses blur away);
    # off by default: per-job adaptation and CPU runs are too short for a GAN to settle
    w_adv: float = 0.0
    d_lr: float = 2e-4
    ckpt_every: int = 0  # steps between checkpoints; 0 = only at the end of fit()
    keep_checkpoints: int = 3
    log_every: int = 20
    num_workers: int = 0
    amp: str = "auto"  # "auto" (bf16 on cuda, off on cpu) | "bf16" | "off"
    device: str = "auto"
    seed: int = 0


class Trainer:
    """Trains a RefSTARNet on ``FacePairs`` (or a prepared DataLoader yielding its batches)."""

    def __init__(self, net: torch.nn.Module, data: Dataset | DataLoader, cfg: TrainConfig,
                 out_dir: str | Path | None = None, *, is_main: bool = True,
                 on_checkpoint: Callable[[Path | None, dict], None] | None = None,
                 log: Callable[[str], None] | None = print, device: torch.device | None = None):
        self.cfg = cfg
        self.device = device or resolve_device(cfg.device)
        self.net = net if device is not None else net.to(self.device)
        self.module = getattr(net, "module", net)  # unwrapped (DDP) for saving, EMA, MCC (b)
        self.ema = copy.deepcopy(self.module).eval().requires_grad_(False)
        torch.manual_seed(cfg.seed)
        self.loader = data if isinstance(data, DataLoader) else DataLoader(
            data, batch_size=min(cfg.batch_size, len(data)), shuffle=True, drop_last=True,
            collate_fn=collate_pairs, num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0)
        self.opt = torch.optim.AdamW(self.module.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        self.disc = self.d_opt = None
        if cfg.w_adv > 0:
            self._make_discriminator()
        self.out_dir = Path(out_dir) if out_dir else None
        self.is_main = is_main
        self.on_checkpoint = on_checkpoint
        self.log = log if is_main else None
        self.step = 0
        self.elapsed = 0.0  # training seconds, carried over by resume()
        self.epoch = 0
        self.last: dict[str, float] = {}
        use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and self.device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if use_bf16 else None

    def _make_discriminator(self) -> None:
        from refstar.networks.discriminator import PatchDiscriminator

        disc = PatchDiscriminator().to(self.device)
        self.d_module = disc
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank must judge with the same D: its gradients are averaged like the net's
            disc = torch.nn.parallel.DistributedDataParallel(
                disc, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.disc = disc
        self.d_opt = torch.optim.AdamW(self.d_module.parameters(), lr=self.cfg.d_lr, betas=(0.0, 0.99))

    # -- schedule ---------------------------------------------------------------------------
    def progress(self) -> float:
        """0..1: how far the run is, by steps or by time, whichever is further."""
        p = self.step / max(self.cfg.max_steps, 1)
        if self.cfg.time_budget_s:
            p = max(p, self.elapsed / self.cfg.time_budget_s)
        return min(p, 1.0)

    def lr_now(self) -> float:
        c = self.cfg
        if self.step < c.warmup_steps:
            return c.lr * (self.step + 1) / c.warmup_steps
        cos = 0.5 * (1.0 + math.cos(math.pi * self.progress()))
        return c.lr * (c.min_lr_ratio + (1.0 - c.min_lr_ratio) * cos)

    def done(self) -> bool:
        return self.stop_reason() is not None

    def stop_reason(self) -> str | None:
        """Why the run stops now: "steps" (``max_steps`` reached), "time" (``time_budget_s``
        spent first), or None (it goes on)."""
        if self.step >= self.cfg.max_steps:
            return "steps"
        if self.cfg.time_budget_s is not None and self.elapsed >= self.cfg.time_budget_s:
            return "time"
        return None

    # -- one step ---------------------------------------------------------------------------
    def _batches(self) -> Iterator[dict]:
        while True:
            ds = getattr(self.loader, "dataset", None)
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(self.epoch)
            sampler = getattr(self.loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):  # DistributedSampler
                sampler.set_epoch(self.epoch)
            yield from self.loader
            self.epoch += 1

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Named loss terms (scalars) and ``total`` for one batch already on the device."""
        c = self.cfg
        lq, gt, ref, mask, has_ref = (batch[k] for k in ("lq", "gt", "ref", "mask", "has_ref"))
        use_ref = bool(has_ref.any())
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            out = self.net(lq, ref=ref if use_ref else None)
        img = out.image.float()
        terms = {"pixel": charbonnier(img, gt), "freq": frequency_loss(img, gt)}
        if use_ref and c.w_mask > 0:
            sel = has_ref.nonzero().flatten()
            terms["mask"] = sum(refsel_mask_loss(m[sel], mask[sel]) for m in out.masks) / len(
                out.masks)
        deg = TorchDegradation(batch["params"])
        if c.w_cycle_ref > 0 and use_ref:
            mcc = mcc_loss(self.module, img, lq, ref, mask, deg, 1.0, 1.0)
            terms["cycle"], terms["cycle_ref"] = mcc.cycle, mcc.reference
        elif c.w_cycle > 0:
            terms["cycle"] = charbonnier(deg(img), lq)
        if self.disc is not None:
            terms["adv"] = g_hinge_loss(self.disc(img))
            self._fake = img.detach()  # what the discriminator step judges next
        weights = {"pixel": c.w_pixel, "freq": c.w_freq, "mask": c.w_mask, "cycle": c.w_cycle,
                   "cycle_ref": c.w_cycle_ref, "adv": c.w_adv}
        terms["total"] = sum(weights[k] * v for k, v in terms.items())
        return terms

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimisation step; returns the loss terms as floats."""
        self.net.train()
        for k in ("lq", "gt", "ref", "mask", "has_ref"):
            batch[k] = batch[k].to(self.device, non_blocking=True)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_now()
        terms = self.losses(batch)
        self.opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.grad_clip)
        self.opt.step()
        if self.disc is not None:
            terms["disc"] = self._discriminator_step(batch["gt"])
        self._update_ema()
        self.step += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    def _discriminator_step(self, gt: torch.Tensor) -> torch.Tensor:
        """One hinge step of D on real crops vs this step's restored ones (the net's backward
        also left gradients in D: they are dropped here)."""
        self.d_opt.zero_grad(set_to_none=True)
        loss = d_hinge_loss(self.disc(gt), self.disc(self._fake))
        loss.backward()
        self.d_opt.step()
        return loss.detach()

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for pe, p in zip(self.ema.parameters(), self.module.parameters(), strict=True):
            pe.lerp_(p.detach(), 1.0 - d)
        for be, b in zip(self.ema.buffers(), self.module.buffers(), strict=True):
            be.copy_(b)

    # -- the run ----------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until ``max_steps`` or ``time_budget_s``; checkpoint at the end (and every
        ``ckpt_every``). Returns the last logged losses plus steps/s."""
        c = self.cfg
        t_start, step0 = time.perf_counter(), self.step
        elapsed0 = self.elapsed
        avg: dict[str, float] = {}
        for batch in self._batches():
            if self.done():
                break
            terms = self.train_step(batch)
            self.elapsed = elapsed0 + time.perf_counter() - t_start
            avg = {k: 0.9 * avg.get(k, v) + 0.1 * v for k, v in terms.items()}
            if self.step % c.log_every == 0 or self.done():
                self._progress_line(avg, (self.step - step0) / max(self.elapsed - elapsed0, 1e-9))
            if c.ckpt_every and self.step % c.ckpt_every == 0 and not self.done():
                self.save()
        sps = (self.step - step0) / max(self.elapsed - elapsed0, 1e-9)
        self.last = {**avg, "steps_per_s": sps, "step": float(self.step)}
        self.save()
        return self.last

    def _progress_line(self, avg: dict[str, float], sps: float) -> None:
        if self.log is None:
            return
        eta = (self.cfg.max_steps - self.step) / max(sps, 1e-9)
        if self.cfg.time_budget_s:
            eta = min(eta, self.cfg.time_budget_s - self.elapsed)
        parts = " ".join(f"{k} {v:.4f}" for k, v in avg.items())
        self.log(f"step {self.step}/{self.cfg.max_steps} {parts} lr {self.lr_now():.2e} "
                 f"{sps:.2f} steps/s ETA {max(eta, 0):.0f} s")

    # -- checkpoints ------------------------------------------------------------------------
    def _extra(self) -> dict[str, Any]:
        ds = getattr(self.loader, "dataset", None)
        size = getattr(getattr(ds, "cfg", None), "size", None) or self.module.cfg.size
        return {"train_size": int(size), "train_config": asdict(self.cfg),
                "elapsed_s": self.elapsed, "epoch": self.epoch}

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write a checkpoint (main process only); ``path`` defaults to the run's next slot."""
        if not self.is_main:  # other ranks only take part in the report (a collective)
            if self.on_checkpoint is not None:
                self.on_checkpoint(None, self.last)
            return None
        if path is None and self.out_dir is None:
            return None
        path = Path(path) if path else self.out_dir / "checkpoints" / f"step_{self.step:07d}"
        state = {"optimizer": self.opt.state_dict(), "torch_rng": torch.get_rng_state()}
        if self.disc is not None:
            state["disc"] = self.d_module.state_dict()
            state["disc_optimizer"] = self.d_opt.state_dict()
        ckpt.save_checkpoint(path, self.module, config=self.module.cfg.to_dict(), step=self.step,
                             ema=self.ema, optimizer_state=state, metrics=self.last,
                             extra=self._extra())
        if path.parent.name == "checkpoints" and self.cfg.keep_checkpoints > 0:
            old = sorted(path.parent.glob("step_*"))[: -self.cfg.keep_checkpoints]
            for o in old:
                shutil.rmtree(o, ignore_errors=True)
        if self.on_checkpoint is not None:
            self.on_checkpoint(path, self.last)
        return path

    def resume(self, path: str | Path | None = None) -> int:
        """Continue from ``path`` (default: the run's latest checkpoint): weights, EMA,
        optimizer, step and elapsed time. Returns the step reached; 0 when nothing to resume."""
        src = path or self.out_dir
        try:
            meta = ckpt.read_meta(src) if src else None
        except ModelError:
            meta = None
        if meta is None:
            return 0
        self.module.load_state_dict(ckpt.load_weights(meta["path"], ema=False, device=self.device))
        ema = ckpt.load_weights(meta["path"], ema=True, device=self.device)
        self.ema.load_state_dict(ema)
        state = ckpt.load_optimizer_state(meta["path"])
        if state is not None:
            self.opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            if self.disc is not None and "disc" in state:
                self.d_module.load_state_dict(state["disc"])
                self.d_opt.load_state_dict(state["disc_optimizer"])
        self.step = int(meta["step"])
        self.elapsed = float(meta["extra"].get("elapsed_s", 0.0))
        self.epoch = int(meta["extra"].get("epoch", 0))
        return self.step
