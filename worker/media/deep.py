"""16-bit photos. The worker restores 8-bit pixels, but a 16-bit scan must keep its depth and,
outside the faces, every one of its bits. So the original samples travel beside the 8-bit
working copy, and on write each sample moves by what restoration changed in its 8-bit copy
(times 257): untouched pixels come back bit-identical, restored ones keep their low bits.

Pillow opens 16-bit grey (``I;16``) as such, but 48/64-bit RGB(A) PNG and TIFF only as 8-bit
RGB(A); those are read and written with OpenCV, which keeps 16 bits (not EXIF or ICC).
"""

from __future__ import annotations

import cv2
import numpy as np

_EXT = {"PNG": ".png", "TIFF": ".tiff"}


def to8(deep: np.ndarray) -> np.ndarray:
    """uint16 samples to uint8, rounded to nearest (65535 -> 255)."""
    return ((deep.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def is_deep_rgb(im) -> bool:
    """Whether a Pillow image, opened but not loaded, holds 16-bit RGB(A) samples that Pillow
    would cut to 8 bits (its raw mode says so: ``RGB;16B``)."""
    if im.mode not in ("RGB", "RGBA") or not im.tile or im.format not in _EXT:
        return False
    args = im.tile[0][3]
    raw = args if isinstance(args, str) else (args[0] if args else "")
    return isinstance(raw, str) and ";16" in raw


def read_rgb(path: str) -> np.ndarray | None:
    """The 16-bit BGR(A) samples of ``path`` as stored (no orientation applied); None if OpenCV
    does not read them as 16-bit."""
    arr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        return None
    return arr


def merge(deep: np.ndarray, new8: np.ndarray) -> np.ndarray:
    """``deep`` (stored (H, W) grey or (H, W, 3|4) BGR(A) uint16) moved by how ``new8`` (the
    restored 8-bit copy, same layout without alpha) differs from ``to8(deep)``; alpha kept."""
    colour = deep if deep.ndim == 2 else deep[..., :3]
    delta = new8.astype(np.int32) - to8(colour).astype(np.int32)
    out = np.clip(colour.astype(np.int32) + delta * 257, 0, 65535).astype(np.uint16)
    if deep.ndim == 3 and deep.shape[2] == 4:
        out = np.dstack([out, deep[..., 3]])
    return out


def encode_rgb(deep: np.ndarray, fmt: str) -> bytes:
    """16-bit BGR(A) samples as a ``fmt`` ("PNG" or "TIFF") file."""
    ok, buf = cv2.imencode(_EXT[fmt], deep)
    if not ok:
        raise ValueError(f"OpenCV could not encode a 16-bit {fmt}")
    return buf.tobytes()
