"""Restoration gain on real clips, ground truth made by degrading some frames on purpose.

    python bench/bench_realclip_restore.py [CLIP ...] [--frames 60] [--crop 512] [--adapt-steps 400]
                                           [--only ROW ...] [--set KEY=VALUE ...] [--keep DIR]

For each clip (default: three clips of ../shared/data/videos): the first ``--frames`` frames are
re-encoded with one frame in three degraded (blur sigma 2, x4 down, noise 5, JPEG 50, over the
whole frame); the worker restores that clip once per row:

- ``none``: pass-through (the degraded input through the same decode/encode; the baseline),
- ``guided, no ref`` / ``guided + ref``: the weight-free restorer without references
  (``references.top_k=0``) and with them,
- ``refstar, no ref`` / ``refstar + ref``: RefSTAR adapted from scratch on the clip's own sharp
  faces (``restorer=refstar``, ``--adapt-steps``), restoring without and with references.

Each output is scored by ``worker.outputs.evaluate`` against the original clip (faces detected on the
original, crops cut at the same geometry): PSNR, its gain over ``none`` and SSIM on the degraded
frames, identity similarity to the original and to the references (those of ``guided + ref``
for rows without their own), flicker over all frames (candidate minus original frame-to-frame
change, and their ratio), and the adaptation time on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import real_data_root  # noqa: E402
from refstar.degradations import DegradationParams, degrade  # noqa: E402
from worker.config import load_config  # noqa: E402
from worker.item.pipeline import restore_item  # noqa: E402
from worker.media.video import VideoRewriter, iter_frames, probe_video  # noqa: E402
from worker.outputs.evaluate import evaluate  # noqa: E402
from worker.outputs.evaluate_report import adapt_seconds, render_html, summarise  # noqa: E402
from worker.records import Frame  # noqa: E402

CLIPS = ["video-retalking__face_3.mp4", "SadTalker__WDA_KatieHill_000.mp4", "LivePortrait__driving_d12.mp4"]
PARAMS = DegradationParams(blur_sigma=2.0, scale=4.0, noise_sigma=5.0, jpeg_quality=50)
REF_ROW = "guided + ref"  # its references score the rows that have none


def make_degraded(src: str, dst: str, frames: int) -> set[int]:
    """Writes the first ``frames`` frames of ``src`` with every third one degraded; returns the
    degraded indices. Streams: no frame is kept."""
    cfg = load_config(None, ["output.crf=12", "output.video_codec=libx264"])
    info = probe_video(src, cfg.limits)
    bad = set()
    with VideoRewriter(src, dst, info, cfg.output) as w:
        for f in iter_frames(src, info):
            if f.index >= frames:
                break
            img = f.image
            if f.index % 3 == 1:
                bad.add(f.index)
                img = degrade(img, PARAMS, seed=f.index)
            w.write(Frame(f.index, img, f.pts, f.time_base))
    return bad


def rows_of(adapt_steps: int) -> dict[str, list[str]]:
    refstar = ["restorer=refstar", f"restore.adapt_steps={adapt_steps}", "restore.adapt_time_s=600"]
    return {"none": ["restorer=none"], "guided, no ref": ["references.top_k=0"], REF_ROW: [],
            "refstar, no ref": [*refstar, "references.top_k=0"], "refstar + ref": refstar}


def _f(v: float | None, fmt: str) -> str:
    width = int("".join(ch for ch in fmt.split(".")[0] if ch.isdigit()) or 0)
    return f"{'-':>{width}}" if v is None else format(v, fmt)


def clip_lines(report: dict, bad: set[int], walls: dict[str, float]) -> list[str]:
    """One line per row: scores on the degraded frames, flicker over all frames, times."""
    base = next(c for c in report["candidates"] if c["label"] == report["baseline"])
    out = [f"  {'row':16s} {'PSNR':>6s} {'gain':>6s} {'SSIM':>6s} {'id-GT':>6s} {'id-ref':>6s} "
           f"{'flick':>7s} {'x':>5s} {'adapt':>6s} {'wall':>6s}   (degraded frames; flicker: all)"]
    for c in report["candidates"]:
        on_bad = summarise(c["per_face"], frames=bad)
        gain = summarise(c["per_face"], base=base["per_face"], frames=bad)["psnr"]
        out.append(f"  {c['label']:16s} {_f(on_bad['psnr'], '6.2f')} {_f(gain, '+6.2f')} "
                   f"{_f(on_bad['ssim'], '6.4f')} {_f(on_bad['identity_gt'], '6.4f')} "
                   f"{_f(on_bad['identity_ref'], '6.4f')} {_f(c['flicker'], '+7.4f')} "
                   f"{_f(c['flicker_ratio'], '5.2f')} {_f(adapt_seconds(c), '6.1f')} "
                   f"{walls[c['label']]:6.1f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="*")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--adapt-steps", type=int, default=400)
    ap.add_argument("--only", nargs="*", help="run only these rows (e.g. 'refstar + ref'); 'none' "
                                              "always runs (the baseline)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every row")
    ap.add_argument("--keep", metavar="DIR", help="write each clip's eval.json/eval.html here")
    args = ap.parse_args()
    root = real_data_root()
    clips = args.clips or [str(root / "videos" / c) for c in CLIPS]
    runs = {k: v for k, v in rows_of(args.adapt_steps).items()
            if not args.only or k in args.only or k == "none"}
    eval_cfg = load_config(None, ["progress=false", *args.set])
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            deg = Path(tmp) / (Path(clip).stem + "_deg.mp4")
            bad = make_degraded(clip, str(deg), args.frames)
            items, walls = {}, {}
            for name, sets in runs.items():
                cfg = load_config(None, ["progress=false", f"restore.crop_size={args.crop}", *sets, *args.set])
                t = time.perf_counter()
                res = restore_item(deg, str(Path(tmp) / name.replace(" ", "_").replace(",", "")), cfg, force=True)
                walls[name] = time.perf_counter() - t
                if res.status not in ("ok", "partial"):
                    sys.exit(f"{clip}: {name}: {res.status}: {res.errors}")
                items[name] = res.output
            t = time.perf_counter()
            report = evaluate(clip, list(items.values()), eval_cfg, labels=list(items),
                              frames=f":{args.frames}", refs=items.get(REF_ROW), baseline="none")
            n = report["frames"]["evaluated"]
            head = (f"{Path(clip).name} ({n} frames, {len(bad)} degraded, {report['faces']} faces; "
                    f"eval {time.perf_counter() - t:.1f} s):")
            print("\n".join([head, *clip_lines(report, bad, walls)]), flush=True)
            if args.keep:
                out = Path(args.keep) / Path(clip).stem
                out.mkdir(parents=True, exist_ok=True)
                (out / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
                (out / "eval.html").write_text(render_html(report))


if __name__ == "__main__":
    main()
