"""Peak memory does not grow with the video's length.

Generates a short clip and one 10x longer (same scene, two people, with audio), then runs on
each, in a fresh subprocess, either decode + re-encode (iter_frames + VideoRewriter) or, with
``--pipeline``, the whole worker (analysis, planning, restoration: guided unless ``--set``
says otherwise, encoding, outputs), and reads the subprocess's peak RSS (VmHWM).

    python bench/bench_memory.py [--pipeline [--set KEY=VALUE ...]] [--frames 50]   (320x240, 25 fps)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PIPELINE_CHILD = """
import sys, tempfile
sys.path.insert(0, {root!r})
from worker.config import load_config
from worker.item.pipeline import restore_item
src, dst = sys.argv[1], sys.argv[2]
res = restore_item(src, dst, load_config(None, ["progress=false", *sys.argv[3:]]))
assert res.status == "ok", res.errors
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(int(hwm.split()[1]) // 1024, res.counts["frames"])
"""

CHILD = """
import sys
sys.path.insert(0, {root!r})
from worker.config import LimitsConfig, OutputConfig
from worker.media.video import VideoRewriter, iter_frames, probe_video
src, dst = sys.argv[1], sys.argv[2]
info = probe_video(src, LimitsConfig())
with VideoRewriter(src, dst, info, OutputConfig()) as w:
    for frame in iter_frames(src, info):
        w.write(frame)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(int(hwm.split()[1]) // 1024, w.frames_written)
"""


def peak_rss_mib(src: Path, dst: Path, child: str, sets: list[str]) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", child.format(root=str(ROOT)), str(src), str(dst), *sets],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1]), time.perf_counter() - t0


def main() -> None:
    from tests.mediagen import FaceScene, write_video

    ap = argparse.ArgumentParser()
    ap.add_argument("--pipeline", action="store_true", help="the whole worker, not just decode+encode")
    ap.add_argument("--frames", type=int, default=50, help="length of the short clip")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for --pipeline (e.g. restorer=refstar restore.adapt_steps=20)")
    args = ap.parse_args()
    if args.set and not args.pipeline:
        ap.error("--set needs --pipeline")
    short, child = args.frames, PIPELINE_CHILD if args.pipeline else CHILD
    print("whole worker" if args.pipeline else "decode + re-encode")
    scene = FaceScene(["t1_2", "hanks"], size=(320, 240), face_px=90)
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for n in (short, short * 10):
            src = Path(tmp) / f"src_{n}.mp4"
            write_video(scene, src, n)
            dst = Path(tmp) / (f"out_{n}" if args.pipeline else f"out_{n}.mp4")
            mib, frames, secs = peak_rss_mib(src, dst, child, args.set)
            results.append(mib)
            print(f"{frames:5d} frames ({frames / 25:.0f} s): peak RSS {mib} MiB ({secs:.1f} s)")
        print(f"ratio long / short peak RSS: {results[1] / results[0]:.2f} (1.00 = flat)")


if __name__ == "__main__":
    main()
