"""``restore.fidelity`` / ``--fidelity``: one control for every restorer, from "leave the face as
it is" (0) to "the restorer's full result" (1); values outside 0..1 are refused."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from refstar.restorer import Restored
from tests.mediagen import FaceScene
from worker.cli import main
from worker.config import ConfigError, load_config
from worker.records import Face
from worker.stages.restore import FaceRestoreStage

S = 64
LIFT = 0.4  # what the restorer below adds to every sample


class Lift:
    """A restorer with a known change: +LIFT everywhere."""

    name = "lift"

    def restore(self, lq, ref) -> Restored:
        return Restored(image=(lq + LIFT).clamp(0, 1), mask=lq[:, :1] * 0)


def _face() -> Face:
    kps = np.array([[40, 45], [60, 45], [50, 55], [42, 66], [58, 66]], np.float32)
    return Face(bbox=np.array([30, 30, 70, 80], np.float32), kps=kps, det_score=0.9, frame=0)


@pytest.mark.parametrize("fidelity", [1.0, 0.5, 0.25])
def test_the_restored_face_moves_fidelity_of_the_way(fidelity):
    cfg = load_config(None, [f"restore.crop_size={S}", f"restore.fidelity={fidelity}"])
    image = np.random.default_rng(0).integers(40, 140, (100, 100, 3), np.uint8)  # no clipping
    got = []
    FaceRestoreStage(cfg, Lift()).run([image], [[_face()]], {}, lambda f, a, b: got.append((a, b)))
    before, after = (x.astype(np.float64) for x in got[0])
    change = after - before
    assert np.abs(change - fidelity * LIFT * 255).max() <= 1.0  # rounding to uint8 only


def test_fidelity_zero_leaves_every_pixel():
    cfg = load_config(None, [f"restore.crop_size={S}", "restore.fidelity=0"])
    image = np.random.default_rng(1).integers(0, 255, (100, 100, 3), np.uint8)
    face = _face()
    out = FaceRestoreStage(cfg, Lift()).run([image], [[face]], {})
    assert out[0] is image and not face.restored


@pytest.mark.parametrize("override, words", [
    ("restore.fidelity=1.5", r"restore.fidelity: 1.5 is out of range \(allowed: \[0.0, 1.0\]\)"),
    ("restore.fidelity=-0.1", "restore.fidelity: -0.1 is out of range"),
    ("restore.strength=7", "restore.strength: 7.0 is out of range"),
    ("output.crf=-5", r"output.crf: -5 is out of range \(allowed: \[0, 51\]\)"),
    ("detect.stride=0", r"detect.stride: 0 is out of range \(allowed: >= 1\)"),
    ("restore.adapt_steps=0", "restore.adapt_steps: 0 is out of range"),
    ("restore.adapt_clean=1.2", r"restore.adapt_clean: 1.2 is out of range \(allowed: \[0.0, 1.0\]\)"),
])
def test_out_of_range_values_name_the_key_and_the_range(override, words):
    with pytest.raises(ConfigError, match=words):
        load_config(None, [override])


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "portrait.png"
    cv2.imwrite(str(path), FaceScene(persons=("t1_2",), size=(320, 256), face_px=110).render(0))
    return path


def _manifest(out: Path) -> dict:
    return json.loads(next(out.glob("*/manifest.json")).read_text())


def test_cli_fidelity_zero_gives_the_photo_back_byte_for_byte(photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["restore", str(photo), "-o", str(out), "-q", "--fidelity", "0"]) == 0
    restored = next(out.glob("*/restored/portrait.png"))
    assert restored.read_bytes() == photo.read_bytes()
    m = _manifest(out)
    assert m["counts"]["faces"] >= 1 and m["counts"]["faces_restored"] == 0
    assert m["config"]["restore"]["fidelity"] == 0.0


def test_cli_half_fidelity_changes_the_face_half_as_much(photo, tmp_path):
    full, half = tmp_path / "full", tmp_path / "half"
    sets = ["-q", "--set", "restore.skip_sharp=false", "--set", "restore.crop_size=256"]
    assert main(["restore", str(photo), "-o", str(full), *sets]) == 0
    assert main(["restore", str(photo), "-o", str(half), *sets, "--fidelity", "0.5"]) == 0
    src = cv2.imread(str(photo)).astype(np.float64)
    d_full = cv2.imread(str(next(full.glob("*/restored/portrait.png")))) - src
    d_half = cv2.imread(str(next(half.glob("*/restored/portrait.png")))) - src
    # the full result changed the face (measured 0.12 over the whole picture: a lone photo has
    # no reference, so guided only denoises and sharpens it mildly)
    assert np.abs(d_full).mean() > 0.06
    ratio = np.abs(d_half).sum() / np.abs(d_full).sum()
    assert 0.4 < ratio < 0.6, ratio


def test_cli_refuses_fidelity_out_of_range(photo, tmp_path, capsys):
    assert main(["restore", str(photo), "-o", str(tmp_path / "o"), "--fidelity", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "restore.fidelity: 1.5 is out of range" in err and not (tmp_path / "o").exists()
    assert main(["config", "show", "--fidelity", "0.3"]) == 0
    assert "fidelity: 0.3" in capsys.readouterr().out
