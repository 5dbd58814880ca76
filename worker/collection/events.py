"""S3 event notifications -> the items they create work for (pure: no boto3, no Ray).

A message body is one of: an S3 notification (``{"Records": [...]}``, keys URL-encoded, ``+`` for
a space), the ``s3:TestEvent`` S3 sends when a notification is configured, an SNS envelope around
either (``{"Type": "Notification", "Message": "<json>"}``), or an EventBridge event
(``{"source": "aws.s3", "detail-type": "Object Created", "detail": {...}}``, keys not encoded).

Items follow ``worker.collection.archive.list_prefix``: a video is an item, images in a first-level folder of
the input prefix are one album item, an image directly in the input prefix is an item of its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from worker import storage
from worker.item.staging import VIDEO_EXTS
from worker.media.image import IMAGE_EXTS


class MalformedEvent(ValueError):
    """A message that is not an S3 event in any supported envelope."""


@dataclass(frozen=True)
class ObjectEvent:
    """One object named by an event. ``key`` is decoded; ``size`` in bytes (-1 when absent)."""

    bucket: str
    key: str
    size: int = -1
    etag: str = ""  # without quotes
    version_id: str = ""  # "" on unversioned buckets
    name: str = "ObjectCreated:Put"  # the S3 event name, ``ObjectCreated:*`` for new objects

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def version(self) -> str:
        """What makes this upload of the key unique: the version id, else the ETag."""
        return self.version_id or self.etag or f"size-{self.size}"


@dataclass(frozen=True)
class Message:
    """A parsed message body: ``test`` for S3's configuration test event."""

    events: tuple[ObjectEvent, ...] = ()
    test: bool = False


@dataclass(frozen=True)
class Target:
    """The item an event creates work for. ``album`` folders wait for their burst to settle."""

    uri: str  # video or image object, or album folder (no trailing slash)
    kind: str  # "video" | "album"
    folder: bool  # an album folder: its version is its listing at submission time
    version: str  # the object's version/ETag; "" for folders


def _json(body: str) -> Any:
    try:
        return json.loads(body)
    except (TypeError, ValueError) as e:
        raise MalformedEvent(f"not JSON: {e}") from None


def _s3_record(rec: Any) -> ObjectEvent:
    try:
        s3 = rec["s3"]
        obj = s3["object"]
        # decoded and validated here: %2E%2E%2F must be seen as ../ before anything else looks
        key = storage.safe_key(obj["key"], url_encoded=True)
        return ObjectEvent(s3["bucket"]["name"], key, int(obj.get("size", -1)),
                           str(obj.get("eTag", "")).strip('"'), str(obj.get("versionId") or ""),
                           str(rec.get("eventName", "")))
    except storage.StorageError as e:
        raise MalformedEvent(str(e)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise MalformedEvent(f"S3 record without {e}") from None


def _eventbridge(doc: dict) -> ObjectEvent:
    try:
        detail = doc["detail"]
        obj = detail["object"]
        key = storage.safe_key(obj["key"])  # EventBridge keys are not URL-encoded
        name = "ObjectCreated:" + str(detail.get("reason", "")) if doc["detail-type"] == "Object Created" \
            else str(doc["detail-type"])
        return ObjectEvent(detail["bucket"]["name"], key, int(obj.get("size", -1)),
                           str(obj.get("etag", "")).strip('"'), str(obj.get("version-id") or ""), name)
    except storage.StorageError as e:
        raise MalformedEvent(str(e)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise MalformedEvent(f"EventBridge event without {e}") from None


def parse_message(body: str, _depth: int = 0) -> Message:
    """The events of one SQS message body; raises MalformedEvent for anything else."""
    doc = _json(body)
    if not isinstance(doc, dict):
        raise MalformedEvent("not a JSON object")
    if doc.get("Type") == "Notification" and "Message" in doc and _depth == 0:  # SNS
        return parse_message(doc["Message"], _depth + 1)
    if doc.get("Event") == "s3:TestEvent":
        return Message(test=True)
    if isinstance(doc.get("Records"), list) and doc["Records"]:
        return Message(tuple(_s3_record(r) for r in doc["Records"]))
    if doc.get("source") == "aws.s3" and "detail" in doc:
        return Message((_eventbridge(doc),))
    raise MalformedEvent("neither an S3 notification, an SNS envelope nor an EventBridge S3 event")


def _under(prefix: str, uri: str) -> str | None:
    """``uri`` relative to folder ``prefix``, or None when outside it."""
    try:
        return storage.relative_to(prefix.rstrip("/") or prefix, uri)
    except storage.StorageError:
        return None


def default_suffixes() -> tuple[str, ...]:
    return tuple(sorted(VIDEO_EXTS | {f".{e}" for e in IMAGE_EXTS}))


def route(ev: ObjectEvent, input_uri: str, output_uri: str,
          suffixes: tuple[str, ...] = ()) -> Target | str:
    """The item ``ev`` belongs to, or the reason it is ignored (a short phrase for the log)."""
    if not ev.name.startswith("ObjectCreated"):
        return f"not a creation ({ev.name})"
    uri = ev.uri
    if _under(output_uri, uri) is not None:
        return "one of our own outputs"
    rel = _under(input_uri, uri)
    if rel is None:
        return f"outside {input_uri}"
    parts = PurePosixPath(rel).parts
    if any(p.startswith((".", "_")) for p in parts):
        return "hidden or marker file"
    suffix = PurePosixPath(rel).suffix.lower()
    if suffix not in (tuple(s.lower() for s in suffixes) or default_suffixes()):
        return f"suffix {suffix or '(none)'} not watched"
    if suffix in VIDEO_EXTS:
        return Target(uri, "video", False, ev.version)
    if len(parts) == 1:
        return Target(uri, "album", False, ev.version)
    return Target(storage.join(input_uri, parts[0]), "album", True, "")


def submission_id(target_uri: str, version: str, output_uri: str) -> str:
    """Deterministic Ray job id: the same object version (or album listing) going to the same
    output always maps to the same id, so a duplicate event cannot start a second job."""
    stem = re.sub(r"[^a-z0-9]+", "-", PurePosixPath(target_uri).stem.lower()).strip("-")[:32] or "item"
    h = hashlib.sha256(f"{target_uri}\n{version}\n{output_uri.rstrip('/')}".encode()).hexdigest()[:16]
    return f"refstar-{stem}-{h}"


def folder_version(folder_uri: str) -> str:
    """An album folder's version: its current listing (keys, sizes, ETags)."""
    entries = sorted(f"{storage.relative_to(folder_uri, u)}|{s}|{t}" for u, s, t in storage.list(folder_uri))
    if not entries:
        raise storage.ObjectNotFound(f"{folder_uri}: the album folder is empty")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]
