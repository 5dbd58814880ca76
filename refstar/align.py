"""Face alignment geometry as pure functions (in the style of insightface's ``face_align``).

Conventions: images are BGR ``uint8`` (H, W, 3); landmarks are float32 (5, 2) pixels in the
insightface order (image-left eye, image-right eye, nose tip, image-left mouth corner,
image-right mouth corner); an affine ``M`` is a (2, 3) float64 matrix mapping *source* pixel
coordinates to *crop* pixel coordinates (``crop = M @ [x, y, 1]``), as ``cv2.warpAffine`` expects.
"""

from __future__ import annotations

import cv2
import numpy as np

# FFHQ / GFPGAN alignment template for a 512 px crop (the five landmarks above).
_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)

# The face region in 512-template pixels: an ellipse from the brows to the chin, cheek to cheek.
# Chosen so the ellipse (plus nothing) stays > 20 px inside the crop border: the mask is exactly
# 0 there, so a pasted crop never shows its edge.
_MASK_CENTER_512 = (256.0, 292.0)
_MASK_AXES_512 = (168.0, 196.0)


def template(size: int) -> np.ndarray:
    """The five template landmarks for a ``size`` x ``size`` crop, (5, 2) float32 pixels."""
    return (_TEMPLATE_512 * (size / 512.0)).astype(np.float32)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src -> dst.

    src, dst: (N, 2) points. Returns (2, 3) float64. Deterministic (no RANSAC/LMEDS sampling),
    so the same landmarks always give the same crop.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # reflection: flip the weakest axis
        s[-1] = -1
    rot = u @ np.diag(s) @ vt
    var_s = (sc**2).sum() / len(src)
    scale = (d * s).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def estimate_affine(kps: np.ndarray, size: int) -> np.ndarray:
    """Similarity transform mapping the landmarks ``kps`` (5, 2) source pixels onto
    ``template(size)``. Returns (2, 3) float64 source -> crop."""
    kps = np.asarray(kps, np.float64).reshape(5, 2)
    return umeyama(kps, template(size))


def affine_scale(M: np.ndarray) -> float:
    """Crop pixels per source pixel (the similarity's uniform scale)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(M)[:, :2]))))


def native_side(kps: np.ndarray, size: int) -> float:
    """Side (source px) of the region a ``size`` crop of these landmarks covers: the crop side
    at which the face keeps its own resolution, neither enlarged nor shrunk."""
    return size / affine_scale(estimate_affine(kps, size))


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """A square crop at ``size`` x ``size``: area-averaged down, bicubic up, as it is (contiguous)
    at its own size."""
    if image.shape[0] == size:
        return np.ascontiguousarray(image)
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def invert_affine(M: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine: crop -> source. Returns (2, 3) float64."""
    return cv2.invertAffineTransform(np.asarray(M, np.float64))


def transform_points(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to (N, 2) points. Returns (N, 2) float64."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return pts @ np.asarray(M, np.float64)[:, :2].T + np.asarray(M, np.float64)[:, 2]


def warp_face(image: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned ``size`` x ``size`` crop out of ``image`` (H, W, C) with ``M``.

    Large faces (crop scale < 0.8) are first area-downscaled inside their footprint so the crop
    does not alias; parts of the crop outside the image are filled by reflection (they fall
    outside the face mask, so they are never pasted back).
    """
    M = np.asarray(M, np.float64)
    s = affine_scale(M)
    if s < 0.8:
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
        src = transform_points(invert_affine(M), corners)
        h, w = image.shape[:2]
        pad = 4 / s  # a few crop pixels of context for the interpolation
        x0 = int(np.clip(np.floor(src[:, 0].min() - pad), 0, w - 1))
        y0 = int(np.clip(np.floor(src[:, 1].min() - pad), 0, h - 1))
        x1 = int(np.clip(np.ceil(src[:, 0].max() + pad), x0 + 1, w))
        y1 = int(np.clip(np.ceil(src[:, 1].max() + pad), y0 + 1, h))
        roi = image[y0:y1, x0:x1]
        rw, rh = max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s))
        small = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
        kx, ky = rw / (x1 - x0), rh / (y1 - y0)
        # source p = q / k + origin, so crop = A (q / k) + (A origin + t)
        m2 = M.copy()
        m2[:, 0] = M[:, 0] / kx
        m2[:, 1] = M[:, 1] / ky
        m2[:, 2] = M[:, :2] @ np.array([x0, y0], np.float64) + M[:, 2]
        image, M = small, m2
    return cv2.warpAffine(
        image, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )


def face_mask(size: int, feather: float = 0.08) -> np.ndarray:
    """Soft face-region mask in template coordinates, (size, size) float32 in 0..1.

    An ellipse covering brows to chin and cheek to cheek; 1 inside, falling smoothly to exactly 0
    at the ellipse over ``feather * size`` pixels (smoothstep), and exactly 0 near the crop
    border, so pasting never shows a seam and pixels outside it stay untouched.
    """
    k = size / 512.0
    cx, cy = _MASK_CENTER_512[0] * k, _MASK_CENTER_512[1] * k
    ax, ay = _MASK_AXES_512[0] * k, _MASK_AXES_512[1] * k
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    r = np.sqrt(((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2)
    # (1 - r) * mean axis ~ distance inside the ellipse in pixels
    width = max(feather * size, 1.0)
    t = np.clip((1.0 - r) * (0.5 * (ax + ay)) / width, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)
