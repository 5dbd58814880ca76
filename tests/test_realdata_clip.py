"""One real clip of a person talking through the whole command (skipped without ../shared/data)."""

import json

import pytest

from tests.outputs import item_dirs
from worker.cli import main
from worker.config import load_config
from worker.media.video import VideoRewriter, audio_packet_digests, iter_frames, probe_video

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


FRAMES = 50  # of the clip's 125: two seconds of real footage keep the suite inside its budget


def _prefix(src, dst, frames: int):
    """The first ``frames`` frames of ``src``, nearly lossless (x264 CRF 12), its audio copied."""
    cfg = load_config(None, ["output.crf=12"])
    info = probe_video(str(src), cfg.limits)
    with VideoRewriter(str(src), str(dst), info, cfg.output) as w:
        for f in iter_frames(str(src), info):
            if f.index >= frames:
                break
            w.write(f)
    return dst


def test_real_clip_end_to_end(real_data, tmp_path, capsys):
    src = _prefix(real_data / "videos" / "video-retalking__face_3.mp4", tmp_path / "face_3.mp4", FRAMES)
    out = tmp_path / "out"
    assert main(["restore", str(src), "-o", str(out), "-q", "--set", "restore.crop_size=256"]) == 0
    (item,) = item_dirs(out)
    m = json.loads((item / "manifest.json").read_text())
    assert m["status"] == "ok"
    assert len(m["identities"]) == 1  # one person talking
    assert m["counts"]["frames"] == FRAMES
    assert m["counts"]["faces_restored"] > 0
    assert m["counts"]["faces_restored"] + m["counts"]["faces_sharp"] >= FRAMES - 3
    dst = item / "restored.mp4"
    limits = load_config().limits
    assert probe_video(str(dst), limits).codec == probe_video(str(src), limits).codec
    assert [f.pts for f in iter_frames(str(dst))] == [f.pts for f in iter_frames(str(src))]
    assert audio_packet_digests(str(dst)) == audio_packet_digests(str(src))
