"""Weight-free reference-guided restorer: our reading of RefSTAR's three stages without a network.

Per aligned crop (the input ``lq`` and the reference are aligned to the same landmark template):

1. **Selection.** Estimate how blurred the input is (a Gaussian ``sigma`` from a small grid, the
   one whose blur of the reference best explains the input at low frequencies); compute dense
   optical flow (OpenCV DIS) from the input to the reference blurred the same way; warp the
   reference. The selection mask is where the blurred, warped reference agrees with the input
   (local band-pass error small compared to the local signal; the more of its own fine detail
   the input kept there, the closer the agreement asked), smoothed, times a face prior.
2. **Transfer.** Inside the mask, the input's high-frequency band (lost detail, noise, JPEG
   blocks) is replaced by the warped reference's high band, scaled to the input's local
   brightness and weighted by ``strength``.
3. **Reconstruction.** A few Landweber back-projection steps ``out += H(lq - H(out))`` so that
   blurring the output gives back the (denoised) input: the output never contradicts the input.
   Where the reference was selected on a face that lost most of its detail, both the transferred
   band and ``H`` reach ``WIDE`` times coarser: noise, JPEG blocks and aliasing sit in the band
   just above the blur, and the input is trusted only below it; not when the reference needs
   more blur to match than the input's own softness implies (``MISMATCH``): its band above the
   blur is other detail, not the input's lost detail.
4. **Do no harm.** The selection mask is scaled, per pixel, by the share of the reference's fine
   detail the (denoised) input lost there (``lost_map``), up to the whole mask for a face that
   lost most of it (``LOST_RAMP``): a barely degraded face still holds its own detail, and
   replacing it with another frame's only moves it away from what it was.

Without a reference the same pipeline runs with an empty mask: edge-aware denoising plus mild
unsharp masking at the estimated scale, then back-projection, so "no reference" is a fair
baseline. Processing is numpy/OpenCV on CPU (flow is a CPU algorithm anyway), one crop at a time.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np
import torch

from refstar.align import face_mask
from refstar.restorer import Restored, bgr_to_tensor, has_reference, tensor_to_bgr

SIGMA_GRID = (0.6, 1.0, 1.5, 2.0, 2.6, 3.3, 4.2, 5.5)  # input blur, px of the crop
BLIND_SIGMA = 3.0  # unsharp scale outside the reference's mask, px of a 256 crop
# Unsharp amount outside the mask, with a reference given and without one. Measured on 512 px
# crops of ten dev clips (the suite's degraded frames, 15 faces each), no reference, amount
# 0.5 -> 0.15: x2 -1.23 -> +0.61 dB (worst clip -3.31 -> +0.30), x4 +0.20 -> +0.19 (worst -0.20
# -> +0.06), x8 +0.05 -> +0.03 (worst -0.05 -> 0.00); with a reference 0.5 stays best (x2 +1.06
# against +0.95 at 0.15: the reference's band replaces the sharpened one where it is selected).
BLIND_AMOUNT = 0.5
NO_REF_AMOUNT = 0.15
LARGE_BLUR = 8.0  # px: Gaussians at least this wide run on a smaller copy (``_g``)
WORK_SIZE = 256  # selection (flow, mask) runs at this size at most, px
FIT_CACHE = 64  # picked (input, reference) alignments kept for their restore, about 1 MB each
# Step 4: per pixel, the share of the reference's detail the input lost there; over a face that
# lost more than LOST_RAMP[1] of it on average, the whole selection. Measured on the suite's
# dev clips (45 frames, 2 CPUs): the face-mean ramp alone lost at x2 (worst -0.59 dB); the
# per-pixel share alone fixed x2 but cost 0.2-0.35 dB at x4/x8 on well-matched clips; both
# together keep each one's gains (README, Quality).
LOST_RAMP = (0.35, 0.55)
# Selection: agreement falls with the relative band-pass error at AGREE_SLOPE where the input lost
# the reference's detail, up to AGREE_SLOPE + KEPT_SLOPE where it kept all of it. Measured on
# crops of the suite's dev clips (the worker's own references): a flat slope of 2 let a
# reference with another expression (open eyes over a blink) cost up to 3 dB at x2; 2 + 8 x kept
# turned the x2 talking heads from -0.85 / +0.33 dB to +0.55 / +0.98 and cost 0.06-0.36 dB at x8.
AGREE_SLOPE = 2.0
KEPT_SLOPE = 8.0
# Step 3: on a face that lost most of the reference's detail (LOST_RAMP's whole share), the band
# taken from the reference and the back-projection's blur reach WIDE x the estimated blur, where
# it is selected. Measured on 512 px crops of the suite's degraded frames, six dev clips: with the
# input's band kept up to the blur alone even the clean frame itself as reference gained only
# +2.75 dB at x4; WIDE 6: +7.63, and the worker's own reference x2 +0.57 -> +0.85 (worst clip
# -0.41 -> -0.37), x4 +1.39 -> +2.73 (worst +0.57 -> +1.05), x8 +1.43 -> +2.79 (+0.47 -> +0.96);
# 4 gains 0.1-0.2 dB less at x4/x8, 8 at most 0.1 more, x2 the same from 4 to 8.
WIDE = 6.0


# Choosing among a person's references (``pick_reference``): when the face looks blurred more
# than this (share of the crop side: 4.5 px of a 512 crop, between the x4 and x8 faces) against
# each of them, the nearest in look stays. Measured on 512 px crops of ten dev clips (15
# degraded faces each, each face's 4 references nearest in look), least blur then least misfit
# against the nearest in look: x2 +0.85 -> +1.06 dB (worst clip -1.30 -> +0.06, SadTalker AOC),
# x4 +3.02 -> +3.15 (worst +1.50 -> +1.52); x8 (5 clips) +3.27 -> +3.36, where without the limit
# one clip lost 0.36 dB.
PICK_MAX_BLUR = 4.5 / 512
# The wide band stays off where the reference matches the input only at more than MISMATCH times
# the blur their own softness implies (``edge_blur``: sqrt(input^2 - reference^2)), below
# PICK_MAX_BLUR: such a reference has other fine detail than the face (another expression, or
# sharper than the face ever was) and its band above the blur replaces detail the face still has.
# Measured on 512 px crops of ten dev clips (15 faces each, guided's pick): x2 +1.06 -> +1.10 dB
# (SadTalker AOC +0.26 -> +0.57), x4 and x8 unchanged (+3.16, +3.86); 1.3-1.5 all gave +1.10,
# and without the PICK_MAX_BLUR limit x8 lost 0.04-0.08 dB (noise and JPEG fool edge_blur there).
MISMATCH = 1.4
REBLUR = 2.0  # edge_blur's known extra blur, px at WORK_SIZE


class Selection(NamedTuple):
    """Step 1's result for one reference on one input crop."""

    mask: np.ndarray | None  # (S, S) 0..1, where the reference is selected
    ref_w: np.ndarray | None  # (S, S, 3) the reference warped onto the input
    sigma: float  # estimated blur of the input against this reference, px of the crop
    misfit: float  # 0..1, band-pass error over the face at that blur relative to the signal
    fit: tuple  # (key, alignment) from _fit, which pick_reference keeps for the restore


@lru_cache(maxsize=4)
def _prior(size: int) -> np.ndarray:
    """Face-region prior for the selection mask (read-only, cached per size)."""
    m = face_mask(size, 0.12)
    m.flags.writeable = False
    return m


def _g(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < LARGE_BLUR:
        return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    # OpenCV's kernel grows with sigma (8 sigma + 1 taps) and the wide band of a heavily blurred
    # 512 px face reaches 30-60 px: blur a copy f times smaller (about 4 px a sigma there), the
    # area average and the linear enlargement counted in the variance. Measured on 512 px crops
    # of ten dev clips (3 faces x 3 strengths each): restored faces within 74.8 dB PSNR of the
    # exact blur's (PSNR against the clean face moves at most 0.006 dB), restore 0.76 -> 0.15 s
    # a face at x8, 0.32 -> 0.13 at x4.
    h, w = x.shape[:2]
    f = int(sigma // 4)
    hs, ws = max(1, round(h / f)), max(1, round(w / f))
    fx = w / ws
    small = cv2.resize(x, (ws, hs), interpolation=cv2.INTER_AREA)
    inner = np.sqrt(max(sigma * sigma - (fx * fx - 1) / 12 - fx * fx / 6, 0.25)) / fx
    small = cv2.GaussianBlur(small, (0, 0), inner, borderType=cv2.BORDER_REFLECT_101)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return (rgb @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)


def _bandpass(y: np.ndarray, sigma: float, wide: float) -> np.ndarray:
    """Blur by ``sigma`` and remove the local mean at scale ``wide`` (lighting-insensitive)."""
    b = _g(y, sigma)
    return b - _g(b, wide)


def estimate_sigma(lq_y: np.ndarray, ref_y: np.ndarray, prior: np.ndarray) -> float:
    """The grid sigma whose Gaussian blur of the reference luma best matches the input luma
    (mean abs band-pass error weighted by the face prior). Both (S, S) float32 0..1."""
    s = lq_y.shape[0]
    wide = s / 24.0
    target = lq_y - _g(lq_y, wide)
    w = prior / prior.sum()
    # _bandpass(ref_y, sg, wide) with the two linear blurs swapped (equal up to rounding, and
    # reflected borders keep them commuting): one wide blur instead of one per grid sigma
    high = ref_y - _g(ref_y, wide)
    errs = [float((np.abs(_g(high, sg) - target) * w).sum()) for sg in SIGMA_GRID]
    return SIGMA_GRID[int(np.argmin(errs))]


def _flow(src_y: np.ndarray, dst_y: np.ndarray) -> np.ndarray:
    """Dense flow f with src(x) ~ dst(x + f(x)), (S, S, 2) float32 (OpenCV DIS, medium preset)."""
    a = (np.clip(src_y, 0, 1) * 255).astype(np.uint8)
    b = (np.clip(dst_y, 0, 1) * 255).astype(np.uint8)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(a, b, None)


def _warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    s = img.shape[0]
    gx, gy = np.meshgrid(np.arange(s, dtype=np.float32), np.arange(s, dtype=np.float32))
    return cv2.remap(
        img,
        gx + flow[..., 0],
        gy + flow[..., 1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )


def _denoise(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Edge-aware denoise (bilateral) whose strength follows the estimated noise level."""
    noise = max(sigma, 0.004)
    return cv2.bilateralFilter(rgb, 5, float(3 * noise), 2.0)


def _noise_level(y: np.ndarray) -> float:
    """Robust noise std (0..1 units) from the finest Laplacian band (median absolute deviation)."""
    hp = y - _g(y, 0.8)
    return float(np.median(np.abs(hp)) * 1.4826 * 1.6)


def lost_map(x: np.ndarray, ref_w: np.ndarray, sigma: float) -> np.ndarray:
    """(S, S) 0..1: per pixel, the share of the warped reference's band finer than ``sigma``
    (crop px) that ``x`` lacks, ``1 - E_x / E_ref`` (local energies over S/32 px). Both
    (S, S, 3) RGB or (S, S) luma, float32 0..1 on the same template; pass the denoised input,
    or noise counts as detail it still has."""
    win = x.shape[0] / 32.0
    y = _luma(x) if x.ndim == 3 else x
    ry = _luma(ref_w) if ref_w.ndim == 3 else ref_w
    e_in = _g((y - _g(y, sigma)) ** 2, win)
    e_ref = _g((ry - _g(ry, sigma)) ** 2, win)
    return np.clip(1.0 - e_in / (e_ref + 1e-6), 0.0, 1.0)


def edge_blur(y: np.ndarray) -> float:
    """Blind estimate of how blurred luma ``y`` (S, S) is, px of the crop: the Gaussian sigma of
    its strongest edges in the face region, from how much their gradient falls when blurred
    again by a known REBLUR (an edge of blur b: by sqrt(b^2 + REBLUR^2) / b)."""
    s = y.shape[0]
    n = min(s, WORK_SIZE)
    small = y if n == s else cv2.resize(y, (n, n), interpolation=cv2.INTER_AREA)

    def grad(z: np.ndarray) -> np.ndarray:
        return np.hypot(cv2.Sobel(z, cv2.CV_32F, 1, 0), cv2.Sobel(z, cv2.CV_32F, 0, 1))

    face = _prior(n) > 0.5
    g0, g1 = grad(small), grad(_g(small, REBLUR))
    strong = face & (g0 > np.percentile(g0[face], 90))
    r = float(np.median(g0[strong] / (g1[strong] + 1e-6)))
    return REBLUR / float(np.sqrt(max(r * r - 1.0, 1e-3))) * s / n


def face_mean(m: np.ndarray) -> float:
    """An (S, S) map averaged with the face prior."""
    prior = _prior(m.shape[0])
    return float((m * prior).sum() / prior.sum())


def detail_lost(x: np.ndarray, ref_w: np.ndarray, sigma: float) -> float:
    """0..1 over the face: :func:`lost_map` averaged with the face prior."""
    return face_mean(lost_map(x, ref_w, sigma))


def _agreement_gate(lq_y: np.ndarray, ref_wy: np.ndarray, sigma: float, prior: np.ndarray) -> float:
    """0..1: how well the whole warped reference explains the input (normalised correlation of
    their band-passed lumas over the face). Not an identity check (the embedder's job): on the
    test scene the same face in another frame scores 0.99 and other people 0.35-0.61, but on
    real press photos (different days, lighting, expression) the same person scores 0.52-0.87
    and other people 0.49-0.81, so only a reference that agrees with the input gets through."""
    wide = lq_y.shape[0] / 24.0
    a = _bandpass(lq_y, sigma, wide) * prior
    b = _bandpass(ref_wy, sigma, wide) * prior
    ncc = float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-12))
    return float(np.clip((ncc - 0.6) / 0.3, 0.0, 1.0))


class GuidedRestorer:
    """Reference-guided restoration without weights (see the module doc). ``strength`` 0..1
    scales the transferred reference detail."""

    name = "guided"

    def __init__(self, strength: float = 1.0, iterations: int = 3):
        self.strength = float(strength)
        self.iterations = int(iterations)
        # the chosen reference's fit per picked face, until its restore takes it (oldest first)
        self._picked: dict[tuple[bytes, bytes], tuple] = {}

    def restore(self, lq: torch.Tensor, ref: torch.Tensor | None) -> Restored:
        b, _, h, w = lq.shape
        if h != w:
            raise ValueError(f"crops must be square, got {h}x{w}")
        use = has_reference(ref, b)
        x = lq.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
        r = ref.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy() if any(use) else None
        outs, masks = [], []
        for i in range(b):
            o, m = self.restore_one(x[i], r[i] if use[i] else None)
            outs.append(o)
            masks.append(m)
        image = torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2).to(lq.device, lq.dtype)
        mask = torch.from_numpy(np.stack(masks))[:, None].to(lq.device, lq.dtype)
        return Restored(image=image.contiguous(), mask=mask.contiguous())

    def restore_bgr(self, lq: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
        """One crop as the training pairs hold it: (S, S, 3) BGR uint8 in and out (a
        ``refstar.training.dataset.PreRestore``)."""
        refs = None if ref is None else bgr_to_tensor([ref])
        return tensor_to_bgr(self.restore(bgr_to_tensor([lq]), refs).image)[0]

    def restore_one(self, lq: np.ndarray, ref: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One crop: lq, ref (S, S, 3) float32 RGB 0..1 -> (output (S, S, 3), mask (S, S))."""
        s = lq.shape[0]
        lq = np.ascontiguousarray(lq, np.float32)
        lq_y = _luma(lq)
        base = _denoise(lq, _noise_level(lq_y))
        # Blind part (everywhere outside the mask, and the whole output without a reference):
        # mild unsharp masking at a fixed scale in crop pixels.
        sigma = BLIND_SIGMA * s / 256.0
        amount = BLIND_AMOUNT if ref is not None and self.strength > 0 else NO_REF_AMOUNT
        out = base + amount * (base - _g(base, sigma))
        mask = np.zeros((s, s), np.float32)
        if ref is not None and self.strength > 0:
            mask, ref_w, sigma_r, *_ = self._select_reference(
                lq_y, np.ascontiguousarray(ref, np.float32)
            )
            if mask.max() > 0:
                # do no harm (step 4): the reference's detail only where the input lost it, and
                # in proportion: detail the face still has is its own, another frame's is not;
                # a face that lost most of it (LOST_RAMP over its mean) takes the reference whole
                lost = lost_map(base, ref_w, sigma_r)
                lo, hi = LOST_RAMP
                whole = float(np.clip((face_mean(lost) - lo) / (hi - lo), 0.0, 1.0))
                mask = mask * np.maximum(lost, whole)
                sigma = sigma_r
                wide = sigma_r * (1.0 + (WIDE - 1.0) * whole)
                if sigma_r <= PICK_MAX_BLUR * s:
                    implied = np.sqrt(max(edge_blur(lq_y) ** 2 - edge_blur(_luma(ref)) ** 2, 0.0))
                    if sigma_r > MISMATCH * max(implied, 0.3 * s / 512):
                        wide = sigma_r
                ref_wy = _luma(ref_w)
                # lighting: scale the reference's band to the input's local brightness
                gain = np.clip((_g(lq_y, s / 32) + 0.02) / (_g(ref_wy, s / 32) + 0.02), 0.5, 2.0)
                detail_ref = (ref_w - _g(ref_w, wide)) * gain[..., None]
                detail_out = out - _g(out, wide)
                a = (self.strength * mask)[..., None]
                out = out + a * (detail_ref - detail_out)
                # the input is held to its band below the blur where the reference was not
                # selected, to its coarse band where it was
                w = np.clip(a, 0.0, 1.0)
                out = w * self._back_project(out, base, wide) + (1 - w) * self._back_project(out, base, sigma)
                return np.clip(out, 0, 1).astype(np.float32), mask
        out = self._back_project(out, base, sigma)
        return np.clip(out, 0, 1).astype(np.float32), mask

    def pick_reference(self, lq: torch.Tensor, refs: torch.Tensor) -> int:
        """Which of ``refs`` ([K, 3, S, S], one person's references, the nearest in look first)
        to restore ``lq`` ([1, 3, S, S]) with: the one against which the input looks least
        blurred, then the one that explains its band at that blur best. A reference that differs
        from the face in fine detail (another expression or light, or simply sharper than this
        face ever was) is matched only by blurring it more, so the blur it needs ranks it. A
        face blurred more than ``PICK_MAX_BLUR`` against every one of them keeps the first: the
        estimates no longer tell the references apart."""
        x = np.ascontiguousarray(lq[0].detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
        rs = refs.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
        lq_y = _luma(x)
        fits = [self._select_reference(lq_y, np.ascontiguousarray(r), rank_only=True) for r in rs]
        best = min(range(len(fits)), key=lambda i: (fits[i].sigma, fits[i].misfit))
        best = 0 if fits[best].sigma > PICK_MAX_BLUR * x.shape[0] else best
        key, fit = fits[best].fit
        self._picked[key] = fit
        while len(self._picked) > FIT_CACHE:
            self._picked.pop(next(iter(self._picked)))
        return best

    def _select_reference(self, lq_y: np.ndarray, ref: np.ndarray, rank_only: bool = False) -> Selection:
        """Step 1 for one reference (``rank_only``: its blur and misfit, no mask nor warped
        reference). Flow and mask are smooth, so they are computed at <= 256 px."""
        s = lq_y.shape[0]
        n = min(s, WORK_SIZE)
        k = s / n
        small_ref = ref if n == s else cv2.resize(ref, (n, n), interpolation=cv2.INTER_AREA)
        ly = lq_y if n == s else cv2.resize(lq_y, (n, n), interpolation=cv2.INTER_AREA)
        prior = _prior(n)
        fit = self._fit(ly, small_ref, prior)
        sigma, smooth, rough, rwy = fit[1]
        a = _bandpass(ly, sigma, n / 24.0)
        b = _bandpass(rwy, sigma, n / 24.0)
        misfit = float((np.abs(a - b) * prior).sum() / (((np.abs(a) + np.abs(b)) * prior).sum() + 1e-12))
        if rank_only:
            return Selection(None, None, sigma * k, misfit, fit)
        mask = np.zeros((n, n), np.float32)
        gate = _agreement_gate(ly, rwy, sigma, prior)
        if gate > 0:
            agree = self._agreement(ly, rwy, sigma, _noise_level(ly))
            trust = np.exp(-((_g(rough, n / 32.0) / (0.012 * n)) ** 2))
            mask = (agree * trust * prior * gate).astype(np.float32)
        if n != s:
            mask = cv2.resize(mask, (s, s), interpolation=cv2.INTER_LINEAR)
            smooth = cv2.resize(smooth, (s, s), interpolation=cv2.INTER_LINEAR) * k
        return Selection(mask, _warp(ref, smooth), sigma * k, misfit, fit)

    def _fit(self, ly: np.ndarray, small_ref: np.ndarray, prior: np.ndarray) -> tuple:
        """(key, (blur sigma px, smooth flow, its rough part, the warped reference's luma)): the
        reference aligned to the input at work size. A fit ``pick_reference`` kept for this
        pair of crops is taken (once) instead of computed again."""
        key = (hashlib.blake2b(ly.tobytes(), digest_size=16).digest(),
               hashlib.blake2b(small_ref.tobytes(), digest_size=16).digest())
        kept = self._picked.pop(key, None)
        if kept is not None:
            return key, kept
        ry = _luma(small_ref)
        sigma = estimate_sigma(ly, ry, prior)
        flow = _flow(_g(ly, 1.0), _g(ry, sigma))
        # Faces deform smoothly; a flow that must tear to fit the input is fitting another
        # face (or an occlusion): warp with the smooth part, distrust where it is rough.
        smooth = _g(flow, ly.shape[0] / 32.0)
        rough = np.sqrt(((flow - smooth) ** 2).sum(-1))
        rwy = _luma(_warp(small_ref, smooth))
        return key, (estimate_sigma(ly, rwy, prior), smooth, rough, rwy)

    def _agreement(
        self, lq_y: np.ndarray, ref_wy: np.ndarray, sigma: float, noise: float
    ) -> np.ndarray:
        """Selection mask (S, S) 0..1: where the degraded warped reference agrees with the input.

        The agreement asked for grows with the share of the reference's fine detail the input
        kept there (``1 - lost_map``): where the input still shows its own (a blink, a closed
        mouth, at mild degradations most of the face), another frame's must match it closely or
        it would be pasted over what the input shows; where the input lost it, the band both
        still have is all there is to check."""
        s = lq_y.shape[0]
        wide = s / 24.0
        a = _bandpass(lq_y, sigma, wide)
        b = _bandpass(ref_wy, sigma, wide)
        win = s / 40.0
        err = _g(np.abs(a - b), win)
        signal = _g(np.abs(a), win) + _g(np.abs(b), win)
        rel = err / (signal + 2 * noise / max(sigma, 1.0) + 1e-3)
        kept = 1.0 - lost_map(_denoise(lq_y, noise), ref_wy, sigma)
        return np.clip(1.5 - (AGREE_SLOPE + KEPT_SLOPE * kept) * rel, 0.0, 1.0).astype(np.float32)

    def _back_project(self, out: np.ndarray, target: np.ndarray, sigma: float) -> np.ndarray:
        """Landweber steps on ``|H out - H target|`` with H a Gaussian of ``sigma``: the output's
        low band is pulled back to the input's, its high band (the transferred detail) is kept."""
        low_t = _g(target, sigma)
        for _ in range(self.iterations):
            out = out + _g(low_t - _g(out, sigma), sigma)
        return out
