"""Restorer throughput: aligned 512-px faces per second at batch sizes 1, 8 and 32.

    python bench/bench_restorer.py [--size 512] [--batches 1 8 32] [--preset small] [--device auto]

Rows: the weight-free ``guided`` restorer and the RefSTAR network (``--preset``, random weights:
speed does not depend on them), each with a reference for every face and without one. Faces
come from the photos shipped with insightface. Reference features are computed once per
reference (one reference shared by the batch), as the worker does across frames.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refstar.guided import GuidedRestorer  # noqa: E402
from refstar.networks import NetConfig, RefSTARNet  # noqa: E402
from refstar.refstar_restorer import RefSTARRestorer  # noqa: E402
from refstar.restorer import bgr_to_tensor  # noqa: E402
from worker.synthetic import face_photos  # noqa: E402


def faces_per_s(restorer, lq: torch.Tensor, ref: torch.Tensor | None, repeats: int) -> float:
    restorer.restore(lq[:1], None if ref is None else ref[:1])  # warm-up (allocations, caches)
    t = time.perf_counter()
    for _ in range(repeats):
        restorer.restore(lq, ref)
    return repeats * len(lq) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    photo = cv2.resize(face_photos()["t1_2"], (args.size, args.size), interpolation=cv2.INTER_AREA)
    lq_one = bgr_to_tensor([cv2.GaussianBlur(photo, (0, 0), 3)])
    ref_one = bgr_to_tensor([photo])
    net = RefSTARNet(NetConfig.preset(args.preset)).eval()
    restorers = {"guided": GuidedRestorer(),
                 f"refstar-{args.preset}": RefSTARRestorer(net, work_size=args.size, device=args.device)}
    dev = restorers[f"refstar-{args.preset}"].device
    print(f"{args.size}-px faces/s on {dev} ({torch.get_num_threads()} torch threads)")
    print(f"{'restorer':18s} {'reference':9s} " + " ".join(f"batch {b:>3d}" for b in args.batches))
    for name, restorer in restorers.items():
        for with_ref in (True, False):
            row = []
            for b in args.batches:
                lq = lq_one.expand(b, -1, -1, -1).contiguous()
                ref = ref_one.expand(b, -1, -1, -1).contiguous() if with_ref else None
                row.append(faces_per_s(restorer, lq, ref, args.repeats))
            print(f"{name:18s} {'yes' if with_ref else 'no':9s} " + " ".join(f"{v:9.2f}" for v in row),
                  flush=True)


if __name__ == "__main__":
    main()
