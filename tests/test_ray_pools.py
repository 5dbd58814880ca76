"""The archive job's actor pools on a real local Ray of 2 CPUs, the size of CI and of a laptop:
the README's command with no pool options completes (it used to hang: two 1-CPU analysis
actors kept both CPUs and the restore actor was never placed), a group that can only be partly
placed still works, and one that cannot be placed at all stops the job with a clear reason
instead of waiting forever."""

from __future__ import annotations

import json
import time

import pytest
import ray

from jobs.restore import main, run_job
from tests.mediagen import FaceScene, make_album
from tests.test_segments import gop_video
from worker import storage
from worker.cluster.ray_pools import PoolOptions, fits, group_size
from worker.collection import archive

pytestmark = pytest.mark.slow

SETS = ["progress=false", "restore.crop_size=256"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("archive")
    gop_video(FaceScene(persons=("hanks",), size=(320, 256), face_px=110, seed=3), d / "clip.mp4", 24,
              degrade=range(4, 8))
    make_album(d / "album")
    return d


def _all_cpus_free(within_s: float = 20) -> bool:
    """ray.kill returns at once; the CPUs come back when the actors are gone."""
    end = time.monotonic() + within_s
    while ray.available_resources().get("CPU") != 2:
        if time.monotonic() > end:
            return False
        time.sleep(0.2)
    return True


def test_group_sizes_follow_the_cluster():
    laptop, gpu_node = {"CPU": 2.0}, {"CPU": 16.0, "GPU": 4.0}
    opts = PoolOptions()
    assert group_size(opts, "analysis", laptop) == group_size(opts, "restore", laptop) == 2
    assert group_size(opts, "analysis", gpu_node) == 16
    assert group_size(PoolOptions(restore_gpus=1), "restore", gpu_node) == 4
    assert group_size(PoolOptions(restore_gpus=0.5), "restore", gpu_node) == 8
    assert group_size(PoolOptions(restore_gpus=1), "restore", laptop) == 1  # asked for; may scale up
    assert group_size(PoolOptions(analysis_actors=3), "analysis", laptop) == 3  # as asked
    assert group_size(PoolOptions(), "analysis", {}) == 1  # a head with no CPUs: one, to scale up
    assert group_size(opts, "worker", laptop) == 2
    assert not fits([(2, {"CPU": 1}), (2, {"CPU": 1, "GPU": 0})], laptop)
    assert fits([(16, {"CPU": 0.5}), (4, {"CPU": 1, "GPU": 1})], gpu_node)
    assert not fits([(1, {"CPU": 1}), (1, {"CPU": 1, "GPU": 1})], laptop)


def test_readme_command_with_default_pools_completes(cluster, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--input", str(inputs), "--output", str(out), "--set", "progress=false"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["items"], summary["done"], summary["failed"]) == (2, 2, 0)
    for row in summary["results"]:
        man = json.loads((out / row["item_id"] / "manifest.json").read_text())
        assert man["counts"]["faces_restored"] > 0 and (out / row["item_id"] / "_DONE").exists()
    # the job released every actor: the cluster's CPUs are all free again
    assert _all_cpus_free()


def test_pools_that_do_not_fit_side_by_side_take_turns(cluster, inputs, tmp_path):
    """Three 1-CPU analysis actors on 2 CPUs (calls go to the two that are up), and a 2-CPU
    restore actor that is placed only once they are released, for each item."""
    items = [i for i in archive.list_prefix(str(inputs)) if i.kind == "video"]
    summary = run_job(items, str(tmp_path), None, SETS, PoolOptions(analysis_actors=3, restore_cpus=2))
    assert (summary["done"], summary["failed"]) == (1, 0), summary


def test_a_pool_that_cannot_be_placed_stops_the_job_with_its_reason(cluster, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--input", str(inputs), "--output", str(out), "--set", "progress=false",
            "--restore-gpus", "1", "--placement-timeout", "30"]  # analysis actors must start within it, beside the other test process
    assert main(argv) == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["items"], summary["failed"], summary["done"]) == (2, 2, 0)
    first, second = summary["results"]
    reason = "no restore actor was placed and started in 30 s: each asks for {CPU: 1, GPU: 1}, the cluster has {CPU: 2}"
    assert any(reason in e for e in first["errors"]), first
    assert any(e.startswith(f"{second['uri']}: not run: {reason}") for e in second["errors"]), second
    assert not [u for u, _, _ in storage.list(str(out)) if u.endswith("/_DONE")]
    assert ray.available_resources().get("CPU") == 2  # nothing left waiting for placement
