"""Per-job adaptation: train (or fine-tune) RefSTAR on the job's own best faces before restoring.

Each identity's high-quality aligned crops become GT; each is degraded with the degradation model
(``ADAPT_RANGES``: x3-5 down, blur sigma 1-3, noise 0-8, JPEG 40-80 by default) and restored with
ANOTHER crop of the same identity as the reference, so the net learns this job's faces, lighting
and camera, and learns to pull their detail from the references it will get at restore time.

    net = adapt({0: crops_person0, 1: crops_person1}, steps=400)
    restorer = RefSTARRestorer(net, work_size=net.cfg.size)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from refstar.degradations import DegradationRanges
from refstar.networks import NetConfig, RefSTARNet
from refstar.training.dataset import ADAPT_RANGES, FacePairs, PairConfig, PreRestore
from refstar.training.loop import TrainConfig, Trainer


@dataclasses.dataclass(frozen=True)
class AdaptResult:
    """What ``adapt_report`` returns besides the net: for logs and manifests."""

    steps: int  # steps run
    max_steps: int  # the step budget
    stopped: str  # "steps": the budget was run; "time": the time cap came first
    seconds: float
    identities: int
    crops: int
    losses: dict[str, float]
    work_size: int  # px: the crop side the net learned at, and the one to restore at
    people: tuple[int, ...] = ()  # the identities it learned (those with two crops or more)


def adapt_report(
    crops_by_identity: Mapping[int, Sequence[np.ndarray]],
    *,
    preset: str = "adapt",
    steps: int = 400,
    time_budget_s: float | None = None,
    init: str | None = None,
    seed: int = 0,
    size: int = 128,
    native_size: int | None = None,
    batch_size: int = 4,
    lr: float = 2e-3,
    w_freq: float = 0.0,
    w_cycle: float = 0.0,
    w_mask: float = 0.0,
    ranges: DegradationRanges = ADAPT_RANGES,
    pre: PreRestore | None = None,
    clean: float = 0.0,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
) -> tuple[RefSTARNet, AdaptResult]:
    """``adapt`` plus an ``AdaptResult``; see ``adapt`` for the arguments."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)  # before the net is built: its initial weights are part of the run
    crops = {k: list(v) for k, v in crops_by_identity.items() if len(v) >= 2}
    if not crops:
        raise ValueError("adaptation needs an identity with at least two aligned crops")
    if init:
        from refstar.checkpoint import load_net

        net, meta = load_net(init, "cpu")
        size = int(meta.get("extra", {}).get("train_size", net.cfg.size))
        lr = lr * 0.25  # fine-tuning: stay near the pretrained weights
    else:
        cfg = NetConfig.preset(preset)
        net = RefSTARNet(dataclasses.replace(cfg, size=size))
    # few crops, many steps: 4 draws of (reference, degradation) per crop and epoch
    n = sum(len(v) for v in crops.values())
    work = size
    if native_size and native_size > size:
        work = -(-int(native_size) // net.cfg.multiple) * net.cfg.multiple
    data = FacePairs(crops, PairConfig(size=work, patch=size if work > size else None,
                                       ranges=ranges, seed=seed, length=4 * n,
                                       clean_prob=clean), pre=pre)
    tcfg = TrainConfig(max_steps=steps, time_budget_s=time_budget_s, batch_size=batch_size,
                       lr=lr, warmup_steps=min(20, max(1, steps // 10)), ema_decay=0.99,
                       log_every=max(1, steps // 10), device=device, seed=seed, w_mask=w_mask,
                       w_freq=w_freq, w_cycle=w_cycle)
    trainer = Trainer(net, data, tcfg, None, log=log)
    losses = trainer.fit()
    ema = trainer.ema.eval()
    return ema, AdaptResult(trainer.step, steps, trainer.stop_reason() or "steps",
                            time.perf_counter() - t0, len(crops), n, losses, work,
                            tuple(sorted(int(k) for k in crops)))


def adapt(crops_by_identity: Mapping[int, Sequence[np.ndarray]], **kwargs) -> RefSTARNet:
    """Adapt a RefSTARNet to one job's faces; returns the EMA network in eval mode.

    crops_by_identity: identity id -> aligned BGR uint8 crops (S, S, 3) of that person (the
        job's sharpest faces; identities with fewer than two crops are skipped).
    Keyword arguments are ``adapt_report``'s:
    preset: NetConfig preset when training from scratch; its ``size`` is replaced by ``size``
        (default 128 px: measured to fit 400 steps in ~2.5 min on 2 CPU cores).
    native_size: the crop side (px) at which the faces keep their own resolution; when larger
        than ``size`` (the checkpoint's training size with ``init``), the crops are kept at
        that side (rounded up to the net's multiple) and the net trains on ``size`` patches of
        them, at the same cost a step; the fully convolutional net then restores whole crops at
        that side (``AdaptResult.work_size``), rebuilding detail finer than ``size`` can hold.
    steps / time_budget_s: the step budget, and an optional time cap (None: none); the run
        stops at whichever comes first (``AdaptResult.stopped`` says which) and the LR anneals
        over both. Steps are the budget: on a busy machine a time cap alone would silently
        give a worse net.
    init: a checkpoint (path) to fine-tune instead of starting from scratch.
    pre: a first restoration pass whose result on each degraded face (with the same reference)
        the net learns to refine, instead of the degraded face itself (``PreRestore``; e.g.
        ``GuidedRestorer(...).restore_bgr``, then restore with ``GuidedThenNet``). Each
        training sample then costs one such pass over the whole crop.
    w_freq / w_cycle / w_mask: weights of the frequency loss, the MCC cycle term (a) and the
        RefSel mask loss. All 0 by default: in a few hundred steps they pull capacity away from
        fidelity, and the mask target (where GT and reference agree) asks for the reference even
        where the input is good enough. Measured on real clips (bench/bench_adapt.py, 400
        steps): without the frequency and cycle terms +0.3 to +0.9 dB with the reference; then
        without the mask loss another +0.1 to +0.9 dB at crop level and +0.8 to +1.0 dB at
        frame level (retalking, KatieHill; there the reference had cost 0.13 and 0.54 dB).
        A mask target limited to where the input is damaged, or RefSel trained on detached
        features, still cost 0.8 to 1.9 dB. Without the mask loss RefSel learns to select
        little (mask mean 0.03-0.18), so at the mild degradations of whole frames the
        reference changes nothing measurable. ``refstar train`` keeps every term.
    seed; ``size``, ``batch_size``, ``lr``, ``ranges`` (DegradationRanges), ``device``,
        ``log`` (callable taking progress lines).
    """
    return adapt_report(crops_by_identity, **kwargs)[0]
