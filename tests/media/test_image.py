"""Album photo read/write: orientation, metadata, awkward modes, broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.mediagen import make_album
from worker.config import LimitsConfig, OutputConfig
from worker.errors import MediaError
from worker.media.image import _UPRIGHT, is_image_name, list_album, read_image, write_image

LIMITS = LimitsConfig()
CFG = OutputConfig()


@pytest.fixture(scope="module")
def album(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("album")
    return root, make_album(root)


def _pil_bgr(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1]


def _asymmetric(h: int = 6, w: int = 9) -> np.ndarray:
    return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_reads_upright_and_writes_back(orientation, tmp_path):
    upright = _asymmetric()
    stored = Image.fromarray(upright[:, :, ::-1].copy())
    # find the stored pixels a camera would write: the transpose whose upright form is ours
    if orientation != 1:
        inverse = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}.get(
            orientation, _UPRIGHT[orientation])
        stored = stored.transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = tmp_path / "o.png"
    stored.save(src, exif=exif.tobytes())
    image, meta = read_image(src, LIMITS)
    assert meta.orientation == orientation
    np.testing.assert_array_equal(image, upright)
    dst = tmp_path / "w.png"
    write_image(dst, image, meta, CFG)
    assert Image.open(dst).info["exif"] == Image.open(src).info["exif"]
    np.testing.assert_array_equal(np.asarray(Image.open(dst)), np.asarray(stored))


def test_exif_orientation_and_tags_survive_a_jpeg_round_trip(album, tmp_path):
    root, gt = album
    name = "rotated_t1_2.jpg"
    image, meta = read_image(root / name, LIMITS)
    assert meta.orientation == 6
    stored_w, stored_h = meta.size
    assert image.shape[:2] == (stored_w, stored_h)  # a quarter turn swaps the sides
    dst = tmp_path / name
    write_image(dst, image, meta, CFG)
    with Image.open(dst) as out, Image.open(root / name) as src:
        assert out.info["exif"] == src.info["exif"]  # byte for byte
        assert out.size == src.size  # stored orientation restored
        tags = out.getexif()
        for tag, value in gt["exif_tags"][name].items():
            assert tags[tag] == value
    again, _ = read_image(dst, LIMITS)
    assert np.abs(again.astype(int) - image).mean() < 2.0


def test_icc_profile_is_kept(album, tmp_path):
    root, _ = album
    image, meta = read_image(root / "icc_t1_5.jpg", LIMITS)
    assert meta.icc_profile
    write_image(tmp_path / "x.jpg", image, meta, CFG)
    assert Image.open(tmp_path / "x.jpg").info["icc_profile"] == meta.icc_profile


def test_png_round_trip_is_bit_identical(album, tmp_path):
    root, _ = album
    image, meta = read_image(root / "group_b.png", LIMITS)
    np.testing.assert_array_equal(image, _pil_bgr(root / "group_b.png"))
    write_image(tmp_path / "g.png", image, meta, CFG)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")),
                                  np.asarray(Image.open(root / "group_b.png")))
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]  # no temporary file left


def test_grayscale_reads_as_replicated_bgr_and_writes_gray(album, tmp_path):
    root, _ = album
    image, meta = read_image(root / "gray_t1_3.png", LIMITS)
    gray = np.asarray(Image.open(root / "gray_t1_3.png"))
    assert meta.mode == "L" and image.shape == (*gray.shape, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[:, :, c], gray)
    write_image(tmp_path / "g.png", image, meta, CFG)
    with Image.open(tmp_path / "g.png") as out:
        assert out.mode == "L"
        np.testing.assert_array_equal(np.asarray(out), gray)


def test_sixteen_bit_png_is_scaled(tmp_path):
    values = np.array([[0, 257, 128 * 257, 65535], [1000, 30000, 50000, 65000]], np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    image, meta = read_image(tmp_path / "d.png", LIMITS)
    assert meta.mode.startswith("I") and meta.bit_depth == 16
    expected = np.round(values / 257).astype(np.uint8)
    np.testing.assert_array_equal(image[:, :, 0], expected)
    np.testing.assert_array_equal(image[:, :, 2], expected)
    write_image(tmp_path / "w.png", image, meta, CFG)
    with Image.open(tmp_path / "w.png") as out:
        assert out.mode.startswith("I")  # still a 16-bit file, every bit of it kept
        np.testing.assert_array_equal(np.asarray(out), values)


def test_album_sixteen_bit_and_cmyk_match_their_sources(album):
    root, _ = album
    image, meta = read_image(root / "deep16_t1_1.png", LIMITS)
    raw = np.asarray(Image.open(root / "deep16_t1_1.png")).astype(np.uint32)
    np.testing.assert_array_equal(image[:, :, 1], ((raw * 255 + 32767) // 65535).astype(np.uint8))
    image, meta = read_image(root / "cmyk_hanks.jpg", LIMITS)
    assert meta.mode == "CMYK"
    np.testing.assert_array_equal(image, _pil_bgr(root / "cmyk_hanks.jpg"))


def test_cmyk_jpeg_reads_the_right_colours(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (200, 30, 30)
    rgb[:, 16:32] = (30, 160, 60)
    rgb[:, 32:] = (20, 40, 220)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    image, meta = read_image(tmp_path / "c.jpg", LIMITS)
    assert meta.mode == "CMYK"
    centre = image[8:24, [8, 24, 40]].astype(int).mean(axis=0)  # BGR
    np.testing.assert_allclose(centre, rgb[16, [8, 24, 40], ::-1], atol=6)
    write_image(tmp_path / "w.jpg", image, meta, CFG)
    assert Image.open(tmp_path / "w.jpg").mode == "CMYK"


def test_alpha_is_kept(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., :3] = 90
    rgba[..., 3] = np.linspace(0, 255, 12, dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image, meta = read_image(tmp_path / "a.png", LIMITS)
    assert meta.has_alpha and image.shape == (10, 12, 3)
    write_image(tmp_path / "w.png", image, meta, CFG)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "w.png")), rgba)


def test_bomb_is_refused_before_decoding(album):
    root, _ = album
    # a truncated file with a tiny limit: "too large" (not "truncated") proves no pixel was read
    with pytest.raises(MediaError, match="too large") as err:
        read_image(root / "corrupt.jpg", LimitsConfig(max_image_pixels=1000))
    assert err.value.file == str(root / "corrupt.jpg")


@pytest.mark.parametrize("name,reason", [
    ("corrupt.jpg", "truncated"), ("empty.jpg", "empty"), ("notes.jpg", "not an image"),
])
def test_bad_files_raise_media_error(album, name, reason):
    root, gt = album
    assert gt["bad"][name]
    with pytest.raises(MediaError, match=reason) as err:
        read_image(root / name, LIMITS)
    assert err.value.file == str(root / name)


def test_every_good_album_photo_reads(album):
    root, gt = album
    for name in gt["faces"]:
        image, _ = read_image(root / name, LIMITS)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.flags.c_contiguous


def test_list_album_is_recursive_sorted_and_skips_hidden(album):
    root, gt = album
    listed = list_album(root)
    assert listed == gt["files"] == sorted(listed)
    assert "trip/single_t1_4.jpg" in listed and "notes.jpg" in listed
    assert ".hidden.jpg" not in listed


def test_is_image_name():
    assert is_image_name("a/B.JPG") and is_image_name("x.tiff") and is_image_name("p.webp")
    assert not is_image_name("notes.txt") and not is_image_name("jpg")
