"""Album photos: read upright BGR with their metadata, write back in the same shape.

Reading applies the EXIF orientation; writing turns the pixels back to the stored orientation, so
the original EXIF block stays valid and is written byte for byte (with the ICC profile).

Mode handling on read (all give BGR uint8):
- ``L``/``1``/``I;16*``/``I`` grayscale: replicated to 3 channels, 16-bit scaled by 255/65535;
  written back as ``L`` (or 16-bit for 16-bit sources);
- ``RGBA``/``LA``/``P`` with transparency: the alpha plane is kept in ``ImageMeta.alpha``
  (upright, uint8) and written back; colour is taken unpremultiplied;
- ``CMYK``/``YCbCr``/``P``: converted with Pillow (CMYK without colour management) and written
  back in the original mode, except palettes, which are written as RGB(A) because re-quantising a
  restored face would undo the restoration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from worker.config import LimitsConfig, OutputConfig
from worker.errors import MediaError
from worker.item.litter import partial_name
from worker.media import deep

IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"})

_T = Image.Transpose
# EXIF orientation -> transpose that makes the stored pixels upright (as ImageOps.exif_transpose)
_UPRIGHT = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE,
            6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90}
# ... and its inverse (all are involutions except the two quarter turns)
_STORED = {**_UPRIGHT, 6: _T.ROTATE_90, 8: _T.ROTATE_270}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N"}
_SIXTEEN_BIT = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def is_image_name(name: str) -> bool:
    """True when the file name has one of ``IMAGE_EXTS`` (case-insensitive)."""
    return "." in name and name.rsplit(".", 1)[1].lower() in IMAGE_EXTS


@dataclass(frozen=True)
class ImageMeta:
    """What ``write_image`` needs to give a restored photo the shape of its original."""

    format: str  # Pillow format name: "JPEG", "PNG", "WEBP", "BMP", "TIFF"
    mode: str  # original Pillow mode ("RGB", "L", "I;16", "CMYK", "RGBA", ...)
    orientation: int  # EXIF orientation 1..8 (1 when absent)
    exif: bytes | None  # the original EXIF block, untouched
    icc_profile: bytes | None
    size: tuple[int, int]  # stored (width, height), px, before orientation
    has_alpha: bool
    bit_depth: int  # bits per channel of the original: 1, 8, 16 or 32
    alpha: np.ndarray | None = field(default=None, repr=False, compare=False)  # (H, W) uint8, upright
    # 16-bit originals: their samples as stored (grey (H, W) or BGR(A) (H, W, 3|4) uint16), so that
    # writing keeps every bit outside the faces (``worker.media.deep``)
    deep: np.ndarray | None = field(default=None, repr=False, compare=False)


def _open(path: str, limits: LimitsConfig) -> Image.Image:
    try:
        if os.path.getsize(path) == 0:
            raise MediaError(path, "empty file (0 bytes)")
    except OSError as e:
        raise MediaError(path, f"cannot read file ({e.strerror or e})") from e
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise MediaError(path, f"image too large (decompression bomb): {e}") from e
    except UnidentifiedImageError as e:
        raise MediaError(path, "not an image (unrecognised format)") from e
    except OSError as e:
        raise MediaError(path, f"cannot open image ({e})") from e
    w, h = im.size
    # the header is read but no pixels yet: refuse bombs before they allocate anything
    if w * h > limits.max_image_pixels:
        im.close()
        raise MediaError(path, f"image too large: {w}x{h} > limit {limits.max_image_pixels} px")
    return im


def _to_rgb_uint8(im: Image.Image, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) RGB uint8 and an optional (H, W) alpha plane."""
    mode = im.mode
    if mode in _SIXTEEN_BIT:
        gray = deep.to8(np.clip(np.asarray(im), 0, 65535))
        return np.repeat(gray[:, :, None], 3, axis=2), None
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA"))
        return np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(rgba[:, :, 3])
    if mode in ("1", "L", "P", "RGB", "CMYK", "YCbCr", "RGBX", "HSV", "LAB"):
        return np.asarray(im.convert("RGB")), None
    raise MediaError(path, f"unsupported image mode {mode}")


def read_image(path: str | os.PathLike, limits: LimitsConfig) -> tuple[np.ndarray, ImageMeta]:
    """Decode ``path`` to an upright (H, W, 3) BGR uint8 C-contiguous array and its metadata."""
    path = str(path)
    with _open(path, limits) as im:
        deep_rgb = deep.is_deep_rgb(im)
        try:
            im.load()  # force the whole decode now: truncation shows up here, not later
        except Image.DecompressionBombError as e:
            raise MediaError(path, f"image too large (decompression bomb): {e}") from e
        except (OSError, SyntaxError, ValueError) as e:
            raise MediaError(path, f"truncated or corrupt image data ({e})") from e
        try:
            orientation = int(im.getexif().get(0x0112, 1))
        except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
            orientation = 1
        orientation = orientation if orientation in _UPRIGHT or orientation == 1 else 1
        exif = im.info.get("exif")
        meta_kw = dict(
            format=im.format or "PNG", mode=im.mode, orientation=orientation,
            exif=bytes(exif) if exif else None, icc_profile=im.info.get("icc_profile") or None,
            size=im.size,
            has_alpha=im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info,
            bit_depth={"1": 1, "I": 32, "F": 32}.get(im.mode, 16 if im.mode.startswith("I;16") else 8),
        )
        rgb, alpha = _to_rgb_uint8(im, path)
        samples = np.asarray(im) if im.mode in _SIXTEEN_BIT and im.mode != "I" else None
    if deep_rgb and (samples := deep.read_rgb(path)) is not None:
        rgb = deep.to8(samples[..., 2::-1])
        alpha = deep.to8(samples[..., 3]) if samples.shape[2] == 4 else alpha
        meta_kw["bit_depth"] = 16
    bgr = rgb[:, :, ::-1]
    if orientation != 1:
        bgr = np.asarray(Image.fromarray(np.ascontiguousarray(bgr)).transpose(_UPRIGHT[orientation]))
        if alpha is not None:
            alpha = np.asarray(Image.fromarray(alpha).transpose(_UPRIGHT[orientation]))
    return np.ascontiguousarray(bgr), ImageMeta(**meta_kw, alpha=alpha, deep=samples)


def enlarge(pixels: np.ndarray, n: int) -> np.ndarray:
    """``pixels`` (H, W[, C], uint8 or uint16) at ``n`` times the width and height, Lanczos
    (OpenCV INTER_LANCZOS4: an 8x8 windowed sinc, sharper than bicubic, its ringing clipped
    to the sample range)."""
    if n == 1:
        return pixels
    h, w = pixels.shape[:2]
    return cv2.resize(pixels, (w * n, h * n), interpolation=cv2.INTER_LANCZOS4)


def check_output_size(path: str, width: int, height: int, n: int, cap: int) -> None:
    """Refuse an ``output.upscale`` that would make more than ``cap`` pixels (the limit the
    input was read under), naming the file."""
    if width * height * n * n > cap:
        raise MediaError(path, f"{width}x{height} at --upscale {n} would be {width * n}x{height * n}, "
                               f"over the {cap} pixel limit (limits.max_*_pixels)")


def upscaled(image: np.ndarray, meta: ImageMeta, n: int) -> tuple[np.ndarray, ImageMeta]:
    """A read photo (upright BGR, its metadata) at ``n`` times its size, alpha along. A 16-bit
    original is resized in 16 bits and the 8-bit working copy made from that, so that writing
    moves its samples only where faces changed (``worker.media.deep``)."""
    if n == 1:
        return image, meta
    big = enlarge(image, n)
    alpha = enlarge(meta.alpha, n) if meta.alpha is not None else None
    samples = enlarge(meta.deep, n) if meta.deep is not None else None
    if samples is not None:
        b8 = deep.to8(samples if samples.ndim == 2 else samples[..., :3])
        b8 = np.dstack([b8] * 3) if b8.ndim == 2 else b8
        if meta.orientation != 1:
            b8 = np.asarray(Image.fromarray(np.ascontiguousarray(b8)).transpose(_UPRIGHT[meta.orientation]))
        big = np.ascontiguousarray(b8)
    return big, replace(meta, alpha=alpha, deep=samples)


def _to_pil(image: np.ndarray, meta: ImageMeta, alpha: np.ndarray | None) -> Image.Image:
    """Upright BGR (+alpha) -> a Pillow image in (close to) the original mode."""
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    mode = meta.mode
    if mode in _GRAY_MODES:
        # Pillow's luma weights sum to exactly 1, so untouched gray pixels come back unchanged
        gray = Image.fromarray(rgb).convert("L")
        if mode in _SIXTEEN_BIT:
            return Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
        if mode == "LA" and alpha is not None:
            return Image.merge("LA", (gray, Image.fromarray(alpha)))
        return gray
    if alpha is not None and meta.has_alpha:
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    im = Image.fromarray(rgb)
    if mode in ("CMYK", "YCbCr") and meta.format in ("JPEG", "TIFF"):
        return im.convert(mode)
    return im


def _save_options(meta: ImageMeta, cfg: OutputConfig) -> dict:
    kw: dict = {}
    if meta.exif and meta.format in ("JPEG", "PNG", "WEBP", "TIFF"):
        kw["exif"] = meta.exif
    if meta.icc_profile and meta.format in ("JPEG", "PNG", "WEBP", "TIFF"):
        kw["icc_profile"] = meta.icc_profile
    if meta.format in ("JPEG", "WEBP"):
        kw["quality"] = cfg.jpeg_quality
    if meta.format == "JPEG":
        # full-resolution chroma at high quality: subsampling smears the restored details
        kw["subsampling"] = 0 if cfg.jpeg_quality >= 90 else 2
    if meta.format == "TIFF":
        kw["compression"] = "tiff_lzw"
    return kw


def write_image(path: str | os.PathLike, image_upright: np.ndarray, meta: ImageMeta,
                cfg: OutputConfig, alpha: np.ndarray | None = None) -> None:
    """Write an upright BGR image like the original: same format, orientation, EXIF and ICC.

    ``alpha`` (upright (H, W) uint8) defaults to the one read into ``meta``. The file appears
    atomically (temporary name in the same folder, then ``os.replace``).
    """
    path = str(path)
    if image_upright.ndim != 3 or image_upright.shape[2] != 3 or image_upright.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {image_upright.shape} {image_upright.dtype}")
    if meta.deep is not None:
        im = _deep_stored(image_upright, meta)
    else:
        im = _to_pil(image_upright, meta, alpha if alpha is not None else meta.alpha)
        if meta.orientation != 1:
            im = im.transpose(_STORED[meta.orientation])
    dst = Path(path)
    tmp = partial_name(dst)
    try:
        if isinstance(im, bytes):
            tmp.write_bytes(im)
        else:
            im.save(tmp, format=meta.format, **_save_options(meta, cfg))
        os.replace(tmp, dst)
    except (OSError, ValueError, KeyError) as e:
        tmp.unlink(missing_ok=True)
        raise MediaError(path, f"cannot write image ({e})") from e


def _deep_stored(image_upright: np.ndarray, meta: ImageMeta) -> Image.Image | bytes:
    """A 16-bit original with the restored 8-bit pixels merged in, in stored orientation: a
    Pillow ``I;16`` image for grey, the encoded file for RGB(A)."""
    rgb = Image.fromarray(np.ascontiguousarray(image_upright[:, :, ::-1]))
    if meta.deep.ndim == 2:
        rgb = rgb.convert("L")  # Pillow's luma weights sum to 1: untouched grey stays as it was
    if meta.orientation != 1:
        rgb = rgb.transpose(_STORED[meta.orientation])
    new8 = np.asarray(rgb)
    if meta.deep.ndim == 2:
        return Image.fromarray(deep.merge(meta.deep, new8))
    return deep.encode_rgb(deep.merge(meta.deep, new8[:, :, ::-1]), meta.format)


def list_album(folder: str | os.PathLike) -> list[str]:
    """Every visible file under ``folder``, recursively: sorted relative POSIX paths.

    Non-images are listed too (the pipeline reports them); hidden files and folders (name
    starting with '.') are skipped, which also hides our own temporary files.
    """
    root = Path(folder)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        out.extend((rel / f).as_posix() for f in filenames if not f.startswith("."))
    return sorted(out)
