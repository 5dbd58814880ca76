"""Errors and key validation shared by the local and S3 backends.

Kept apart from ``__init__`` so that ``local`` and ``s3`` can import it without a cycle.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

DONE_MARKER = "_DONE"


class StorageError(ValueError):
    """A URI the worker refuses or a storage operation that failed (named in the message)."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """The object or file behind a URI does not exist (also a ``FileNotFoundError``)."""


class StorageAccessDenied(StorageError, PermissionError):
    """Credentials are missing or do not allow the operation (also a ``PermissionError``)."""


def safe_key(key: str, *, url_encoded: bool = False) -> str:
    """Return ``key`` as a relative POSIX key that cannot leave the folder it is joined under.

    Keys from S3 event notifications arrive URL-encoded (``+`` for spaces), so decode them
    with ``url_encoded=True`` *before* checking: ``%2E%2E%2F`` must be caught as ``../``.
    Refused: empty keys, absolute paths, backslashes (Windows separators would be read as
    ordinary characters by S3 but as separators by a local reader), NUL, and empty, ``.``
    or ``..`` segments (``a//b`` and ``a/./b`` name different S3 objects than ``a/b``).
    """
    if url_encoded:
        key = unquote_plus(key)
    if not key:
        raise StorageError("refusing an empty key: it names no object below its folder")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise StorageError(f"refusing key {key!r}: it would escape its folder")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise StorageError(f"refusing key {key!r}: segment {segment!r} would escape its folder")
    return key


def relative_key(prefix_key: str, key: str) -> str:
    """The part of ``key`` below folder ``prefix_key`` (both bucket-relative), validated.

    Raises StorageError when ``key`` is not strictly inside ``prefix_key``.
    """
    folder = prefix_key.rstrip("/")
    folder = f"{folder}/" if folder else ""
    if not key.startswith(folder) or key == folder:
        raise StorageError(f"refusing key {key!r}: it is not under {prefix_key!r}")
    return safe_key(key[len(folder):])
