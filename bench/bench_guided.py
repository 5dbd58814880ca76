"""What ``guided`` costs a face on real clips, and what its wide-blur shortcut changes.

    python bench/bench_guided.py [VIDEO ...] [--faces 5]

Per strength of the quality suite (x2, x4, x8: the face region of the frame degraded as
``bench/_suite_media.py`` does), on aligned 512 px faces of each clip (default: every clip of
``../shared/data/videos``; the largest face of ``--faces`` frames spread over its first 60,
each restored with the other frames' clean faces as its references): seconds a face for
``pick_reference`` among 4 references and for the restore with the one picked, with the wide
Gaussians exact (``refstar.guided.LARGE_BLUR`` off) and shortened (the default), side by side in
one run; the speed-up; the PSNR between the two outputs (how far the shortcut moves a face) and
each one's PSNR gain over the degraded face against the clean one; whether the picks agree.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import real_data_root  # noqa: E402
from bench._suite_media import STRENGTHS, degrade_regions  # noqa: E402
from refstar import guided  # noqa: E402
from refstar.align import estimate_affine, warp_face  # noqa: E402
from refstar.metrics import psnr  # noqa: E402
from refstar.restorer import bgr_to_tensor, tensor_to_bgr  # noqa: E402
from worker.config import load_config  # noqa: E402
from worker.item.pipeline import Engine  # noqa: E402
from worker.media.video import iter_frames, probe_video  # noqa: E402

SIZE = 512
REFS = 4
LARGE_BLUR = guided.LARGE_BLUR


def faces_of(path: str, n: int, analyzer) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(frame, largest face box, its 5 landmarks) of ``n`` frames spread over the first 60."""
    info = probe_video(path, load_config(None, []).limits)
    step = max(1, 60 // n)
    out = []
    for frame in itertools.islice(iter_frames(path, info), 0, 60, step):
        found = analyzer.analyze(frame.image, embed=False)
        if found:
            f = max(found, key=lambda f: f.size)
            out.append((frame.image, f.bbox, f.kps))
    return out[:n]


def one(lq: np.ndarray, gt: np.ndarray, refs: list[np.ndarray], exact: bool) -> tuple:
    """(seconds to pick, seconds to restore, index picked, output) with the wide blurs exact or not."""
    guided.LARGE_BLUR = float("inf") if exact else LARGE_BLUR
    g = guided.GuidedRestorer()
    x, r = bgr_to_tensor([lq]), bgr_to_tensor(refs)
    t = time.perf_counter()
    i = g.pick_reference(x, r)
    t1 = time.perf_counter()
    out = tensor_to_bgr(g.restore(x, r[i:i + 1]).image)[0]
    return t1 - t, time.perf_counter() - t1, i, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*")
    ap.add_argument("--faces", type=int, default=5, help="faces a clip (the first 60 frames)")
    args = ap.parse_args()
    clips = args.videos or [str(p) for p in sorted((real_data_root() / "videos").glob("*.mp4"))]
    if not clips:
        sys.exit(f"no clip given and none found in {real_data_root() / 'videos'}")
    analyzer = Engine(load_config(None, ["progress=false"])).analyzer
    rows: dict[str, list] = {s: [] for s in STRENGTHS}
    for path in clips:
        faces = faces_of(path, args.faces + REFS, analyzer)
        if len(faces) < 2:
            print(f"{Path(path).stem}: fewer than 2 faces found, skipped")
            continue
        clean = [warp_face(img, estimate_affine(kps, SIZE), SIZE) for img, _, kps in faces]
        for k, (img, box, kps) in enumerate(faces[: args.faces]):
            refs = [c for j, c in enumerate(clean) if j != k][:REFS]
            for name, params in STRENGTHS.items():
                lq = warp_face(degrade_regions(img, box[None], params, seed=k), estimate_affine(kps, SIZE), SIZE)
                ex, fa = one(lq, clean[k], refs, True), one(lq, clean[k], refs, False)
                base = psnr(lq, clean[k])
                rows[name].append((ex[0], fa[0], ex[1], fa[1], ex[2] == fa[2], psnr(ex[3], fa[3]),
                                   psnr(ex[3], clean[k]) - base, psnr(fa[3], clean[k]) - base))
        print(f"{Path(path).stem}: {min(len(faces), args.faces)} faces", flush=True)
    guided.LARGE_BLUR = LARGE_BLUR
    print(f"\n{'':4} {'faces':>5} {'pick s exact/short':>19} {'restore s exact/short':>22} {'x':>5} "
          f"{'same pick':>9} {'exact vs short dB (least)':>25} {'gain dB exact/short':>20}")
    for name, r in rows.items():
        if not r:
            continue
        a = np.array(r, np.float64)
        whole = (a[:, 0] + a[:, 2]).sum() / (a[:, 1] + a[:, 3]).sum()
        print(f"{name:4} {len(a):5d} {a[:, 0].mean():9.3f}/{a[:, 1].mean():<9.3f} "
              f"{a[:, 2].mean():11.3f}/{a[:, 3].mean():<10.3f} {whole:5.2f} {int(a[:, 4].sum()):4d}/{len(a):<4d} "
              f"{np.mean(np.minimum(a[:, 5], 99)):14.1f} ({a[:, 5].min():.1f}) "
              f"{a[:, 6].mean():+9.3f}/{a[:, 7].mean():+.3f}")
    print("x: (pick + restore) exact over shortened, summed over the faces; PSNR capped at 99 dB "
          "for the mean (identical outputs)")


if __name__ == "__main__":
    main()
