"""A faster offline detector? MediaPipe's BlazeFace against dlib's HOG, on every dev clip.

    python bench/bench_blazeface.py --dlib DIR                       # the project's venv
    /path/to/other-venv/bin/python bench/bench_blazeface.py --mediapipe DIR

BlazeFace's weights ship inside the ``mediapipe`` wheel up to 0.10.14 (``mediapipe/modules/
face_detection/*.tflite``; later wheels download them). That wheel cannot join the project's
environment: it pins protobuf < 5 (ours is 7) and brings jax, matplotlib and a second OpenCV
(``opencv-contrib-python``). So the two detectors run in two environments: ``--dlib`` (the
project's) writes, per clip, the HOG faces of every 5th of the first 150 frames and the detector's
seconds; ``--mediapipe`` (a venv with only ``mediapipe==0.10.14``, ``av`` and ``numpy``) runs both
BlazeFace models on the same frames and prints per clip: milliseconds a frame of each detector,
the HOG faces BlazeFace also finds (its box holds their landmark centre at 0.5-2x their width)
and the BlazeFace boxes that match no HOG face.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import real_data_root  # noqa: E402  (plain paths: both environments)

FRAMES, STEP = 150, 5
VIDEOS = real_data_root() / "videos"


def dlib_side(out: Path) -> None:
    from worker.config import load_config
    from worker.item.pipeline import Engine
    from worker.media.video import iter_frames, probe_video

    engine = Engine(load_config(None, ["progress=false"]))
    for path in sorted(VIDEOS.glob("*.mp4")):
        info = probe_video(str(path), engine.cfg.limits)
        rows, seconds, n = [], 0.0, 0
        for frame in itertools.islice(iter_frames(str(path), info), 0, FRAMES, STEP):
            t = time.perf_counter()
            faces = engine.analyzer.analyze(frame.image, embed=False)
            seconds += time.perf_counter() - t
            n += 1
            rows += [(frame.index, *f.bbox, *f.kps.mean(axis=0)) for f in faces]
        np.savez(out / f"{path.stem}.npz", faces=np.array(rows, np.float32).reshape(-1, 7),
                 ms=seconds / n * 1000)
        print(f"{path.stem[:44]:44} {len(rows):4d} faces {seconds / n * 1000:6.0f} ms a frame", flush=True)


def mediapipe_side(out: Path) -> None:
    import av
    import mediapipe as mp

    for model, name in ((0, "short range"), (1, "full range")):
        recalls = []
        for path in sorted(VIDEOS.glob("*.mp4")):
            ref = np.load(out / f"{path.stem}.npz")
            hog, found, extra, seconds, n = ref["faces"], 0, 0, 0.0, 0
            with mp.solutions.face_detection.FaceDetection(model_selection=model) as det, \
                    av.open(str(path)) as container:
                for i, frame in enumerate(itertools.islice(container.decode(video=0), FRAMES)):
                    if i % STEP:
                        continue
                    rgb = frame.to_ndarray(format="rgb24")
                    h, w = rgb.shape[:2]
                    t = time.perf_counter()
                    result = det.process(rgb)
                    seconds += time.perf_counter() - t
                    n += 1
                    boxes = [(b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h)
                             for b in (d.location_data.relative_bounding_box
                                       for d in result.detections or [])]
                    used: set[int] = set()
                    for row in hog[hog[:, 0] == i]:
                        width, cx, cy = row[3] - row[1], row[5], row[6]
                        for k, (x1, y1, x2, y2) in enumerate(boxes):
                            if k not in used and x1 <= cx <= x2 and y1 <= cy <= y2 \
                                    and 0.5 <= (x2 - x1) / width <= 2:
                                used.add(k)
                                found += 1
                                break
                    extra += len(boxes) - len(used)
            recalls.append(found / max(len(hog), 1))
            print(f"{name:11} {path.stem[:40]:40} HOG {float(ref['ms']):5.0f} ms, BlazeFace "
                  f"{seconds / n * 1000:4.1f} ms; of {len(hog):3d} HOG faces found {found:3d}, "
                  f"{extra} more", flush=True)
        print(f"{name}: recall of the HOG faces mean {np.mean(recalls):.3f} (least {min(recalls):.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    side = ap.add_mutually_exclusive_group(required=True)
    side.add_argument("--dlib", type=Path, metavar="DIR")
    side.add_argument("--mediapipe", type=Path, metavar="DIR")
    args = ap.parse_args()
    if args.dlib:
        args.dlib.mkdir(parents=True, exist_ok=True)
        dlib_side(args.dlib)
    else:
        mediapipe_side(args.mediapipe)


if __name__ == "__main__":
    main()
