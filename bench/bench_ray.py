"""Ray job figures: one video restored with 1 vs 2 analysis actors (analysis-time ratio), the
driver's peak RSS and the object store's peak over long videos of two lengths (frames never cross
the object store: only face records, candidate and reference crops and report thumbnails do, so
the store's peak is a few MiB per segment, far below the frames' size, and the driver's RSS stays
flat), and the restorer's batch occupancy (faces per restorer call / ``restore.batch_size``, from
the restore actors' ``RestoreWorker.stats``).

    python -m bench.bench_ray [--frames 96] [--long-frames 300 600] [--cpus 2]

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
from worker.cluster.ray_pools import PoolOptions, Pools
from worker.collection import archive
from worker.config import load_config

SETS = ["progress=false", "restore.crop_size=256"]


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; no psutil needed)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _Sampler:
    """Calls ``_sample`` every 50 ms in a thread while the ``with`` block runs, and once more at
    its end."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


class PeakRss(_Sampler):
    """This process's peak RSS (ru_maxrss would include the setup's peak)."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0

    def _sample(self) -> None:
        self.peak = max(self.peak, rss_bytes())


class PeakObjectStore(_Sampler):
    """The object store (plasma) usage of the whole cluster: the bytes the ``ray memory
    --stats-only`` line "Plasma memory usage N MiB" reports, read in bytes from the same raylet
    reply (``internal_api.get_memory_info_reply``; one call takes a few ms). Objects under
    100 KiB live in the owner's in-process store and never show up here."""

    def __init__(self) -> None:
        from ray._private import internal_api

        super().__init__()
        self._api = internal_api
        self._state = internal_api.get_state_from_address(ray.get_runtime_context().gcs_address)
        self.peak = self.peak_objects = self.created = 0
        self.base = self._stats().object_store_bytes_used
        self._created0 = self._stats().cumulative_created_bytes

    def _stats(self):
        return self._api.get_memory_info_reply(self._state).store_stats

    def _sample(self) -> None:
        st = self._stats()
        self.peak = max(self.peak, st.object_store_bytes_used)
        self.peak_objects = max(self.peak_objects, st.num_local_objects)
        self.created = st.cumulative_created_bytes - self._created0


def one_run(video: Path, out: Path, analysis_actors: int, cpus: float, segment_frames: int) -> dict:
    items = archive.list_prefix(str(video.parent))
    items = [i for i in items if i.uri.endswith(video.name)]
    opts = PoolOptions(analysis_actors, 1, cpus, 0.5, 0.0, segment_frames)
    pools = Pools(load_config(None, SETS), opts)  # ours, to ask the restore actors for their stats
    try:
        with PeakRss() as rss, PeakObjectStore() as store:
            t = time.monotonic()
            summary = run_job(items, str(out), None, SETS, opts, force=True, pools=pools)
            wall = time.monotonic() - t
        batches = [ray.get(a.stats.remote()) for a in pools.restore.up]
    finally:
        pools.shutdown()
    assert summary["done"] == 1, summary
    manifest = (out / summary["results"][0]["item_id"] / "manifest.json").read_text()
    import json

    timings = json.loads(manifest)["timings"]
    b = {k: sum(s.get(k, 0) for s in batches) for k in ("runs", "calls", "faces", "slots")}
    return {"wall": wall, "analyse": timings["analyse"], "restore": timings["restore"],
            "peak_rss_mib": rss.peak / 2**20, "store_peak_mib": store.peak / 2**20,
            "store_base_mib": store.base / 2**20, "store_objects": store.peak_objects,
            "store_created_mib": store.created / 2**20, "batches": b}


def occupancy(r: dict) -> str:
    b = r["batches"]
    if not b["calls"]:
        return "restorer: no calls"
    return (f"restorer: {b['calls']} calls, {b['faces']} faces, mean {b['faces'] / b['calls']:.2f} "
            f"faces/call, occupancy {b['faces'] / b['slots']:.1%} of {b['slots']} slots "
            f"(batch_size {b['slots'] // b['calls']}; {b['runs']} flushes)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--long-frames", type=int, nargs="+", default=[300, 600])
    p.add_argument("--cpus", type=int, default=2)
    args = p.parse_args()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    batch_size = load_config(None, SETS).restore.batch_size
    print(f"restore.batch_size {batch_size}, {' '.join(SETS)}")
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
                  f"restore {res[n]['restore']:.1f} s, wall {res[n]['wall']:.1f} s; {occupancy(res[n])}")
        print(f"analysis speed-up 2 vs 1 actors: {res[1]['analyse'] / res[2]['analyse']:.2f}x")
        for frames in args.long_frames:
            (d / f"long{frames}").mkdir()
            long_clip = gop_video(scene, d / f"long{frames}" / "long.mp4", frames, gop=25)
            size = long_clip.stat().st_size / 2**20
            base = rss_bytes() / 2**20
            r = one_run(long_clip, d / f"outlong{frames}", 2, args.cpus / 4, 100)
            print(f"{frames} frames ({scene.size[0]}x{scene.size[1]}, {size:.1f} MiB file): "
                  f"driver RSS before {base:.0f} MiB, peak {r['peak_rss_mib']:.0f} MiB "
                  f"(+{r['peak_rss_mib'] - base:.0f} MiB); object store before "
                  f"{r['store_base_mib']:.2f} MiB, peak {r['store_peak_mib']:.2f} MiB "
                  f"(at most {r['store_objects']} objects, {r['store_created_mib']:.2f} MiB created "
                  f"in all); wall {r['wall']:.1f} s; "
                  f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
            print(f"  {occupancy(r)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
