"""Restoration gain on real clips, ground truth made by degrading some frames on purpose.

    python bench/bench_realclip_restore.py [CLIP ...] [--frames 60] [--crop 512]

For each clip (default: three clips of ../shared/data/videos): the first ``--frames`` frames are
re-encoded with one frame in three degraded (blur sigma 2, x4 down, noise 5, JPEG 50, over the
whole frame); the worker restores that clip with ``restorer=none``, with the guided restorer
without references (``references.top_k=0``) and with references, and with RefSTAR adapted on the
clip's own sharp faces (``restorer=refstar``, from scratch, ``--adapt-steps``); the face boxes found on the
degraded frames are compared with the same boxes of the original frames (PSNR, dB).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import real_data_root  # noqa: E402
from refstar.degradations import DegradationParams, degrade  # noqa: E402
from refstar.metrics import psnr  # noqa: E402
from worker.config import load_config  # noqa: E402
from worker.media.video import VideoRewriter, iter_frames, probe_video  # noqa: E402
from worker.pipeline import restore_item  # noqa: E402
from worker.records import Frame  # noqa: E402

CLIPS = ["video-retalking__face_3.mp4", "SadTalker__WDA_KatieHill_000.mp4", "LivePortrait__driving_d12.mp4"]
PARAMS = DegradationParams(blur_sigma=2.0, scale=4.0, noise_sigma=5.0, jpeg_quality=50)


def make_degraded(src: str, dst: str, frames: int) -> tuple[list[np.ndarray], set[int]]:
    """Writes the first ``frames`` frames with every third degraded; returns the originals."""
    cfg = load_config(None, ["output.crf=12", "output.video_codec=libx264"])
    info = probe_video(src, cfg.limits)
    originals, bad = [], set()
    with VideoRewriter(src, dst, info, cfg.output) as w:
        for f in iter_frames(src, info):
            if f.index >= frames:
                break
            originals.append(f.image)
            img = f.image
            if f.index % 3 == 1:
                bad.add(f.index)
                img = degrade(img, PARAMS, seed=f.index)
            w.write(Frame(f.index, img, f.pts, f.time_base))
    return originals, bad


def face_scores(video: Path, manifest: dict, originals: list[np.ndarray], bad: set[int]):
    frames = {f.index: f.image for f in iter_frames(str(video)) if f.index in bad}
    vals = []
    boxes = {}
    for face in manifest["faces"]:
        if face["frame"] in bad and face["identity"] == 0:
            boxes[face["frame"]] = [int(round(v)) for v in face["bbox"]]
    for i in sorted(boxes):
        x1, y1, x2, y2 = boxes[i]
        a, b = frames[i][max(0, y1):y2, max(0, x1):x2], originals[i][max(0, y1):y2, max(0, x1):x2]
        vals.append(psnr(a, b))
    return float(np.mean(vals)), len(vals)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="*")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--adapt-steps", type=int, default=400)
    ap.add_argument("--only", nargs="*", help="run only these rows (e.g. 'refstar adapted')")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every row")
    args = ap.parse_args()
    root = real_data_root()
    clips = args.clips or [str(root / "videos" / c) for c in CLIPS]
    runs = {"none": ["restorer=none"], "guided, no ref": ["references.top_k=0"], "guided + ref": [],
            "refstar adapted": ["restorer=refstar", f"restore.adapt_steps={args.adapt_steps}",
                                "restore.adapt_time_s=600"]}
    runs = {k: v for k, v in runs.items() if not args.only or k in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            deg = Path(tmp) / (Path(clip).stem + "_deg.mp4")
            originals, bad = make_degraded(clip, str(deg), args.frames)
            line = [f"{Path(clip).name} ({len(originals)} frames, {len(bad)} degraded):"]
            for name, sets in runs.items():
                cfg = load_config(None, ["progress=false", f"restore.crop_size={args.crop}", *sets, *args.set])
                t = time.perf_counter()
                res = restore_item(deg, str(Path(tmp) / name.replace(" ", "_")), cfg, force=True)
                dt = time.perf_counter() - t
                m = json.loads((Path(res.output) / "manifest.json").read_text())
                score, n = face_scores(Path(res.output) / "restored.mp4", m, originals, bad)
                line.append(f"  {name:15s} face PSNR {score:6.2f} dB over {n} faces, "
                            f"{m['counts'].get('identities', 0)} people, {dt:5.1f} s")
            print("\n".join(line), flush=True)


if __name__ == "__main__":
    main()
