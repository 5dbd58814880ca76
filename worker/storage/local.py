"""Local-folder backend: every publication is a temporary file in the same folder + rename.

A crash never leaves a partial file under its final name; temporaries are named
``.<name>.<random>.part`` so listings can skip them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from worker.item.litter import owner

from .keys import ObjectNotFound, StorageAccessDenied, StorageError

_TMP_SUFFIX = ".part"


def path_of(uri: str) -> Path:
    """The filesystem path behind a local URI (plain path or ``file://``)."""
    if uri.startswith("s3://"):
        raise StorageError(f"{uri}: an S3 URI has no local path; use storage.download() first")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported URI scheme")
    return Path(uri)


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: set and restore at once
    os.umask(mask)
    return mask


def _temp_beside(path: Path) -> tuple[int, str]:
    """A fresh temporary beside ``path``, with the mode a plain ``open`` would give (mkstemp
    makes it 0600: a team sharing the output folder could not read what it publishes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-{owner()}-", suffix=_TMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def _write_temp(path: Path, data: bytes | str | BinaryIO) -> str:
    """Write ``data`` to a fresh temporary beside ``path`` and return its name."""
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(data, "read"):
                shutil.copyfileobj(data, f)  # type: ignore[arg-type]
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(uri: str, data: bytes | str | BinaryIO) -> None:
    path = path_of(uri)
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def upload_file(local: str | os.PathLike[str], uri: str) -> None:
    with open(local, "rb") as src:
        write_atomic(uri, src)


def move(src_uri: str, dst_uri: str) -> None:
    """Rename a file into place (staging lies beside the outputs: one filesystem, atomic)."""
    dst = path_of(dst_uri)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path_of(src_uri), dst)


def download(uri: str, local: str | os.PathLike[str]) -> Path:
    src, dst = path_of(uri), Path(local)
    if not src.is_file():
        raise ObjectNotFound(f"{uri}: no such file")
    with open(src, "rb") as f:
        write_atomic(str(dst), f)
    return dst


def open_read(uri: str) -> BinaryIO:
    try:
        return open(path_of(uri), "rb")
    except (FileNotFoundError, IsADirectoryError):
        raise ObjectNotFound(f"{uri}: no such file") from None
    except PermissionError as e:
        raise StorageAccessDenied(f"{uri}: permission denied ({e.strerror})") from None


def stat(uri: str) -> tuple[int, str]:
    """``(size, mtime in ns)`` of one file; ObjectNotFound names the path."""
    path = path_of(uri)
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise ObjectNotFound(f"{uri}: no such file") from e
    return st.st_size, str(st.st_mtime_ns)


def exists(uri: str) -> bool:
    return path_of(uri).exists()


def delete(uri: str) -> None:
    """Remove one file; a missing file is not an error (same as S3 DeleteObject)."""
    path_of(uri).unlink(missing_ok=True)


def list_modified(prefix_uri: str) -> Iterator[tuple[str, float]]:
    """Yield ``(path, mtime)`` for every file under a folder, temporary files included."""
    root = path_of(prefix_uri)
    for d, _, names in os.walk(root) if root.is_dir() else ():
        for n in names:
            with contextlib.suppress(FileNotFoundError):  # removed while we look
                yield os.path.join(d, n), os.stat(os.path.join(d, n)).st_mtime


def list_files(prefix_uri: str, recursive: bool = True) -> Iterator[tuple[str, int, float]]:
    """Yield ``(path, size, mtime)`` for files under a folder, sorted by relative path like S3.

    A missing folder yields nothing, as an empty S3 prefix does.
    """
    root = path_of(prefix_uri)
    if not root.is_dir():
        return
    if recursive:
        found = [Path(d) / n for d, _, names in os.walk(root) for n in names]
    else:
        found = [p for p in root.iterdir() if p.is_file()]
    found = [p for p in found if not _is_temporary(p.name)]
    for p in sorted(found, key=lambda p: p.relative_to(root).as_posix()):
        st = p.stat()
        yield str(p), st.st_size, st.st_mtime


def put_if_absent(uri: str, data: bytes | str) -> bool:
    """Publish ``data`` at ``uri`` only if nothing is there; False when another writer won.

    ``os.link`` fails with EEXIST atomically, unlike ``os.replace`` which would overwrite,
    so of two concurrent writers exactly one succeeds and the file is never seen half-written.
    """
    path = path_of(uri)
    tmp = _write_temp(path, data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        # filesystems without hard links: exclusive create, then fill (short window of a
        # partial file, acceptable for the small marker on such exotic mounts)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f, open(tmp, "rb") as src:
            shutil.copyfileobj(src, f)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)
