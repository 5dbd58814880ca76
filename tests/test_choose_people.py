"""Choosing whom to restore (``--persons``, ``--skip-persons``, ``--largest-face-only``) on a real
album: the chosen people's faces change, everyone else's pixels stay bit-identical, and the
manifest counts what was left out and why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.restore import parse_args
from tests.mediagen import make_album
from worker.cli import main

pytestmark = pytest.mark.slow

FILES = ["group_a.jpg", "group_b.png", "single_astronaut.png", "single_t1_0.jpg"]
SETS = ["--set", "progress=false", "--set", "restore.crop_size=256", "-q"]


@pytest.fixture(scope="module")
def album(tmp_path_factory):
    full = tmp_path_factory.mktemp("full")
    gt = make_album(full)
    root = tmp_path_factory.mktemp("album") / "people"
    root.mkdir()
    for name in FILES:
        shutil.copy(full / name, root / name)
    return root, gt


def _restore(root: Path, out: Path, *opts: str) -> dict:
    assert main(["restore", str(root), "-o", str(out), *SETS, *opts]) == 0
    (item,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith("_")]
    m = json.loads((item / "manifest.json").read_text())
    m["dir"] = item
    return m


def _person_of(face: dict, gt: dict) -> str:
    boxes = gt["boxes"][face["source"]]
    cx = (face["bbox"][0] + face["bbox"][2]) / 2
    return min(boxes, key=lambda p: abs((boxes[p][0] + boxes[p][2]) / 2 - cx))


def _pixels(path: Path, box) -> np.ndarray:
    x1, y1, x2, y2 = (int(v) for v in box)
    return np.asarray(Image.open(path).convert("RGB"))[y1:y2, x1:x2]


@pytest.fixture(scope="module")
def everyone(album, tmp_path_factory):
    root, gt = album
    m = _restore(root, tmp_path_factory.mktemp("all"))
    ids = {}
    for f in m["faces"]:
        ids.setdefault(_person_of(f, gt), set()).add(f["identity"])
    assert all(len(v) == 1 for v in ids.values()), ids
    return m, {p: next(iter(v)) for p, v in ids.items()}


def test_only_the_chosen_person_is_restored(album, everyone, tmp_path):
    root, gt = album
    _, ids = everyone
    m = _restore(root, tmp_path / "out", "--persons", str(ids["astronaut"]))
    for f in m["faces"]:
        assert f["restored"] == (_person_of(f, gt) == "astronaut"), f
        if _person_of(f, gt) != "astronaut":
            assert f["skipped"] == "not_selected"
    others = sum(_person_of(f, gt) != "astronaut" for f in m["faces"])
    assert m["counts"]["faces_not_selected"] == others > 0
    # group_b.png: the astronaut changed, t1_2 is exactly as it was
    src, dst = root / "group_b.png", m["dir"] / "restored" / "group_b.png"
    boxes = gt["boxes"]["group_b.png"]
    assert np.array_equal(_pixels(src, boxes["t1_2"]), _pixels(dst, boxes["t1_2"]))
    assert not np.array_equal(_pixels(src, boxes["astronaut"]), _pixels(dst, boxes["astronaut"]))
    # a photo with nobody chosen in it is copied byte for byte
    assert (m["dir"] / "restored" / "single_t1_0.jpg").read_bytes() == (root / "single_t1_0.jpg").read_bytes()


def test_skipped_people_are_left_as_they_are(album, everyone, tmp_path):
    root, gt = album
    _, ids = everyone
    m = _restore(root, tmp_path / "out", "--skip-persons", f"{ids['astronaut']},{ids['t1_0']}")
    for f in m["faces"]:
        assert f["restored"] == (_person_of(f, gt) not in ("astronaut", "t1_0")), f
    assert (m["dir"] / "restored" / "single_astronaut.png").read_bytes() == (root / "single_astronaut.png").read_bytes()
    boxes = gt["boxes"]["group_b.png"]
    src, dst = root / "group_b.png", m["dir"] / "restored" / "group_b.png"
    assert np.array_equal(_pixels(src, boxes["astronaut"]), _pixels(dst, boxes["astronaut"]))
    assert not np.array_equal(_pixels(src, boxes["t1_2"]), _pixels(dst, boxes["t1_2"]))


def test_largest_face_only_restores_one_face_a_photo(album, everyone, tmp_path):
    root, _ = album
    m = _restore(root, tmp_path / "out", "--largest-face-only")
    by_file: dict[str, list[dict]] = {}
    for f in m["faces"]:
        by_file.setdefault(f["source"], []).append(f)
    for faces in by_file.values():
        largest = max(faces, key=lambda f: (f["bbox"][2] - f["bbox"][0]) * (f["bbox"][3] - f["bbox"][1]))
        assert [f for f in faces if f["restored"]] == [largest]
        assert all(f["skipped"] == "not_largest" for f in faces if f is not largest)
    assert m["counts"]["faces_not_largest"] == sum(len(v) - 1 for v in by_file.values()) > 0


def test_a_person_that_is_not_there_is_named_and_nothing_is_restored(album, tmp_path, caplog):
    root, _ = album
    m = _restore(root, tmp_path / "out", "--persons", "99,Rose Smith")
    assert m["counts"]["faces_restored"] == 0 and m["counts"]["faces_not_selected"] == m["counts"]["faces"]
    assert "no person '99', 'Rose Smith' in this item" in caplog.text


def test_the_ray_job_takes_the_same_options():
    args = parse_args(["--input", "in", "--output", "out", "--persons", "0,Rose Smith",
                       "--skip-persons", "2", "--largest-face-only"])
    assert args.sets == ['restore.persons="0,Rose Smith"', 'restore.skip_persons="2"',
                         "restore.largest_face_only=true"]
