"""Video probe/decode/rewrite on generated clips (and real clips when ../shared/data is there)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from tests.mediagen import FaceScene, write_video
from worker.config import LimitsConfig, OutputConfig
from worker.errors import MediaError
from worker.media.video import VideoRewriter, audio_packet_digests, iter_frames, probe_video

LIMITS = LimitsConfig()
CFG = OutputConfig()
N = 30  # frames per generated clip: enough for B-frames and several audio packets per frame gap


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, tuple[Path, list[int]]]:
    """Generated sources: name -> (path, pts written)."""
    root = tmp_path_factory.mktemp("clips")
    scene = FaceScene(["t1_2", "hanks"], size=(256, 192), face_px=80)
    out = {}
    for name, kw in {
        "cfr": {},
        "vfr": {"vfr": True},
        "rot90": {"rotation": 90},
        "mpeg4": {"codec": "mpeg4"},
    }.items():
        path = root / f"{name}.mp4"
        out[name] = (path, write_video(scene, path, N, **kw))
    return out


def _rewrite(src: Path, dst: Path, cfg: OutputConfig = CFG) -> None:
    info = probe_video(src, LIMITS)
    with VideoRewriter(src, dst, info, cfg) as writer:
        for frame in iter_frames(src, info):
            writer.write(frame)
    assert writer.frames_written == info.frames


@pytest.mark.parametrize("name", ["cfr", "vfr", "rot90", "mpeg4"])
def test_decode_yields_every_frame_with_source_pts(clips, name):
    path, pts = clips[name]
    info = probe_video(path, LIMITS)
    frames = list(iter_frames(path, info))
    assert [f.index for f in frames] == list(range(N))
    assert [f.pts for f in frames] == pts
    img = frames[0].image
    assert img.shape == (192, 256, 3) and img.dtype.name == "uint8" and img.flags.c_contiguous
    assert (info.width, info.height) == (256, 192)
    assert frames[0].time_base == info.time_base


def test_rotation_is_applied_on_read(clips):
    info = probe_video(clips["rot90"][0], LIMITS)
    assert info.rotation == 90 and (info.stored_width, info.stored_height) == (192, 256)
    upright = next(iter_frames(clips["rot90"][0], info)).image
    reference = next(iter_frames(clips["cfr"][0])).image
    assert cv2.PSNR(upright, reference) > 30  # same scene: the orientation is right


@pytest.mark.parametrize("name", ["cfr", "vfr", "rot90"])
def test_rewrite_round_trip_keeps_timing_audio_and_metadata(clips, name, tmp_path):
    src, pts = clips[name]
    dst = tmp_path / "out.mp4"
    _rewrite(src, dst)
    a, b = probe_video(src, LIMITS), probe_video(dst, LIMITS)
    assert b.frames == a.frames == N
    assert (b.width, b.height, b.rotation) == (a.width, a.height, a.rotation)
    assert (b.stored_width, b.stored_height) == (a.stored_width, a.stored_height)
    assert b.color == a.color == {"color_range": 1, "colorspace": 1, "color_primaries": 1, "color_trc": 1}
    assert b.codec == "h264" and b.time_base == a.time_base
    out_frames = list(iter_frames(dst, b))
    assert [f.pts for f in out_frames] == pts
    digests = audio_packet_digests(src)
    assert len(digests) > 20 and audio_packet_digests(dst) == digests
    psnr = min(cv2.PSNR(x.image, y.image) for x, y in zip(iter_frames(src, a), out_frames, strict=True))
    assert psnr > 35, psnr


@pytest.mark.parametrize("name", ["cfr", "rot90"])
def test_a_lossless_round_trip_keeps_the_levels(clips, name, tmp_path):
    """Decode, re-encode losslessly (x264 CRF 0), decode again: the same picture, not one a few
    levels darker (swscale's fast conversions darkened every rewrite by ~2 levels)."""
    src, _ = clips[name]
    dst = tmp_path / "out.mp4"
    _rewrite(src, dst, OutputConfig(crf=0))
    a, b = probe_video(src, LIMITS), probe_video(dst, LIMITS)
    for x, y in zip(iter_frames(src, a), iter_frames(dst, b), strict=True):
        diff = y.image.astype(np.float64) - x.image
        assert np.abs(diff.mean(axis=(0, 1))).max() < 0.1, diff.mean(axis=(0, 1))
        assert cv2.PSNR(x.image, y.image) > 45


def test_mpeg4_source_gives_mpeg4(clips, tmp_path):
    src, pts = clips["mpeg4"]
    dst = tmp_path / "out.mp4"
    _rewrite(src, dst)
    info = probe_video(dst, LIMITS)
    assert info.codec == "mpeg4"
    assert [f.pts for f in iter_frames(dst, info)] == pts
    assert audio_packet_digests(dst) == audio_packet_digests(src)


def test_explicit_codec_and_no_audio(tmp_path):
    src = tmp_path / "silent.mp4"
    pts = write_video(FaceScene(size=(128, 96), face_px=40), src, 8, audio=False, codec="mpeg4")
    _rewrite(src, tmp_path / "out.mp4", OutputConfig(video_codec="libx264"))
    info = probe_video(tmp_path / "out.mp4", LIMITS)
    assert info.codec == "h264" and not info.has_audio
    assert [f.pts for f in iter_frames(tmp_path / "out.mp4", info)] == pts


def test_exception_inside_writer_leaves_nothing(clips, tmp_path):
    src = clips["cfr"][0]
    info = probe_video(src, LIMITS)
    dst = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoRewriter(src, dst, info, OutputConfig()) as writer:
            for frame in iter_frames(src, info):
                writer.write(frame)
                if frame.index == 5:
                    raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # neither dst nor the temporary file


def test_bad_frame_shape_is_refused(clips, tmp_path):
    src = clips["cfr"][0]
    info = probe_video(src, LIMITS)
    with pytest.raises(ValueError), VideoRewriter(src, tmp_path / "o.mp4", info, OutputConfig()) as w:
        frame = next(iter_frames(src, info))
        frame.image = frame.image[:, :-2].copy()
        w.write(frame)
    assert list(tmp_path.iterdir()) == []


def _faststart_copy(src: Path, dst: Path) -> None:
    """Remux with the index first, like files prepared for streaming, so truncation hits data."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)


def test_truncated_video_yields_good_frames_then_fails(clips, tmp_path):
    full = tmp_path / "faststart.mp4"
    _faststart_copy(clips["cfr"][0], full)
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    info = probe_video(cut, LIMITS)
    seen = []
    with pytest.raises(MediaError, match="decoding failed at frame") as err:
        for frame in iter_frames(cut, info):
            seen.append(frame.index)
    assert err.value.file == str(cut)
    assert 5 < len(seen) < N


def test_broken_inputs_raise_media_error_naming_the_file(clips, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("hello, not a video\n" * 50)
    cut = tmp_path / "cut.mp4"  # moov at the end (the default): the header is gone
    data = clips["cfr"][0].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame(format="fltp", layout="mono", samples=1024)
        frame.sample_rate = 48000
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        for packet in stream.encode(frame):
            out.mux(packet)
        out.mux(stream.encode(None))
    cases = {empty: "empty", text: "not a media file", cut: "not a media file",
             audio_only: "no video stream", tmp_path / "missing.mp4": "cannot read"}
    for path, reason in cases.items():
        with pytest.raises(MediaError, match=reason) as err:
            probe_video(path, LIMITS)
        assert err.value.file == str(path)


def test_limits_are_enforced(clips):
    path = clips["cfr"][0]
    for limits, reason in [
        (LimitsConfig(max_video_pixels=256 * 191), "frame too large"),
        (LimitsConfig(max_video_frames=N - 1), "too many frames"),
        (LimitsConfig(max_video_bytes=100), "file too large"),
    ]:
        with pytest.raises(MediaError, match=reason):
            probe_video(path, limits)


def _real_videos() -> Path:
    root = Path(os.environ.get("REFSTAR_REAL_DATA", Path(__file__).parents[3] / "shared" / "data"))
    videos = root / "videos"
    if not videos.is_dir():
        pytest.skip(f"real clips not found at {videos} (set REFSTAR_REAL_DATA)")
    return videos


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["video-retalking__face_1.mp4", "SadTalker__WDA_KatieHill_000.mp4"])
def test_real_clip_round_trip(name, tmp_path):
    src = _real_videos() / name
    if not src.exists():
        pytest.skip(f"{src} is missing")
    info = probe_video(src, LIMITS)
    dst = tmp_path / "out.mp4"
    _rewrite(src, dst, OutputConfig(crf=18))
    out = probe_video(dst, LIMITS)
    assert out.codec == info.codec and out.frames == info.frames
    assert (out.width, out.height, out.rotation) == (info.width, info.height, info.rotation)
    assert [f.pts for f in iter_frames(dst, out)] == [f.pts for f in iter_frames(src, info)]
    assert audio_packet_digests(dst) == audio_packet_digests(src)
