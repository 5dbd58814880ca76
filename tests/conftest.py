import os
from pathlib import Path

import pytest


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


@pytest.fixture(scope="module")
def cluster():
    """A real local Ray of 2 CPUs, the size of CI and of a small laptop, for one test module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
