"""Synthetic media made from the face photos that our dependencies ship, with known ground truth.

Used by ``refstar demo``, the tests (``tests/mediagen.py`` adds albums) and the benchmarks.

- ``face_photos()``: single-person BGR photos (six people cut out of insightface's ``t1.jpg``,
  insightface's Tom Hanks sample, scikit-image's astronaut) and each face's box in
  ``face_box(name)``, each face's box in its photo (dlib HOG boxes, measured once).
- ``FaceScene``: a deterministic synthetic clip (smooth background, faces moving along smooth
  paths, optional shot cut), clean or with degraded faces, with ground-truth boxes per frame.
- ``write_video``: encode a scene with PyAV (audio, rotation, variable frame rate on request).

Everything is seeded, so two calls give identical pixels. Person names: ``t1_0``..``t1_5``
(left to right in t1.jpg), ``hanks``, ``astronaut``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# dlib HOG boxes (x1, y1, x2, y2) of the six faces of t1.jpg (1280x886), left to right
_T1_FACES = [
    (67, 283, 175, 390), (275, 176, 364, 265), (450, 295, 557, 402),
    (724, 367, 832, 474), (870, 67, 999, 196), (1118, 283, 1226, 390),
]
_HANKS_FACE = (6, 26, 96, 116)  # in Tom_Hanks_54745.png (112x112)
_ASTRONAUT_FACE = (175, 76, 265, 166)  # in skimage.data.astronaut() (512x512)

PERSONS = [f"t1_{i}" for i in range(6)] + ["hanks", "astronaut"]


def _insightface_image(name: str) -> np.ndarray:
    import insightface  # only for its bundled sample photos

    path = Path(insightface.__file__).parent / "data" / "images" / name
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    return image


def _crop(image: np.ndarray, box: Sequence[int], side: float, up: float, down: float):
    """Crop around ``box`` with margins given as fractions of the box width; returns the crop
    and the box in crop coordinates."""
    x1, y1, x2, y2 = box
    w = x2 - x1
    h, wi = image.shape[:2]
    cx1, cy1 = max(0, int(x1 - side * w)), max(0, int(y1 - up * w))
    cx2, cy2 = min(wi, int(x2 + side * w)), min(h, int(y2 + down * w))
    crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2])
    return crop, (x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1)


@functools.lru_cache(maxsize=1)
def _photos() -> dict[str, tuple[np.ndarray, tuple[int, int, int, int]]]:
    t1 = _insightface_image("t1.jpg")
    out = {f"t1_{i}": _crop(t1, box, 0.5, 0.6, 0.6) for i, box in enumerate(_T1_FACES)}
    out["hanks"] = (_insightface_image("Tom_Hanks_54745.png"), _HANKS_FACE)
    try:  # scikit-image comes with the test extra, not with the worker
        from skimage import data
    except ImportError:
        return out
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    out["astronaut"] = _crop(astronaut, _ASTRONAUT_FACE, 0.5, 0.6, 0.6)
    return out


def face_photos() -> dict[str, np.ndarray]:
    """Single-person BGR uint8 photos by person name (copies; safe to modify)."""
    return {name: img.copy() for name, (img, _) in _photos().items()}


def face_box(name: str) -> tuple[int, int, int, int]:
    """The face's box (x1, y1, x2, y2) in ``face_photos()[name]``."""
    return _photos()[name][1]


# -- drawing helpers ----------------------------------------------------------------------------
def smooth_background(width: int, height: int, seed: int) -> np.ndarray:
    """A textured but smooth BGR background with no face-like structure."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(50, 200, size=(4, 5, 3)).astype(np.float32)
    coarse = 0.5 * coarse + 0.5 * coarse.mean(axis=2, keepdims=True)  # muted colours
    fine = rng.normal(0, 8, size=(height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    base = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    base += cv2.resize(fine, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(base, 0, 255).astype(np.uint8)


def _face_patch(name: str, face_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The person's photo scaled so the face box is ``face_px`` wide, a feathered elliptic
    mask (float32 0..1) and the face box in patch coordinates."""
    img, box = _photos()[name]
    s = face_px / (box[2] - box[0])
    patch = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    h, w = patch.shape[:2]
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (w // 2, h // 2), (int(w * 0.42), int(h * 0.44)), 0, 0, 360, 1.0, -1)
    k = max(3, int(min(h, w) * 0.12) | 1)
    mask = cv2.GaussianBlur(mask, (k, k), 0)
    return patch, mask, np.array(box, np.float32) * s


def paste(canvas: np.ndarray, patch: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend ``patch`` at top-left (x, y) into ``canvas`` in place, clipped to the canvas."""
    H, W = canvas.shape[:2]
    h, w = patch.shape[:2]
    x1, y1, x2, y2 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 >= x2 or y1 >= y2:
        return
    p = patch[y1 - y:y2 - y, x1 - x:x2 - x].astype(np.float32)
    m = mask[y1 - y:y2 - y, x1 - x:x2 - x, None]
    roi = canvas[y1:y2, x1:x2].astype(np.float32)
    canvas[y1:y2, x1:x2] = np.clip(roi * (1 - m) + p * m + 0.5, 0, 255).astype(np.uint8)


def degrade(image: np.ndarray, seed: int, sigma: float = 2.5, scale: int = 4,
            noise: float = 6.0, jpeg: int = 40) -> np.ndarray:
    """Blind-restoration style degradation: blur, down/up-sample, Gaussian noise, JPEG."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    out = cv2.GaussianBlur(image, (0, 0), sigma)
    out = cv2.resize(out, (max(1, w // scale), max(1, h // scale)), interpolation=cv2.INTER_AREA)
    out = cv2.resize(out, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    out = np.clip(out + rng.normal(0, noise, out.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, jpeg])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


# -- video scene --------------------------------------------------------------------------------
class FaceScene:
    """A deterministic synthetic shot (or two, with ``cut_at``) with moving faces.

    Each person's face moves along a slow sinusoid (``motion`` px amplitude) and breathes in
    scale by +-4 %. After ``cut_at`` the background changes and ``persons_after`` appear.
    """

    def __init__(self, persons: Sequence[str] = ("t1_2",), size: tuple[int, int] = (320, 240),
                 face_px: float = 96, seed: int = 0, motion: float = 12.0,
                 cut_at: int | None = None, persons_after: Sequence[str] = ("hanks",)):
        self.size = size  # (width, height)
        self.seed = seed
        self.motion = motion
        self.cut_at = cut_at
        self._shots = [self._shot(list(persons), seed, face_px)]
        if cut_at is not None:
            self._shots.append(self._shot(list(persons_after), seed + 1, face_px))

    def _shot(self, persons: list[str], seed: int, face_px: float) -> dict:
        w, h = self.size
        patches = {p: _face_patch(p, face_px) for p in persons}
        n = len(persons)
        centres = {p: (w * (k + 1) / (n + 1), h * 0.5) for k, p in enumerate(persons)}
        return {"persons": persons, "bg": smooth_background(w, h, seed), "patches": patches,
                "centres": centres}

    @property
    def persons(self) -> list[str]:
        """All person names of the scene, first shot first."""
        return [p for shot in self._shots for p in shot["persons"]]

    def persons_at(self, i: int) -> list[str]:
        return list(self._shot_at(i)["persons"])

    def _shot_at(self, i: int) -> dict:
        return self._shots[1] if self.cut_at is not None and i >= self.cut_at else self._shots[0]

    def _placements(self, i: int):
        """Per person: scaled patch, mask, top-left corner and the face box in frame pixels."""
        shot = self._shot_at(i)
        for k, person in enumerate(shot["persons"]):
            patch, mask, box = shot["patches"][person]
            phase = 1.7 * k + 0.3 * self.seed
            s = 1.0 + 0.04 * np.sin(2 * np.pi * i / 47 + phase)
            if abs(s - 1) > 1e-3:
                patch = cv2.resize(patch, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
                mask = cv2.resize(mask, (patch.shape[1], patch.shape[0]), interpolation=cv2.INTER_LINEAR)
                box = (box * s).astype(np.float32)
            cx, cy = shot["centres"][person]
            cx += self.motion * np.sin(2 * np.pi * i / 61 + phase)
            cy += 0.5 * self.motion * np.sin(2 * np.pi * i / 37 + 2 * phase)
            x, y = int(round(cx - patch.shape[1] / 2)), int(round(cy - patch.shape[0] / 2))
            yield person, patch, mask, x, y, box + np.array([x, y, x, y], np.float32)

    def render(self, i: int) -> np.ndarray:
        """Clean frame ``i``: (H, W, 3) BGR uint8."""
        frame = self._shot_at(i)["bg"].copy()
        for _, patch, mask, x, y, _ in self._placements(i):
            paste(frame, patch, mask, x, y)
        return frame

    def degraded(self, i: int) -> np.ndarray:
        """Frame ``i`` whose face regions (the pasted patches) are degraded; background untouched."""
        clean = self.render(i)
        bad = degrade(clean, seed=self.seed * 100_003 + i)
        out = clean.copy()
        for _, patch, mask, x, y, _ in self._placements(i):
            paste(out, _crop_like(bad, x, y, patch.shape), mask, x, y)
        return out

    def face_boxes(self, i: int) -> dict[str, np.ndarray]:
        """Ground-truth face boxes of frame ``i``: person -> (4,) float32 x1, y1, x2, y2."""
        return {p: box for p, _, _, _, _, box in self._placements(i)}


def _crop_like(image: np.ndarray, x: int, y: int, shape: tuple[int, ...]) -> np.ndarray:
    """The region of ``image`` a patch of ``shape`` at (x, y) covers, zero-padded outside."""
    h, w = shape[:2]
    out = np.zeros((h, w, 3), np.uint8)
    H, W = image.shape[:2]
    x1, y1, x2, y2 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 < x2 and y1 < y2:
        out[y1 - y:y2 - y, x1 - x:x2 - x] = image[y1:y2, x1:x2]
    return out


def _mp4_time_base(fps: int) -> Fraction:
    # the mov muxer keeps a time base whose denominator is >= 10000 and rewrites smaller ones
    den = fps
    while den < 10000:
        den *= 2
    return Fraction(1, den)


def write_video(scene: FaceScene, path: str | os.PathLike, n_frames: int, fps: int = 25,
                degrade: Iterable[int] = (), audio: bool = True, rotation: int = 0,
                vfr: bool = False, codec: str = "libx264", size: tuple[int, int] | None = None,
                crf: int = 16) -> list[int]:
    """Encode ``n_frames`` of ``scene`` (frames in ``degrade`` use ``scene.degraded``).

    ``rotation``: clockwise degrees a player must turn the stored frames; the frames are stored
    turned the other way, so the *upright* picture is the scene. ``vfr``: irregular gaps (1/25,
    2/25 s, +-3 ms jitter) in a 1/90000 time base. ``size``: (w, h) to resize the scene to.
    Tagged BT.709 limited range. Returns the pts written, in the file's video time base.
    """
    degrade = set(degrade)
    rng = np.random.default_rng(1234)
    if vfr:
        tb = Fraction(1, 90000) if codec != "mpeg4" else Fraction(1, 12800)  # mpeg4: den <= 65535
    else:
        tb = _mp4_time_base(fps)
    unit = int(1 / (fps * tb))  # one nominal frame, in pts units
    if vfr:
        pts, t = [], 0
        for i in range(n_frames):
            pts.append(t)
            t += unit * (1 + i % 2) + int(rng.integers(-unit // 13, unit // 13))
    else:
        pts = [i * unit for i in range(n_frames)]
    w, h = size or scene.size
    stored_w, stored_h = (h, w) if rotation in (90, 270) else (w, h)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec)
        ctx = vs.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = stored_w, stored_h, "yuv420p"
        ctx.time_base = vs.time_base = tb
        ctx.framerate = Fraction(fps)
        ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc = 1, 1, 1, 1
        if codec == "libx264":
            ctx.options = {"crf": str(crf), "preset": "veryfast"}
        else:
            ctx.qscale, ctx.global_quality = True, 2 * 118
        if rotation:
            vs.set_display_rotation(-rotation)
        if audio:
            a = out.add_stream("aac", rate=48000)
            a.codec_context.layout = "mono"
            sample = 0
        for i, p in enumerate(pts):
            img = scene.degraded(i) if i in degrade else scene.render(i)
            if size:
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            img = np.ascontiguousarray(np.rot90(img, rotation // 90)) if rotation else img
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
            vf = vf.reformat(format="yuv420p", dst_colorspace=1, dst_color_range=1)
            vf.pts, vf.time_base = p, tb
            for packet in vs.encode(vf):
                out.mux(packet)
            if audio:
                end = (p + unit) * tb
                while sample < end * 48000:
                    out.mux(a.encode(_chirp(sample, 1024)))
                    sample += 1024
        for packet in vs.encode(None):
            out.mux(packet)
        if audio:
            out.mux(a.encode(None))
        final_tb = vs.time_base
    return [int(round(Fraction(p) * tb / final_tb)) for p in pts]


def _chirp(start: int, n: int, rate: int = 48000) -> av.AudioFrame:
    """``n`` samples of a 300->1200 Hz chirp (one sweep per 2 s) starting at sample ``start``."""
    t = (start + np.arange(n)) / rate
    f = 300 + 450 * (t % 2.0)
    samples = (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)[None, :]
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
    return frame
