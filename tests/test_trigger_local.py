"""The trigger on a laptop: no ``--address``, so it starts its own local Ray and submits there
(no cluster fixture in this module: that Ray is the consumer's own)."""

from __future__ import annotations

import pytest

from tests.test_trigger import Trigger, _done_items, _upload_album, make_queues, trigger_args

pytest_plugins = ["tests.s3server"]
pytestmark = pytest.mark.slow


def test_trigger_without_address_runs_its_own_ray(s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    _, url, _ = make_queues(s3_server, bucket)
    args = trigger_args(url, bucket, "unused")
    i = args.index("--address")
    del args[i:i + 2]
    trig = Trigger(tmp_path, *args)
    try:
        started = trig.wait_for(lambda: trig.decisions("started"), 120, "a local Ray")
        assert started[0]["ray"].startswith("http://127.0.0.1:")
        _upload_album(tmp_path, f"s3://{bucket}/in", [["t1_0", "hanks"]])  # one photo at the top
        trig.wait_for(lambda: _done_items(f"s3://{bucket}/out"), 300, "the photo restored")
        assert [r["uri"] for r in trig.decisions("submitted")] == [f"s3://{bucket}/in/photo_0.jpg"]
        assert trig.sigterm() == 0
    finally:
        trig.kill()
