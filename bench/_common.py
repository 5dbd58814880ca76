"""What the benchmarks share: where the real clips are."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def real_data_root() -> Path:
    """../shared/data beside the checkout, or $REFSTAR_REAL_DATA."""
    env = os.environ.get("REFSTAR_REAL_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def default_clip() -> Path:
    """The first real clip, or exit with a message saying where it looked."""
    clips = sorted((real_data_root() / "videos").glob("*.mp4"))
    if not clips:
        sys.exit(f"no clip given and none found in {real_data_root() / 'videos'}")
    return clips[0]
