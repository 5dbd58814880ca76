"""S3 backend on boto3: one cached client per process, retries, multipart, conditional puts.

Endpoint and credentials come from boto3's own chain (env, profile, SSO, instance/pod role);
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` are honoured by botocore itself (>= 1.31), so
MinIO, R2 or moto need no code here. Nothing in this module logs credentials: only the
endpoint and region are ever logged.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import mimetypes
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from .keys import ObjectNotFound, StorageAccessDenied, StorageError

log = logging.getLogger(__name__)
MiB = 1024 * 1024

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
_EXISTS = {"PreconditionFailed"}  # 412: the key exists
_CONFLICT = {"ConditionalRequestConflict"}  # 409: a concurrent conditional write is in flight


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """Client and transfer tuning; change with :func:`configure`."""

    endpoint_url: str | None = None  # None: boto3 reads AWS_ENDPOINT_URL(_S3) itself
    region_name: str | None = None  # None: AWS_REGION / AWS_DEFAULT_REGION / profile
    retry_mode: str = "standard"  # "adaptive" adds client-side rate limiting on throttling
    max_attempts: int = 8  # total tries (botocore's own "max_attempts" would count retries)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_pool_connections: int = 16  # >= threads sharing the client + transfer concurrency
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 16 * MiB  # S3 (and boto3) raise anything below 5 MiB to 5 MiB
    max_concurrency: int = 4
    addressing_style: str = "auto"


_settings = S3Settings()
_client: Any = None
_client_pid: int | None = None
_lock = threading.Lock()


def configure(**changes: Any) -> S3Settings:
    """Replace some settings (e.g. ``multipart_threshold=8 * MiB``) and drop the cached client."""
    global _settings
    with _lock:
        _settings = dataclasses.replace(_settings, **changes)
        _drop_client()
    return _settings


def settings() -> S3Settings:
    return _settings


def reset_client() -> None:
    """Forget the cached client, e.g. after the environment (endpoint, credentials) changed."""
    with _lock:
        _drop_client()


def _drop_client() -> None:
    global _client, _client_pid
    _client, _client_pid = None, None


def client() -> Any:
    """The process's S3 client; boto3 clients are thread-safe once built, sessions are not,
    so building is serialised. Rebuilt after ``fork`` (a client's pool must not be shared)."""
    global _client, _client_pid
    pid = os.getpid()
    if _client is not None and _client_pid == pid:
        return _client
    with _lock:
        if _client is None or _client_pid != pid:
            _client, _client_pid = _make_client(_settings), pid
        return _client


def _make_client(s: S3Settings) -> Any:
    config = Config(
        retries={"mode": s.retry_mode, "total_max_attempts": s.max_attempts},
        connect_timeout=s.connect_timeout,
        read_timeout=s.read_timeout,
        max_pool_connections=s.max_pool_connections,
        s3={"addressing_style": s.addressing_style},
    )
    kwargs = {"endpoint_url": s.endpoint_url} if s.endpoint_url else {}
    c = boto3.session.Session().client("s3", region_name=s.region_name, config=config, **kwargs)
    log.debug("S3 client for %s (region %s)", c.meta.endpoint_url, c.meta.region_name)
    return c


def transfer_config() -> TransferConfig:
    s = _settings
    return TransferConfig(
        multipart_threshold=s.multipart_threshold,
        multipart_chunksize=s.multipart_chunksize,
        max_concurrency=s.max_concurrency,
        # the CRT client ignores part sizes and would make uploads depend on the machine
        preferred_transfer_client="classic",
    )


def parse(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; the key may be empty (bucket root)."""
    if not uri.startswith("s3://"):
        raise StorageError(f"{uri}: not an s3:// URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket in S3 URI")
    return bucket, key


def _error(uri: str, exc: Exception) -> StorageError:
    """Turn a boto error into a StorageError subclass whose message names the URI."""
    if isinstance(exc, NoCredentialsError):
        return StorageAccessDenied(
            f"{uri}: no AWS credentials found (env, shared profile, SSO or instance role)")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NOT_FOUND or status == "404":
            what = "bucket does not exist" if code == "NoSuchBucket" else "no such object"
            return ObjectNotFound(f"{uri}: {what}")
        if code in _DENIED or status == "403":
            return StorageAccessDenied(
                f"{uri}: access denied ({code or status}); check the credentials' S3 permissions"
                " (a missing key also reads as 403 without s3:ListBucket)")
        return StorageError(f"{uri}: S3 error {code or status}: {err.get('Message', '')}")
    if isinstance(exc, S3UploadFailedError):
        text = str(exc)
        if any(c in text for c in _DENIED - {"403"}):
            return StorageAccessDenied(f"{uri}: access denied: {text}")
        return StorageError(f"{uri}: upload failed: {text}")
    return StorageError(f"{uri}: S3 request failed: {exc}")


def _content_type(key: str) -> dict[str, str]:
    guessed, _ = mimetypes.guess_type(key)
    return {"ContentType": guessed} if guessed else {}


def exists(uri: str) -> bool:
    bucket, key = parse(uri)
    try:
        client().head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as e:
        if isinstance(err := _error(uri, e), ObjectNotFound):
            return False
        raise err from e
    except BotoCoreError as e:
        raise _error(uri, e) from e


def stat(uri: str) -> tuple[int, str]:
    """``(size, etag)`` of one object; ObjectNotFound names the URI."""
    bucket, key = parse(uri)
    try:
        head = client().head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as e:
        raise _error(uri, e) from e
    return int(head["ContentLength"]), head["ETag"].strip('"')


class S3Reader(io.RawIOBase):
    """A botocore StreamingBody as a proper binary file.

    ``StreamingBody.__enter__`` hands out the raw urllib3 stream, which skips botocore's
    length and checksum checks; this wrapper keeps every read going through them.
    """

    def __init__(self, body: Any, uri: str) -> None:
        self._body, self.name = body, uri

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._body.read(None if size is None or size < 0 else size)

    def readall(self) -> bytes:
        return self._body.read()

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def iter_chunks(self, chunk_size: int = MiB) -> Iterator[bytes]:
        return self._body.iter_chunks(chunk_size)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def open_read(uri: str) -> BinaryIO:
    """A streaming, non-seekable reader (``read``, ``iter_chunks``, context manager)."""
    bucket, key = parse(uri)
    try:
        body = client().get_object(Bucket=bucket, Key=key)["Body"]
    except (ClientError, BotoCoreError) as e:
        raise _error(uri, e) from e
    return S3Reader(body, uri)  # type: ignore[return-value]


def write_atomic(uri: str, data: bytes | str | BinaryIO) -> None:
    """S3 PUTs are all-or-nothing already; file objects go through the multipart transfer."""
    bucket, key = parse(uri)
    try:
        if hasattr(data, "read"):
            client().upload_fileobj(data, bucket, key, ExtraArgs=_content_type(key),
                                    Config=transfer_config())
        else:
            if not isinstance(data, bytes | bytearray | memoryview | str):
                raise TypeError(f"write_atomic needs bytes, str or a file, not {type(data)}")
            body = data.encode() if isinstance(data, str) else bytes(data)
            client().put_object(Bucket=bucket, Key=key, Body=body, **_content_type(key))
    except (ClientError, BotoCoreError, S3UploadFailedError) as e:
        raise _error(uri, e) from e


def upload_file(local: str | os.PathLike[str], uri: str) -> None:
    """Upload a local file; above ``multipart_threshold`` in parts (parallel, retried)."""
    bucket, key = parse(uri)
    if not Path(local).is_file():
        raise FileNotFoundError(f"{local}: no such file to upload to {uri}")
    try:
        client().upload_file(str(local), bucket, key, ExtraArgs=_content_type(key),
                             Config=transfer_config())
    except (ClientError, BotoCoreError, S3UploadFailedError) as e:
        raise _error(uri, e) from e


def copy(src_uri: str, dst_uri: str) -> None:
    """Server-side copy (multipart above ``multipart_threshold``, so any object size)."""
    (sb, sk), (db, dk) = parse(src_uri), parse(dst_uri)
    try:
        client().copy({"Bucket": sb, "Key": sk}, db, dk, ExtraArgs=_content_type(dk), Config=transfer_config())
    except (ClientError, BotoCoreError) as e:
        raise _error(src_uri, e) from e


def download(uri: str, local: str | os.PathLike[str]) -> Path:
    """Download to a local file (boto3 writes a temporary and renames it when complete)."""
    bucket, key = parse(uri)
    dst = Path(local)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        client().download_file(bucket, key, str(dst), Config=transfer_config())
    except (ClientError, BotoCoreError) as e:
        raise _error(uri, e) from e
    return dst


def delete(uri: str) -> None:
    """Delete one object; a missing key is not an error (S3 semantics)."""
    bucket, key = parse(uri)
    try:
        client().delete_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as e:
        raise _error(uri, e) from e


def list_objects(prefix_uri: str, recursive: bool = True,
                 page_size: int | None = None) -> Iterator[tuple[str, int, str]]:
    """Yield ``(uri, size, etag)`` for objects below the folder ``prefix_uri``, page by page.

    The prefix is a folder: ``s3://b/a`` lists ``a/...`` but not ``ab``. Without
    ``recursive`` only objects directly in the folder are yielded.
    """
    bucket, key = parse(prefix_uri)
    prefix = f"{key.rstrip('/')}/" if key.strip("/") else ""
    args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if not recursive:
        args["Delimiter"] = "/"
    if page_size:
        args["PaginationConfig"] = {"PageSize": page_size}
    try:
        for page in client().get_paginator("list_objects_v2").paginate(**args):
            for obj in page.get("Contents", []):
                yield f"s3://{bucket}/{obj['Key']}", obj["Size"], obj["ETag"].strip('"')
    except (ClientError, BotoCoreError) as e:
        raise _error(prefix_uri, e) from e


def list_modified(prefix_uri: str) -> Iterator[tuple[str, float]]:
    """Yield ``(uri, last modified, epoch seconds)`` for every object below the folder ``prefix_uri``."""
    bucket, key = parse(prefix_uri)
    prefix = f"{key.rstrip('/')}/" if key.strip("/") else ""
    try:
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield f"s3://{bucket}/{obj['Key']}", obj["LastModified"].timestamp()
    except (ClientError, BotoCoreError) as e:
        raise _error(prefix_uri, e) from e


def put_if_absent(uri: str, data: bytes | str, conflict_retries: int = 4) -> bool:
    """Conditional PUT (``If-None-Match: *``): True if this call created the object, False if
    it already existed (412).

    A 409 means a concurrent conditional write to the key is in flight and its outcome is
    unknown, so it is retried (botocore does not retry 409) until one side's write is visible.
    """
    bucket, key = parse(uri)
    body = data.encode() if isinstance(data, str) else data
    for attempt in range(conflict_retries + 1):
        try:
            client().put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*",
                                **_content_type(key))
            return True
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _EXISTS or status == "412":
                return False
            if (code in _CONFLICT or status == "409") and attempt < conflict_retries:
                time.sleep(0.05 * 2**attempt * (1 + random.random()))
                continue
            raise _error(uri, e) from e
        except BotoCoreError as e:
            raise _error(uri, e) from e
    raise AssertionError("unreachable")
