"""Command-line behaviour a user relies on: clear errors, exit codes, faces left alone."""

import json

import cv2
import pytest

from tests.mediagen import FaceScene
from worker.cli import main


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "portrait.png"
    cv2.imwrite(str(path), FaceScene(persons=("t1_2",), size=(320, 256), face_px=110).render(0))
    return path


def test_missing_insightface_pack_is_a_clear_error(photo, tmp_path, capsys):
    code = main(["restore", str(photo), "-o", str(tmp_path), "-q", "--set", "backend=insightface",
                 "--set", f"detect.insightface_root={tmp_path / 'packs'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "packs" / "models" / "buffalo_l") in err


def test_faces_under_the_size_floor_are_counted_and_untouched(photo, tmp_path):
    assert main(["restore", str(photo), "-o", str(tmp_path), "-q",
                 "--set", "restore.min_face_px=400", "--set", "restore.crop_size=256"]) == 0
    (item,) = tmp_path.iterdir()
    m = json.loads((item / "manifest.json").read_text())
    assert m["counts"]["faces"] == 1 and m["counts"]["faces_too_small"] == 1
    assert m["counts"]["faces_restored"] == 0 and m["faces"][0]["skipped"] == "too_small"
    assert (item / "restored" / "portrait.png").read_bytes() == photo.read_bytes()


def test_unknown_restorer_and_backend(photo, tmp_path, capsys):
    assert main(["restore", str(photo), "-o", str(tmp_path), "-q", "--set", "restorer=magic"]) == 2
    assert "magic" in capsys.readouterr().err
    assert main(["restore", str(photo), "-o", str(tmp_path), "-q", "--set", "restorer=refstar",
                 "--set", f"restore.checkpoint={tmp_path / 'missing'}"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
