"""dlib's HOG face detector run only at the scales that can hold a face of a known size, with
the boxes and scores a full run gives those faces.

A full ``run(img, upsample)`` upsamples with ``pyramid_up`` (bilinear, to the size of
``pyramid_down(2).rect_up`` of the image), scans the 5/6 pyramid of that image (each level
``pyramid_down(6)`` of the one before), maps each box up from its level with
``point_up`` in doubles, rounding once, and down again through the upsampling. Building the
levels here from the same dlib calls gives the full run's level images bit for bit, so the
detector run on level ``skip`` (upsample 0) scores the same windows. Its boxes come back
rounded at that level's scale; the feature-grid window behind each is recovered (one level
stretches by 1.2, so rounding cannot make two windows agree) and mapped as the full run maps
it. Measured against full runs on every 10th of 150 frames of the 21 dev clips
(``bench/check_hog_levels.py``): 323 of 323 faces at the same box and score with
``levels_to_skip``'s margin of 3; a 220 px face of a 512 px frame in 0.03 s instead of 0.11 s
on one core. NMS runs on the levels searched only, so a face the full search drops for a
smaller, higher-scoring box inside it would be found here (not seen on the dev clips).
"""

from __future__ import annotations

import math

import numpy as np

# the box of a face found at a level's own scale (right - left, px): the detector's 80 px window
# less its padding, the same for the frontal model's five filters
WINDOW_SIDE = 72
LEVEL_RATIO = 6 / (6 - 1.0)  # pyramid_down<6>::point_up's ratio, as dlib computes it
# a skipped level holds faces at most 1.2 ** -(MARGIN + 1) as wide as the one looked for: under
# half; a face's box from the follows is HOG's within about 8 %
MARGIN = 3


def levels_to_skip(side: float, upsample: int) -> int:
    """How many of the pyramid's largest levels cannot hold a face whose box is ``side`` px wide
    (in the image handed to the detector) less the margin: 0 when it is small."""
    if side <= 0:
        return 0
    level = math.log(side * 2**upsample / WINDOW_SIDE) / math.log(LEVEL_RATIO)
    return max(0, math.floor(level) - MARGIN)


def _lround(x: float) -> int:
    """C's ``lround``: halves away from zero."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def _up(x: float, levels: int) -> float:
    for _ in range(levels):
        x = x * LEVEL_RATIO + 0.3
    return x


def _down(x: float, levels: int) -> float:
    for _ in range(levels):
        x = (x - 0.3) / LEVEL_RATIO
    return x


def run_from_level(detector, rgb: np.ndarray, upsample: int, skip: int):
    """``detector.run(rgb, upsample, 0.0)``'s rectangles and scores for the faces at pyramid
    level ``skip`` and smaller, or None where a box cannot be mapped back exactly (then run the
    full detector). ``detector``: dlib's frontal HOG detector; ``rgb``: contiguous uint8 RGB."""
    import dlib

    img, two = rgb, dlib.pyramid_down(2)
    for _ in range(upsample):
        up = two.rect_up(dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1))
        img = dlib.resize_image(img, up.bottom() + 1, up.right() + 1)
    six = dlib.pyramid_down(6)
    for _ in range(skip):
        img = six(img)
    rects, scores, _ = detector.run(np.ascontiguousarray(img), 0, 0.0)
    out = []
    for r in rects:
        level = round(math.log(max(r.right() - r.left(), 1) / WINDOW_SIDE) / math.log(LEVEL_RATIO))
        corners = []
        for v, shift in ((r.left(), 1.25), (r.top(), 0.75), (r.right(), 1.25), (r.bottom(), 0.75)):
            p = round(_down(float(v), level))
            if _lround(_up(float(p), level)) != v:
                return None
            x = float(_lround(_up(float(p), level + skip)))
            for _ in range(upsample):  # pyramid_down<2>::point_down, then one rounding
                x = x / 2.0 - shift
            corners.append(_lround(x))
        out.append(dlib.rectangle(*corners))
    return out, list(scores)
