"""Inputs and outputs that live on S3: items are staged on local disk (PyAV and Pillow want
seekable local files); their outputs are published by ``worker.item.publish``.

Also what makes an item's id deterministic: its URI, the size and version (S3 ETag or local
mtime) of every file in it, and the config digest.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath

from worker import storage
from worker.config import Config, digest
from worker.errors import MediaError

VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}


def _name(uri: str) -> str:
    return PurePosixPath(uri.rstrip("/")).name or "item"


def item_kind(uri: str) -> str:
    """"video" for a video file, "album" for an image or a folder/prefix of images."""
    from worker.media.image import is_image_name

    name = _name(uri)
    if storage.is_s3(uri):
        return "video" if Path(name).suffix.lower() in VIDEO_EXTS else "album"
    path = Path(uri)
    return "album" if path.is_dir() or is_image_name(name) else "video"


def is_folder(uri: str) -> bool:
    """A local folder, or an S3 prefix that is not itself an object."""
    if storage.is_s3(uri):
        return uri.endswith("/") or not storage.exists(uri)
    return Path(uri).is_dir()


def fingerprint(uri: str) -> str:
    """Sizes and versions of everything in the item (raises ObjectNotFound when absent)."""
    if is_folder(uri):
        entries = [f"{u}|{size}|{ver}" for u, size, ver in storage.list(uri)]
        if not entries and storage.is_s3(uri):
            raise storage.ObjectNotFound(f"{uri}: no such object or prefix")
        return hashlib.sha256("\n".join(entries).encode()).hexdigest()
    size, version = storage.stat(uri)
    return f"{size}|{version}"


def input_bytes(uri: str) -> int:
    """The input's size in bytes (an album: its files'); 0 when it cannot be read (the item
    then fails with the reason on its own)."""
    try:
        if is_folder(uri):
            return sum(size for _, size, _ in storage.list(uri))
        return storage.stat(uri)[0]
    except (storage.StorageError, OSError):
        return 0


def canonical(uri: str) -> str:
    """An input's URI as ids hash it: an ``s3://`` URI as given, a local path made absolute."""
    return uri if storage.is_s3(uri) else str(Path(uri).resolve())


def item_id(uri: str, cfg: Config) -> str:
    """Readable stem + hash of the URI, its contents' versions and the config."""
    key = f"{canonical(uri)}|{fingerprint(uri)}|{digest(cfg)}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(_name(uri)).stem)[:48] or "item"
    return f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def staged_path(uri: str, workdir: Path) -> Path:
    """Where :func:`stage_input` puts an S3 item's local copy."""
    return workdir / _name(uri)


def stage_input(uri: str, workdir: Path, cfg: Config) -> tuple[Path, dict[str, str]]:
    """A local path for ``uri`` (itself when local; otherwise a download of the object or of
    every object under the prefix) and the files of a prefix refused by name, not downloaded:
    ``{raw name: why}`` for keys that could not be output keys (``a//b.jpg``, ``../x.jpg``)."""
    if not storage.is_s3(uri):
        return Path(uri), {}
    if not is_folder(uri):
        size, _ = storage.stat(uri)
        if size > cfg.limits.max_video_bytes:
            raise MediaError(uri, f"file too large ({size} bytes > limits.max_video_bytes)")
        return storage.download(uri, staged_path(uri, workdir)), {}
    root = staged_path(uri, workdir)
    root.mkdir(parents=True, exist_ok=True)
    names, refused = storage.split_names(uri, (u for u, _, _ in storage.list(uri)))
    for rel, obj in names.items():
        storage.download(obj, root / rel)
    return root, refused

