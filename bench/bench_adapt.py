"""Per-job adaptation on real clips: PSNR of held-out degraded faces, restored four ways.

    python bench/bench_adapt.py [CLIP ...] [--frames 60] [--stride 2] [--size 128]
        [--steps 400] [--budget 180] [--preset adapt] [--threads 2]

For each clip (default: three clips of ../shared/data/videos): the largest face of ``--frames``
decoded frames (every ``--stride``-th) is detected with the dlib analyzer and aligned to a
``--size`` crop. Frames ``i % 3 != 2`` are the job's own faces (the sharper half of them, by
Laplacian variance, plus the rest down to half the median sharpness) used for adaptation; the
other third is degraded with the degradation model (ADAPT_RANGES: x3-5 down, blur 1-3, noise 0-8,
JPEG 40-80; seeded) and restored by: nothing (the degraded input), the guided restorer with the
sharpest training crop as reference, and the adapted RefSTAR net without and with that
reference; and, as the issue's yardstick, a plain ~0.3 M-parameter U-Net trained with L1 on the
same samples for the same steps, without and with the reference as extra input channels
(``bench/_baseline.py``). Reported: mean PSNR (dB) of the whole aligned crop vs the original crop, temporal
flicker of the held-out sequence (``refstar.metrics.flicker``), adaptation steps and seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._baseline import train_baseline  # noqa: E402
from bench._common import real_data_root  # noqa: E402
from refstar.adapt import adapt_report  # noqa: E402
from refstar.align import estimate_affine, warp_face  # noqa: E402
from refstar.degradations import degrade, sample_params  # noqa: E402
from refstar.guided import GuidedRestorer  # noqa: E402
from refstar.metrics import flicker, psnr  # noqa: E402
from refstar.networks.refstar_net import count_parameters  # noqa: E402
from refstar.refstar_restorer import RefSTARRestorer  # noqa: E402
from refstar.restorer import bgr_to_tensor, tensor_to_bgr  # noqa: E402
from refstar.training.dataset import ADAPT_RANGES, FacePairs, PairConfig  # noqa: E402
from worker.config import DetectConfig  # noqa: E402
from worker.faces.base import make_analyzer  # noqa: E402
from worker.media.video import iter_frames  # noqa: E402

CLIPS = ["video-retalking__face_3.mp4", "SadTalker__WDA_KatieHill_000.mp4",
         "LivePortrait__driving_d12.mp4"]


def clip_crops(path: Path, frames: int, stride: int, size: int) -> list[np.ndarray]:
    """Aligned crops of the largest face of every ``stride``-th frame (frames without a face
    are skipped)."""
    analyzer = make_analyzer(DetectConfig(upsample=0, max_side=960))
    crops = []
    for f in iter_frames(str(path)):
        if f.index >= frames * stride:
            break
        if f.index % stride:
            continue
        img = np.ascontiguousarray(f.image)
        faces = analyzer.analyze(img)
        if faces:
            face = max(faces, key=lambda x: float(x.bbox[2] - x.bbox[0]))
            crops.append(warp_face(img, estimate_affine(face.kps, size), size))
    return crops


def sharpness(crop: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_32F).var())


def run_clip(path: Path, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    crops = clip_crops(path, args.frames, args.stride, args.size)
    t_detect = time.perf_counter() - t0
    train = [c for i, c in enumerate(crops) if i % 3 != 2]
    held = [c for i, c in enumerate(crops) if i % 3 == 2]
    sharp = np.array([sharpness(c) for c in train])
    train = [c for c, s in zip(train, sharp, strict=True) if s >= 0.5 * np.median(sharp)]
    ref_crop = train[int(np.argmax([sharpness(c) for c in train]))]
    rng = np.random.default_rng(0)
    lq = [degrade(c, sample_params(rng, ADAPT_RANGES)) for c in held]
    x, ref = bgr_to_tensor(lq), bgr_to_tensor([ref_crop] * len(lq))
    extra: dict = {}
    outs = {"input": lq, "guided + ref": tensor_to_bgr(GuidedRestorer().restore(x, ref).image)}
    net, res = adapt_report({0: train}, preset=args.preset, steps=args.steps,
                            time_budget_s=args.budget, size=args.size, batch_size=args.batch,
                            lr=args.lr, device="cpu")
    restorer = RefSTARRestorer(net, device="cpu")
    outs["refstar, no ref"] = tensor_to_bgr(restorer.restore(x, None).image)
    with_ref = restorer.restore(x, ref)
    outs["refstar + ref"] = tensor_to_bgr(with_ref.image)
    if args.baseline:
        data = FacePairs({0: train}, PairConfig(size=args.size, ranges=ADAPT_RANGES, seed=0,
                                                length=4 * len(train)))
        for name, use_ref in (("unet L1", False), ("unet L1 + ref", True)):
            unet, secs = train_baseline(data, ref=use_ref, steps=args.steps,
                                        batch_size=args.batch, lr=args.lr)
            with torch.inference_mode():
                outs[name] = tensor_to_bgr(unet(x, ref if use_ref else None))
            extra[f"{name} s"] = round(secs, 1)
        extra["unet params"] = count_parameters(unet)
    row = {"clip": path.name, "faces": len(crops), "train": len(train), "held_out": len(held),
           "detect_s": round(t_detect, 1), "adapt_steps": res.steps,
           "adapt_s": round(res.seconds, 1), "mask_mean": round(float(with_ref.mask.mean()), 3), **extra}
    for name, o in outs.items():
        row[f"psnr {name}"] = round(float(np.mean([psnr(a, b) for a, b in zip(o, held, strict=True)])), 2)
        row[f"flicker {name}"] = round(flicker(o, held), 4)
    if args.save:
        grid = [np.concatenate([held[i], *(o[i] for o in outs.values())], 1) for i in range(4)]
        cv2.imwrite(str(Path(args.save) / f"{path.stem}.jpg"), np.concatenate(grid, 0))
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="*")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--budget", type=float, default=180.0, help="adaptation seconds per clip")
    ap.add_argument("--preset", default="adapt")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="skip the issue's yardstick (a plain 0.3 M U-Net with L1, same steps)")
    ap.add_argument("--save", default="", help="folder for before/after grids")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = real_data_root()
    clips = [Path(c) for c in args.clips] or [root / "videos" / c for c in CLIPS]
    for clip in clips:
        row = run_clip(clip, args)
        base = row["psnr input"]
        gains = "  ".join(f"{k[5:]} {v:.2f} ({v - base:+.2f})" for k, v in row.items()
                          if k.startswith("psnr "))
        print(f"{row['clip']}: {gains}; adapt {row['adapt_steps']} steps "
              f"{row['adapt_s']:.0f} s", flush=True)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
