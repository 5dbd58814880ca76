"""The quality suite's inputs: real clips with the face regions of some frames degraded on
purpose (the untouched original is the ground truth), and before/after crops of real photos."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

from refstar.align import estimate_affine, warp_face
from refstar.degradations import DegradationParams, degrade
from worker.config import load_config
from worker.media import video
from worker.media.video import VideoRewriter, iter_frames, probe_video
from worker.records import Frame

# Area-down factor with blur, noise and JPEG scaled along; x4 is the measurement
# (blur 1.5, noise 4, JPEG 45).
STRENGTHS: dict[str, DegradationParams] = {
    "x2": DegradationParams(blur_sigma=0.8, scale=2.0, noise_sigma=2.0, jpeg_quality=70),
    "x4": DegradationParams(blur_sigma=1.5, scale=4.0, noise_sigma=4.0, jpeg_quality=45),
    "x8": DegradationParams(blur_sigma=3.0, scale=8.0, noise_sigma=8.0, jpeg_quality=30),
}
REGION = 1.8  # degraded square around a face, in face boxes (forehead, chin and ears included)
FEATHER = 0.15  # soft edge of that square, as a fraction of its side


def degraded(frame: int) -> bool:
    """Every third frame, starting at 1: the clean ones around it are the natural references."""
    return frame % 3 == 1


def degrade_regions(image: np.ndarray, boxes: np.ndarray, params: DegradationParams, seed: int) -> np.ndarray:
    """``image`` with the square around each face box degraded (area-down, blur, noise, JPEG
    applied to that square alone) and blended back with a feathered edge."""
    out = image.astype(np.float32)
    h, w = image.shape[:2]
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half = REGION * max(x2 - x1, y2 - y1) / 2
        a, b = int(max(0, cx - half)), int(max(0, cy - half))
        c, d = int(min(w, cx + half)), int(min(h, cy + half))
        if c - a < 8 or d - b < 8:
            continue
        patch = degrade(np.ascontiguousarray(image[b:d, a:c]), params, seed=seed * 97 + k).astype(np.float32)
        edge = max(1, int(FEATHER * min(c - a, d - b)))
        mask = np.zeros((d - b, c - a), np.float32)
        mask[edge:-edge, edge:-edge] = 1
        mask = cv2.GaussianBlur(mask, (0, 0), edge / 2)[..., None]
        out[b:d, a:c] = mask * patch + (1 - mask) * out[b:d, a:c]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def reproducible_x264():
    """A context in which the worker's x264 encodes are the same bytes run after run: x264's
    macroblock tree off. With it on, this x264 encodes the same frames differently from run to
    run (up to 24 levels apart after a few frames, with one thread as with many; without it, or
    without x264's assembly, bit-identical), so the suite's degraded clips differed, the fast
    analysis took other references, and a clip's gain moved by up to 0.3 dB between two runs of
    the same code."""
    options = video._encoder_options

    def set_options(ctx, name: str, crf: int) -> None:
        options(ctx, name, crf)
        if name == "libx264":
            ctx.options = {**dict(ctx.options), "x264-params": "mbtree=0"}

    return mock.patch.object(video, "_encoder_options", set_options)


def make_degraded(clip: Path, out_dir: Path, frames: int, strengths: list[str], analyzer) -> tuple[dict, list[int], int]:
    """The first ``frames`` frames of ``clip`` once per strength, the face regions of every third
    frame degraded (faces found by ``analyzer`` on the clean frame); encoded nearly losslessly
    (x264 CRF 12, ``reproducible_x264``) with the audio copied. Returns ({strength: path},
    degraded frame indices, faces degraded per strength)."""
    cfg = load_config(None, ["output.crf=12", "output.video_codec=libx264"])
    info = probe_video(clip, cfg.limits)
    paths = {s: out_dir / f"{clip.stem}.{s}.mp4" for s in strengths}
    bad, n_faces = [], 0
    with ExitStack() as stack:
        stack.enter_context(reproducible_x264())
        writers = {s: stack.enter_context(VideoRewriter(clip, p, info, cfg.output)) for s, p in paths.items()}
        for f in iter_frames(clip, info):
            if f.index >= frames:
                break
            boxes = np.zeros((0, 4), np.float32)
            if degraded(f.index):
                found = analyzer.analyze(f.image)
                boxes = np.array([x.bbox for x in found], np.float32).reshape(-1, 4)
                if len(boxes):
                    bad.append(f.index)
                    n_faces += len(boxes)
            for s, wr in writers.items():
                img = degrade_regions(f.image, boxes, STRENGTHS[s], f.index) if len(boxes) else f.image
                wr.write(Frame(f.index, img, f.pts, f.time_base))
    return paths, bad, n_faces


def before_after(before: np.ndarray, after: np.ndarray, analyzer, side: int = 256) -> list[dict]:
    """Per face found on ``before``: its aligned crop from both images (same geometry), side by
    side, and a no-reference sharpness of each (``worker.stages.quality.sharpness``, 0..1, measured at
    the face's own resolution)."""
    from worker.stages.quality import sharpness

    rows = []
    for face in analyzer.analyze(before):
        M = estimate_affine(face.kps, side)
        a, b = warp_face(before, M, side), warp_face(after, M, side)
        rows.append({"size_px": round(float(face.size), 1),
                     "sharpness_before": round(sharpness(a, face.size), 4),
                     "sharpness_after": round(sharpness(b, face.size), 4),
                     "pair": np.concatenate([a, np.full((side, 4, 3), 255, np.uint8), b], 1)})
    return rows
