"""An actor's copies of inputs its node cannot see: fetched from S3 once, bounded, removed."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from worker import storage
from worker.item.input_cache import InputCache
from worker.item.litter import owner

pytest_plugins = ["tests.s3server"]  # the s3_server and bucket fixtures


def _put(bucket: str, name: str, data: bytes) -> str:
    uri = f"s3://{bucket}/in/{name}"
    storage.write_atomic(uri, data)
    return uri


def test_a_visible_local_file_is_used_in_place_and_makes_no_folder(tmp_path):
    f = tmp_path / "clip.mp4"
    f.write_bytes(b"x")
    cache = InputCache()
    assert cache.path(str(f), "s3://nowhere/clip.mp4") == str(f)  # no download attempted
    assert cache.dir is None


def test_fetches_once_keeps_the_last_two_and_close_removes_everything(bucket, tmp_path):
    uris = [_put(bucket, f"v{i}.mp4", bytes([i]) * 100) for i in range(3)]
    gone = tmp_path / "other-node"  # the driver's path, absent on this "node"
    cache = InputCache(keep=2)
    first = cache.path(str(gone / "v0.mp4"), uris[0])
    assert Path(first).name == "v0.mp4" and Path(first).read_bytes() == bytes([0]) * 100
    storage.delete(uris[0])  # a second request must not go back to S3
    assert cache.path(str(gone / "v0.mp4"), uris[0]) == first
    second = cache.path(str(gone / "v1.mp4"), uris[1])
    cache.path(str(gone / "v0.mp4"), uris[0])  # used again: v1 is now the oldest
    third = cache.path(str(gone / "v2.mp4"), uris[2])
    assert Path(first).exists() and Path(third).exists()
    assert not Path(second).parent.exists()  # evicted, folder and all
    folder = cache.dir
    assert sorted(p.name for p in folder.iterdir()) == sorted([Path(first).parent.name, Path(third).parent.name])
    cache.close()
    assert not folder.exists() and cache.dir is None
    cache.close()  # twice is harmless


def test_a_dropped_cache_removes_its_folder(bucket, tmp_path):
    cache = InputCache()
    cache.path(str(tmp_path / "gone.jpg"), _put(bucket, "a.jpg", b"img"))
    folder = cache.dir
    del cache
    gc.collect()
    assert not folder.exists()


def test_a_missing_input_names_the_uri(bucket, tmp_path):
    cache = InputCache()
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        cache.path(str(tmp_path / "missing.mp4"), f"s3://{bucket}/in/missing.mp4")


def test_keep_must_be_positive():
    with pytest.raises(ValueError, match="keep"):
        InputCache(keep=0)


def test_a_dead_process_folder_is_swept_when_the_next_cache_starts(bucket, tmp_path, monkeypatch):
    """A crashed actor leaves its folder; the next cache on that host removes it, and nothing
    that may still be in use."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(done.stdout)  # that process has exited
    me = "refstar-in-" + owner().rsplit("-", 1)[0] + "-"  # this host
    folders = {"dead": f"{me}{dead}-abc", "alive": f"{me}{os.getpid()}-abc",
               "other_host": f"refstar-in-elsewhere-{dead}-abc", "legacy": "refstar-in-abc123"}
    for name in folders.values():
        (tmp_path / name / "k").mkdir(parents=True)
        (tmp_path / name / "k" / "clip.mp4").write_bytes(b"x")
    cache = InputCache()
    assert not (tmp_path / folders["dead"]).exists()
    assert all((tmp_path / folders[k]).exists() for k in ("alive", "other_host", "legacy"))
    cache.path(str(tmp_path / "gone.jpg"), _put(bucket, "b.jpg", b"img"))
    assert cache.dir.parent == tmp_path and cache.dir.name.startswith(f"{me}{os.getpid()}-")
    cache.close()
