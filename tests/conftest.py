import os
from pathlib import Path

import pytest

# modules that start a local Ray cluster: they run one after another in one test process, as two
# clusters on a 2-core machine would each take both cores for their own
RAY_MODULES = {"test_ray_job", "test_ray_pools", "test_ray_session", "test_trigger",
               "test_trigger_local", "test_train_ray"}


def pytest_xdist_make_scheduler(config, log):
    """Each test module runs whole in one process (its module fixtures are built once), and
    every Ray module in the same one."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "ray" if Path(path).stem in RAY_MODULES else path

    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """The Ray group first, as it is the longest: the other process takes the rest meanwhile."""
    items.sort(key=lambda item: item.path.stem not in RAY_MODULES)  # stable: order kept within


def real_data_root() -> Path:
    """../shared/data beside the checkout (or $REFSTAR_REAL_DATA)."""
    env = os.environ.get("REFSTAR_REAL_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = real_data_root()
    if not (root / "README.md").is_file():
        pytest.skip(f"real face data not found at {root} (set REFSTAR_REAL_DATA)")
    return root


@pytest.fixture(autouse=True, scope="module")
def _one_thread_per_test_process():
    """One torch intra-op thread and one OpenCV thread in each test module: the suite runs as two
    processes on CI's 2 cores (beside Ray's actors), the tensors are small, and on such a shared
    machine OpenMP's spin-waiting made two torch threads 25-100x slower. Restored afterwards."""
    import cv2
    import torch

    n, m = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(n)
    cv2.setNumThreads(m)


@pytest.fixture(scope="module")
def cluster():
    """A real local Ray of 2 CPUs, the size of CI and of a small laptop, for one test module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
