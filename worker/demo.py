"""``refstar demo``: a short clip made from the face photos that ship with insightface, with a third
of its frames degraded, restored end to end on the offline defaults, and measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from worker.config import Config


def _face_psnr(path: Path, scene, frames: list[int], n: int = 1) -> float:
    """Mean PSNR of the faces of ``frames`` of ``path`` against the clean scene, both at ``n``
    times the scene's size (``--upscale n``; a smaller video is enlarged as the worker enlarges)."""
    from refstar.metrics import psnr
    from worker.media.image import enlarge
    from worker.media.video import iter_frames

    wanted, vals = set(frames), []
    for f in iter_frames(str(path)):
        if f.index in wanted:
            image = enlarge(f.image, n // (f.image.shape[0] // scene.size[1]))
            clean = enlarge(scene.render(f.index), n)
            for x1, y1, x2, y2 in (np.round(b * n).astype(int) for b in scene.face_boxes(f.index).values()):
                vals.append(psnr(image[y1:y2, x1:x2], clean[y1:y2, x1:x2]))
    return float(np.mean(vals))


def run_demo(output: str, cfg: Config, frames: int = 48) -> int:
    from worker.cli import _print_result
    from worker.item.pipeline import restore_item
    from worker.synthetic import FaceScene, write_video

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    src = out / "demo_clip.mp4"
    scene = FaceScene(persons=("t1_2", "hanks"), size=(480, 320), face_px=130)
    degraded = [i for i in range(frames) if (i // 8) % 3 == 1]  # every third run of 8 frames
    print(f"demo: writing {frames} frames ({len(degraded)} with degraded faces) with audio to {src}")
    write_video(scene, src, frames, degrade=degraded)
    res = restore_item(src, str(out / "out"), cfg, force=True)
    _print_result(res)
    if res.status != "ok":
        return 1
    media = json.loads((Path(res.output) / "manifest.json").read_text())["media"]
    restored = (Path(res.output) / media["output"]).resolve()  # beside its sidecar in the mirror layout
    n = cfg.output.upscale
    before, after = _face_psnr(src, scene, degraded, n), _face_psnr(restored, scene, degraded, n)
    what = "the clean originals" + (f", both enlarged {n}x (Lanczos)" if n > 1 else "")
    print(f"demo: face PSNR on the degraded frames vs {what}: "
          f"{before:.2f} dB before, {after:.2f} dB after ({after - before:+.2f} dB)")
    print(f"demo: restored video {restored}\ndemo: report {Path(res.output) / 'report.html'}",
          file=sys.stdout)
    return 0
