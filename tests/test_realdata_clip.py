"""One real clip of a person talking through the whole command (skipped without ../shared/data)."""

import json

import pytest

from worker.cli import main
from worker.config import load_config
from worker.media.video import audio_packet_digests, iter_frames, probe_video

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_real_clip_end_to_end(real_data, tmp_path, capsys):
    src = real_data / "videos" / "video-retalking__face_3.mp4"
    assert main(["restore", str(src), "-o", str(tmp_path), "-q", "--set", "restore.crop_size=256"]) == 0
    (item,) = tmp_path.iterdir()
    m = json.loads((item / "manifest.json").read_text())
    assert m["status"] == "ok"
    assert len(m["identities"]) == 1  # one person talking
    assert m["counts"]["frames"] == 125
    assert m["counts"]["faces_restored"] >= 120
    dst = item / "restored.mp4"
    limits = load_config().limits
    assert probe_video(str(dst), limits).codec == probe_video(str(src), limits).codec
    assert [f.pts for f in iter_frames(str(dst))] == [f.pts for f in iter_frames(str(src))]
    assert audio_packet_digests(str(dst)) == audio_packet_digests(str(src))
