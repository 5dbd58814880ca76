"""Peak memory of decode + re-encode does not grow with the video's length.

Generates a short clip and one 10x longer (same scene, with audio), then runs
iter_frames + VideoRewriter on each in a fresh subprocess and reads its peak RSS (VmHWM).

    python bench/bench_memory.py [short_frames]   (default 50 frames of 320x240 at 25 fps)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def peak_rss_mib(src: Path, dst: Path) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), str(src), str(dst)],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1]), time.perf_counter() - t0


def main() -> None:
    from tests.mediagen import FaceScene, write_video

    short = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    scene = FaceScene(["t1_2", "hanks"], size=(320, 240), face_px=90)
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for n in (short, short * 10):
            src = Path(tmp) / f"src_{n}.mp4"
            write_video(scene, src, n)
            mib, frames, secs = peak_rss_mib(src, Path(tmp) / f"out_{n}.mp4")
            results.append(mib)
            print(f"{frames:5d} frames ({frames / 25:.0f} s): peak RSS {mib} MiB ({secs:.1f} s)")
        print(f"ratio long / short peak RSS: {results[1] / results[0]:.2f} (1.00 = flat)")


if __name__ == "__main__":
    main()
