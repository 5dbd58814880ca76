"""The face prior RefSTAR ships with: a checkpoint inside the package, trained by the project.

``restore.checkpoint=prior`` (the default) names it; ``refstar/weights/MODEL_CARD.md`` says on
what it was trained and how (``python -m jobs.prior`` rebuilds it), and its ``split.json`` lists
the clips it saw, so that the quality suite scores it only on the others.
"""

from __future__ import annotations

import json
from pathlib import Path

NAME = "prior"  # the restore.checkpoint value that names the shipped prior
PRIOR_DIR = Path(__file__).resolve().parent / "weights" / "face_prior"


def prior_path() -> Path | None:
    """The shipped checkpoint folder, or None when this installation has none."""
    return PRIOR_DIR if (PRIOR_DIR / "meta.json").is_file() else None


def require_prior(setting: str, instead: str) -> Path:
    """The shipped checkpoint folder; a ModelError naming ``setting`` (what asked for it) and
    ``instead`` (what to do) when this installation has none."""
    from refstar.errors import ModelError

    found = prior_path()
    if found is None:
        raise ModelError(f"{setting}: this installation has no face prior (refstar/weights/face_prior); {instead}")
    return found


def seen_by_prior() -> set[str]:
    """File names (``clip.mp4``, ``img1.jpg``) the shipped prior was trained on."""
    f = PRIOR_DIR / "split.json"
    if not f.is_file():
        return set()
    split = json.loads(f.read_text())
    return {Path(p).name for p in (*split.get("train_clips", []), *split.get("photos", []))}
