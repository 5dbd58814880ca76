"""The album path: several people, awkward formats and broken files, with known ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.mediagen import make_album
from tests.outputs import item_dirs
from worker.cli import main
from worker.config import load_config
from worker.item.pipeline import restore_item

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def album(tmp_path_factory):
    root = tmp_path_factory.mktemp("album") / "holiday"
    gt = make_album(root)
    out = tmp_path_factory.mktemp("out")
    cfg = load_config(None, ["progress=false", "restore.crop_size=256"])
    res = restore_item(root, str(out), cfg)
    return root, gt, res, Path(res.output)


def test_people_are_counted_and_bad_files_reported(album):
    root, gt, res, out = album
    assert res.status == "partial"  # the bad files
    assert {e.file for e in res.errors} == set(gt["bad"])
    m = json.loads((out / "manifest.json").read_text())
    persons = {p for people in gt["faces"].values() for p in people}
    assert len(m["identities"]) == len(persons)
    # every photo of one person lands in one identity, and different people never share one
    ident_of = {}
    for f in m["faces"]:
        people = gt["faces"][f["source"]]
        boxes = gt["boxes"][f["source"]]
        cx = (f["bbox"][0] + f["bbox"][2]) / 2
        person = min(people, key=lambda p: abs((boxes[p][0] + boxes[p][2]) / 2 - cx))
        ident_of.setdefault(person, set()).add(f["identity"])
    assert all(len(v) == 1 for v in ident_of.values())
    assert len({next(iter(v)) for v in ident_of.values()}) == len(persons)
    assert (out / "_DONE").is_file()


def test_every_file_is_in_the_output(album):
    root, gt, _, out = album
    restored = sorted(p.relative_to(out / "restored").as_posix()
                      for p in (out / "restored").rglob("*") if p.is_file())
    assert restored == gt["files"]
    for name in list(gt["bad"]) + gt["no_faces"]:
        assert (out / "restored" / name).read_bytes() == (root / name).read_bytes()


def test_png_background_is_bit_identical_and_faces_change(album):
    root, gt, _, out = album
    name = "group_b.png"
    a = np.asarray(Image.open(root / name))
    b = np.asarray(Image.open(out / "restored" / name))
    assert a.shape == b.shape
    changed = np.any(a != b, axis=2)
    assert changed.any()
    inside = np.zeros_like(changed)
    for x1, y1, x2, y2 in gt["boxes"][name].values():
        w, h = x2 - x1, y2 - y1  # the paste mask stays within a margin around the face box
        inside[max(0, int(y1 - h)):int(y2 + h), max(0, int(x1 - w)):int(x2 + w)] = True
    assert not (changed & ~inside).any()


def test_exif_modes_and_formats_kept(album):
    root, gt, _, out = album
    for name, orientation in gt["exif_orientation"].items():
        src, dst = Image.open(root / name), Image.open(out / "restored" / name)
        assert dst.format == src.format and dst.size == src.size
        assert dst.getexif().get(0x0112) == orientation
        for tag, value in gt["exif_tags"][name].items():
            assert dst.getexif().get(tag) == value
    for name, mode in gt["modes"].items():
        assert Image.open(out / "restored" / name).mode == mode
    for name in gt["icc"]:
        assert Image.open(out / "restored" / name).info.get("icc_profile")


def test_single_image_and_cli_exit_codes(album, tmp_path, capsys):
    root, _, _, _ = album
    assert main(["restore", str(root / "single_t1_0.jpg"), "-o", str(tmp_path), "-q",
                 "--set", "restore.crop_size=256"]) == 0
    (item,) = item_dirs(tmp_path)
    assert (item / "restored" / "single_t1_0.jpg").is_file()
    capsys.readouterr()
    assert main(["restore", str(root / "empty.jpg"), "-o", str(tmp_path / "x"), "-q"]) == 1
    assert "empty.jpg" in capsys.readouterr().err
    assert main(["restore", str(root / "missing.mp4"), "-o", str(tmp_path / "y"), "-q"]) == 1
