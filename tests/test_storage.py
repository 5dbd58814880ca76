import pytest

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


def test_s3_is_refused_clearly(tmp_path):
    with pytest.raises(storage.StorageError, match="S3"):
        storage.exists("s3://bucket/key")
