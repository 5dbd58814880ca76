"""The mirror layout (``--layout mirror``): restored media keep the input's names in a tree that
mirrors the input, with the item's refs, manifest, report and ``_DONE`` in a sidecar folder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from tests.mediagen import FaceScene, write_video
from worker import storage
from worker.cli import main
from worker.config import ConfigError
from worker.item.layout import Layout, check_unique
from worker.media.video import audio_packet_digests, iter_frames

SETS = ["-q", "--set", "restore.crop_size=256"]


# -- where things go ----------------------------------------------------------------------------

def test_items_layout_keeps_everything_in_the_item_folder():
    lay = Layout("/out", "a/b/clip.mp4")
    assert lay.final_dir("clip-0123456789") == "/out/clip-0123456789"
    assert lay.target("restored.mp4") is None and lay.media_place() is None
    assert lay.output_ref("restored.mp4") == "restored.mp4"


def test_mirror_places_a_video_under_its_own_name_with_a_sidecar():
    lay = Layout("s3://b/out", "a/b/clip.mp4", mirror=True, suffix="_r")
    assert lay.final_dir("x") == "s3://b/out/a/b/clip.mp4.refstar"
    assert lay.target("restored.mp4") == "s3://b/out/a/b/clip_r.mp4"
    assert lay.target("refs/0/0.png") is None and lay.target("manifest.json") is None
    # the manifest names the media relative to the sidecar it sits in
    assert lay.output_ref("restored.mp4") == "../../../a/b/clip_r.mp4"
    assert lay.media_place() == "s3://b/out/a/b/clip_r.mp4"


def test_mirror_places_an_album_and_a_single_photo():
    album = Layout("/out", "photos/1950", mirror=True, folder=True)
    assert album.final_dir("x") == "/out/photos/1950.refstar"
    assert album.target("restored/sub/x.jpg") == "/out/photos/1950/sub/x.jpg"
    assert album.output_ref("restored/") == "../../photos/1950/"
    photo = Layout("/out", "portrait.png", mirror=True, suffix="-fixed")
    assert photo.target("restored/portrait.png") == "/out/portrait-fixed.png"
    assert photo.output_ref("restored/") == "../"


def test_mirror_refuses_names_that_leave_the_output_folder():
    with pytest.raises(storage.StorageError):
        Layout("s3://b/out", "../escape.mp4", mirror=True).final_dir("x")
    with pytest.raises(storage.StorageError):
        Layout("/out", "a/../../x.mp4", mirror=True).target("restored.mp4")


def test_mirror_refuses_two_inputs_with_one_name_and_writing_over_the_input(tmp_path):
    with pytest.raises(ConfigError, match="both be written as clip.mp4"):
        check_unique([("/x/clip.mp4", "clip.mp4"), ("/y/clip.mp4", "clip.mp4")])
    check_unique([("/x/clip.mp4", "x/clip.mp4"), ("/y/clip.mp4", "y/clip.mp4")])
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"")
    with pytest.raises(storage.StorageError, match="over the input itself"):
        Layout(str(tmp_path), "clip.mp4", mirror=True).check_not_input(str(src))
    Layout(str(tmp_path), "clip.mp4", mirror=True, suffix="_r").check_not_input(str(src))


# -- end to end ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    write_video(FaceScene(persons=("t1_2",), size=(256, 192), face_px=96), d / "clip.mp4", 8)
    (d / "album").mkdir()
    for k, who in enumerate(("hanks", "t1_2")):
        cv2.imwrite(str(d / "album" / f"p{k}.jpg"), FaceScene(persons=(who,), size=(256, 192), face_px=96).render(k))
    return d


def test_restore_with_the_mirror_layout_keeps_names(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["restore", str(inputs / "clip.mp4"), str(inputs / "album"), "-o", str(out), *SETS,
            "--layout", "mirror", "--suffix", "_r"]
    assert main(args) == 0
    assert (out / "clip_r.mp4").is_file() and not (out / "clip.mp4").exists()
    assert audio_packet_digests(out / "clip_r.mp4") == audio_packet_digests(inputs / "clip.mp4")
    assert sum(1 for _ in iter_frames(out / "clip_r.mp4")) == 8
    assert sorted(p.name for p in (out / "album").iterdir()) == ["p0_r.jpg", "p1_r.jpg"]
    assert (out / "clip.mp4.refstar" / "refs" / "0" / "0.png").is_file()
    for side, kind in ((out / "clip.mp4.refstar", "video"), (out / "album.refstar", "album")):
        assert {"manifest.json", "report.html", "_DONE"} <= {p.name for p in side.iterdir()}
        m = json.loads((side / "manifest.json").read_text())
        assert m["status"] == "ok" and m["kind"] == kind
        assert json.loads((side / "_DONE").read_text())["item_id"] == m["item_id"]
    video = json.loads((out / "clip.mp4.refstar" / "manifest.json").read_text())
    assert (out / "clip.mp4.refstar" / video["media"]["output"]).resolve() == (out / "clip_r.mp4").resolve()
    assert not (out / "_staging").exists() or not any((out / "_staging").iterdir())
    index = (out / "index.html").read_text()
    assert "<h1>2 items</h1>" in index
    assert "clip.mp4.refstar/report.html" in index and "album.refstar/report.html" in index
    capsys.readouterr()

    assert main(args) == 0  # nothing changed: nothing redone
    assert capsys.readouterr().out.count("already done") == 2

    # another setting: the same names, redone, and the sidecar's _DONE names the new item
    before = (out / "clip_r.mp4").read_bytes()
    assert main([*args, "--set", "output.crf=30"]) == 0
    m = json.loads((out / "clip.mp4.refstar" / "manifest.json").read_text())
    assert json.loads((out / "clip.mp4.refstar" / "_DONE").read_text())["item_id"] == m["item_id"] != video["item_id"]
    assert (out / "clip_r.mp4").read_bytes() != before
    assert len(list(out.glob("*.refstar"))) == 2

    assert main(["status", "-o", str(out)]) == 0
    listing = capsys.readouterr().out
    assert "clip.mp4.refstar" in listing and "album.refstar" in listing


def test_mirror_into_the_input_folder_needs_a_suffix(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    write_video(FaceScene(persons=("t1_2",), size=(256, 192), face_px=96), clip, 4)
    original = clip.read_bytes()
    assert main(["restore", str(clip), "-o", str(tmp_path), *SETS, "--layout", "mirror"]) == 1
    assert "over the input itself" in capsys.readouterr().err
    assert clip.read_bytes() == original


def test_two_inputs_with_one_name_are_refused(inputs, tmp_path, capsys):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "clip.mp4").write_bytes((inputs / "clip.mp4").read_bytes())
    code = main(["restore", str(inputs / "clip.mp4"), str(other / "clip.mp4"), "-o", str(tmp_path / "out"),
                 *SETS, "--layout", "mirror"])
    assert code == 2 and "both be written as clip.mp4" in capsys.readouterr().err
    assert not Path(tmp_path / "out").exists() or not any(Path(tmp_path / "out").iterdir())
