"""Paste restored face crops back into a frame: colour match, then the restorer's change (restored
minus the crop it was given) inverse-warped and added under a feathered mask.

Only the bounding box of each mask's footprint in the frame is touched, so pasting into a 4K
frame costs about as much as into a small one; pixels where the warped mask is exactly 0 stay
bit-identical to the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from refstar.align import invert_affine, transform_points, warp_face
from worker.config import PasteConfig


@dataclass
class Paste:
    """One restored face to put back."""

    crop: np.ndarray  # (S, S, 3) BGR uint8, the restored aligned crop
    M: np.ndarray  # (2, 3) float64, source -> crop affine the crop was cut with
    mask: np.ndarray  # (S, S) float32 0..1, where the restorer's change is added (face_mask)
    original_crop: np.ndarray | None = None  # (S, S, 3) BGR uint8 restorer input; None = recut


def _footprint(
    mask: np.ndarray, minv: np.ndarray, shape: tuple[int, ...]
) -> tuple[int, ...] | None:
    """Frame-pixel box (x0, y0, x1, y1) holding every pixel the mask can reach, or None."""
    ys, xs = np.nonzero(mask > 0)
    if len(xs) == 0:
        return None
    box = np.array(
        [
            [xs.min(), ys.min()],
            [xs.max() + 1, ys.min()],
            [xs.min(), ys.max() + 1],
            [xs.max() + 1, ys.max() + 1],
        ],
        np.float64,
    )
    pts = transform_points(minv, box)
    h, w = shape[:2]
    x0 = max(int(np.floor(pts[:, 0].min())) - 2, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - 2, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 2, w)
    y1 = min(int(np.ceil(pts[:, 1].max())) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def color_match(restored: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Match ``restored``'s Lab mean/std inside ``mask`` to ``reference``'s.

    restored, reference: (S, S, 3) BGR uint8; mask (S, S) 0..1. The statistics are taken on
    blurred copies, so the detail a restorer adds (which raises the std) is not undone; only the
    colour/brightness drift is. Gains are clipped to 0.5..2. Returns BGR uint8.
    """
    s = restored.shape[0]
    sigma = max(s / 64.0, 1.0)
    w = mask.astype(np.float64)
    wsum = w.sum()
    if wsum < 1e-6:
        return restored
    lab_u8 = cv2.cvtColor(restored, cv2.COLOR_BGR2LAB)
    lab_r = lab_u8.astype(np.float32)
    lab_o = cv2.cvtColor(reference, cv2.COLOR_BGR2LAB).astype(np.float32)
    blur_r = cv2.GaussianBlur(lab_r, (0, 0), sigma)
    blur_o = cv2.GaussianBlur(lab_o, (0, 0), sigma)
    out = np.empty_like(lab_r)
    for c in range(3):
        mr = (blur_r[..., c] * w).sum() / wsum
        mo = (blur_o[..., c] * w).sum() / wsum
        sr = np.sqrt(((blur_r[..., c] - mr) ** 2 * w).sum() / wsum)
        so = np.sqrt(((blur_o[..., c] - mo) ** 2 * w).sum() / wsum)
        gain = float(np.clip(so / sr, 0.5, 2.0)) if sr > 1e-3 else 1.0
        out[..., c] = (lab_r[..., c] - mr) * gain + mo
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    # applied as a correction, so that the Lab round trip's own rounding cancels: a crop whose
    # colours already match comes back bit-identical
    fix = cv2.cvtColor(out, cv2.COLOR_LAB2BGR).astype(np.int16) - cv2.cvtColor(lab_u8, cv2.COLOR_LAB2BGR)
    return np.clip(restored.astype(np.int16) + fix, 0, 255).astype(np.uint8)


def paste_faces(
    image: np.ndarray, pastes: list[Paste], cfg: PasteConfig | None = None
) -> np.ndarray:
    """Return a copy of ``image`` (H, W, 3) BGR uint8 with every crop blended in, in list order
    (a later face is composited over an earlier one where they overlap).

    Colour matching compares each restored crop with what the restorer was given
    (``original_crop``, or the crop re-cut from ``image`` when absent).
    """
    cfg = cfg or PasteConfig()
    out = image.copy()
    for p in pastes:
        size = p.crop.shape[0]
        minv = invert_affine(p.M)
        box = _footprint(p.mask, minv, image.shape)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        orig = p.original_crop if p.original_crop is not None else warp_face(image, p.M, size)
        crop = color_match(p.crop, orig, p.mask) if cfg.color_match else p.crop
        # only the restorer's change is warped back and added: the crop's own resampling (a face
        # of 200 px cut at 512 and put back) would blur what the restorer left as it was
        change = crop.astype(np.float32) - orig.astype(np.float32)
        # crop -> ROI pixels: shift the inverse affine by the ROI origin
        m_roi = minv.copy()
        m_roi[:, 2] -= (x0, y0)
        dsize = (x1 - x0, y1 - y0)
        delta = cv2.warpAffine(
            change, m_roi, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        alpha = cv2.warpAffine(
            p.mask.astype(np.float32),
            m_roi,
            dsize,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        alpha = np.clip(alpha, 0.0, 1.0)[..., None]
        roi = out[y0:y1, x0:x1]
        # the frame as it came plus this face's change, over what earlier faces left: where
        # faces overlap the later one wins, as a pasted crop would
        target = image[y0:y1, x0:x1].astype(np.float32) + delta
        blended = roi.astype(np.float32) * (1.0 - alpha) + target * alpha
        blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        # exact zeros of the mask keep the original bytes (no float round trip)
        out[y0:y1, x0:x1] = np.where(alpha > 0, blended, roi)
    return out
