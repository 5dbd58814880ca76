"""RefSel training masks (our reading of the RefSel-HQ pipeline): where may a reference be used?

For a (GT, reference) pair of crops of one person, both aligned to the landmark template
(``refstar.align.template``):

1. **Refine the alignment.** Dense flow (OpenCV DIS) from the GT to the reference; the smooth part
   of the flow warps the reference onto the GT (landmark alignment leaves a few pixels of error
   and cannot follow pose/expression).
2. **Agreement.** Local band-pass structure of the warped reference vs the GT (lighting-insensitive)
   plus a low-frequency lighting check; high where they agree.
3. **Exclusions.** Occluded pixels (forward/backward flow inconsistency, or a large warp error),
   pixels whose warp source lies outside the reference crop, and the mouth region when the
   expression differs (the mouth disagrees overall).
4. **Region prior.** Static face regions in template coordinates (eyes, brows, nose, skin), built
   from the five template landmarks, so hair, background and neck are never selected.

``make_mask(gt, ref) -> (mask, ref_warped)``; ``python -m refstar.masks DATASET_DIR OUT_DIR``
writes masks for an identity-folder dataset plus side-by-side previews.
"""

from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from refstar.align import face_mask, template

MIN_WORK, MAX_WORK = 128, 256  # flow and agreement run at this size (px): robust and fast
MOUTH_AGREE_MIN = 0.55  # mean agreement in the mouth below this = the expression differs


def _g(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)


def _luma(bgr: np.ndarray) -> np.ndarray:
    """(S, S, 3) BGR uint8 or float 0..1 -> (S, S) float32 luma 0..1."""
    x = bgr.astype(np.float32) / 255.0 if bgr.dtype == np.uint8 else bgr.astype(np.float32)
    return (x @ np.array([0.114, 0.587, 0.299], np.float32)).astype(np.float32)


def _ellipse(size: int, centre: tuple[float, float], axes: tuple[float, float],
             feather: float) -> np.ndarray:
    """Soft filled ellipse (size, size) float32 0..1; ``feather`` px of smoothstep at the rim."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    r = np.sqrt(((xs - centre[0]) / axes[0]) ** 2 + ((ys - centre[1]) / axes[1]) ** 2)
    t = np.clip((1.0 - r) * (0.5 * (axes[0] + axes[1])) / max(feather, 1.0), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


@lru_cache(maxsize=8)
def regions(size: int) -> dict[str, np.ndarray]:
    """Named face regions in template coordinates, each (size, size) float32 0..1 (read-only):
    ``eyes``, ``brows``, ``nose``, ``skin`` (static), ``mouth`` (changes with expression) and
    ``static`` (union of the static ones, mouth removed). Built from the 5 template landmarks,
    with sizes relative to the eye distance so they scale with the crop."""
    le, re_, nose, ml, mr = template(size).astype(np.float64)
    d = float(np.linalg.norm(re_ - le))  # eye distance, px
    f = 0.06 * d
    eyes = np.maximum(_ellipse(size, le, (0.30 * d, 0.17 * d), f),
                      _ellipse(size, re_, (0.30 * d, 0.17 * d), f))
    up = np.array([0.0, 0.30 * d])
    brows = np.maximum(_ellipse(size, le - up, (0.36 * d, 0.13 * d), f),
                       _ellipse(size, re_ - up, (0.36 * d, 0.13 * d), f))
    mid_eye = 0.5 * (le + re_)
    nose_c = 0.5 * (mid_eye + nose) + np.array([0.0, 0.1 * d])
    nose_m = _ellipse(size, nose_c, (0.26 * d, 0.52 * d), f)
    mouth_c = 0.5 * (ml + mr)
    mouth = _ellipse(size, mouth_c, (0.62 * float(np.linalg.norm(mr - ml)), 0.32 * d), f)
    skin = face_mask(size, 0.06)
    static = np.maximum.reduce([eyes, brows, nose_m, skin]) * (1.0 - mouth)
    out = {"eyes": eyes, "brows": brows, "nose": nose_m, "skin": skin, "mouth": mouth,
           "static": static.astype(np.float32)}
    for m in out.values():
        m.flags.writeable = False
    return out


def _flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow f with a(x) ~ b(x + f(x)); a, b (n, n) float32 luma -> (n, n, 2) float32 px."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    to8 = lambda y: (np.clip(y, 0, 1) * 255).astype(np.uint8)  # noqa: E731
    return dis.calc(to8(a), to8(b), None)


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32))


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``img`` at x + flow(x) (bilinear, reflected border): (n, n[, C]) -> same shape."""
    gx, gy = _grid(flow.shape[0])
    return cv2.remap(img, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)


def _agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, n) 0..1: local agreement of two lumas (band-passed structure and lighting)."""
    n = a.shape[0]
    fine, wide, win = max(n / 256.0, 0.5), n / 24.0, n / 40.0
    ba = _g(a, fine) - _g(a, wide)
    bb = _g(b, fine) - _g(b, wide)
    err = _g(np.abs(ba - bb), win)
    signal = _g(np.abs(ba), win) + _g(np.abs(bb), win)
    structure = np.clip(1.5 - 2.0 * err / (signal + 4e-3), 0.0, 1.0)
    # lighting conflict: a reference lit from another side has the wrong shading to transfer
    ratio = np.log((_g(a, n / 16.0) + 0.03) / (_g(b, n / 16.0) + 0.03))
    light = np.exp(-((ratio / 0.35) ** 2))
    return (structure * light).astype(np.float32)


def make_mask(gt: np.ndarray, ref: np.ndarray, *, return_parts: bool = False):
    """RefSel mask of ``ref`` for ``gt``.

    gt, ref: (S, S, 3) BGR, uint8 or float32 0..1, aligned to the landmark template (same person).
    Returns ``(mask, ref_warped)``: mask (S, S) float32 0..1 in GT coordinates (1 = the reference
    is valid there), ref_warped (S, S, 3) the reference warped onto the GT by the refined flow
    (same dtype as ``ref``). With ``return_parts`` a third item, a dict of the (S, S) intermediate
    maps (agree, occluded, inframe, prior, mouth_ok), is returned for inspection.
    """
    s = gt.shape[0]
    if gt.shape[:2] != (s, s) or ref.shape[:2] != (s, s):
        raise ValueError(f"crops must be square and equal: {gt.shape} vs {ref.shape}")
    n = int(np.clip(s, MIN_WORK, MAX_WORK))
    k = s / n
    interp = cv2.INTER_AREA if n < s else cv2.INTER_CUBIC
    ya = _luma(cv2.resize(gt, (n, n), interpolation=interp) if n != s else gt)
    yb = _luma(cv2.resize(ref, (n, n), interpolation=interp) if n != s else ref)
    fw = _flow(_g(ya, 0.7), _g(yb, 0.7))
    bw = _flow(_g(yb, 0.7), _g(ya, 0.7))
    # faces deform smoothly: warp with the smooth part of the flow, so a flow that tears to fit
    # an occluder does not hide the occlusion (the residual shows up as warp error instead)
    smooth = _g(fw, n / 48.0)
    gx, gy = _grid(n)
    sx, sy = gx + smooth[..., 0], gy + smooth[..., 1]
    margin = 1.0
    inframe = ((sx >= -margin) & (sx <= n - 1 + margin) & (sy >= -margin)
               & (sy <= n - 1 + margin)).astype(np.float32)
    # forward-backward check: a GT pixel whose match maps back elsewhere has no true match
    back = warp(bw, fw)
    fb = np.sqrt(((fw + back) ** 2).sum(-1))
    occluded = (fb > 0.02 * n + 0.1 * np.sqrt((fw**2).sum(-1))).astype(np.float32)
    occluded = np.clip(_g(occluded, n / 64.0) * 2.0, 0.0, 1.0)
    yw = warp(yb, smooth)
    agree = _agreement(ya, yw)
    reg = regions(n)
    mouth = reg["mouth"]
    mouth_agree = float((agree * mouth * (1 - occluded)).sum() / max(float(mouth.sum()), 1e-6))
    mouth_ok = 1.0 if mouth_agree >= MOUTH_AGREE_MIN else 0.0
    prior = np.maximum(reg["static"], mouth * mouth_ok)
    mask = agree * (1.0 - occluded) * inframe * prior
    mask = np.clip(_g(mask, n / 96.0), 0.0, 1.0).astype(np.float32)
    if n != s:
        mask = cv2.resize(mask, (s, s), interpolation=cv2.INTER_LINEAR)
        smooth = cv2.resize(smooth, (s, s), interpolation=cv2.INTER_LINEAR) * k
    ref_w = warp(ref, smooth)
    if not return_parts:
        return mask, ref_w
    parts = {"agree": agree, "occluded": occluded, "inframe": inframe, "prior": prior,
             "mouth_ok": np.full((n, n), mouth_ok, np.float32)}
    return mask, ref_w, parts


def preview(gt: np.ndarray, ref: np.ndarray, mask: np.ndarray, ref_w: np.ndarray) -> np.ndarray:
    """Side by side (S, 4S, 3) uint8: GT | reference | warped reference | mask over the GT."""
    u8 = lambda x: x if x.dtype == np.uint8 else np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
    g, r, w = u8(gt), u8(ref), u8(ref_w)
    overlay = g.astype(np.float32) * (0.35 + 0.65 * mask[..., None])
    overlay[..., 1] += 80 * mask  # tint the selected area green
    return np.concatenate([g, r, w, np.clip(overlay, 0, 255).astype(np.uint8)], axis=1)


def main(argv: list[str] | None = None) -> int:
    """CLI: masks and previews for consecutive pairs within each identity folder."""
    ap = argparse.ArgumentParser(prog="python -m refstar.masks", description=__doc__.split("\n")[0])
    ap.add_argument("dataset", help="identity-folder tree of template-aligned square crops: DATASET/<person>/*.png "
                    "(a worker item's refs/, or the faces jobs.prior extracts)")
    ap.add_argument("out", help="writes OUT/<person>/<gt>__<ref>.png (mask) and *_preview.jpg")
    ap.add_argument("--size", type=int, default=256, help="aligned crop size, px")
    ap.add_argument("--max-pairs", type=int, default=4, help="pairs per identity")
    args = ap.parse_args(argv)
    from refstar.training.dataset import load_identity_folder

    try:  # this library does not detect faces: only aligned crops are read
        crops = load_identity_folder(args.dataset, args.size, aligned=True)
    except (OSError, ValueError) as e:
        print(f"python -m refstar.masks: {args.dataset}: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    total = 0
    for person, items in crops.items():
        names = list(items)
        pairs = [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]
        for a, b in pairs[: args.max_pairs] if len(names) > 1 else []:
            mask, ref_w = make_mask(items[a], items[b])
            d = out / person
            d.mkdir(parents=True, exist_ok=True)
            stem = f"{Path(a).stem}__{Path(b).stem}"
            cv2.imwrite(str(d / f"{stem}.png"), np.rint(mask * 255).astype(np.uint8))
            cv2.imwrite(str(d / f"{stem}_preview.jpg"), preview(items[a], items[b], mask, ref_w))
            total += 1
            print(f"{person}/{stem}: selected {mask.mean():.2f} of the crop", flush=True)
    print(f"{total} masks written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
