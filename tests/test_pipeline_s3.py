"""Items read from and written to S3 over HTTP (moto's server mode), on one machine."""

from __future__ import annotations

import json

import cv2
import pytest

from tests.mediagen import FaceScene, write_video
from worker import storage
from worker.cli import main
from worker.media.video import audio_packet_digests

pytest_plugins = ["tests.s3server"]
pytestmark = pytest.mark.slow


@pytest.fixture
def inputs(s3_server, tmp_path):
    src_bucket, out_bucket = s3_server.new_bucket(), s3_server.new_bucket()
    clip = tmp_path / "clip one.mp4"
    write_video(FaceScene(persons=("t1_2",), size=(320, 256), face_px=110), clip, 12)
    storage.upload_file(clip, f"s3://{src_bucket}/archive/clip one.mp4")
    scene = FaceScene(persons=("hanks",), size=(320, 256), face_px=110)
    for i in (0, 5):
        p = tmp_path / f"p{i}.png"
        cv2.imwrite(str(p), scene.render(i))
        storage.upload_file(p, f"s3://{src_bucket}/archive/album/sub/p{i}.png")
    return src_bucket, out_bucket, clip


def test_s3_in_s3_out_and_rerun(inputs, capsys):
    src_bucket, out_bucket, clip = inputs
    args = [f"s3://{src_bucket}/archive/clip one.mp4", f"s3://{src_bucket}/archive/album/",
            "-o", f"s3://{out_bucket}/restored", "-q", "--set", "restore.crop_size=256",
            # every synthetic face is as sharp as its reference; this test counts restored faces
            "--set", "restore.skip_sharp=false"]
    assert main(["restore", *args]) == 0
    keys = {u.split(f"s3://{out_bucket}/restored/")[1] for u, _, _ in storage.list(f"s3://{out_bucket}/restored")}
    items = {k.split("/")[0] for k in keys if "/" in k}
    assert len(items) == 2 and "index.html" in keys
    video_item = next(i for i in items if i.startswith("clip_one-"))
    album_item = next(i for i in items if i.startswith("album-"))
    for item in items:
        assert {f"{item}/manifest.json", f"{item}/report.html", f"{item}/_DONE"} <= keys
    assert f"{album_item}/restored/sub/p0.png" in keys and f"{album_item}/restored/sub/p5.png" in keys
    assert f"{video_item}/refs/0/0.png" in keys
    local = storage.download(f"s3://{out_bucket}/restored/{video_item}/restored.mp4", clip.with_name("out.mp4"))
    assert audio_packet_digests(local) == audio_packet_digests(clip)
    m = json.loads(storage.read_bytes(f"s3://{out_bucket}/restored/{album_item}/manifest.json"))
    assert m["status"] == "ok" and len(m["identities"]) == 1 and m["counts"]["faces_restored"] == 2
    assert m["source"] == f"s3://{src_bucket}/archive/album/"
    capsys.readouterr()
    assert main(["restore", *args]) == 0
    assert capsys.readouterr().out.count("already done") == 2


def test_missing_s3_input_fails_clearly(s3_server, capsys):
    b = s3_server.new_bucket()
    assert main(["restore", f"s3://{b}/nothing.mp4", "-o", f"s3://{b}/out", "-q"]) == 1
    assert f"s3://{b}/nothing.mp4" in capsys.readouterr().err
