"""Reading an output folder in tests."""

from __future__ import annotations

from pathlib import Path


def item_dirs(out: Path) -> list[Path]:
    """The item folders of an output folder (not ``index.html``, ``_staging`` or ``_jobs``)."""
    return sorted(p for p in Path(out).iterdir() if p.is_dir() and not p.name.startswith("_"))
