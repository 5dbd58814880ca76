"""A real S3 endpoint over HTTP for tests: moto's ThreadedMotoServer on loopback.

Use from any test module::

    from tests.s3server import bucket, s3_server  # noqa: F401  (pytest fixtures)

    def test_x(bucket):            # bucket: a fresh, empty bucket name
        storage.write_atomic(f"s3://{bucket}/k", b"v")

The server runs once per session on a free port; fake credentials, region and
``AWS_ENDPOINT_URL`` are set in the environment for the session, so code under test reaches
it through boto3's ordinary configuration chain, exactly as it would reach MinIO or AWS.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
# Settings that would send requests elsewhere or load a developer's real credentials.
_UNSET = ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    client: Any  # a plain boto3 client for arranging and asserting, independent of the code under test

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    from worker import storage

    # werkzeug logs every request at INFO; keep failing tests' captured output readable
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in _UNSET:
            mp.delenv(name, raising=False)
        for name, value in _ENV.items():
            mp.setenv(name, value)
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_CONFIG_FILE", "/dev/null")  # no ~/.aws/config profile settings
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        storage.reset_client()  # the cached client may predate this environment
        client = boto3.session.Session().client("s3", endpoint_url=endpoint)
        try:
            yield S3Server(endpoint=endpoint, client=client)
        finally:
            storage.reset_client()
            server.stop()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh empty bucket on the session's server (buckets are never shared between tests)."""
    return s3_server.new_bucket()
