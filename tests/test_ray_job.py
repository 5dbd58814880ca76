"""The archive job on a real local Ray cluster with a real S3 endpoint (moto over HTTP):
outputs equal the single-machine path, reruns skip, a corrupt item fails alone, a killed
restorer costs nothing but time."""

from __future__ import annotations

import json
import re
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import ray

from jobs.restore import main, run_job
from refstar.metrics import psnr
from tests.mediagen import FaceScene, make_album
from tests.test_segments import gop_video
from worker import storage
from worker.cluster.ray_pools import PoolOptions, Pools, fan_out
from worker.collection import archive
from worker.config import PER_FRAME, load_config
from worker.item.pipeline import restore_item
from worker.media.video import audio_packet_digests, iter_frames

pytest_plugins = ["tests.s3server"]
pytestmark = pytest.mark.slow

# crf=0 makes x264 lossless, so segment-wise encoding cannot hide a pixel difference; the
# detector on every frame, because only then is the job's output the single machine's to the
# pixel: with a stride (the default) each segment's actor detects at the segment's first frame,
# where one process may follow the faces (test_the_default_analysis_looks_again_on_the_driver)
SETS = ["progress=false", "restore.crop_size=256", "output.crf=0", *PER_FRAME]
# the pools as a user gets them (sized from the 2-CPU cluster); short segments, so that videos
# are split over the actors
POOL = ["--segment-frames", "12"]
OPTS = PoolOptions(segment_frames=12)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("archive")
    two = FaceScene(persons=("t1_2", "hanks"), size=(320, 256), face_px=100)
    gop_video(two, d / "two.mp4", 36, degrade=range(15, 20))
    one = FaceScene(persons=("hanks",), size=(320, 256), face_px=110, seed=3)
    gop_video(one, d / "one.mp4", 24, degrade=range(4, 8))
    make_album(d / "album")
    return d


def _upload(folder: Path, prefix: str) -> None:
    for p in sorted(folder.rglob("*")):
        if p.is_file() and ".src." not in p.name:
            storage.upload_file(p, storage.join(prefix, p.relative_to(folder).as_posix()))


@pytest.fixture(scope="module")
def job(cluster, inputs, s3_server):
    bucket = s3_server.new_bucket()
    src, out = f"s3://{bucket}/archive", f"s3://{bucket}/restored"
    _upload(inputs, src)
    storage.write_atomic(f"{src}/broken.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(4000))
    argv = ["--input", src, "--output", out, *[a for s in SETS for a in ("--set", s)], *POOL]
    status = main(argv)
    summary = json.loads(storage.read_bytes(f"{out}/_job_summary.json"))
    return argv, status, summary, out


def _single(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    cfg = load_config(None, SETS)
    return {name: restore_item(inputs / name, str(out), cfg) for name in ("two.mp4", "one.mp4", "album")}


@pytest.fixture(scope="module")
def single(inputs, tmp_path_factory):
    return _single(inputs, tmp_path_factory)


def _manifest(uri: str) -> dict:
    m = json.loads(storage.read_bytes(uri))
    for key in ("item_id", "source", "created", "timings"):
        m.pop(key)
    m["media"].pop("path", None)
    m["media"].pop("root", None)
    m["counts"].pop("segments", None)  # the distributed path also reports its segment count
    return m


def _same_faces(mine: list[dict], theirs: list[dict]) -> None:
    """Face records agree exactly except the geometry of faces the tracker followed by landmarks
    just after a segment border (the landmark-offset average restarts there): within 2 px,
    and their pose (hence which of their identity's references is nearest) nearly so."""
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        box_a, box_b = a.pop("bbox"), b.pop("bbox")
        if a != b or box_a != box_b:
            assert not a["detected"] and not b["detected"], (a, b)
            assert np.abs(np.subtract(box_a, box_b)).max() <= 2.0, (box_a, box_b)
            for k in ("quality", "yaw", "pitch", "reference"):  # the nearest-pose reference may flip
                a.pop(k), b.pop(k)
            assert a == b


def _frame_captions(page: str) -> list[str]:
    return re.findall(r"<figure class=frame>.*?<figcaption>([^<]*)</figcaption>", page, re.S)


def test_corrupt_item_fails_alone(job):
    _, status, summary, out = job
    assert status == 1
    assert (summary["items"], summary["done"], summary["failed"]) == (4, 3, 1)
    bad = [r for r in summary["results"] if r["status"] == "failed"]
    assert bad[0]["uri"].endswith("broken.mp4") and bad[0]["errors"]
    assert not storage.exists(storage.join(bad[0]["output"], "_DONE"))
    assert storage.exists(storage.join(bad[0]["output"], "manifest.json"))  # the evidence
    index = storage.read_bytes(f"{out}/index.html").decode()  # the batch page lists all four
    assert index.count("<div class=item>") == 4 and index.count("'st failed'") == 1


def test_outputs_equal_single_machine(job, single, tmp_path):
    _, _, summary, out = job
    by_name = {Path(r["uri"]).name: r for r in summary["results"]}
    for name, ref in single.items():
        row = by_name[name]
        assert row["status"] == ref.status and ref.status in ("ok", "partial"), (row, ref.errors)
        mine, theirs = _manifest(f"{row['output']}/manifest.json"), _manifest(f"{ref.output}/manifest.json")
        assert len(mine["identities"]) == len(theirs["identities"]) >= 1
        _same_faces(mine.pop("faces"), theirs.pop("faces"))
        assert mine == theirs, name
        for ident in theirs["identities"]:
            for r in ident["references"]:
                assert storage.read_bytes(f"{row['output']}/{r['path']}") == \
                    Path(ref.output, r["path"]).read_bytes()
        assert storage.exists(f"{row['output']}/_DONE")
        # the report shows the same whole frames (album: photos) before/after as the single path's
        frames = _frame_captions(storage.read_bytes(f"{row['output']}/report.html").decode())
        assert frames == _frame_captions(Path(ref.output, "report.html").read_text()) and frames
        if name.endswith(".mp4"):
            local = storage.download(f"{row['output']}/restored.mp4", tmp_path / name)
            a, b = list(iter_frames(local)), list(iter_frames(Path(ref.output, "restored.mp4")))
            assert [f.pts for f in a] == [f.pts for f in b]
            exact = sum(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
            worst = min(psnr(x.image, y.image) for x, y in zip(a, b, strict=True))
            print(f"{name}: {exact}/{len(a)} frames bit-exact, worst PSNR {worst:.1f} dB")
            assert worst > 45
            assert audio_packet_digests(local) == audio_packet_digests(Path(ref.output, "restored.mp4"))
        else:
            for f in theirs["files"]:
                assert storage.read_bytes(f"{row['output']}/restored/{f['file']}") == \
                    Path(ref.output, "restored", f["file"]).read_bytes(), f


def test_rerun_skips_done_items(job):
    argv, _, first, out = job
    assert main(argv) == 1  # the corrupt item is tried again, and fails again
    summary = json.loads(storage.read_bytes(f"{out}/_job_summary.json"))
    assert (summary["skipped"], summary["failed"], summary["done"]) == (3, 1, 0)


def test_mirror_layout_keeps_the_input_tree_on_s3(cluster, inputs, s3_server):
    """``--layout mirror``: a video two folders down and an album come back under their own
    names (with the suffix) beside their sidecars; the batch page links both; a rerun skips."""
    bucket = s3_server.new_bucket()
    src, out = f"s3://{bucket}/in", f"s3://{bucket}/out"
    storage.upload_file(inputs / "one.mp4", f"{src}/a/b/one.mp4")
    for name in ("group_a.jpg", "group_b.png", "single_t1_0.jpg"):
        storage.upload_file(inputs / "album" / name, f"{src}/photos/{name}")
    # the options a user passes: default pools and segments
    argv = ["-i", src, "-o", out, *[a for s in SETS for a in ("--set", s)], "--layout", "mirror", "--suffix", "_r"]
    assert main(argv) == 0
    summary = json.loads(storage.read_bytes(f"{out}/_job_summary.json"))
    keys = {storage.relative_to(out, u) for u, _, _ in storage.list(out)}
    assert "a/b/one_r.mp4" in keys and {"a/b/one.mp4.refstar/_DONE", "a/b/one.mp4.refstar/manifest.json"} <= keys
    assert {k for k in keys if k.startswith("photos/")} == {"photos/group_a_r.jpg", "photos/group_b_r.png",
                                                            "photos/single_t1_0_r.jpg"}
    assert "photos.refstar/_DONE" in keys and not any(k.startswith("_staging/") for k in keys)
    index = storage.read_bytes(f"{out}/index.html").decode()
    assert "a/b/one.mp4.refstar/report.html" in index and "photos.refstar/report.html" in index
    assert main(argv) == 0
    again = json.loads(storage.read_bytes(f"{out}/_job_summary.json"))
    assert again["skipped"] == summary["done"] == 2


def test_run_reuses_what_refstar_analyse_kept_and_upscales_as_one_process_does(cluster, inputs, tmp_path):
    """``refstar analyse`` on one machine, then the archive job into the same output with
    ``output.upscale=2`` (which keeps the analysis valid): the job skips its analysis actors, and
    its segments give the same enlarged frames as one process restoring from scratch."""
    from worker.cli import main as cli_main

    out = tmp_path / "out"
    assert cli_main(["analyse", str(inputs / "one.mp4"), "-o", str(out), *[a for s in SETS for a in ("--set", s)]]) == 0
    items = [i for i in archive.list_prefix(str(inputs)) if i.uri.endswith("one.mp4")]
    sets = [*SETS, "output.upscale=2"]
    summary = run_job(items, str(out), None, sets, OPTS)
    (row,) = summary["results"]
    assert row["status"] == "ok", row
    assert json.loads(Path(row["output"], "manifest.json").read_text())["counts"]["analysis_reused"] == 1
    single = restore_item(inputs / "one.mp4", str(tmp_path / "single"), load_config(None, sets))
    a = list(iter_frames(Path(row["output"], "restored.mp4")))
    b = list(iter_frames(Path(single.output, "restored.mp4")))
    assert a[0].image.shape == (512, 640, 3) and [f.pts for f in a] == [f.pts for f in b]
    assert min(psnr(x.image, y.image) for x, y in zip(a, b, strict=True)) > 45


def test_the_default_analysis_looks_again_on_the_driver(cluster, inputs, tmp_path, caplog):
    """With the default detection stride and quick detections the segments' actors leave faces
    measured between detections; the driver measures the contenders for references again from
    its staged copy before choosing them, as one process does, and finds what one process finds."""
    import logging

    caplog.set_level(logging.INFO, logger="worker.stages.analyse")
    items = [i for i in archive.list_prefix(str(inputs)) if i.uri.endswith("two.mp4")]
    sets = [s for s in SETS if s not in PER_FRAME]
    (row,) = run_job(items, str(tmp_path / "out"), None, sets, OPTS)["results"]
    assert row["status"] == "ok", row
    m = json.loads(Path(row["output"], "manifest.json").read_text())
    assert m["counts"]["quick_detections"] >= 1 and m["counts"]["detector_frames"] < 36
    assert len(m["identities"]) == 2 and all(i["references"] for i in m["identities"])
    assert re.search(r"looked again at \d+ faces on \d+ frames", caplog.text)
    one = restore_item(inputs / "two.mp4", str(tmp_path / "single"), load_config(None, sets))
    theirs = json.loads(Path(one.output, "manifest.json").read_text())
    assert [(f["frame"], f["identity"]) for f in m["faces"]] == [(f["frame"], f["identity"]) for f in theirs["faces"]]
    assert m["counts"]["faces_restored"] == theirs["counts"]["faces_restored"] == 72 - m["counts"]["faces_sharp"]


def test_killed_restorer_still_completes(job, inputs, tmp_path):
    cfg = load_config(None, SETS)
    pools = Pools(cfg, OPTS)
    seen = {}

    def kill_soon() -> None:  # while its first segments are in flight
        group = pools.restore  # made now: before, the analysis actors held the CPUs
        group.wait_up()
        seen["victim"] = victim = group.up[0]
        seen["before"] = ray.get(victim.pid.remote())
        threading.Timer(0.5, lambda: ray.kill(victim, no_restart=False)).start()

    items = archive.list_prefix(str(inputs))
    items = [i for i in items if i.uri.endswith("two.mp4")]
    try:
        summary = run_job(items, str(tmp_path / "out"), None, SETS, OPTS, on_restore=kill_soon, pools=pools)
        after = ray.get(seen["victim"].pid.remote())
    finally:
        pools.shutdown()
    assert summary["done"] == 1, summary
    assert after != seen["before"]  # the actor really died and was restarted
    assert summary["frames"] == 36


def test_identities_linked_across_the_archive(cluster, inputs, tmp_path):
    """hanks is in both videos and the album, t1_2 in one video and the album: linked, they
    become archive persons whose appearances all use the same pooled references."""
    gt = make_album(tmp_path / "gt")  # the same album as the archive's: its ground truth
    people = {p for who in gt["faces"].values() for p in who} | {"t1_2", "hanks"}
    items = [i for i in archive.list_prefix(str(inputs)) if not i.uri.endswith("broken.mp4")]
    out = tmp_path / "out"
    sets = [*SETS, "identity.link_archive=true"]
    summary = run_job(items, str(out), None, sets, OPTS)
    assert summary["done"] == 3, summary
    persons = summary["persons"]
    assert len(persons) == len(people)
    spans = sorted(len({m["item"] for m in p["members"]}) for p in persons if len(p["members"]) > 1)
    assert spans == [2, 3]
    for p in persons:
        assert len({m["item"] for m in p["members"]}) == len(p["members"])  # one identity per item
        refs = []
        for m in p["members"]:
            man = json.loads((out / m["item"] / "manifest.json").read_text())
            ident = next(i for i in man["identities"] if i["id"] == m["identity"])
            assert ident["person"] == p["person"]
            refs.append({(r.get("origin") or m["item"], r["frame"], r["source"]) for r in ident["references"]})
        assert all(r == refs[0] for r in refs), p  # the same references for every appearance
    # linked outputs depend on the archive: they never pass for an unlinked run's items
    plain = load_config(None, SETS)
    assert not {archive.item_id(i, plain) for i in items} & {p.name for p in out.iterdir()}


def test_refstar_adapted_per_item_on_ray(cluster, inputs, tmp_path):
    """restorer=refstar adapts a net on each item's own faces on a restore actor, and every
    restore actor restores with it."""
    items = [i for i in archive.list_prefix(str(inputs)) if i.uri.endswith(("one.mp4", "album"))]
    sets = [*SETS, "restorer=refstar", "restore.checkpoint=", "restore.adapt_steps=6", "restore.adapt_preset=tiny",
            "restore.adapt_size=64"]
    summary = run_job(items, str(tmp_path), None, sets, OPTS)
    assert summary["done"] == 2, summary
    for row in summary["results"]:
        man = json.loads(Path(row["output"], "manifest.json").read_text())
        assert man["restorer"]["name"] == "refstar" and man["restorer"]["adapted"], man["restorer"]
        assert man["restorer"]["steps"] == 6 and man["timings"]["adapt"] > 0
        assert man["counts"]["faces_restored"] > 0


def test_actors_remove_their_input_copies_at_shutdown(cluster, inputs, s3_server, tmp_path):
    """On a multi-node cluster an actor downloads inputs its node cannot see; the job's end must
    not leave those copies behind (``ray.kill`` skips the actor's exit handlers)."""
    img = inputs / "album" / "group_a.jpg"
    uri = f"s3://{s3_server.new_bucket()}/group_a.jpg"
    storage.upload_file(img, uri)
    cfg = load_config(None, SETS)
    pools = Pools(cfg, PoolOptions(analysis_actors=1), job="cache-test")
    ours = lambda: set(Path(tempfile.gettempdir()).glob("refstar-in-*"))  # noqa: E731
    before = ours()
    try:
        here, fetched = fan_out(pools.analysis, "analyse_image",
                                [(cfg, str(img), str(img)), (cfg, str(tmp_path / "other-node.jpg"), uri)])
        assert len(fetched) == len(here) == 3  # group_a shows three people
        np.testing.assert_array_equal([f.bbox for f in fetched], [f.bbox for f in here])
        # the other test process may make input caches of its own meanwhile: look at the actor's
        made = {d for d in ours() - before if any(d.rglob("other-node.jpg"))}
        assert len(made) == 1
    finally:
        pools.shutdown()
    assert not any(d.exists() for d in made)
