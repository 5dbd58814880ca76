"""Two runs on one item: a completed item never changes after its ``_DONE`` (the loser of the
race discards its outputs), a dead publisher's lock blocks nobody, and what a killed run staged
is swept by the next."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mediagen import FaceScene, write_video
from worker import storage
from worker.config import load_config
from worker.item.lifecycle import finish_item
from worker.item.litter import owner
from worker.item.pipeline import Engine, start_item
from worker.item.publish import (
    LOCK_MARKER,
    STAGING,
    STALE_LOCK_S,
    STALE_STAGING_S,
    publish_lock,
    sweep_staging,
)

pytest_plugins = ["tests.s3server"]

SETS = ["progress=false", "restore.crop_size=128", "restore.skip_sharp=false"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("race") / "clip.mp4"
    write_video(FaceScene(persons=("hanks",), size=(256, 192), face_px=96), path, 6)
    return path


def _tree(root: str) -> dict[str, tuple]:
    """Every file of an item: its bytes, and locally its inode and mtime (a rename or a rewrite
    with the same bytes still changes them)."""
    out = {}
    for uri, _, _ in storage.list(root):
        rel = storage.relative_to(root, uri)
        if storage.is_s3(uri):
            out[rel] = (storage.read_bytes(uri),)
        else:
            st = os.stat(uri)
            out[rel] = (storage.read_bytes(uri), st.st_ino, st.st_mtime_ns)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_loser_of_a_race_leaves_the_completed_item_as_it_is(where, clip, tmp_path, request):
    """Runs A and B start on one item before either finishes; A publishes first. B finishes
    later and must not touch a byte of A's item (video, refs, manifest, report, _DONE)."""
    out = str(tmp_path / "out") if where == "local" else f"s3://{request.getfixturevalue('bucket')}/out"
    cfg = load_config(None, SETS)
    engine = Engine(cfg)
    a, b = start_item(clip, out, cfg, engine=engine), start_item(clip, out, cfg, engine=engine)
    assert a.final_dir == b.final_dir and a.staged != b.staged
    assert finish_item(a).status == "ok"
    before = _tree(a.final_dir)
    assert {"_DONE", "manifest.json", "report.html", "restored.mp4"} <= set(before)
    assert any(k.startswith("refs/") for k in before)
    time.sleep(0.05)  # a rewrite would show in st_mtime_ns
    lost = finish_item(b)
    assert lost.status == "skipped"
    assert any("completed (or is being published) by another run" in e.reason for e in lost.errors)
    assert _tree(a.final_dir) == before
    assert not list(storage.list(storage.join(out, STAGING)))  # neither run left its staging
    if where == "local":
        assert not (Path(a.final_dir) / LOCK_MARKER).exists()
        assert sorted(p.name for p in Path(out).iterdir()) == [Path(a.final_dir).name]


def _held_by(final_dir: Path, who: str, age_s: float = 0.0) -> None:
    final_dir.mkdir(parents=True, exist_ok=True)
    (final_dir / LOCK_MARKER).write_text(json.dumps({"owner": who, "time": time.time() - age_s}))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_live_publisher_keeps_its_lock_and_a_gone_one_loses_it(tmp_path):
    host = owner().rpartition("-")[0]
    item = tmp_path / "item"
    with publish_lock(str(item)) as mine:  # nobody holds it
        assert mine and (item / LOCK_MARKER).is_file()
        with publish_lock(str(item)) as again:  # held (by this live run): another taker gives up at once
            assert not again
    assert not (item / LOCK_MARKER).exists()  # released

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _held_by(item, f"{host}-{live.pid}")
        with publish_lock(str(item)) as mine:
            assert not mine
        assert (item / LOCK_MARKER).is_file()  # not ours to remove
    finally:
        live.kill()
        live.wait()
    _held_by(item, f"{host}-{_dead_pid()}")  # killed mid-publish on this host
    with publish_lock(str(item)) as mine:
        assert mine
    _held_by(item, "other-host.example-12", age_s=60)  # another host's, recent: trust it
    with publish_lock(str(item)) as mine:
        assert not mine
    _held_by(item, "other-host.example-12", age_s=STALE_LOCK_S + 60)
    with publish_lock(str(item)) as mine:
        assert mine
    (item / LOCK_MARKER).unlink(missing_ok=True)
    (item / storage.DONE_MARKER).write_text("{}")
    with publish_lock(str(item)) as mine:  # completed: nothing more to publish
        assert not mine
    assert not (item / LOCK_MARKER).exists()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_killed_runs_staging_is_swept_by_the_next(where, tmp_path, request):
    """A dead run of this host is swept at once; a run of another host (a Ray node) only when
    its staging has not changed for STALE_STAGING_S; a live run of this host and other items'
    runs never."""
    out = str(tmp_path / "out") if where == "local" else f"s3://{request.getfixturevalue('bucket')}/out"
    host = owner().rpartition("-")[0]
    names = {"dead": f"clip-abc.{host}-{_dead_pid()}-0123abcd",
             "mine": f"clip-abc.{owner()}-4567cdef",
             "far": "clip-abc.node-7.example-1234-89abcdef",  # another host: its PID says nothing here
             "other": f"other-def.{host}-{_dead_pid()}-89abcdef"}  # another item's: its own run sweeps it
    for name in names.values():
        storage.write_atomic(storage.join(out, STAGING, name, "restored", "x.png"), b"x")

    def left() -> set[str]:
        return {k for k, n in names.items() if list(storage.list(storage.join(out, STAGING, n)))}

    assert sweep_staging(out, "clip-abc") == 1
    assert left() == {"mine", "far", "other"}
    assert sweep_staging(out, "clip-abc", now=time.time() + STALE_STAGING_S - 60) == 0
    assert sweep_staging(out, "clip-abc", now=time.time() + STALE_STAGING_S + 60) == 1  # a day idle: gone
    assert left() == {"mine", "other"}  # this host's PID says it is alive: quiet is not dead
    if where == "local":  # a folder killed before it held a file
        empty = Path(out) / STAGING / f"clip-abc.{host}-{_dead_pid()}-feedbeef"
        empty.mkdir()
        assert sweep_staging(out, "clip-abc") == 1 and not empty.exists()
