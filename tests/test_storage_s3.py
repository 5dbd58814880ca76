"""worker.storage against a real S3 endpoint over HTTP (moto server on loopback)."""

import http.server
import threading

import pytest

from tests.concurrency import race
from worker import storage
from worker.storage import s3 as s3_backend

pytest_plugins = ["tests.s3server"]  # the s3_server and bucket fixtures


@pytest.fixture
def small_parts():
    """Multipart from 5 MiB (the S3 minimum part size) so a test file stays small."""
    before = s3_backend.settings()
    storage.configure(multipart_threshold=5 * storage.MiB, multipart_chunksize=5 * storage.MiB)
    yield
    storage.configure(**before.__dict__)


def test_client_uses_aws_endpoint_url_natively(s3_server):
    storage.reset_client()
    client = s3_backend.client()
    assert client.meta.endpoint_url == s3_server.endpoint  # from the env, not from our code
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 8}


def test_one_client_per_process_across_threads(s3_server):
    storage.reset_client()
    seen, start = [], threading.Barrier(8)

    def get():
        start.wait()
        seen.append(id(s3_backend.client()))

    threads = [threading.Thread(target=get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1


def test_write_read_exists_delete(bucket, s3_server):
    uri = storage.join(f"s3://{bucket}/out", "item", "manifest.json")
    assert not storage.exists(uri)
    storage.write_atomic(uri, '{"ok": true}')
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b'{"ok": true}'
    head = s3_server.client.head_object(Bucket=bucket, Key="out/item/manifest.json")
    assert head["ContentType"] == "application/json"

    storage.write_atomic(storage.join(f"s3://{bucket}", "blob.bin"), bytes(range(256)) * 64)
    with storage.open_read(f"s3://{bucket}/blob.bin") as body:  # streamed, chunk by chunk
        chunks = list(body.iter_chunks(4096))
    assert len(chunks) == 4 and b"".join(chunks) == bytes(range(256)) * 64

    with open(__file__, "rb") as f:  # file objects go through the transfer manager
        storage.write_atomic(f"s3://{bucket}/copy.py", f)
    with open(__file__, "rb") as f:
        assert storage.read_bytes(f"s3://{bucket}/copy.py") == f.read()

    storage.delete(uri)
    storage.delete(uri)  # absent: not an error, as on S3
    assert not storage.exists(uri)


def test_missing_object_and_bucket_are_named(bucket, tmp_path):
    uri = f"s3://{bucket}/no/such.mp4"
    with pytest.raises(storage.ObjectNotFound, match="no/such.mp4") as info:
        storage.read_bytes(uri)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(storage.ObjectNotFound, match="no/such.mp4"):
        storage.download(uri, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()
    with pytest.raises(storage.ObjectNotFound, match="bucket does not exist"):
        storage.read_bytes("s3://no-such-bucket-here/k")


def test_list_paginates_and_treats_prefix_as_folder(bucket, s3_server):
    for key in ("in/a.mp4", "in/b.mp4", "in/c/1.jpg", "in/c/2.jpg", "in/d.mp4", "inside/x.mp4"):
        storage.write_atomic(f"s3://{bucket}/{key}", key)

    pages = []
    client = s3_backend.client()
    client.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: pages.append(1))
    try:
        listed = [*storage.list(f"s3://{bucket}/in", page_size=2)]
    finally:
        client.meta.events.unregister("before-call.s3.ListObjectsV2")
    assert [u for u, _, _ in listed] == [f"s3://{bucket}/in/{k}" for k in
                                        ("a.mp4", "b.mp4", "c/1.jpg", "c/2.jpg", "d.mp4")]
    assert len(pages) == 3  # 5 keys in pages of 2
    etag = s3_server.client.head_object(Bucket=bucket, Key="in/a.mp4")["ETag"].strip('"')
    assert listed[0][1:] == (len("in/a.mp4"), etag)

    top = [u for u, _, _ in storage.list(f"s3://{bucket}/in/", recursive=False, page_size=2)]
    assert top == [f"s3://{bucket}/in/{k}" for k in ("a.mp4", "b.mp4", "d.mp4")]
    assert len([*storage.list(f"s3://{bucket}")]) == 6
    assert not [*storage.list(f"s3://{bucket}/nothing")]


def test_large_upload_goes_multipart(bucket, s3_server, tmp_path, small_parts):
    src = tmp_path / "restored.mp4"
    src.write_bytes(b"\x5a" * (11 * storage.MiB))
    storage.upload_file(src, f"s3://{bucket}/out/restored.mp4")
    head = s3_server.client.head_object(Bucket=bucket, Key="out/restored.mp4")
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 1 MiB parts
    assert head["ContentLength"] == src.stat().st_size

    back = storage.download(f"s3://{bucket}/out/restored.mp4", tmp_path / "dl" / "r.mp4")
    assert back.read_bytes() == src.read_bytes()

    small = tmp_path / "small.png"
    small.write_bytes(b"png")
    storage.upload_file(small, f"s3://{bucket}/out/small.png")
    head = s3_server.client.head_object(Bucket=bucket, Key="out/small.png")
    assert "-" not in head["ETag"] and head["ContentType"] == "image/png"


def test_done_marker_is_a_conditional_put(bucket):
    item = f"s3://{bucket}/out/item-1"
    assert storage.put_done_marker(item, {"writer": 1}) is True
    assert storage.put_done_marker(item, {"writer": 2}) is False
    assert storage.read_bytes(f"{item}/_DONE") == b'{"writer": 1}\n'

    storage.remove_tree_marker(item)  # --force withdraws it
    assert not storage.exists(f"{item}/_DONE")
    assert storage.put_done_marker(item, "again") is True


def test_racing_writers_claim_an_item_once(bucket):
    item = f"s3://{bucket}/out/race"
    results = race(lambda i: storage.put_done_marker(item, f"writer {i}"), 6)
    assert sorted(results) == [False] * 5 + [True]


def test_event_keys_are_decoded_and_confined(bucket):
    uri = storage.event_uri(bucket, "archive/My+Clip%281%29.mp4", under=f"s3://{bucket}/archive/")
    assert uri == f"s3://{bucket}/archive/My Clip(1).mp4"
    storage.write_atomic(uri, b"clip")
    assert [u for u, _, _ in storage.list(f"s3://{bucket}/archive")] == [uri]
    assert storage.read_bytes(uri) == b"clip"

    for raw in ("archive/%2E%2E/secret", "archive/..%2F..%2Fx", "%2Farchive/x", "archive//x"):
        with pytest.raises(storage.StorageError, match="escape"):
            storage.event_uri(bucket, raw, under=f"s3://{bucket}/archive/")
    with pytest.raises(storage.StorageError, match="not under"):
        storage.event_uri(bucket, "elsewhere/x.mp4", under=f"s3://{bucket}/archive/")
    with pytest.raises(storage.StorageError, match="escape"):
        storage.join(f"s3://{bucket}/restored", "item", "../../archive/x.mp4")


def test_missing_credentials_are_reported_clearly(bucket, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role probe
    storage.reset_client()
    try:
        with pytest.raises(storage.StorageAccessDenied, match="no AWS credentials") as info:
            storage.exists(f"s3://{bucket}/k")
        assert isinstance(info.value, PermissionError)
    finally:
        monkeypatch.undo()
        storage.reset_client()


class _Throttling(http.server.BaseHTTPRequestHandler):
    """An endpoint that always answers 503 SlowDown, counting the requests it gets."""

    hits = 0

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).hits += 1
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_throttling_is_retried_then_reported(s3_server):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    before = s3_backend.settings()
    storage.configure(endpoint_url=f"http://127.0.0.1:{httpd.server_address[1]}", max_attempts=3)
    try:
        with pytest.raises(storage.StorageError, match="SlowDown"):
            storage.read_bytes("s3://b/k")
        assert _Throttling.hits == 3  # the first try and two retries with backoff
    finally:
        storage.configure(**before.__dict__)
        httpd.shutdown()
        httpd.server_close()
