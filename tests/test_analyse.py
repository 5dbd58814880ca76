"""``refstar analyse``: the people gallery without restoration, and an analysis that a later
restore into the same output reuses (and gives exactly what a restore from scratch gives)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.mediagen import FaceScene, write_video
from tests.outputs import item_dirs
from worker.cli import main
from worker.media.video import iter_frames

# x264's threaded encoder is not bit-reproducible (the same frames encoded six times in one process:
# one encode differed), so clips compared frame for frame are written losslessly
SETS = ["-q", "--set", "restore.crop_size=256", "--set", "output.crf=0"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    scene = FaceScene(persons=("t1_2", "hanks"), size=(320, 224), face_px=90)
    write_video(scene, d / "two.mp4", 12, degrade=range(4, 8))
    (d / "album").mkdir()
    for k in range(2):
        cv2.imwrite(str(d / "album" / f"p{k}.jpg"), FaceScene(persons=("t1_2",), size=(256, 192), face_px=90).render(k))
    return d


def _manifest(folder: Path) -> dict:
    m = json.loads((folder / "manifest.json").read_text())
    for key in ("item_id", "created", "timings"):
        m.pop(key)
    m["counts"].pop("analysis_reused", None)
    m["media"].pop("root", None)
    return m


def test_analyse_then_restore_some_people_reuses_the_analysis(inputs, tmp_path, capsys):
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    video, album = str(inputs / "two.mp4"), str(inputs / "album")
    assert main(["analyse", video, album, "-o", str(out), *SETS]) == 0
    assert "2 items: 2 analysed" in capsys.readouterr().out
    analysed = {p.name.split("-")[0]: p for p in item_dirs(out)}
    m = json.loads((analysed["two"] / "manifest.json").read_text())
    assert m["status"] == "analysed" and len(m["identities"]) == 2
    assert m["counts"]["faces"] == 24 and m["counts"]["faces_restored"] == 0
    assert not (analysed["two"] / "_DONE").exists() and not (analysed["two"] / "restored.mp4").exists()
    assert all((analysed["two"] / r["path"]).is_file() for i in m["identities"] for r in i["references"])
    assert "Analysed, nothing restored yet" in (analysed["two"] / "report.html").read_text()
    assert "'st analysed'" in (out / "index.html").read_text()
    assert len(list((out / "_analysis").iterdir())) == 2

    args = [video, album, *SETS, "--persons", "1"]
    assert main(["restore", *args, "-o", str(out)]) == 0
    assert main(["restore", *args, "-o", str(fresh)]) == 0
    done = {p.name.split("-")[0]: p for p in item_dirs(out) if (p / "_DONE").exists()}
    scratch = {p.name.split("-")[0]: p for p in item_dirs(fresh)}
    for name in ("two", "album"):
        m = json.loads((done[name] / "manifest.json").read_text())
        assert m["counts"]["analysis_reused"] == 1 and m["status"] == "ok"
        assert "analysis_reused" not in json.loads((scratch[name] / "manifest.json").read_text())["counts"]
        assert _manifest(done[name]) == _manifest(scratch[name])  # the same faces, people, references
    a = list(iter_frames(done["two"] / "restored.mp4"))
    b = list(iter_frames(scratch["two"] / "restored.mp4"))
    assert len(a) == 12 and all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    m = json.loads((done["two"] / "manifest.json").read_text())
    assert m["counts"]["faces_not_selected"] == 12  # person 0 was left as they were


def test_other_detection_settings_or_a_broken_analysis_are_not_reused(inputs, tmp_path, caplog):
    out = tmp_path / "out"
    clip = str(inputs / "two.mp4")
    assert main(["analyse", clip, "-o", str(out), *SETS]) == 0
    assert main(["restore", clip, "-o", str(out), *SETS, "--set", "detect.stride=2"]) == 0
    (item,) = [p for p in item_dirs(out) if (p / "_DONE").exists()]
    assert "analysis_reused" not in json.loads((item / "manifest.json").read_text())["counts"]

    (cache,) = (out / "_analysis").iterdir()
    (cache / "arrays.npz").write_bytes(b"PK\x03\x04 truncated")
    assert main(["restore", clip, "-o", str(out), *SETS, "--fidelity", "0.5"]) == 0
    assert "ignoring the unreadable analysis" in caplog.text
    m = [json.loads((p / "manifest.json").read_text()) for p in item_dirs(out) if (p / "_DONE").exists()]
    assert len(m) == 2 and all(x["status"] == "ok" and "analysis_reused" not in x["counts"] for x in m)
