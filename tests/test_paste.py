"""Pasting restored crops back into real photos: untouched background, faithful face, order."""

from __future__ import annotations

import cv2
import numpy as np

from refstar.align import estimate_affine, face_mask, invert_affine, warp_face
from refstar.metrics import psnr
from tests.refstar.test_align import S, astronaut, insightface_photo
from worker.config import PasteConfig
from worker.stages.paste import Paste, color_match, paste_faces

MASK = face_mask(S, 0.08)
RAW = PasteConfig(color_match=False)


def _reach(image: np.ndarray, m: np.ndarray, mask: np.ndarray, grow: int = 3) -> np.ndarray:
    """Frame pixels (H, W) bool the mask can touch, grown by ``grow`` crop px for safety."""
    fp = cv2.dilate((mask > 0).astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8))
    h, w = image.shape[:2]
    return cv2.warpAffine(fp * 255, invert_affine(m), (w, h), flags=cv2.INTER_NEAREST) > 0


def test_background_is_bit_identical_and_face_is_the_crop():
    img, kps = astronaut()
    m = estimate_affine(kps, S)
    crop = np.full((S, S, 3), (30, 200, 90), np.uint8)  # nothing like the photo
    out = paste_faces(img, [Paste(crop=crop, M=m, mask=MASK)], RAW)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out is not img and not np.shares_memory(out, img)
    reach = _reach(img, m, MASK)
    assert (out[~reach] == img[~reach]).all()  # bit-identical outside the footprint
    changed = (out != img).any(-1)
    assert changed.sum() > 0.5 * (MASK == 1).sum() / (m[0, 0] ** 2 + m[0, 1] ** 2)
    # where the mask is 1, re-cutting the frame gives the pasted crop back, up to the frame's
    # detail finer than the crop could hold (only the change is pasted: measured mean 1.4 levels)
    back = warp_face(out, m, S)
    inner = cv2.erode((MASK == 1).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert np.abs(back[inner].astype(int) - crop[inner].astype(int)).mean() <= 2.5
    smooth = [cv2.GaussianBlur(x, (0, 0), 2).astype(int) for x in (back, crop)]
    assert np.abs(smooth[0][inner] - smooth[1][inner]).max() <= 6


def test_round_trip_of_an_unmodified_crop_reproduces_the_face():
    img, kps = astronaut()
    m = estimate_affine(kps, S)
    crop = warp_face(img, m, S)
    out = paste_faces(img, [Paste(crop=crop, M=m, mask=MASK, original_crop=crop)], PasteConfig())
    # a face the restorer left as it was leaves the frame as it was, colour matching included
    # (pasting the crop itself cost 35-40 dB of resampling)
    assert (out == img).all()
    assert (color_match(crop, crop, MASK) == crop).all()


def test_color_match_removes_a_restorers_colour_drift():
    img, kps = astronaut()
    m = estimate_affine(kps, S)
    crop = warp_face(img, m, S)
    # darker and bluer, as a restorer trained on other data might drift (measured: 24.1 -> 47.1 dB)
    drift = np.clip(crop.astype(int) * 0.92 + [12, 0, -8], 0, 255).astype(np.uint8)
    fixed = color_match(drift, crop, MASK)
    w = MASK > 0.5
    assert psnr(fixed, crop, w) > psnr(drift, crop, w) + 10
    matched = paste_faces(
        img, [Paste(crop=drift, M=m, mask=MASK, original_crop=crop)], PasteConfig(color_match=True)
    )
    raw = paste_faces(img, [Paste(crop=drift, M=m, mask=MASK)], RAW)
    reach = _reach(img, m, MASK).astype(np.float32)
    assert psnr(matched, img, reach) > psnr(raw, img, reach) + 8  # measured 39.2 vs 25.4
    # without original_crop the input is re-cut from the frame: the same result
    recut = paste_faces(img, [Paste(crop=drift, M=m, mask=MASK)], PasteConfig(color_match=True))
    assert np.abs(recut.astype(int) - matched.astype(int)).max() <= 2


def test_several_faces_composite_in_order_and_only_their_boxes_change():
    img, faces = insightface_photo("t1.jpg")
    assert len(faces) >= 5
    ms = [estimate_affine(k, S) for k in faces]
    colours = [(i * 40 % 256, 255 - i * 30, 100) for i in range(len(ms))]
    pastes = [
        Paste(crop=np.full((S, S, 3), c, np.uint8), M=m, mask=MASK)
        for c, m in zip(colours, ms, strict=True)
    ]
    out = paste_faces(img, pastes, RAW)
    reach = np.zeros(img.shape[:2], bool)
    for m in ms:
        reach |= _reach(img, m, MASK)
    assert (out[~reach] == img[~reach]).all()
    for m, c in zip(ms, colours, strict=True):  # each face centre shows its own crop
        cx, cy = invert_affine(m) @ np.array([S / 2, S * 0.55, 1.0])
        assert np.abs(out[int(cy), int(cx)].astype(int) - c).max() <= 2
    # the same face pasted twice: the later paste wins where its mask is 1
    m = ms[0]
    two = paste_faces(
        img,
        [
            Paste(np.full((S, S, 3), (0, 0, 255), np.uint8), m, MASK),
            Paste(np.full((S, S, 3), (255, 0, 0), np.uint8), m, MASK),
        ],
        RAW,
    )
    one = paste_faces(img, [Paste(np.full((S, S, 3), (255, 0, 0), np.uint8), m, MASK)], RAW)
    core = cv2.erode((MASK == 1).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(np.float32)
    inner = _reach(img, m, core, 0)
    assert (two[inner] == one[inner]).all()  # the first paste is gone where the second's mask is 1


def test_faces_outside_the_frame_and_empty_masks_are_skipped():
    img, kps = astronaut()
    m = estimate_affine(kps + 5000, S)  # face entirely outside the image
    crop = np.zeros((S, S, 3), np.uint8)
    assert (paste_faces(img, [Paste(crop, m, MASK)], RAW) == img).all()
    m = estimate_affine(kps, S)
    assert (paste_faces(img, [Paste(crop, m, np.zeros((S, S), np.float32))], RAW) == img).all()
    # a face cut by the image border pastes only the part inside
    edge = estimate_affine(kps - [220, 0], S)
    out = paste_faces(img, [Paste(crop, edge, MASK)], RAW)
    assert (out != img).any() and (out[:, 300:] == img[:, 300:]).all()
