"""(GT, reference) training pairs grouped by identity.

Sources, all ending as ``{identity: [aligned BGR uint8 crops]}``:

- an identity-folder tree (CelebRef-HQ style, ``root/<person>/*.jpg|png``) of aligned crops or
  full photos (``load_identity_folder``: photos are detected and aligned by the ``analyzer`` the
  caller passes, e.g. the worker's ``make_analyzer``: this package does not detect faces itself);
- a worker job's output (``<item>/refs/<identity>/*.png``, the chosen aligned references) plus
  crops the caller passes in memory (video items: the sharp faces it kept);
- an in-memory dict of crops per identity (per-job adaptation).

``FacePairs[i]`` gives one sample: the GT crop, a *different* crop of the same identity as the
reference, the LQ made from the GT with a sampled ``DegradationParams`` (kept for the cycle term;
with a ``pre`` pass the LQ is that pass's output on the degraded face, which the net then learns
to refine: no cycle term then) and the RefSel mask of the pair (``refstar.masks``, cached per
pair); a random flip and a small affine jitter are applied identically to GT, reference and
mask. Use ``collate_pairs`` as the DataLoader's ``collate_fn``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from refstar.align import estimate_affine, resize_square, template, warp_face
from refstar.degradations import DegradationParams, DegradationRanges, degrade, sample_params
from refstar.masks import make_mask

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Measured to work for per-job adaptation (x3-5 down, blur 1-3, noise 0-8, JPEG 40-80): close to
# what real archive footage looks like, and narrow enough for a few hundred steps to learn.
ADAPT_RANGES = DegradationRanges(
    blur_sigma=(1.0, 3.0), scale=(3.0, 5.0), noise_sigma=(0.0, 8.0), jpeg_quality=(40, 80)
)

# The face prior (jobs/prior.py): what the worker's 128 px working size meets, from a nearly
# clean face (scale 1, light blur, JPEG 95) to one area-down x6 with blur 3, noise 8 and JPEG 30
PRIOR_RANGES = DegradationRanges(
    blur_sigma=(0.2, 3.0), scale=(1.0, 6.0), noise_sigma=(0.0, 8.0), jpeg_quality=(30, 95)
)


# a first restoration pass the net learns to refine: (degraded crop, reference or None), both
# (S, S, 3) BGR uint8 of the whole face -> its output, the same shape and type
PreRestore = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


@dataclass(frozen=True)
class PairConfig:
    """How samples are made. Sizes in px of the square training crop."""

    size: int = 128  # crops are resized to size x size (aligned to the template)
    # samples are random patch x patch squares of those crops (GT, reference and mask cut at the
    # same place; the LQ degraded from the GT square); None: whole crops
    patch: int | None = None
    ranges: DegradationRanges = field(default_factory=lambda: ADAPT_RANGES)
    flip_prob: float = 0.5
    jitter: float = 0.02  # max translation (fraction of size) and scale change of the affine
    jitter_deg: float = 3.0  # max rotation, degrees
    no_ref_prob: float = 0.1  # samples without reference (zeros, mask 0): one net serves both
    # samples whose input is the ground truth itself: a face with nothing lost must come out as
    # it went in (a net that never sees one changes sharp faces by its own error)
    clean_prob: float = 0.0
    length: int | None = None  # samples per epoch; None = one per crop
    seed: int = 0


def _is_template_aligned(image: np.ndarray, kps: np.ndarray, tol: float = 0.06) -> bool:
    """Whether ``kps`` (5, 2) already sit on the template of a square ``image`` (within ``tol``
    of its size, mean over the landmarks)."""
    s = image.shape[0]
    return float(np.linalg.norm(kps - template(s), axis=1).mean()) < tol * s


def align_photo(image: np.ndarray, size: int, analyzer=None, aligned: bool | None = None):
    """One photo -> aligned (size, size, 3) BGR uint8 crop of its largest face, or None.

    aligned: True = the photo is already a template-aligned square crop (only resized);
    False = always detect; None = detect, and a square photo whose face already sits on the
    template (or where no face is found) is taken as aligned.
    """
    h, w = image.shape[:2]
    square = h == w
    if aligned is True and square:
        return resize_square(image, size)
    if analyzer is None:
        raise ValueError("this photo needs its face found: pass an analyzer (anything with "
                         "analyze(image) -> faces with bbox and kps), or aligned=True for aligned crops")
    faces = analyzer.analyze(np.ascontiguousarray(image))
    if not faces:
        return resize_square(image, size) if square and aligned is None else None
    face = max(faces, key=lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))
    if square and aligned is None and _is_template_aligned(image, face.kps):
        return resize_square(image, size)
    return warp_face(image, estimate_affine(face.kps, size), size)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def load_identity_folder(root: str | Path, size: int, aligned: bool | None = None,
                         analyzer=None) -> dict[str, dict[str, np.ndarray]]:
    """``root/<person>/*.jpg|png`` -> {person: {file name: aligned (size, size, 3) BGR uint8}}.
    Folders starting with ``_`` or ``.`` (group photos, caches) are skipped, and so are photos
    with no face."""
    root = Path(root)
    out: dict[str, dict[str, np.ndarray]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] not in "_."):
        crops = {}
        for path in _images(d):
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                continue
            try:
                crop = align_photo(img, size, analyzer, aligned)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from e
            if crop is not None:
                crops[path.name] = crop
        if crops:
            out[d.name] = crops
    return out


def load_job_output(item_dir: str | Path, size: int,
                    extra: Mapping[object, Sequence[np.ndarray]] | None = None
                    ) -> dict[str, list[np.ndarray]]:
    """A worker item's output (``<item>/refs/<identity>/*.png``, already aligned) plus ``extra``
    in-memory aligned crops per identity (keys are matched as strings) -> {identity: crops}."""
    out: dict[str, list[np.ndarray]] = {}
    refs = Path(item_dir) / "refs"
    if refs.is_dir():
        for d in sorted(p for p in refs.iterdir() if p.is_dir()):
            crops = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in _images(d)]
            out[d.name] = [resize_square(c, size) for c in crops if c is not None]
    for key, crops in (extra or {}).items():
        out.setdefault(str(key), []).extend(resize_square(c, size) for c in crops)
    return out


def _to_tensor(bgr: np.ndarray) -> torch.Tensor:
    """(S, S, 3) BGR uint8 -> [3, S, S] float32 RGB 0..1."""
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).float() / 255.0


class FacePairs(Dataset):
    """Samples of (LQ, GT, reference, mask, degradation) from crops grouped by identity.

    Each item is a dict: ``lq``, ``gt``, ``ref`` [3, S, S] float32 RGB 0..1 (``ref`` all zeros
    when the sample has no reference), ``mask`` [1, S, S] float32 0..1 (GT coordinates),
    ``has_ref`` bool tensor, ``params`` DegradationParams, ``identity`` str. Identities with a
    single crop are dropped (a pair needs two different crops). Deterministic for a given
    (seed, epoch, index); call ``set_epoch`` to draw new references/degradations.
    """

    def __init__(self, crops: Mapping[object, Sequence[np.ndarray]], cfg: PairConfig | None = None,
                 pre: PreRestore | None = None):
        self.cfg = cfg or PairConfig()
        self.pre = pre
        s = self.cfg.size
        self.crops = {str(k): [resize_square(np.ascontiguousarray(c), s) for c in v]
                      for k, v in crops.items() if len(v) >= 2}
        if not self.crops:
            raise ValueError("no identity has two or more crops: a (GT, reference) pair needs two")
        self.index = [(k, i) for k, v in self.crops.items() for i in range(len(v))]
        self.epoch = 0
        self._masks: dict[tuple[str, int, int], np.ndarray] = {}

    @classmethod
    def from_folder(cls, root: str | Path, cfg: PairConfig | None = None,
                    aligned: bool | None = None, analyzer=None) -> FacePairs:
        cfg = cfg or PairConfig()
        tree = load_identity_folder(root, cfg.size, aligned, analyzer)
        return cls({k: list(v.values()) for k, v in tree.items()}, cfg)

    @classmethod
    def from_job_output(cls, item_dir: str | Path, cfg: PairConfig | None = None,
                        extra: Mapping[object, Sequence[np.ndarray]] | None = None) -> FacePairs:
        cfg = cfg or PairConfig()
        return cls(load_job_output(item_dir, cfg.size, extra), cfg)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.cfg.length or len(self.index)

    def mask(self, identity: str, gt: int, ref: int) -> np.ndarray:
        """RefSel mask (S, S) float32 of the pair, computed once per pair."""
        key = (identity, gt, ref)
        if key not in self._masks:
            crops = self.crops[identity]
            self._masks[key] = make_mask(crops[gt], crops[ref])[0]
        return self._masks[key]

    def _jitter(self, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        s = c.size
        ang = np.deg2rad(rng.uniform(-c.jitter_deg, c.jitter_deg))
        sc = 1.0 + rng.uniform(-c.jitter, c.jitter)
        t = rng.uniform(-c.jitter, c.jitter, 2) * s
        m = cv2.getRotationMatrix2D((s / 2, s / 2), float(np.rad2deg(ang)), float(sc))
        m[:, 2] += t
        return m

    def __getitem__(self, i: int) -> dict:
        c = self.cfg
        rng = np.random.default_rng([c.seed, self.epoch, i])
        identity, g = self.index[i % len(self.index)]
        crops = self.crops[identity]
        r = int(rng.integers(0, len(crops) - 1))
        r += r >= g  # a different crop of the same person
        gt, ref, mask = crops[g], crops[r], self.mask(identity, g, r)
        if rng.random() < c.flip_prob:
            gt, ref, mask = gt[:, ::-1], ref[:, ::-1], mask[:, ::-1]
        if c.jitter > 0 or c.jitter_deg > 0:
            m = self._jitter(rng)
            warp = lambda x: cv2.warpAffine(  # noqa: E731
                np.ascontiguousarray(x), m, (c.size, c.size), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101)
            gt, ref, mask = warp(gt), warp(ref), warp(mask)
        side, cut = c.size, (lambda a: a)
        if c.patch and c.patch < c.size:
            y, x = (int(v) for v in rng.integers(0, c.size - c.patch + 1, 2))
            cut = lambda a: a[y: y + c.patch, x: x + c.patch]  # noqa: E731
            side = c.patch
        params = sample_params(rng, c.ranges)
        has_ref = bool(rng.random() >= c.no_ref_prob)
        if c.clean_prob and rng.random() < c.clean_prob:
            params = DegradationParams(seed=params.seed)
        if self.pre is None:
            gt, ref, mask = cut(gt), cut(ref), cut(mask)
            lq = degrade(np.ascontiguousarray(gt), params)
        else:  # the first pass sees the whole face, as it will at restore
            lq = degrade(np.ascontiguousarray(gt), params)
            lq = cut(self.pre(lq, np.ascontiguousarray(ref) if has_ref else None))
            gt, ref, mask = cut(gt), cut(ref), cut(mask)
        ref_t = _to_tensor(ref) if has_ref else torch.zeros(3, side, side)
        mask_t = torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None]
        return {"lq": _to_tensor(lq), "gt": _to_tensor(gt), "ref": ref_t,
                "mask": mask_t if has_ref else torch.zeros_like(mask_t),
                "has_ref": torch.tensor(has_ref), "params": params, "identity": identity}


def collate_pairs(batch: list[dict]) -> dict:
    """Stack tensors; ``params`` (DegradationParams) and ``identity`` stay lists."""
    out = {k: torch.stack([b[k] for b in batch]) for k in ("lq", "gt", "ref", "mask", "has_ref")}
    out["params"] = [b["params"] for b in batch]
    out["identity"] = [b["identity"] for b in batch]
    return out


__all__ = ["ADAPT_RANGES", "PRIOR_RANGES", "DegradationParams", "FacePairs", "PairConfig", "align_photo",
           "collate_pairs", "load_identity_folder", "load_job_output"]
