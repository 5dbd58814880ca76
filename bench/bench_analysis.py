"""Analysis speed against the per-frame path, and what the faster settings cost.

    python bench/bench_analysis.py [VIDEO ...] [--frames 150] [--set K=V ...] [--actors] [--shift PX]

Runs pass 1 (decode, detect or refine, landmarks, embedding, quality, tracking) and the planning
step (identities, references, with the contenders measured between detections measured again:
``worker.stages.analyse.look_again``), both timed, on each clip (default: every clip of
``../shared/data/videos``) twice: the per-frame path (detector and embedding on every face of every frame:
``detect.stride=1 track.embed_every=1 detect.thorough_every=1``), then with ``--set`` (default: the worker's defaults).
Per clip: frames/s of both and the speed-up; face recall (the share of per-frame faces the fast
run also has, IoU >= 0.5 in the same frame), the same share of the per-frame faces that dlib's CNN
face detector confirms on their aligned crops ("faces": the per-frame path follows some tracks
onto background once the face turns away), and the landmark difference on those (percent of the
face size); embeddings computed; people found by both; whether the faces are the same (every
per-frame face found at the same box with the same landmarks, none more), the tracks and the
identities the same (matched faces grouped alike, up to naming) and the references the same
(the frames each person's references were cut from; "near": each within NEAR_FRAMES frames of
one of the per-frame path's; where they differ, the mean quality of the fast run's references
over the per-frame path's, both as the per-frame path measured them), and whether each person's
best reference of the per-frame path is among the fast run's (within NEAR_FRAMES frames; where
not, the quality of the fast run's best over it, both as the per-frame path measured them).

``--shift PX`` also runs the per-frame path on each clip's frames moved PX px right and down
(the edge pixels repeated; the same faces, the detector's grid and the landmark fits' starting
boxes a few px off) and compares it with the unmoved per-frame run the same way: how far the
per-frame path agrees with itself, the yardstick for the fast run's agreement with it.

The film projection: a 100-minute 24 fps film (144,000 frames) at the mean frames/s of the clips
of 720 px or more, on 2 cores, and on a 16-core node with one single-threaded analysis actor a
core. ``--actors`` measures that scaling here: one clip analysed by one process, then by two at
once (Ray's actors are processes), and prints the throughput ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import multiprocessing as mp
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import real_data_root  # noqa: E402
from worker.config import PER_FRAME, load_config  # noqa: E402
from worker.faces.verify import face_confidence_at  # noqa: E402
from worker.item.pipeline import Engine  # noqa: E402
from worker.media.video import iter_frames, probe_video  # noqa: E402
from worker.stages.analyse import analyse_video, look_again  # noqa: E402
from worker.stages.plan import plan_video  # noqa: E402
from worker.stages.track import iou  # noqa: E402

FILM_FRAMES = 100 * 60 * 24
# references "near": each within this many frames of one of the per-frame path's (a neighbouring
# frame of the same moment, whose quality differs by the landmark noise)
NEAR_FRAMES = 2


def run(path: str, sets: list[str], frames: int, shift: int = 0) -> dict:
    """One analysis and planning of the first ``frames`` frames of ``path`` with ``sets``;
    ``shift`` > 0: on the frames moved that many px right and down (edge pixels repeated), the
    faces' boxes and points moved back (the per-frame path only: nothing is looked at again)."""
    engine = Engine(load_config(None, ["progress=false", *sets]))
    cfg, analyzer = engine.cfg, engine.analyzer  # thresholds calibrated for the backend
    info = probe_video(path, cfg.limits)
    t = time.perf_counter()
    decoded = itertools.islice(iter_frames(path, info), frames)
    a = analyse_video(path, info, analyzer, cfg, _shifted(decoded, shift) if shift else decoded)
    # the candidates measured between detections are measured again, as the worker does
    people = plan_video(a, cfg, None if shift else look_again(path, info, lambda: analyzer, cfg))
    seconds = time.perf_counter() - t
    for f in a.faces if shift else []:
        f.bbox, f.kps = f.bbox - shift, f.kps - shift
    refs = {i.id: sorted(r.frame for r in i.references) for i in people}
    best = {i.id: min(i.references, key=lambda r: r.rank).frame for i in people if i.references}
    return {"a": a, "s": seconds, "people": people, "refs": refs, "best": best, "height": info.height}


def _shifted(frames, px: int):
    for fr in frames:
        h, w = fr.image.shape[:2]
        moved = np.pad(fr.image, ((px, 0), (px, 0), (0, 0)), mode="edge")[:h, :w]
        yield dataclasses.replace(fr, image=np.ascontiguousarray(moved))


def confirm(path: str, faces: list, frames: int) -> set[int]:
    """Positions in ``faces`` (the per-frame run's) that dlib's CNN face detector confirms on
    their aligned crops (``worker.faces.verify``): the per-frame path also follows tracks onto
    background or onto a neighbour once a face turns away (its embedding check passes on 50 px
    faces), and those are no face to recall."""
    by_frame = defaultdict(list)
    for i, f in enumerate(faces):
        by_frame[f.frame].append(i)
    info = probe_video(path, load_config(None, []).limits)
    out = set()
    for frame in itertools.islice(iter_frames(path, info), frames):
        out |= {i for i in by_frame[frame.index] if face_confidence_at(frame.image, faces[i].kps) >= 0}
    return out


def compare(ref: dict, fast: dict, faces: set[int] | None = None) -> dict:
    """Recall, landmark difference and identity/reference agreement of ``fast`` against ``ref``;
    ``faces``: the positions of the per-frame faces confirmed as faces, for a second recall."""
    by_frame = defaultdict(list)
    for f in fast["a"].faces:
        by_frame[f.frame].append(f)
    pairs, err, found = [], [], set()
    for i, f in enumerate(ref["a"].faces):
        cands = by_frame.get(f.frame, [])
        if not cands:
            continue
        ov = iou(f.bbox[None], np.stack([c.bbox for c in cands]))[0]
        j = int(ov.argmax())
        if ov[j] >= 0.5:
            pairs.append((f, cands[j]))
            found.add(i)
            err.append(np.linalg.norm(cands[j].kps - f.kps, axis=1).mean() / max(f.size, 1) * 100)
    def one_to_one(key) -> tuple[bool, dict]:
        fwd, back = defaultdict(set), defaultdict(set)
        for f, g in pairs:
            fwd[key(f)].add(key(g))
            back[key(g)].add(key(f))
        return all(len(v) == 1 for v in fwd.values()) and all(len(v) == 1 for v in back.values()), fwd

    same_tracks = one_to_one(lambda f: f.track)[0] and len(ref["a"].tracks) == len(fast["a"].tracks)
    ok, fwd = one_to_one(lambda f: f.identity)
    same_people = ok and len(ref["people"]) == len(fast["people"])
    same_refs = same_people and all(
        ref["refs"].get(i) == fast["refs"].get(next(iter(fwd[i])))
        for i in ref["refs"] if i in fwd)
    near_refs = same_people and all(
        _near(ref["refs"].get(i, []), fast["refs"].get(next(iter(fwd[i])), []))
        for i in ref["refs"] if i in fwd)
    # each person's best reference of the per-frame path is among the fast run's (within
    # NEAR_FRAMES): the restore stage picks a face's reference among them
    best_kept = same_people and all(
        any(abs(b - k) <= NEAR_FRAMES for k in fast["refs"].get(next(iter(fwd[i])), []))
        for i, b in ref["best"].items() if i in fwd)
    # the quality (as the per-frame path measured it) of the fast run's references over that of
    # the per-frame path's own, per person: near-equal candidates swap places on landmark noise
    quality = {(f.identity, f.frame): f.quality for f in ref["a"].faces}
    ratios = []
    for i, frames in ref["refs"].items():
        theirs = [quality.get((i, k)) for k in fast["refs"].get(next(iter(fwd[i])), [])] if i in fwd else []
        if frames and theirs and None not in theirs:
            ratios.append(np.mean(theirs) / np.mean([quality[(i, k)] for k in frames]))
    # where the best is not kept: the fast run's best (the per-frame path's measure) over it
    best_q = [max((quality.get((i, k), 0.0) for k in fast["refs"].get(next(iter(fwd[i])), [])), default=0.0)
              / quality[(i, b)] for i, b in ref["best"].items() if i in fwd]
    n = len(ref["a"].faces)
    return {"recall": len(pairs) / max(n, 1),
            "recall_faces": len(found & faces) / max(len(faces), 1) if faces is not None else float("nan"),
            "lm_err": float(np.mean(err)) if err else float("nan"),
            "same_tracks": same_tracks, "same_people": same_people, "same_refs": same_refs,
            "near_refs": near_refs, "best_kept": best_kept, "ref_quality": min(ratios, default=float("nan")),
            "best_quality": min(best_q, default=float("nan")),
            "same_faces": n == len(fast["a"].faces) == len(pairs) and not any(err)}


def _agreement(c: dict) -> str:
    return f"{c['recall']:6.3f} {c['recall_faces']:6.3f} {c['lm_err']:5.2f}"


def _sameness(c: dict) -> str:
    refs = "" if c["same_refs"] else (" (near" if c["near_refs"] else " (other frames") + \
        f"; their quality x{c['ref_quality']:.3f})"
    refs += "" if c["best_kept"] else f" (best: x{c['best_quality']:.3f} the per-frame best's quality)"
    keys = ("same_faces", "same_tracks", "same_people", "same_refs", "best_kept")
    return "/".join("yes" if c[k] else "NO" for k in keys) + refs


def _summary(rows: list[dict]) -> str:
    n = len(rows)
    return (f"recall mean {np.mean([r['recall'] for r in rows]):.3f} (least {min(r['recall'] for r in rows):.3f}), "
            f"of the confirmed faces {np.mean([r['recall_faces'] for r in rows]):.3f} "
            f"(least {min(r['recall_faces'] for r in rows):.3f}); "
            f"same faces {sum(r['same_faces'] for r in rows)}/{n}, same tracks {sum(r['same_tracks'] for r in rows)}/{n}, "
            f"same identities {sum(r['same_people'] for r in rows)}/{n}, "
            f"same references {sum(r['same_refs'] for r in rows)}/{n} "
            f"(within {NEAR_FRAMES} frames {sum(r['near_refs'] for r in rows)}/{n}; where they "
            f"differ, their quality x{_least(r['ref_quality'] for r in rows):.3f} at least), "
            f"each person's best reference kept {sum(r['best_kept'] for r in rows)}/{n} (where not, the "
            f"other run's best has x{_least(r['best_quality'] for r in rows if not r['best_kept']):.3f} "
            f"its quality at least)")


def _least(values) -> float:
    """The least of ``values`` that is a number; nan when none is."""
    return min((v for v in values if not np.isnan(v)), default=float("nan"))


def _near(a: list[int], b: list[int], frames: int = NEAR_FRAMES) -> bool:
    """Whether two lists of reference frames pair up one to one within ``frames`` of each other."""
    return len(a) == len(b) and all(abs(x - y) <= frames for x, y in zip(sorted(a), sorted(b), strict=True))


def _actor(path: str, sets: list[str], frames: int, q) -> None:
    q.put(run(path, sets, frames)["s"])


def actor_scaling(path: str, sets: list[str], frames: int) -> float:
    """Throughput of two analysis processes at once over one alone, on the same clip (each
    process times its own analysis, so start-up and model loading are left out)."""
    ctx = mp.get_context("spawn")
    out = []
    for n in (1, 2):
        q = ctx.Queue()
        procs = [ctx.Process(target=_actor, args=(path, sets, frames, q)) for _ in range(n)]
        for p in procs:
            p.start()
        seconds = [q.get() for _ in procs]
        for p in procs:
            p.join()
        out.append(n * frames / max(seconds))
    return out[1] / out[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--set", action="append", default=[], metavar="K=V", help="the fast run's config")
    ap.add_argument("--actors", action="store_true", help="also measure 1 -> 2 analysis processes")
    ap.add_argument("--shift", type=int, default=0, metavar="PX",
                    help="also run the per-frame path on the frames moved PX px and compare it with itself")
    args = ap.parse_args()
    clips = args.videos or [str(p) for p in sorted((real_data_root() / "videos").glob("*.mp4"))]
    if not clips:
        sys.exit(f"no clip given and none found in {real_data_root() / 'videos'}")
    print(f"fast run: {' '.join(args.set) or 'the defaults'}; {args.frames} frames a clip")
    print(f"{'clip':44} {'px':>5} {'fps 1':>6} {'fps':>6} {'x':>5} {'recall':>6} {'faces':>6} {'lm %':>5} "
          f"{'embedded':>9} {'people':>7} same faces/tracks/ids/refs/best ref kept")
    rows, selves = [], []
    for path in clips:
        ref, fast = run(path, PER_FRAME, args.frames), run(path, args.set, args.frames)
        confirmed = confirm(path, ref["a"].faces, args.frames)
        c = compare(ref, fast, confirmed)
        n = ref["a"].n_frames
        row = {"clip": Path(path).stem, "height": ref["height"], "fps1": n / ref["s"], "fps": n / fast["s"], **c}
        rows.append(row)
        print(f"{row['clip'][-44:]:44} {row['height']:5d} {row['fps1']:6.2f} {row['fps']:6.2f} "
              f"{row['fps'] / row['fps1']:5.2f} {_agreement(c)} "
              f"{fast['a'].embedded:4d}/{len(fast['a'].faces):<4d} {len(ref['people']):3d}/{len(fast['people']):<3d} "
              f"{_sameness(c)}", flush=True)
        if args.shift:
            again = run(path, PER_FRAME, args.frames, args.shift)
            selves.append(compare(ref, again, confirmed))
            print(f"{'  per frame, moved ' + str(args.shift) + ' px':44} {'':5} {'':6} {'':6} {'':5} "
                  f"{_agreement(selves[-1])} {'':9} {len(ref['people']):3d}/{len(again['people']):<3d} "
                  f"{_sameness(selves[-1])}", flush=True)
    speed = [r["fps"] / r["fps1"] for r in rows]
    print(f"speed-up mean x{np.mean(speed):.2f} (least x{min(speed):.2f}); {_summary(rows)}")
    if selves:
        print(f"the per-frame path against itself on frames moved {args.shift} px: {_summary(selves)}")
    big = [r for r in rows if r["height"] >= 720] or rows
    for key, name in (("fps1", "per-frame"), ("fps", "fast")):
        fps = float(np.mean([r[key] for r in big]))
        print(f"film (144,000 frames) {name}: {fps:.2f} frames/s on this machine -> "
              f"{FILM_FRAMES / fps / 3600:.1f} h in one process")
    if args.actors:
        ratio = actor_scaling(clips[0], args.set, args.frames)
        fps = float(np.mean([r["fps"] for r in big]))
        print(f"two analysis processes at once: x{ratio:.2f} the throughput of one "
              f"({Path(clips[0]).stem}); a 16-core node with 16 such actors, if scaling held: "
              f"{FILM_FRAMES / (fps * 16 * ratio / 2) / 3600:.2f} h")


if __name__ == "__main__":
    main()
