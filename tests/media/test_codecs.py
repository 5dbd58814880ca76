"""Sources a plain H.264 test never exercises: odd frame sizes, AV1 (read by libdav1d, whose
decoder name is not the codec's), MPEG-2 program streams, WMV; and a video that cannot be written
back fails before its analysis is paid for."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import pytest

from tests.mediagen import FaceScene
from worker.config import load_config
from worker.item.pipeline import restore_item
from worker.media.video import _no_realtime_threads, _realtime_threads, iter_frames, probe_video

pytestmark = pytest.mark.slow

SETS = ["progress=false", "restore.crop_size=128", "restore.skip_sharp=false"]


def _encode(path: Path, size: tuple[int, int], codec: str, n: int = 6, rate: int = 25) -> Path:
    scene = FaceScene(persons=("hanks",), size=size, face_px=120)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        with _no_realtime_threads():  # libsvtav1 as root: see worker.media.video
            vs.codec_context.open()
        for i in range(n):
            for packet in vs.encode(av.VideoFrame.from_ndarray(scene.render(i), format="bgr24")):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
    return path


def _restore(src: Path, out: Path, *sets: str):
    res = restore_item(src, str(out), load_config(None, [*SETS, *sets]))
    assert res.status == "ok", res.errors
    (dst,) = Path(res.output).glob("restored.*")
    return res, dst


def test_odd_size_is_written_back_at_its_size(tmp_path):
    """641x481 FFV1 (no H.264 encoder of its family): H.264 cannot hold odd 4:2:0, so 4:4:4."""
    src = _encode(tmp_path / "odd.mkv", (641, 481), "ffv1")
    res, dst = _restore(src, tmp_path / "out")
    info = probe_video(dst, load_config().limits)
    assert (info.codec, info.width, info.height, info.pix_fmt) == ("h264", 641, 481, "yuv444p")
    assert [f.pts for f in iter_frames(dst)] == [f.pts for f in iter_frames(src)]
    assert res.counts["faces_restored"] > 0


def test_av1_stays_av1(tmp_path):
    src = _encode(tmp_path / "clip.mkv", (320, 240), "libsvtav1")
    assert probe_video(src, load_config().limits).codec == "av1"  # whichever decoder reads it
    assert not _realtime_threads()
    _, dst = _restore(src, tmp_path / "out")
    assert probe_video(dst, load_config().limits).codec == "av1"
    # SVT-AV1 run as root makes the thread that opens it SCHED_FIFO 99 for good: put back
    assert not _realtime_threads()
    assert [f.pts for f in iter_frames(dst)] == [f.pts for f in iter_frames(src)]


def test_mpeg2_program_stream_stays_mpeg2(tmp_path):
    """An .mpg is written back as MPEG-2, every frame within half a frame of its source time
    (MPEG-2 codes time in whole frames, and this source starts half a frame off that grid)."""
    src = _encode(tmp_path / "clip.mpg", (320, 240), "mpeg2video")
    _, dst = _restore(src, tmp_path / "out")
    src_info, dst_info = (probe_video(p, load_config().limits) for p in (src, dst))
    assert dst_info.codec == "mpeg2video"
    a, b = ([f.pts * i.time_base for f in iter_frames(p)] for p, i in ((src, src_info), (dst, dst_info)))
    assert len(a) == len(b) == 6
    assert all(abs(x - y) <= Fraction(1, 50) for x, y in zip(a, b, strict=True)), (a, b)


def test_wmv_keeps_every_timestamp(tmp_path):
    """ASF keeps one time per packet: an encoder with a delay (x264) shifted every frame by one
    and gave the last two the same time; WMV2 has none."""
    src = _encode(tmp_path / "clip.wmv", (320, 240), "wmv2", n=8)
    _, dst = _restore(src, tmp_path / "out")
    assert probe_video(dst, load_config().limits).codec == "wmv2"
    assert [f.pts for f in iter_frames(dst)] == [f.pts for f in iter_frames(src)] == [40 * i for i in range(8)]


def test_a_video_that_cannot_be_written_back_fails_before_analysis(tmp_path):
    """MPEG-1 has no unsubsampled format for an odd size: the item fails at once, naming the
    input (not a temporary output) and the encoder."""
    src = _encode(tmp_path / "odd.mkv", (641, 481), "ffv1")
    res = restore_item(src, str(tmp_path / "out"), load_config(None, [*SETS, "output.video_codec=mpeg1video"]))
    assert res.status == "failed"
    (err,) = res.errors
    assert err.file == str(src) and "641x481" in err.reason and "mpeg1video" in err.reason, err
    assert "analyse" not in res.timings  # nothing was analysed
    m = json.loads((Path(res.output) / "manifest.json").read_text())
    assert m["status"] == "failed" and m["errors"][0]["file"] == str(src)
