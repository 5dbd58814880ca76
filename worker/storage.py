"""One URI-shaped API for outputs: local paths now, ``s3://`` with the Ray/S3 issue.

Every write is atomic (temporary name in the same folder, then ``os.replace``), so a crash never
leaves a partial file under its final name, and the item's ``_DONE`` marker is written last.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath

DONE_MARKER = "_DONE"


class StorageError(ValueError):
    """A URI the worker refuses (unsupported scheme, a key that escapes its folder)."""


def _local(uri: str) -> Path:
    if uri.startswith("s3://"):
        raise StorageError(f"{uri}: s3:// outputs need the S3 storage backend (not in this build)")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported URI scheme")
    return Path(uri)


def join(root: str, *parts: str) -> str:
    """Join relative POSIX parts under ``root``, refusing absolute parts and ``..`` segments
    (keys from untrusted inputs must never escape the output folder)."""
    rel = PurePosixPath(*parts) if parts else PurePosixPath(".")
    if rel.is_absolute() or any(p == ".." for p in rel.parts) or "\\" in str(rel):
        raise StorageError(f"refusing path {str(rel)!r}: it would escape {root}")
    return str(Path(root) / rel) if not root.startswith("s3://") else f"{root.rstrip('/')}/{rel}"


def exists(uri: str) -> bool:
    return _local(uri).exists()


def makedirs(uri: str) -> None:
    _local(uri).mkdir(parents=True, exist_ok=True)


def local_path(uri: str) -> Path:
    """The local filesystem path behind ``uri`` (media writers stream to files)."""
    return _local(uri)


def write_atomic(uri: str, data: bytes | str) -> None:
    """Write ``data`` to ``uri`` so that readers see either nothing or the whole file."""
    path = _local(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_tree_marker(uri: str) -> None:
    """Withdraw an item's done-marker before it is rewritten (``--force``)."""
    _local(join(uri, DONE_MARKER)).unlink(missing_ok=True)
