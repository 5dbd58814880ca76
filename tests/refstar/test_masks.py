"""RefSel training masks: agreement of the same face, exclusions, region prior, CLI."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from refstar.align import template
from refstar.masks import main, make_mask, regions
from worker.synthetic import FaceScene

S = 128


def _scene_crops(persons: tuple[str, ...], frames: range, size: int = S) -> dict[str, list]:
    """Aligned-enough crops (box-centred, no detector) of a synthetic clip, per person."""
    scene = FaceScene(persons=persons, size=(320, 240), face_px=96)
    out: dict[str, list] = {}
    for i in frames:
        frame = scene.render(i)
        for p, b in scene.face_boxes(i).items():
            cx, cy, h = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2 + 0.1 * (b[3] - b[1]), 1.6 * (b[2] - b[0])
            k = size / h
            m = np.float32([[k, 0, size / 2 - cx * k], [0, k, size / 2 - cy * k]])
            out.setdefault(p, []).append(
                cv2.warpAffine(frame, m, (size, size), borderMode=cv2.BORDER_REFLECT_101))
    return out


@pytest.fixture(scope="module")
def crops() -> dict[str, list]:
    return _scene_crops(("t1_2", "hanks"), range(0, 12, 3))


def test_regions_are_soft_and_static_excludes_mouth():
    reg = regions(S)
    for name, m in reg.items():
        assert m.shape == (S, S) and m.dtype == np.float32, name
        assert 0.0 <= m.min() and m.max() <= 1.0, name
    mouth = template(S)[3:].mean(0).astype(int)
    assert reg["mouth"][mouth[1], mouth[0]] > 0.9
    assert reg["static"][mouth[1], mouth[0]] < 0.1
    eye = template(S)[0].astype(int)
    assert reg["eyes"][eye[1], eye[0]] > 0.9 and reg["static"][eye[1], eye[0]] > 0.9
    assert reg["static"][2, 2] == 0.0  # the corner (background) is never selected


def test_same_person_agrees_other_person_does_not(crops):
    a, b = crops["t1_2"][0], crops["t1_2"][2]
    mask, ref_w = make_mask(a, b)
    assert mask.shape == (S, S) and mask.dtype == np.float32 and ref_w.shape == b.shape
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    other, _ = make_mask(a, crops["hanks"][0])
    assert mask.mean() > 0.2 and mask.mean() > 3 * other.mean()
    # the refined warp brings the reference closer to the GT than landmark alignment alone
    err = lambda x: float(np.abs(x.astype(np.float32) - a.astype(np.float32)).mean())  # noqa: E731
    assert err(ref_w) < err(b)


def test_occlusion_and_changed_mouth_are_excluded(crops):
    a, b = crops["t1_2"][0], crops["t1_2"][1].copy()
    clean, _ = make_mask(a, b)
    occ = b.copy()
    occ[40:75, 20:62] = (40, 200, 40)  # a green occluder over the left eye
    m_occ, _ = make_mask(a, occ)
    assert m_occ[45:70, 25:57].mean() < 0.3 * clean[45:70, 25:57].mean()
    # an open, dark mouth in the reference: the expression differs, the mouth is not selected
    le, re_, _, ml, mr = template(S)
    centre = tuple(int(v) for v in (ml + mr) / 2)
    opened = b.copy()
    cv2.ellipse(opened, centre, (int((mr - ml)[0] * 0.45), 9), 0, 0, 360, (20, 10, 30), -1)
    m_mouth, _, parts = make_mask(a, opened, return_parts=True)
    mouth = regions(S)["mouth"] > 0.5
    assert m_mouth[mouth].mean() < 0.5 * clean[mouth].mean() + 1e-3
    eyes = regions(S)["eyes"] > 0.5
    assert m_mouth[eyes].mean() > 0.5 * clean[eyes].mean()
    assert set(parts) >= {"agree", "occluded", "inframe", "prior", "mouth_ok"}


def test_cli_writes_masks_and_previews(tmp_path, crops):
    for person, items in crops.items():
        (tmp_path / "data" / person).mkdir(parents=True)
        for i, c in enumerate(items[:2]):
            cv2.imwrite(str(tmp_path / "data" / person / f"{i}.png"), c)
    assert main([str(tmp_path / "data"), str(tmp_path / "out"), "--size", "128"]) == 0
    pngs = sorted((tmp_path / "out").rglob("*__*.png"))
    previews = sorted((tmp_path / "out").rglob("*_preview.jpg"))
    assert len(pngs) == 4 and len(previews) == 4
    m = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert m.shape == (128, 128) and m.max() > 0
    assert cv2.imread(str(previews[0])).shape == (128, 4 * 128, 3)


def test_cli_refuses_a_photo_that_is_not_an_aligned_crop(tmp_path, crops, capsys):
    (tmp_path / "data" / "p").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "data" / "p" / "wide.png"), np.zeros((40, 60, 3), np.uint8))
    assert main([str(tmp_path / "data"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "wide.png" in err and "pass an analyzer" in err
