"""S3 event notifications -> items: envelopes, URL-decoding, refusals, routing, job ids."""

from __future__ import annotations

import json

import pytest

from worker.collection import events
from worker.collection.events import (
    MalformedEvent,
    ObjectEvent,
    Target,
    parse_message,
    route,
    submission_id,
)

IN, OUT = "s3://media/in", "s3://media/out/"


def s3_body(*keys: str, bucket: str = "media", name: str = "ObjectCreated:Put", version: str | None = None) -> str:
    recs = [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
             "s3": {"bucket": {"name": bucket}, "object": {"key": k, "size": 10, "eTag": "abc", "sequencer": "1",
                                                         **({"versionId": version} if version else {})}}}
            for k in keys]
    return json.dumps({"Records": recs})


def test_s3_notification_keys_are_url_decoded():
    (ev,) = parse_message(s3_body("in/My+Clip%281%29.mp4")).events
    assert ev == ObjectEvent("media", "in/My Clip(1).mp4", 10, "abc", "", "ObjectCreated:Put")
    assert ev.version == "abc"
    (ev,) = parse_message(s3_body("in%2Fa+b%2Bc.mp4", version="v7")).events  # moto encodes "/" too
    assert (ev.key, ev.version) == ("in/a b+c.mp4", "v7")


def test_test_event_sns_and_eventbridge_envelopes():
    assert parse_message(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "media"})).test
    sns = json.dumps({"Type": "Notification", "MessageId": "m", "Message": s3_body("in/x%20y.mov")})
    assert [e.key for e in parse_message(sns).events] == ["in/x y.mov"]
    eb = {"version": "0", "detail-type": "Object Created", "source": "aws.s3",
          "detail": {"bucket": {"name": "media"}, "reason": "PutObject",
                     "object": {"key": "in/2023-08-08T14:03:40.zip", "size": 5, "etag": "e1", "version-id": "v1"}}}
    (ev,) = parse_message(json.dumps(eb)).events
    assert (ev.key, ev.version, ev.name) == ("in/2023-08-08T14:03:40.zip", "v1", "ObjectCreated:PutObject")


@pytest.mark.parametrize("body", [
    "garbage", "[]", "{}", json.dumps({"Records": [{"s3": {}}]}),
    json.dumps({"Type": "Notification", "Message": "not json"}),
    s3_body("in/%2E%2E%2Fsecret.mp4"),  # ../ once decoded
    s3_body("in//x.mp4"), s3_body("/abs.mp4"),
])
def test_malformed_or_unsafe_messages_raise(body):
    with pytest.raises(MalformedEvent):
        parse_message(body)


def _ev(key: str, name: str = "ObjectCreated:Put") -> ObjectEvent:
    return ObjectEvent("media", key, 10, "e", "", name)


def test_routing_follows_the_archive_rules():
    assert route(_ev("in/reel.MP4"), IN, OUT) == Target("s3://media/in/reel.MP4", "video", False, "e")
    assert route(_ev("in/deep/er/reel.mkv"), IN, OUT).kind == "video"
    assert route(_ev("in/portrait.jpg"), IN, OUT) == Target("s3://media/in/portrait.jpg", "album", False, "e")
    assert route(_ev("in/wedding/day1/a.png"), IN, OUT) == Target("s3://media/in/wedding", "album", True, "")


@pytest.mark.parametrize(("key", "why"), [
    ("out/x/restored.mp4", "own outputs"), ("other/a.mp4", "outside"), ("in/notes.txt", "suffix"),
    ("in/.hidden/a.jpg", "hidden"), ("in/_DONE", "hidden"), ("in", "outside"),
])
def test_routing_skips_with_a_reason(key, why):
    assert why in route(_ev(key), IN, OUT)


def test_routing_skips_removals_and_other_buckets_and_honours_suffixes():
    assert "not a creation" in route(_ev("in/a.mp4", "ObjectRemoved:Delete"), IN, OUT)
    assert "outside" in route(ObjectEvent("elsewhere", "in/a.mp4"), IN, OUT)
    assert "suffix" in route(_ev("in/a.mp4"), IN, OUT, suffixes=(".mov",))
    assert route(_ev("in/a.MOV"), IN, OUT, suffixes=(".mov",)).kind == "video"


def test_output_inside_the_input_prefix_is_still_ours():
    assert "own outputs" in route(_ev("in/restored/x/restored.mp4"), IN, "s3://media/in/restored")


def test_submission_ids_are_deterministic_and_distinct():
    a = submission_id("s3://media/in/My Clip.mp4", "v1", OUT)
    assert a == submission_id("s3://media/in/My Clip.mp4", "v1", OUT.rstrip("/"))
    assert a.startswith("refstar-my-clip-") and len(a) < 64
    others = {submission_id("s3://media/in/My Clip.mp4", "v2", OUT),
              submission_id("s3://media/in/My Clip2.mp4", "v1", OUT),
              submission_id("s3://media/in/My Clip.mp4", "v1", "s3://media/other/")}
    assert a not in others and len(others) == 3


def test_folder_version_changes_with_the_listing(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"1")
    v1 = events.folder_version(str(tmp_path))
    assert v1 == events.folder_version(str(tmp_path))
    (tmp_path / "b.jpg").write_bytes(b"2")
    assert events.folder_version(str(tmp_path)) != v1
