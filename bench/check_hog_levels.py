"""Does searching only a face's scales find it as dlib's whole search does? On every dev clip.

    python bench/check_hog_levels.py [VIDEO ...] [--frames 150] [--every 10]

Two checks per clip (default: every clip of ``../shared/data/videos``):

1. Faces: on every ``--every``-th of the first ``--frames`` frames, each face HOG's whole search
   finds (upsample as configured) is looked for again with ``near`` set to its box side
   (``worker.faces.hog_levels``): same box and same score, or not. Prints the seconds of both
   searches (one core).
2. Planning: the default (fast) analysis, then the planning step twice on copies of it, looking
   again at the reference contenders once with the scale-limited search and once with the whole
   one: the same faces looked at, the same measures (to 1e-12) and the same references, or not;
   and the planning seconds of both.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import real_data_root  # noqa: E402
from worker.config import load_config  # noqa: E402
from worker.faces import dlib_backend  # noqa: E402
from worker.item.pipeline import Engine  # noqa: E402
from worker.media.video import iter_frames, probe_video  # noqa: E402
from worker.stages.analyse import analyse_video, look_again  # noqa: E402
from worker.stages.plan import plan_video  # noqa: E402


def faces_alike(path: str, analyzer, cfg, frames: int, every: int) -> tuple[int, int, float, float]:
    """(faces found alike, faces, seconds whole, seconds limited) on the sampled frames."""
    info = probe_video(path, cfg.limits)
    same = total = 0
    whole_s = near_s = 0.0
    for frame in itertools.islice(iter_frames(path, info), 0, frames, every):
        rgb = dlib_backend.to_dlib_rgb(frame.image)
        t = time.perf_counter()
        boxes, scores = analyzer.detect(rgb)
        whole_s += time.perf_counter() - t
        for box, score in zip(boxes, scores, strict=True):
            t = time.perf_counter()
            b2, s2 = analyzer.detect(rgb, near=float(min(box[2] - box[0], box[3] - box[1])))
            near_s += time.perf_counter() - t
            total += 1
            same += any(np.array_equal(box, b) and s == score for b, s in zip(b2, s2, strict=True))
    return same, total, whole_s, near_s


def plans_alike(path: str, analyzer, cfg, frames: int) -> tuple[bool, int, dict, float, float]:
    """(alike, faces looked at, references by person, planning seconds limited, whole)."""
    info = probe_video(path, cfg.limits)
    a = analyse_video(path, info, analyzer, cfg, itertools.islice(iter_frames(path, info), frames))
    out = {}
    for mode in ("near", "whole"):
        looked: list = []
        again = look_again(path, info, lambda: analyzer, cfg)

        def measured(faces, again=again, looked=looked):
            found = again(faces)
            looked.extend((c.face.frame, c.face.track, round(c.face.quality, 12)) for c in found)
            return found

        skip = dlib_backend.levels_to_skip if mode == "near" else (lambda side, upsample: 0)
        with mock.patch.object(dlib_backend, "levels_to_skip", skip):
            t = time.perf_counter()
            people = plan_video(copy.deepcopy(a), cfg, measured)
            seconds = time.perf_counter() - t
        out[mode] = (sorted(looked), {i.id: sorted(r.frame for r in i.references) for i in people}, seconds)
    near, whole = out["near"], out["whole"]
    return near[:2] == whole[:2], len(near[0]), near[1], near[2], whole[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--every", type=int, default=10)
    args = ap.parse_args()
    clips = args.videos or [str(p) for p in sorted((real_data_root() / "videos").glob("*.mp4"))]
    if not clips:
        sys.exit(f"no clip given and none found in {real_data_root() / 'videos'}")
    engine = Engine(load_config(None, ["progress=false"]))
    cfg, analyzer = engine.cfg, engine.analyzer
    if not isinstance(analyzer, dlib_backend.DlibAnalyzer) or cfg.detect.dlib_detector != "hog":
        sys.exit("this checks dlib's HOG detector: run it with the default detect settings")
    totals = np.zeros(4)
    plans = 0
    for path in clips:
        same, total, whole_s, near_s = faces_alike(path, analyzer, cfg, args.frames, args.every)
        alike, looked, refs, near_p, whole_p = plans_alike(path, analyzer, cfg, args.frames)
        totals += (same, total, whole_s, near_s)
        plans += alike
        print(f"{Path(path).stem[-44:]:44} faces alike {same}/{total} (search {whole_s:.2f} s -> "
              f"{near_s:.2f} s for each face); plan alike {'yes' if alike else 'NO'} ({looked} looked at "
              f"again, planning {whole_p:.2f} s -> {near_p:.2f} s) references {refs}", flush=True)
    print(f"faces alike {int(totals[0])} of {int(totals[1])}; plans alike {plans} of {len(clips)}")


if __name__ == "__main__":
    main()
