"""Local-path side of worker.storage (the S3 side is tests/test_storage_s3.py)."""


import os
import stat

import pytest

from tests.concurrency import race
from worker import storage


def test_join_refuses_escapes(tmp_path):
    root = str(tmp_path)
    assert storage.join(root, "a/b.png").endswith("a/b.png")
    for bad in ("../x", "a/../../x", "/etc/passwd", "a\\..\\x"):
        with pytest.raises(storage.StorageError, match="escape"):
            storage.join(root, bad)


def test_write_atomic_leaves_no_partial_file(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    storage.write_atomic(str(target), b"abc")
    assert target.read_bytes() == b"abc"

    # a write that fails midway leaves neither the target nor a temporary behind
    with pytest.raises(TypeError):
        storage.write_atomic(str(tmp_path / "g.bin"), object())  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["f.bin"]


def test_s3_has_no_local_path_and_says_so():
    with pytest.raises(storage.StorageError, match="S3"):
        storage.local_path("s3://bucket/key")
    with pytest.raises(storage.StorageError, match="scheme"):
        storage.exists("gs://bucket/key")


@pytest.mark.parametrize("bad", ["", "/abs", "a\\b", "a//b", "a/", "./a", "a/./b", "..", "a/..",
                                 "a/../../x", "a\x00b"])
def test_safe_key_refuses(bad):
    with pytest.raises(storage.StorageError, match="refusing"):
        storage.safe_key(bad)


def test_safe_key_decodes_event_keys_before_checking():
    assert storage.safe_key("albums/My+Trip%281%29/img+1.jpg", url_encoded=True) == \
        "albums/My Trip(1)/img 1.jpg"
    for encoded in ("%2E%2E/x", "a/%2E%2E%2F%2E%2E%2Fx", "%2Fetc%2Fpasswd", "a%5C..%5Cx", "a%2F%2Fb"):
        with pytest.raises(storage.StorageError, match="escape"):
            storage.safe_key(encoded, url_encoded=True)
    # without decoding, '%2E%2E' is just an odd but harmless file name
    assert storage.safe_key("%2E%2E") == "%2E%2E"


def test_join_roots():
    assert storage.join("s3://b/out/", "item", "manifest.json") == "s3://b/out/item/manifest.json"
    assert storage.join("s3://b", "k") == "s3://b/k"
    assert storage.join("file:///data/out", "x.png") == "file:///data/out/x.png"
    assert storage.join("/data/out") == "/data/out"
    with pytest.raises(storage.StorageError, match="escape"):
        storage.join("s3://b/out", "item", "../../other")


def test_uri_helpers():
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/tmp/x")
    assert storage.parse_s3("s3://b/a/b.mp4") == ("b", "a/b.mp4")
    assert storage.parse_s3("s3://b") == ("b", "")
    with pytest.raises(storage.StorageError, match="bucket"):
        storage.parse_s3("s3:///k")
    assert storage.relative_to("s3://b/in/", "s3://b/in/al/1.jpg") == "al/1.jpg"
    for outside in ("s3://b/inside/x", "s3://c/in/x", "s3://b/in/", "/in/x"):
        with pytest.raises(storage.StorageError, match="not under"):
            storage.relative_to("s3://b/in", outside)


def test_round_trip_list_and_delete(tmp_path):
    root = str(tmp_path / "out")
    storage.write_atomic(storage.join(root, "b.txt"), "text")
    storage.write_atomic(storage.join(root, "a", "x.bin"), b"\x00\x01")
    with open(tmp_path / "src.bin", "wb") as f:
        f.write(b"z" * 1000)
    with open(tmp_path / "src.bin", "rb") as f:  # a file object streams in
        storage.write_atomic(storage.join(root, "a", "y.bin"), f)
    (tmp_path / "out" / ".b.txt.123.part").write_bytes(b"in flight")  # a writer's temporary

    assert storage.read_bytes(storage.join(root, "b.txt")) == b"text"
    with storage.open_read(storage.join(root, "a", "x.bin")) as f:
        assert f.read() == b"\x00\x01"
    assert storage.exists(storage.join(root, "b.txt"))
    assert not storage.exists(storage.join(root, "nope"))

    listed = [(uri[len(root) + 1:], size) for uri, size, _ in storage.list(root)]
    assert listed == [("a/x.bin", 2), ("a/y.bin", 1000), ("b.txt", 4)]
    assert [u[len(root) + 1:] for u, _, _ in storage.list(root, recursive=False)] == ["b.txt"]
    assert all(isinstance(m, float) for _, _, m in storage.list(root))
    assert not [*storage.list(str(tmp_path / "missing"))]

    storage.delete(storage.join(root, "b.txt"))
    storage.delete(storage.join(root, "b.txt"))  # absent: not an error
    assert not storage.exists(storage.join(root, "b.txt"))


def test_missing_file_is_named(tmp_path):
    uri = str(tmp_path / "nope.bin")
    with pytest.raises(storage.ObjectNotFound, match="nope.bin") as info:
        storage.read_bytes(uri)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        storage.download(uri, tmp_path / "dst.bin")


def test_upload_and_download(tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * 400)
    dst_uri = storage.join(str(tmp_path), "out", "big.bin")
    storage.upload_file(src, dst_uri)
    got = storage.download(dst_uri, tmp_path / "back" / "big.bin")
    assert got.read_bytes() == src.read_bytes()


def test_done_marker_is_claimed_once(tmp_path):
    item = storage.join(str(tmp_path), "item")
    assert storage.put_done_marker(item, {"n": 1}) is True
    assert storage.put_done_marker(item, {"n": 2}) is False
    marker = storage.local_path(storage.join(item, storage.DONE_MARKER))
    assert marker.read_text() == '{"n": 1}\n'
    assert [p.name for p in marker.parent.iterdir()] == ["_DONE"]  # no temporaries left

    storage.remove_tree_marker(item)
    assert storage.put_done_marker(item, "again") is True


def test_racing_writers_claim_an_item_once(tmp_path):
    item = storage.join(str(tmp_path), "race")
    results = race(lambda i: storage.put_done_marker(item, f"writer {i}"), 8)
    assert sorted(results) == [False] * 7 + [True]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_published_files_follow_the_umask(tmp_path, umask, mode):
    """Not mkstemp's 0600: a team sharing the output folder reads manifests, refs and _DONE."""
    old = os.umask(umask)
    try:
        storage.write_atomic(str(tmp_path / "manifest.json"), "{}")
        assert storage.put_done_marker(str(tmp_path), {"ok": True})
    finally:
        os.umask(old)
    for name in ("manifest.json", storage.DONE_MARKER):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
