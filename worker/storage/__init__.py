"""One URI-shaped API for inputs and outputs: local paths (or ``file://``) and ``s3://bucket/key``.

Every publication is atomic: locally a temporary in the same folder renamed into place, on S3
a single PUT or a completed multipart upload. An item's ``_DONE`` marker is written last with
:func:`put_done_marker`, which refuses to overwrite (``os.link`` locally, ``If-None-Match: *``
on S3), so of two writers racing for one item exactly one claims it.

Keys derived from untrusted input (event notifications, manifests, album file names) go
through :func:`join` / :func:`safe_key`, which refuse anything that could leave the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from . import local as _local
from . import s3 as _s3
from .keys import (
    DONE_MARKER,
    ObjectNotFound,
    StorageAccessDenied,
    StorageError,
    relative_key,
    safe_key,
)
from .s3 import MiB, S3Settings, configure, reset_client

__all__ = [
    "DONE_MARKER", "MiB", "ObjectNotFound", "S3Settings", "StorageAccessDenied", "StorageError",
    "check_root", "configure", "delete", "download", "event_uri", "exists", "is_s3", "join", "list",
    "local_path", "makedirs", "move", "open_read", "parse_s3", "put_done_marker", "put_if_absent", "read_bytes",
    "relative_to", "remove_tree_marker", "reset_client", "safe_key", "split_names", "stat", "upload_file",
    "write_atomic",
]

Data = bytes | str | BinaryIO


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def parse_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    return _s3.parse(uri)


def check_root(uri: str) -> str:
    """``uri`` as a folder the worker may write under; an ``s3://`` one must name its folder
    plainly (``s3://b/out/../../x`` would be written literally, as a key with ``..`` in it)."""
    if is_s3(uri):
        _, key = parse_s3(uri)
        if key.rstrip("/"):
            try:
                safe_key(key.rstrip("/"))
            except StorageError as e:
                raise StorageError(f"refusing output {uri}: {e}") from None
    return uri


def join(root: str, *parts: str) -> str:
    """``root`` + relative POSIX ``parts``, refusing any part that would escape ``root``
    (``..``, absolute, backslashes, empty segments), and an ``s3://`` root that is not plain
    (:func:`check_root`)."""
    if not parts:
        return root
    rel = safe_key("/".join(parts))
    if is_s3(root):
        check_root(root)
    if "://" in root:
        return f"{root.rstrip('/')}/{rel}" if not root.endswith("://") else f"{root}{rel}"
    return str(Path(root) / PurePosixPath(rel))


def event_uri(bucket: str, raw_key: str, under: str | None = None) -> str:
    """The ``s3://`` URI of an object named in an S3 event notification.

    Event keys are URL-encoded (``My+Clip%281%29.mp4``); they are decoded, then validated, and
    when ``under`` (an ``s3://`` folder) is given the object must lie inside it.
    """
    key = safe_key(raw_key, url_encoded=True)
    uri = f"s3://{bucket}/{key}"
    if under is not None:
        under_bucket, under_key = parse_s3(under)
        if under_bucket != bucket:
            raise StorageError(f"refusing {uri}: it is not under {under}")
        relative_key(under_key, key)
    return uri


def relative_to(prefix_uri: str, uri: str) -> str:
    """The validated relative key of ``uri`` below folder ``prefix_uri`` (e.g. to mirror an
    input album's layout under the output). Raises StorageError if it is not inside."""
    if is_s3(prefix_uri) != is_s3(uri):
        raise StorageError(f"refusing {uri}: it is not under {prefix_uri}")
    if is_s3(uri):
        (pb, pk), (b, k) = parse_s3(prefix_uri), parse_s3(uri)
        if pb != b:
            raise StorageError(f"refusing {uri}: it is not under {prefix_uri}")
        return relative_key(pk, k)
    root, path = _local.path_of(prefix_uri), _local.path_of(uri)
    try:
        return safe_key(path.relative_to(root).as_posix())
    except ValueError:
        raise StorageError(f"refusing {uri}: it is not under {prefix_uri}") from None


def split_names(prefix_uri: str, uris: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """The objects listed under folder ``prefix_uri`` by relative name: ``({name: uri}, {raw
    name: why refused})``. A name is refused when it could not be an output key (``a//b.jpg``,
    ``../x.jpg``, a backslash): the item reports that file by name instead of failing whole."""
    ok, refused = {}, {}
    folder = prefix_uri.rstrip("/") + "/"
    for uri in uris:
        try:
            ok[relative_to(prefix_uri, uri)] = uri
        except StorageError as e:
            if not uri.startswith(folder):
                raise
            refused[uri[len(folder):]] = str(e)
    return ok, refused


def exists(uri: str) -> bool:
    return _s3.exists(uri) if is_s3(uri) else _local.exists(uri)


def stat(uri: str) -> tuple[int, str]:
    """``(size, version)`` of one object or file: the S3 ETag, or the local mtime in ns. Part
    of an item's deterministic id, so a changed input is a new item."""
    return _s3.stat(uri) if is_s3(uri) else _local.stat(uri)


def makedirs(uri: str) -> None:
    """Create a local folder; S3 has no folders, so nothing to do there."""
    if not is_s3(uri):
        _local.path_of(uri).mkdir(parents=True, exist_ok=True)


def local_path(uri: str) -> Path:
    """The local filesystem path behind ``uri`` (media writers stream to files).
    S3 URIs have none: :func:`download` them, or write locally and :func:`upload_file`."""
    return _local.path_of(uri)


def open_read(uri: str) -> BinaryIO:
    """A binary reader; on S3 a streaming, non-seekable body (use :func:`download` for PyAV).
    Raises ObjectNotFound (a FileNotFoundError) naming ``uri`` when there is nothing there."""
    return _s3.open_read(uri) if is_s3(uri) else _local.open_read(uri)


def read_bytes(uri: str) -> bytes:
    with open_read(uri) as f:
        return f.read()


def write_atomic(uri: str, data: Data) -> None:
    """Write ``data`` (bytes, str as UTF-8, or a binary file object) so that readers see
    either nothing or the whole object."""
    if is_s3(uri):
        _s3.write_atomic(uri, data)
    else:
        _local.write_atomic(uri, data)


def upload_file(local_file: str | os.PathLike[str], uri: str) -> None:
    """Publish a local file at ``uri`` (multipart on S3 above ``S3Settings.multipart_threshold``)."""
    if is_s3(uri):
        _s3.upload_file(local_file, uri)
    else:
        _local.upload_file(local_file, uri)


def move(src_uri: str, dst_uri: str) -> None:
    """Move one file or object to ``dst_uri``: a rename between local paths, an upload from a
    local path to S3, a server-side copy between S3 keys; the source is gone afterwards."""
    if not is_s3(dst_uri):
        _local.move(src_uri, dst_uri)
        return
    if is_s3(src_uri):
        _s3.copy(src_uri, dst_uri)
        _s3.delete(src_uri)
    else:
        _s3.upload_file(src_uri, dst_uri)
        _local.path_of(src_uri).unlink()


def download(uri: str, local_file: str | os.PathLike[str]) -> Path:
    """Copy ``uri`` to a local (seekable) file, atomically, and return its path."""
    return _s3.download(uri, local_file) if is_s3(uri) else _local.download(uri, local_file)


def delete(uri: str) -> None:
    """Delete one object or file; deleting something absent is not an error."""
    if is_s3(uri):
        _s3.delete(uri)
    else:
        _local.delete(uri)


def list(prefix_uri: str, recursive: bool = True,  # noqa: A001 - the brief's name
         page_size: int | None = None) -> Iterator[tuple[str, int, str | float]]:
    """Yield ``(uri, size, etag_or_mtime)`` for every object/file in folder ``prefix_uri``,
    in key order: the S3 ETag (unquoted) or the local mtime. ``page_size`` bounds each S3
    ListObjectsV2 page (default 1000); listing is lazy, page by page."""
    if is_s3(prefix_uri):
        return _s3.list_objects(prefix_uri, recursive, page_size)
    return _local.list_files(prefix_uri, recursive)


def list_modified(prefix_uri: str) -> Iterator[tuple[str, float]]:
    """Yield ``(uri, modification time in epoch seconds)`` for everything under folder
    ``prefix_uri``, temporary files included (they show a writer at work)."""
    return _s3.list_modified(prefix_uri) if is_s3(prefix_uri) else _local.list_modified(prefix_uri)


def put_if_absent(uri: str, data: bytes | str) -> bool:
    """Create ``uri`` only if nothing is there: True if this call created it (of concurrent
    writers exactly one does), False if it existed."""
    return _s3.put_if_absent(uri, data) if is_s3(uri) else _local.put_if_absent(uri, data)


def put_done_marker(item_uri: str, payload: bytes | str | Mapping[str, Any]) -> bool:
    """Write ``<item_uri>/_DONE`` unless it exists. True if this call claimed the item,
    False if another writer (or an earlier run) already had. Call it after every output."""
    if isinstance(payload, Mapping):
        payload = json.dumps(payload, sort_keys=True) + "\n"
    uri = join(item_uri, DONE_MARKER)
    return put_if_absent(uri, payload)


def remove_tree_marker(uri: str) -> None:
    """Withdraw an item's done-marker before it is rewritten (``--force``)."""
    delete(join(uri, DONE_MARKER))
