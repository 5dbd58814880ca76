"""Analysis speed with and without detector stride + tracking, and what the stride costs in recall.

    python bench/bench_analysis.py [VIDEO] [--stride 5] [--frames 150]

Runs pass 1 (decode, detect or refine, landmarks, embedding, quality, tracking) twice on the same
clip: detector on every frame, then every ``--stride`` frames with tracked boxes refined in
between. Recall: the share of stride-1 faces (the reference) that the strided run also has, at
IoU >= 0.5 in the same frame; landmark error: mean eye/nose/mouth distance on those matches, in
percent of the face size.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import default_clip  # noqa: E402
from worker.config import load_config  # noqa: E402
from worker.item.pipeline import Engine  # noqa: E402
from worker.media.video import iter_frames, probe_video  # noqa: E402
from worker.stages.analyse import analyse_video  # noqa: E402
from worker.stages.track import iou  # noqa: E402


def run(path: str, stride: int, frames: int):
    engine = Engine(load_config(None, [f"detect.stride={stride}", "progress=false"]))
    cfg, analyzer = engine.cfg, engine.analyzer  # thresholds calibrated for the backend
    info = probe_video(path, cfg.limits)

    t = time.perf_counter()
    a = analyse_video(path, info, analyzer, cfg, itertools.islice(iter_frames(path, info), frames))
    return a, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", nargs="?", default=None)
    ap.add_argument("--stride", type=int, default=5)
    ap.add_argument("--frames", type=int, default=150)
    args = ap.parse_args()
    path = args.video or str(default_clip())
    ref, t1 = run(path, 1, args.frames)
    fast, tn = run(path, args.stride, args.frames)
    by_frame = defaultdict(list)
    for f in fast.faces:
        by_frame[f.frame].append(f)
    matched, err = 0, []
    for f in ref.faces:
        cands = by_frame.get(f.frame, [])
        if not cands:
            continue
        ov = iou(f.bbox[None], np.stack([c.bbox for c in cands]))[0]
        j = int(ov.argmax())
        if ov[j] >= 0.5:
            matched += 1
            err.append(np.linalg.norm(cands[j].kps - f.kps, axis=1).mean() / max(f.size, 1) * 100)
    n = ref.n_frames
    print(f"clip: {path} ({n} frames analysed)")
    print(f"stride 1: {n / t1:.2f} frames/s, {len(ref.faces)} faces, detector on {ref.detector_frames} frames")
    print(f"stride {args.stride}: {n / tn:.2f} frames/s, {len(fast.faces)} faces, detector on {fast.detector_frames} frames")
    print(f"speed-up: {t1 / tn:.2f}x")
    print(f"recall vs stride 1: {matched / max(len(ref.faces), 1):.3f}; "
          f"landmark difference {np.mean(err) if err else float('nan'):.2f}% of face size")


if __name__ == "__main__":
    main()
