"""``refstar train`` / ``python -m jobs.train``: train RefSTAR on an identity-folder dataset.

    refstar train --data DATASET --out RUN [--preset small] [--size 256] [--steps N]
                  [--time-budget S] [--resume] [--init CKPT] [--ray --workers N --gpu]

DATASET is a CelebRef-HQ-style tree (``DATASET/<person>/*.jpg|png``; aligned crops or photos,
whose faces the worker's analyzer finds) or a worker item's output folder
(``<item>/refs/<identity>/*.png``) with ``--job-output``. One process by default; ``--ray`` runs
the same loop on Ray Train workers (DDP, ``jobs/ray_train.py``). Submit to a cluster with
``ray job submit --working-dir . -- python -m jobs.train --data /data/celebref --out /runs/r1
--preset base --ray --workers 8 --gpu``. The training itself is ``refstar.training``; this
module only parses options and supplies face detection, which the library does not do.
"""

from __future__ import annotations

import argparse
import json
import sys

from refstar.degradations import DegradationRanges
from refstar.training.dataset import ADAPT_RANGES, FacePairs, PairConfig
from refstar.training.loop import TrainConfig, Trainer, build_net

DEFAULTS = TrainConfig()


def add_train_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training options, shared by ``refstar train`` and ``python -m jobs.train``."""
    p.add_argument("-i", "--input", "--data", dest="data", required=True, metavar="DATA",
                   help="identity-folder tree (or an item folder with --job-output)")
    p.add_argument("-o", "--output", "--out", dest="out", required=True, metavar="RUN",
                   help="run folder: checkpoints/step_*/ go here")
    p.add_argument("--job-output", action="store_true",
                   help="--data is a worker item's output (refs/<identity>/*.png)")
    p.add_argument("--aligned", action="store_true",
                   help="the images are template-aligned crops (skip face detection)")
    p.add_argument("--preset", default="small", choices=("tiny", "adapt", "small", "base"),
                   help="network size")
    p.add_argument("--size", type=int, default=None, help="crop size, px (default: preset's)")
    p.add_argument("--steps", type=int, default=DEFAULTS.max_steps, metavar="N", help="optimizer steps")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; stop by then")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, metavar="N", help="pairs per step")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help="AdamW learning rate (cosine decay)")
    p.add_argument("--ckpt-every", type=int, default=500, metavar="N", help="steps between checkpoints")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--adv", type=float, default=0.0, metavar="W",
                   help="weight of the hinge GAN term against a PatchDiscriminator (0: off; for long GPU runs)")
    p.add_argument("--cycle-ref", type=float, default=None,
                   help="weight of the MCC reference term (default: 0.25 on GPU, 0 on CPU)")
    p.add_argument("--blind-ranges", action="store_true",
                   help="the full blind-face degradation ranges instead of the adaptation ones")
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.add_argument("--init", default=None, help="checkpoint to fine-tune from")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, degradations, init)")
    p.add_argument("--ray", action="store_true", help="run on Ray Train (joins RAY_ADDRESS)")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (with --ray)")
    p.add_argument("--gpu", action="store_true", help="one GPU per Ray Train worker")
    return p


def configs(args: argparse.Namespace) -> tuple[str, PairConfig, TrainConfig]:
    """(preset, PairConfig, TrainConfig) from parsed arguments."""
    import torch

    from refstar.networks import NetConfig

    size = args.size or NetConfig.preset(args.preset).size
    gpu = args.gpu or (args.device in ("auto", "cuda") and torch.cuda.is_available())
    ranges = DegradationRanges() if args.blind_ranges else ADAPT_RANGES
    pair = PairConfig(size=size, seed=args.seed, ranges=ranges)
    cycle_ref = args.cycle_ref if args.cycle_ref is not None else (0.25 if gpu else 0.0)
    train = TrainConfig(max_steps=args.steps, time_budget_s=args.time_budget,
                        batch_size=args.batch_size, lr=args.lr, ckpt_every=args.ckpt_every,
                        num_workers=args.num_workers, device=args.device, seed=args.seed,
                        w_cycle_ref=cycle_ref, w_adv=args.adv)
    return args.preset, pair, train


def photo_analyzer(aligned: bool | None):
    """The face analyzer that aligns a tree's photos (None when every image is an aligned crop)."""
    if aligned is True:
        return None
    from worker.config import DetectConfig
    from worker.faces.base import make_analyzer

    return make_analyzer(DetectConfig())


def run_train(args: argparse.Namespace) -> int:
    """Run one training job from parsed arguments; prints progress and the final metrics."""
    preset, pair, train = configs(args)
    aligned = True if args.aligned else None
    if args.ray:
        if args.job_output:
            raise SystemExit("--ray reads an identity-folder tree; --job-output is one process")
        from jobs.ray_train import train_on_ray

        metrics = train_on_ray(args.data, args.out, preset=preset, pair_cfg=pair,
                               train_cfg=train, num_workers=args.workers, use_gpu=args.gpu,
                               init=args.init, resume=args.resume, aligned=aligned)
    else:
        data = (FacePairs.from_job_output(args.data, pair) if args.job_output
                else FacePairs.from_folder(args.data, pair, aligned=aligned, analyzer=photo_analyzer(aligned)))
        trainer = Trainer(build_net(preset, pair.size, args.init, args.seed), data, train, args.out)
        if args.resume:
            print(f"resumed at step {trainer.resume()}", flush=True)
        metrics = trainer.fit()
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v
                      for k, v in metrics.items()}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    from worker.helptext import HelpFormatter

    parser = add_train_arguments(argparse.ArgumentParser(prog="python -m jobs.train", formatter_class=HelpFormatter))
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
