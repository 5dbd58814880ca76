"""Failures of one item or one file that must neither sink a batch nor hide behind a local path:
a publish that fails, album files whose names cannot be output keys, S3 inputs named by their
URIs, and an output prefix that would escape its folder."""

from __future__ import annotations

import json

import cv2
import pytest

from tests.mediagen import FaceScene, write_video
from tests.outputs import item_dirs
from worker import storage
from worker.cli import main
from worker.config import load_config
from worker.item.staging import item_id

pytest_plugins = ["tests.s3server"]
pytestmark = pytest.mark.slow

SETS = ["progress=false", "restore.crop_size=128", "restore.skip_sharp=false"]  # synthetic faces: all as sharp
ARGS = [a for s in SETS for a in ("--set", s)]
SCENE = FaceScene(persons=("hanks",), size=(256, 192), face_px=96)


@pytest.fixture
def two_clips(tmp_path):
    clips = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for k, clip in enumerate(clips):
        write_video(FaceScene(persons=("hanks",), size=(256, 192), face_px=96, seed=k), clip, 6)
    return clips


def test_a_failed_publish_fails_its_item_alone(two_clips, tmp_path, capsys):
    """Moving an item's references into place fails (a folder where a reference goes, held by
    another writer's half-written file, which publishing never removes): that item's "ok"
    manifest, moved in first, is replaced by a failed one naming the reason, with no _DONE; the
    next item of the batch still runs. Leftovers of an earlier run are cleared."""
    a, b = two_clips
    out = tmp_path / "out"
    blocked = out / item_id(str(a), load_config(None, SETS))
    for person in range(3):
        (blocked / f"refs/{person}/0.png").mkdir(parents=True)
        (blocked / f"refs/{person}/0.png/.in-use.part").write_text("another writer's")
    (blocked / "refs/7").mkdir()
    (blocked / "refs/7/0.png").write_text("an earlier run's")
    assert main(["restore", str(a), str(b), "-o", str(out), *ARGS]) == 1
    m = json.loads((blocked / "manifest.json").read_text())
    assert m["status"] == "failed" and not (blocked / "_DONE").exists()
    assert any("0.png" in e["reason"] for e in m["errors"]), m["errors"]
    assert not (blocked / "refs/7").exists()
    (other,) = [d for d in item_dirs(out) if d != blocked]
    assert (other / "_DONE").is_file() and json.loads((other / "manifest.json").read_text())["status"] == "ok"
    assert "2 items: 1 done, 1 failed" in capsys.readouterr().out


def _png(tmp_path, k: int) -> bytes:
    p = tmp_path / f"p{k}.png"
    cv2.imwrite(str(p), SCENE.render(k))
    return p.read_bytes()


UNSAFE = ["a//double.png", "../escape.png", "back\\slash.png"]


def test_s3_album_refuses_only_the_files_whose_names_are_unsafe(s3_server, tmp_path, capsys):
    src, dst = s3_server.new_bucket(), s3_server.new_bucket()
    for k, name in enumerate(["ok.png", "sub/fine.png", *UNSAFE]):
        s3_server.client.put_object(Bucket=src, Key=f"album/{name}", Body=_png(tmp_path, k))
    assert main(["restore", f"s3://{src}/album/", "-o", f"s3://{dst}/out", *ARGS]) == 0
    (item,) = {u.split("/")[4] for u, _, _ in storage.list(f"s3://{dst}/out") if u.count("/") > 4}
    m = json.loads(storage.read_bytes(f"s3://{dst}/out/{item}/manifest.json"))
    assert m["status"] == "partial"
    status = {f["file"]: f["status"] for f in m["files"]}
    assert status == {"ok.png": "restored", "sub/fine.png": "restored", **dict.fromkeys(UNSAFE, "refused")}
    assert {e["file"] for e in m["errors"]} == set(UNSAFE)
    assert all("file name refused" in e["reason"] for e in m["errors"])
    restored = {u.split(f"/{item}/restored/")[1] for u, _, _ in storage.list(f"s3://{dst}/out/{item}/restored")}
    assert restored == {"ok.png", "sub/fine.png"}
    assert storage.exists(f"s3://{dst}/out/{item}/_DONE")


def test_local_album_with_a_backslash_name_to_s3(s3_server, tmp_path):
    album = tmp_path / "album"
    album.mkdir()
    for k, name in enumerate(["ok.png", "back\\slash.png"]):
        (album / name).write_bytes(_png(tmp_path, k))
    dst = s3_server.new_bucket()
    assert main(["restore", str(album), "-o", f"s3://{dst}/out", *ARGS]) == 0
    (manifest,) = [u for u, _, _ in storage.list(f"s3://{dst}/out") if u.endswith("manifest.json")]
    m = json.loads(storage.read_bytes(manifest))
    assert {f["file"]: f["status"] for f in m["files"]} == {"ok.png": "restored", "back\\slash.png": "refused"}


def test_s3_inputs_are_named_by_their_uri(s3_server, tmp_path):
    src = s3_server.new_bucket()
    s3_server.client.put_object(Bucket=src, Key="in/broken.mp4", Body=b"\x00\x00\x00\x18ftypmp42" + bytes(4000))
    s3_server.client.put_object(Bucket=src, Key="album/broken.png", Body=b"\x89PNG\r\n\x1a\n" + bytes(100))
    s3_server.client.put_object(Bucket=src, Key="album/ok.png", Body=_png(tmp_path, 0))
    out = tmp_path / "out"
    assert main(["restore", f"s3://{src}/in/broken.mp4", f"s3://{src}/album/", "-o", str(out), *ARGS]) == 1
    errors = {}
    for d in item_dirs(out):
        m = json.loads((d / "manifest.json").read_text())
        errors[m["kind"]] = m["errors"]
    (video,) = errors["video"]
    assert video["file"] == f"s3://{src}/in/broken.mp4", video
    assert "refstar-" not in json.dumps(errors)  # no local staging path anywhere
    (photo,) = errors["album"]
    assert photo["file"] == "broken.png"


@pytest.mark.parametrize("prefix", ["out/../../x", "a//b", "out/./x"])
def test_an_output_prefix_that_escapes_is_refused(s3_server, two_clips, prefix, capsys):
    dst = s3_server.new_bucket()
    assert main(["restore", str(two_clips[0]), "-o", f"s3://{dst}/{prefix}", *ARGS]) == 2
    assert capsys.readouterr().err.startswith(f"refstar: refusing output s3://{dst}/{prefix}")
    assert not list(storage.list(f"s3://{dst}"))
