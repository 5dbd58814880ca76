"""Ray job figures: one video restored with 1 vs 2 analysis actors (analysis-time ratio), and the
driver's peak RSS over a long video (it must stay flat: only face records reach the driver).

    python -m bench.bench_ray [--frames 120] [--long-frames 600] [--cpus 2]

Prints one line per run and the ratio; numbers are from one run on this machine.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path

import ray

from jobs.restore import run_job
from tests.mediagen import FaceScene
from tests.test_segments import gop_video
from worker import archive
from worker.ray_adapter import PoolOptions

SETS = ["progress=false", "restore.crop_size=256"]


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; no psutil needed)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Samples this process's RSS every 50 ms (ru_maxrss would include the setup's peak)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def one_run(video: Path, out: Path, analysis_actors: int, cpus: float, segment_frames: int) -> dict:
    items = archive.list_prefix(str(video.parent))
    items = [i for i in items if i.uri.endswith(video.name)]
    opts = PoolOptions(analysis_actors, 1, cpus, 0.5, 0.0, segment_frames)
    with PeakRss() as rss:
        t = time.monotonic()
        summary = run_job(items, str(out), None, SETS, opts, force=True)
        wall = time.monotonic() - t
    assert summary["done"] == 1, summary
    manifest = (out / summary["results"][0]["item_id"] / "manifest.json").read_text()
    import json

    timings = json.loads(manifest)["timings"]
    return {"wall": wall, "analyse": timings["analyse"], "restore": timings["restore"],
            "peak_rss_mib": rss.peak / 2**20}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--long-frames", type=int, default=600)
    p.add_argument("--cpus", type=int, default=2)
    args = p.parse_args()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        scene = FaceScene(persons=("t1_2", "hanks"), size=(320, 256), face_px=100)
        (d / "short").mkdir()
        clip = gop_video(scene, d / "short" / "clip.mp4", args.frames, gop=12)
        res = {}
        for n in (1, 2):
            # each actor reserves cpus/n so both runs use the same cores
            res[n] = one_run(clip, d / f"out{n}", n, args.cpus / n / 2, 24)
            print(f"{args.frames} frames, {n} analysis actor(s): analyse {res[n]['analyse']:.1f} s, "
                  f"restore {res[n]['restore']:.1f} s, wall {res[n]['wall']:.1f} s")
        print(f"analysis speed-up 2 vs 1 actors: {res[1]['analyse'] / res[2]['analyse']:.2f}x")
        (d / "long").mkdir()
        long_clip = gop_video(scene, d / "long" / "long.mp4", args.long_frames, gop=25)
        base = rss_bytes() / 2**20
        r = one_run(long_clip, d / "outlong", 2, args.cpus / 4, 100)
        print(f"{args.long_frames} frames: driver RSS before {base:.0f} MiB, peak {r['peak_rss_mib']:.0f} MiB "
              f"(+{r['peak_rss_mib'] - base:.0f} MiB); wall {r['wall']:.1f} s; "
              f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    ray.shutdown()


if __name__ == "__main__":
    main()
