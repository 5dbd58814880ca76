"""The whole video path on real encoded media with known ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refstar.metrics import psnr
from tests.mediagen import FaceScene, write_video
from tests.outputs import item_dirs
from worker.cli import main
from worker.config import load_config
from worker.item.pipeline import restore_item
from worker.media.video import audio_packet_digests, iter_frames, probe_video

pytestmark = pytest.mark.slow

N_FRAMES = 30
DEGRADED = set(range(10, 20))
BASE = ["progress=false", "restore.crop_size=256"]


def _cfg(*extra):
    return load_config(None, BASE + list(extra))


def _decoded(path):
    return [f.image for f in iter_frames(str(path))]


def _face_psnr(frames, scene, indices):
    """Mean PSNR of the face boxes of ``frames`` against the clean scene, over ``indices``."""
    vals = []
    for i in indices:
        clean = scene.render(i)
        for box in scene.face_boxes(i).values():
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            vals.append(psnr(frames[i][y1:y2, x1:x2], clean[y1:y2, x1:x2]))
    return float(np.mean(vals))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("video")
    scene = FaceScene(persons=("t1_2", "hanks"), size=(384, 256), face_px=110)
    path = d / "two_people.mp4"
    pts = write_video(scene, path, N_FRAMES, degrade=DEGRADED)
    return scene, path, pts


@pytest.fixture(scope="module")
def restored(clip, tmp_path_factory):
    scene, path, _ = clip
    out = tmp_path_factory.mktemp("out")
    cfg = _cfg()
    res = restore_item(path, str(out), cfg)
    return res, Path(res.output)


def test_people_references_and_manifest(clip, restored):
    res, out = restored
    assert res.status == "ok", res.errors
    m = json.loads((out / "manifest.json").read_text())
    assert m["schema"] == "refstar-worker/manifest" and m["version"] == 1
    assert m["counts"]["frames"] == N_FRAMES
    assert len(m["identities"]) == 2
    assert m["counts"]["faces"] == 2 * N_FRAMES
    for ident in m["identities"]:
        assert ident["references"], ident
        for ref in ident["references"]:
            assert ref["frame"] not in DEGRADED  # references come from the sharp frames
            assert (out / ref["path"]).is_file()
    # each person's faces all carry one identity, and the two people differ
    faces = m["faces"]
    by_track = {}
    for f in faces:
        by_track.setdefault(f["track"], set()).add(f["identity"])
    assert all(len(v) == 1 for v in by_track.values())
    # every degraded face is restored with a reference; a sharp one only when a reference is
    # clearly sharper than it
    with_ref = {(f["frame"], f["identity"]) for f in faces if f["reference"]}
    assert {(i, k["id"]) for i in DEGRADED for k in m["identities"]} <= with_ref
    assert m["counts"]["faces_with_reference"] == len(with_ref) and m["counts"]["faces_not_faces"] == 0
    assert (out / "_DONE").is_file() and (out / "report.html").is_file()
    html = (out / "report.html").read_text()
    assert html.count("Person ") == 2 and "data:image/jpeg;base64" in html


def test_timestamps_audio_and_format_preserved(clip, restored):
    _, path, pts = clip
    _, out = restored
    dst = out / "restored.mp4"
    src_info, dst_info = probe_video(str(path), _cfg().limits), probe_video(str(dst), _cfg().limits)
    assert (dst_info.width, dst_info.height, dst_info.codec) == (src_info.width, src_info.height, "h264")
    assert [f.pts for f in iter_frames(str(dst))] == pts
    assert audio_packet_digests(str(dst)) == audio_packet_digests(str(path))


def test_degraded_faces_get_closer_to_the_originals(clip, restored, tmp_path):
    scene, path, _ = clip
    _, out = restored
    before = _face_psnr(_decoded(path), scene, DEGRADED)
    after = _face_psnr(_decoded(out / "restored.mp4"), scene, DEGRADED)
    blind = restore_item(path, str(tmp_path), _cfg("references.top_k=0"))
    after_blind = _face_psnr(_decoded(Path(blind.output) / "restored.mp4"), scene, DEGRADED)
    print(f"face PSNR: degraded {before:.2f} dB, blind {after_blind:.2f} dB, with reference {after:.2f} dB")
    assert after > before + 1.0
    assert after > after_blind + 0.3


def test_rerun_skips_and_cli_reports(clip, restored, capsys):
    _, path, _ = clip
    _, out = restored
    assert main(["restore", str(path), "-o", str(out.parent), "-q", "--set", "restore.crop_size=256"]) == 0
    assert "already done" in capsys.readouterr().out


def test_rotated_and_vfr_video(tmp_path):
    scene = FaceScene(persons=("t1_0",), size=(256, 320), face_px=110)
    src = tmp_path / "phone.mp4"
    pts = write_video(scene, src, 12, rotation=90, vfr=True)
    res = restore_item(src, str(tmp_path / "out"), _cfg())
    assert res.status == "ok", res.errors
    dst = Path(res.output) / "restored.mp4"
    info = probe_video(str(dst), _cfg().limits)
    assert info.rotation == 90 and (info.width, info.height) == (256, 320)
    assert [f.pts for f in iter_frames(str(dst))] == pts
    assert res.counts["identities"] == 1 and res.counts["faces"] == 12


def test_shot_cut_ends_tracks(tmp_path):
    scene = FaceScene(persons=("t1_2",), size=(320, 256), face_px=110, cut_at=8, persons_after=("hanks",))
    src = tmp_path / "cut.mp4"
    write_video(scene, src, 16, audio=False)
    res = restore_item(src, str(tmp_path / "out"), _cfg())
    assert res.status == "ok", res.errors
    m = json.loads((Path(res.output) / "manifest.json").read_text())
    assert m["counts"]["shot_cuts"] == 1
    spans = {}
    for f in m["faces"]:
        spans.setdefault(f["track"], []).append(f["frame"])
    assert all(max(v) < 8 or min(v) >= 8 for v in spans.values())
    assert len(m["identities"]) == 2


def test_corrupt_video_fails_alone_with_a_clear_reason(clip, tmp_path, capsys):
    _, path, _ = clip
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(path.read_bytes()[:2000])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    code = main(["restore", str(broken), str(empty), str(path), "-o", str(out), "-q",
                 "--set", "restore.crop_size=256"])
    assert code == 1
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "empty.mp4" in err
    items = {p.name.split("-")[0]: p for p in item_dirs(out)}
    assert (items["two_people"] / "_DONE").exists()
    for bad in ("broken", "empty"):
        assert not (items[bad] / "_DONE").exists()
        assert not (items[bad] / "restored.mp4").exists()
        m = json.loads((items[bad] / "manifest.json").read_text())
        assert m["status"] == "failed" and m["errors"]


def test_restorer_none_passes_frames_through(clip, tmp_path):
    _, path, _ = clip
    res = restore_item(path, str(tmp_path), _cfg("restorer=none", "output.crf=0"))
    assert res.status == "ok"
    src = _decoded(path)
    dst = _decoded(Path(res.output) / "restored.mp4")
    assert len(src) == len(dst)
    # lossless x264; what remains is the YUV 4:2:0 <-> BGR round trip of decoding
    assert min(psnr(a, b) for a, b in zip(src, dst, strict=True)) > 38

