"""``--upscale N``: restored media at N times the input's size, the background resized with
Lanczos, the faces restored on crops cut at that size."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from refstar.metrics import psnr
from tests.mediagen import FaceScene, write_video
from tests.outputs import item_dirs
from worker.cli import main
from worker.config import ConfigError, load_config
from worker.media.image import enlarge
from worker.media.video import audio_packet_digests, iter_frames

SETS = ["-q", "--set", "restore.crop_size=256"]
DEGRADED = range(3, 7)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    scene = FaceScene(persons=("t1_2",), size=(256, 192), face_px=90)
    write_video(scene, d / "clip.mp4", 10, degrade=DEGRADED)
    return scene, d / "clip.mp4"


def _faces_psnr(frames: list[np.ndarray], scene: FaceScene, n: int) -> float:
    """Mean PSNR of the degraded frames' face boxes against the clean frames enlarged n times."""
    vals = []
    for i in DEGRADED:
        clean = enlarge(scene.render(i), n)
        for box in scene.face_boxes(i).values():
            x1, y1, x2, y2 = (np.asarray(box) * n).astype(int)
            vals.append(psnr(frames[i][y1:y2, x1:x2], clean[y1:y2, x1:x2]))
    return float(np.mean(vals))


def test_a_video_comes_back_twice_as_large_with_its_faces_restored(clip, tmp_path):
    scene, src = clip
    assert main(["restore", str(src), "-o", str(tmp_path), *SETS, "--upscale", "2"]) == 0
    (item,) = item_dirs(tmp_path)
    inp = list(iter_frames(src))
    out = list(iter_frames(item / "restored.mp4"))
    assert [f.pts for f in out] == [f.pts for f in inp]
    assert out[0].image.shape == (384, 512, 3)
    assert audio_packet_digests(item / "restored.mp4") == audio_packet_digests(src)
    # the background is the input enlarged with Lanczos (up to the encoder's loss)
    for a, b in zip(inp, out, strict=True):
        ref = enlarge(a.image, 2)
        assert psnr(b.image[:40], ref[:40]) > 38
    # the faces: closer to the clean faces at twice the size than the enlarged input is
    before = _faces_psnr([enlarge(f.image, 2) for f in inp], scene, 2)
    after = _faces_psnr([f.image for f in out], scene, 2)
    print(f"face PSNR at x2: enlarged input {before:.2f} dB, restored {after:.2f} dB")
    assert after > before + 0.5
    m = json.loads((item / "manifest.json").read_text())
    assert m["config"]["output"]["upscale"] == 2 and m["counts"]["faces_restored"] > 0


def test_photos_come_back_four_times_as_large_with_their_metadata(tmp_path):
    album = tmp_path / "album"
    album.mkdir()
    face = FaceScene(persons=("hanks",), size=(200, 160), face_px=80).render(0)
    exif = Image.Exif()
    exif[0x010F] = "refstar test camera"
    Image.fromarray(face[:, :, ::-1]).save(album / "face.jpg", quality=95, exif=exif)
    rgba = np.dstack([face[:, :, ::-1], np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (160, 1))])
    Image.fromarray(rgba, "RGBA").save(album / "alpha.png")
    deep = (np.indices((48, 64)).sum(0)[..., None] * np.array([300, 500, 700])).astype(np.uint16)
    cv2.imwrite(str(album / "deep.png"), deep)  # 16-bit, no face
    assert main(["restore", str(album), "-o", str(tmp_path / "out"), *SETS, "--upscale", "4"]) == 0
    (item,) = item_dirs(tmp_path / "out")
    out = item / "restored"
    with Image.open(out / "face.jpg") as im:
        assert im.size == (800, 640) and im.getexif()[0x010F] == "refstar test camera"
    with Image.open(out / "alpha.png") as im:
        assert im.mode == "RGBA" and im.size == (800, 640)
        alpha = np.asarray(im)[..., 3]
    assert np.abs(alpha.astype(int) - enlarge(rgba[..., 3], 4)).max() <= 1
    big = cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED)
    # a photo with no face is enlarged too, in 16 bits: exactly the Lanczos of its samples
    assert big.dtype == np.uint16 and np.array_equal(big, enlarge(deep, 4))
    m = json.loads((item / "manifest.json").read_text())
    assert {f["file"]: f["status"] for f in m["files"]} == {"alpha.png": "restored", "deep.png": "restored",
                                                            "face.jpg": "restored"}


def test_upscale_values_and_the_pixel_limit(clip, tmp_path, capsys):
    with pytest.raises(ConfigError, match="output.upscale: 3 is not one of 1, 2, 4"):
        load_config(None, ["output.upscale=3"])
    _, src = clip
    code = main(["restore", str(src), "-o", str(tmp_path), *SETS, "--upscale", "4",
                 "--set", f"limits.max_video_pixels={256 * 192 * 8}"])
    assert code == 1
    err = capsys.readouterr().err
    assert "clip.mp4" in err and "1024x768" in err and "pixel limit" in err


def test_the_demo_measures_an_enlarged_output_in_the_mirror_layout(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--frames", "16", "--upscale", "2", "--layout", "mirror",
                 "--set", "progress=false", "--set", "restore.crop_size=256"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "face PSNR" in x)
    assert "both enlarged 2x" in line
    before, after = (float(v) for v in re.findall(r"([\d.]+) dB (?:before|after)", line))
    assert after > before + 1.0, line
    assert f"restored video {tmp_path / 'out' / 'demo_clip.mp4'}" in out
