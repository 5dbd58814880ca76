"""insightface backend. Model packs are never downloaded: without one present (the default in
CI) only the missing-pack error is tested here and the rest skips with the reason; the same code
runs on every change on the tiny pack of test_insightface_tiny_pack.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from worker.config import DetectConfig
from worker.errors import ModelError
from worker.faces.base import make_analyzer
from worker.faces.insightface_backend import pack_dir, template_kps

IMAGES = (
    Path(next(iter(importlib.util.find_spec("insightface").submodule_search_locations)))
    / "data"
    / "images"
)
CFG = DetectConfig(backend="insightface")


def test_missing_pack_names_the_folder(tmp_path):
    cfg = DetectConfig(backend="insightface", insightface_root=str(tmp_path))
    with pytest.raises(ModelError) as err:
        make_analyzer(cfg)
    message = str(err.value)
    assert str(tmp_path / "models" / "buffalo_l") in message
    assert "Nothing is downloaded" in message
    assert not (tmp_path / "models").exists(), "must not create or download anything"


def test_empty_pack_folder_is_missing(tmp_path):
    (tmp_path / "models" / "buffalo_l").mkdir(parents=True)
    with pytest.raises(ModelError, match="buffalo_l"):
        make_analyzer(DetectConfig(backend="insightface", insightface_root=str(tmp_path)))


def test_template_kps_inside_box():
    k = template_kps(np.array([100, 50, 212, 162], np.float32))
    assert k[0, 0] < k[1, 0] and k[:2, 1].mean() < k[2, 1] < k[3:, 1].mean()
    assert np.all((k >= [100, 50]) & (k <= [212, 162]))


@pytest.fixture(scope="module")
def analyzer():
    if not any(pack_dir(CFG).glob("*.onnx")):
        pytest.skip(
            f"insightface model pack {CFG.insightface_pack} not found under {pack_dir(CFG)}"
        )
    return make_analyzer(CFG)


def test_t1_six_people(analyzer):
    image = cv2.imread(str(IMAGES / "t1.jpg"))
    faces = analyzer.analyze(image)
    assert len(faces) == 6
    assert [f.bbox[0] for f in faces] == sorted(f.bbox[0] for f in faces)
    for f in faces:
        k = f.kps
        assert k[0, 0] < k[1, 0] and k[:2, 1].mean() < k[2, 1] < k[3:, 1].mean()
        assert f.embedding.shape == (analyzer.embed_dim,)
        assert np.linalg.norm(f.embedding) == pytest.approx(1.0, abs=1e-5)
    refined = analyzer.refine(image, np.stack([f.bbox for f in faces]))
    for r, f in zip(refined, faces, strict=True):
        assert not r.detected and np.abs(r.kps - f.kps).max() < 5
        assert float(r.embedding @ f.embedding) > 0.9


def test_tom_hanks(analyzer):
    assert len(analyzer.analyze(cv2.imread(str(IMAGES / "Tom_Hanks_54745.png")))) == 1
