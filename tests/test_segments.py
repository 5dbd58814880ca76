"""Keyframe-aligned segments: planning, segment decode == full decode, join == source timing
and audio; merged segment analyses == a full analysis."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.mediagen import FaceScene, write_video
from worker.config import OutputConfig, load_config
from worker.media import segments
from worker.media.segments import (
    frames_at,
    iter_segment,
    join_segments,
    packet_index,
    plan_segments,
)
from worker.media.video import VideoRewriter, audio_packet_digests, iter_frames, probe_video

GOP = 12


def gop_video(scene: FaceScene, path: str | Path, n_frames: int, gop: int = GOP, **kw) -> Path:
    """``write_video``'s clip re-encoded with a keyframe every ``gop`` frames (closed GOPs,
    same pts), its audio packets copied unchanged."""
    path = Path(path)
    src = path.with_name(path.stem + ".src.mp4")
    write_video(scene, src, n_frames, **kw)
    with av.open(str(src)) as inp, av.open(str(path), "w") as out:
        vin = inp.streams.video[0]
        vs = out.add_stream("libx264")
        ctx = vs.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        ctx.time_base = vs.time_base = vin.time_base
        ctx.framerate = Fraction(25)
        ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc = 1, 1, 1, 1
        ctx.options = {"crf": "16", "preset": "veryfast", "g": str(gop), "keyint_min": str(gop),
                       "sc_threshold": "0"}
        aout = out.add_stream_from_template(inp.streams.audio[0]) if inp.streams.audio else None
        for frame in inp.decode(vin):
            frame.pict_type = av.video.frame.PictureType.NONE  # let x264 place the keyframes
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        if aout is not None:
            with av.open(str(src)) as again:  # decode() above consumed the first demuxer
                for packet in again.demux(again.streams.audio[0]):
                    if packet.dts is not None:
                        packet.stream = aout
                        out.mux(packet)
    src.unlink()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    scene = FaceScene(persons=("t1_2", "hanks"), size=(320, 256), face_px=100)
    return gop_video(scene, tmp_path_factory.mktemp("seg") / "clip.mp4", 36)


def test_plan_is_keyframe_aligned_covering_and_disjoint(clip):
    idx = packet_index(clip)
    assert idx.keyframes == (0, 12, 24) and len(idx.pts) == 36
    for min_frames, expected in ((1, [(0, 12), (12, 24), (24, 36)]), (12, [(0, 12), (12, 24), (24, 36)]),
                                 (20, [(0, 24), (24, 36)]), (30, [(0, 36)])):
        segs = plan_segments(idx, min_frames)
        assert [(s.start, s.end) for s in segs] == expected
        assert all(s.start in idx.keyframes for s in segs)
        assert [s.start_pts for s in segs] == [idx.pts[s.start] for s in segs]
        assert [s.end_pts for s in segs[:-1]] == [s.start_pts for s in segs[1:]] and segs[-1].end_pts is None


def test_segment_decode_equals_full_decode(clip):
    info = probe_video(clip, load_config().limits)
    full = list(iter_frames(clip, info))
    segs = plan_segments(packet_index(clip), 1)
    parts = [f for s in reversed(segs) for f in iter_segment(clip, info, s)]  # any order works
    parts.sort(key=lambda f: f.index)
    assert [(f.index, f.pts) for f in parts] == [(f.index, f.pts) for f in full]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(parts, full, strict=True))


def test_join_keeps_timing_and_audio(clip, tmp_path):
    info = probe_video(clip, load_config().limits)
    files = []
    for s in plan_segments(packet_index(clip), 1):
        dst = tmp_path / f"seg{s.index}.mp4"
        with VideoRewriter(clip, dst, replace(info, has_audio=False), OutputConfig()) as w:
            for frame in iter_segment(clip, info, s):
                w.write(frame)
        files.append(str(dst))
    out = tmp_path / "joined.mp4"
    assert join_segments(str(clip), info, files, str(out)) == 36
    assert [f.pts for f in iter_frames(out)] == [f.pts for f in iter_frames(clip)]
    digests = audio_packet_digests(clip)
    assert digests and audio_packet_digests(out) == digests
    assert probe_video(out, load_config().limits).has_audio


@pytest.mark.parametrize("seek_ahead_s", [0.0, 60.0])
def test_chosen_frames_decode_as_in_a_full_pass(clip, monkeypatch, seek_ahead_s):
    """By seeking (every jump, 0 s) or decoding on (60 s): the same pixels as the full decode,
    in pts order; a pts no frame has is passed over."""
    monkeypatch.setattr(segments, "SEEK_AHEAD_S", seek_ahead_s)
    info = probe_video(clip, load_config(None, []).limits)
    full = {f.pts: f.image for f in iter_frames(clip, info)}
    pts = sorted(full)
    wanted = [pts[k] for k in (35, 0, 5, 13, 14, 30)] + [pts[20] + 1]
    got = list(frames_at(clip, info, wanted))
    assert [p for p, _ in got] == sorted(pts[k] for k in (0, 5, 13, 14, 30, 35))
    for p, image in got:
        np.testing.assert_array_equal(image, full[p])
