"""Test media with known ground truth: the synthetic clips of ``worker.synthetic`` plus albums.

- ``make_album``: a folder of photos (groups, singles, awkward formats, broken files) plus its
  ground truth.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms

from worker.synthetic import (  # noqa: F401  (re-exported for the tests)
    PERSONS,
    FaceScene,
    _face_patch,
    degrade,
    face_box,
    face_photos,
    paste,
    smooth_background,
    write_video,
)


# -- album --------------------------------------------------------------------------------------
def _group(persons: Sequence[str], size: tuple[int, int], seed: int, face_px: float = 110):
    w, h = size
    canvas = smooth_background(w, h, seed)
    boxes = {}
    for k, p in enumerate(persons):
        patch, mask, box = _face_patch(p, face_px)
        x = int(w * (k + 1) / (len(persons) + 1) - patch.shape[1] / 2)
        y = int(h / 2 - patch.shape[0] / 2)
        paste(canvas, patch, mask, x, y)
        boxes[p] = (box + np.array([x, y, x, y], np.float32)).round(1).tolist()
    return canvas, boxes


def _save_pil(image_bgr: np.ndarray, path: Path, **kw) -> None:
    Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)).save(path, **kw)


def make_album(folder: str | os.PathLike, seed: int = 0) -> dict:
    """Write a small album into ``folder`` and return its ground truth::

        {"faces": {file: [person, ...]},          # readable images and who is in them
         "boxes": {file: {person: [x1, y1, x2, y2]}},  # upright pixel boxes (approximate)
         "no_faces": [file, ...],
         "bad": {file: "empty" | "truncated" | "not_image"},
         "modes": {file: Pillow mode as stored},  # the awkward formats
         "exif_orientation": {file: 6}, "exif_tags": {file: {tag: value}},
         "icc": [file, ...], "hidden": [file, ...], "files": [every visible file]}

    Paths are relative POSIX paths; one photo sits in a subfolder.
    """
    root = Path(folder)
    (root / "trip").mkdir(parents=True, exist_ok=True)
    gt: dict = {"faces": {}, "boxes": {}, "no_faces": [], "bad": {}, "modes": {},
                "exif_orientation": {}, "exif_tags": {}, "icc": [], "hidden": []}

    def add(name: str, image: np.ndarray, boxes: dict, **save_kw) -> None:
        _save_pil(image, root / name, **save_kw)
        gt["faces"][name], gt["boxes"][name] = list(boxes), boxes

    add("group_a.jpg", *_group(["t1_0", "t1_2", "hanks"], (640, 360), seed), quality=92)
    add("group_b.png", *_group(["t1_2", "astronaut"], (480, 320), seed + 1))
    add("single_t1_0.jpg", *_group(["t1_0"], (320, 300), seed + 2), quality=92)
    add("single_astronaut.png", *_group(["astronaut"], (300, 300), seed + 3))
    add("trip/single_t1_4.jpg", *_group(["t1_4"], (320, 300), seed + 4), quality=92)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    add("icc_t1_5.jpg", *_group(["t1_5"], (320, 300), seed + 5), quality=92, icc_profile=srgb)
    gt["icc"].append("icc_t1_5.jpg")

    _save_pil(smooth_background(400, 300, seed + 6), root / "landscape.jpg", quality=90)
    gt["no_faces"].append("landscape.jpg")

    gray, boxes = _group(["t1_3"], (320, 300), seed + 7)
    Image.fromarray(cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)).save(root / "gray_t1_3.png")
    gt["faces"]["gray_t1_3.png"], gt["boxes"]["gray_t1_3.png"] = ["t1_3"], boxes
    gt["modes"]["gray_t1_3.png"] = "L"

    deep, boxes = _group(["t1_1"], (320, 300), seed + 8)
    deep16 = cv2.cvtColor(deep, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    Image.fromarray(deep16).save(root / "deep16_t1_1.png")  # mode I;16
    gt["faces"]["deep16_t1_1.png"], gt["boxes"]["deep16_t1_1.png"] = ["t1_1"], boxes
    gt["modes"]["deep16_t1_1.png"] = "I;16"

    cmyk, boxes = _group(["hanks"], (320, 300), seed + 9)
    Image.fromarray(cv2.cvtColor(cmyk, cv2.COLOR_BGR2RGB)).convert("CMYK").save(
        root / "cmyk_hanks.jpg", quality=92)
    gt["faces"]["cmyk_hanks.jpg"], gt["boxes"]["cmyk_hanks.jpg"] = ["hanks"], boxes
    gt["modes"]["cmyk_hanks.jpg"] = "CMYK"

    # EXIF orientation 6: a viewer turns the stored pixels 90 degrees clockwise
    upright, boxes = _group(["t1_2"], (360, 280), seed + 10)
    exif = Image.Exif()
    tags = {0x010F: "RefstarTestCam", 0x0110: "Model 6", 0x0132: "2024:05:01 12:00:00"}
    for tag, value in tags.items():
        exif[tag] = value
    exif[0x0112] = 6
    stored = Image.fromarray(cv2.cvtColor(upright, cv2.COLOR_BGR2RGB)).transpose(Image.Transpose.ROTATE_90)
    stored.save(root / "rotated_t1_2.jpg", quality=92, exif=exif.tobytes())
    gt["faces"]["rotated_t1_2.jpg"], gt["boxes"]["rotated_t1_2.jpg"] = ["t1_2"], boxes
    gt["exif_orientation"]["rotated_t1_2.jpg"] = 6
    gt["exif_tags"]["rotated_t1_2.jpg"] = tags

    good = io.BytesIO()
    _save_pil(_group(["astronaut"], (320, 300), seed + 11)[0], good, format="JPEG", quality=92)
    (root / "corrupt.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("not a picture, just a note\n")
    gt["bad"].update({"corrupt.jpg": "truncated", "empty.jpg": "empty", "notes.jpg": "not_image"})

    (root / ".hidden.jpg").write_bytes(good.getvalue())
    gt["hidden"].append(".hidden.jpg")
    gt["files"] = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    return gt
