"""`refstar train --ray`: the same loop as DDP on two Ray Train workers (CPU, gloo)."""

import json

import pytest

from tests.refstar.test_train_cli import identity_tree
from worker.cli import main

pytestmark = pytest.mark.slow


def test_two_ray_train_workers_write_a_loadable_checkpoint(tmp_path, capsys):
    import ray
    import ray.train.torch  # noqa: F401 - pandas and pyarrow come with ray[data]: a must, not a skip

    from refstar.checkpoint import latest, load_net

    identity_tree(tmp_path / "data")
    out = tmp_path / "run"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        code = main(["train", "--data", str(tmp_path / "data"), "--out", str(out), "--aligned",
                     "--preset", "tiny", "--size", "32", "--steps", "4", "--batch-size", "2",
                     "--num-workers", "0", "--ckpt-every", "2", "--device", "cpu",
                     "--ray", "--workers", "2"])
    finally:
        ray.shutdown()
    assert code == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["world_size"] == 2 and metrics["step"] == 4
    net, meta = load_net(latest(out), "cpu")  # rank 0 wrote it where the single process would
    assert meta["step"] == 4
