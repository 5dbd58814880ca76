"""Publishing an item so that a completed one never changes: every run writes its outputs into
a staging folder of its own, and only the holder of the item's publish lock swaps them in and
writes ``_DONE``.

Two runs may work on one item at once (two jobs over one archive, a duplicate trigger event, a
retried task). Each writes under ``OUT/_staging/<item-id>.<host>-<pid>-<random>/`` (or a local
work folder when it stages S3 outputs locally); nothing of it is visible in ``OUT/<item-id>/``
until publishing. To publish, a run takes the lock ``OUT/<item-id>/_PUBLISHING`` (created only
if absent: ``os.link`` locally, ``If-None-Match: *`` on S3), looks for ``_DONE`` once more, clears
what an earlier failed run left, moves its files in and writes ``_DONE`` last. A run that finds
``_DONE``, or a live run's lock, discards its staging: its item was completed by the other.

A lock whose owner died (same host, PID gone) or that is older than :data:`STALE_LOCK_S` is
taken over, so a killed publisher blocks nobody for good.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker import storage
from worker.item.litter import dead_owner, owned_by_the_dead, owned_here, owner

log = logging.getLogger(__name__)

LOCK_MARKER = "_PUBLISHING"
STAGING = "_staging"  # under the output root; "_" keeps it out of `refstar status`
# a publish moves files that are already written (renames, or S3 uploads/copies of one item),
# so a lock older than this belongs to a publisher that is gone, even on another host
STALE_LOCK_S = 3600.0
# a live run adds each file it finishes (a video segment, an album photo) to its staging, so
# staging where nothing changed for a day belongs to a run that was killed on some other node
STALE_STAGING_S = 86400.0


def staging_uri(out_root: str, iid: str) -> str:
    """A fresh staging folder for one run of item ``iid`` under ``out_root``."""
    return storage.join(out_root, STAGING, f"{iid}.{owner()}-{uuid.uuid4().hex[:8]}")


def sweep_staging(out_root: str, iid: str, now: float | None = None) -> int:
    """Remove the staging folders (local) or prefixes (S3) of item ``iid`` that dead runs left
    (a ``kill -9`` mid-item); returns how many. A run of this host is dead when its PID is gone
    (however long it has been quiet); a run elsewhere (a Ray node, another machine on the same
    storage) when nothing in its staging changed for :data:`STALE_STAGING_S`."""
    now = time.time() if now is None else now
    newest: dict[str, float] = {}
    if not storage.is_s3(out_root):  # a folder killed before it held a file counts too
        root = storage.local_path(storage.join(out_root, STAGING))
        for p in root.glob(f"{iid}.*") if root.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                newest[p.name] = p.stat().st_mtime
    for uri, mtime in storage.list_modified(storage.join(out_root, STAGING)):
        name = storage.relative_to(storage.join(out_root, STAGING), uri).split("/", 1)[0]
        if name.startswith(f"{iid}."):
            newest[name] = max(mtime, newest.get(name, 0.0))
    gone = 0
    for name, mtime in sorted(newest.items()):
        here = owned_here(name, f"{iid}.")
        if owned_by_the_dead(name, f"{iid}.") or (not here and now - mtime > STALE_STAGING_S):
            log.info("removing the staging of a run that is gone: %s", name)
            discard(storage.join(out_root, STAGING, name))
            gone += 1
    return gone


def discard(staged: str) -> None:
    """Remove a run's staging folder (local) or prefix (S3)."""
    if storage.is_s3(staged):
        for uri, _, _ in list(storage.list(staged)):
            storage.delete(uri)
    else:
        path = storage.local_path(staged)
        shutil.rmtree(path, ignore_errors=True)
        if path.parent.name == STAGING:
            with contextlib.suppress(OSError):  # not empty: another run stages there now
                path.parent.rmdir()


def _stale(lock_uri: str) -> bool:
    try:
        held = json.loads(storage.read_bytes(lock_uri))
    except storage.ObjectNotFound:
        return True
    except (ValueError, storage.StorageError):
        return False
    return dead_owner(str(held.get("owner", ""))) or time.time() - float(held.get("time", 0)) > STALE_LOCK_S


@contextmanager
def publish_lock(final_dir: str) -> Iterator[bool]:
    """Hold ``final_dir``'s publish lock for the block: yields True when this run may publish
    (it holds the lock and the item has no ``_DONE``), False when another run completed the item
    or is publishing it now. Never waits."""
    lock = storage.join(final_dir, LOCK_MARKER)
    payload = json.dumps({"owner": owner(), "time": time.time()})
    held = storage.put_if_absent(lock, payload)
    if not held and _stale(lock):
        log.warning("taking over the publish lock of a run that is gone: %s", lock)
        storage.delete(lock)
        held = storage.put_if_absent(lock, payload)
    try:
        yield held and not storage.exists(storage.join(final_dir, storage.DONE_MARKER))
    finally:
        if held:
            storage.delete(lock)


def swap_in(staged: str, final_dir: str) -> None:
    """Replace what ``final_dir`` holds (an earlier failed run's files) with the staged files.
    Call it holding the publish lock."""
    skip = {storage.join(final_dir, LOCK_MARKER)}
    for uri, _, _ in list(storage.list(final_dir)):
        if uri not in skip:
            storage.delete(uri)
    if not storage.is_s3(final_dir):
        _drop_empty_dirs(storage.local_path(final_dir))
    for uri, _, _ in list(storage.list(staged)):
        storage.move(uri, storage.join(final_dir, storage.relative_to(staged, uri)))


def _drop_empty_dirs(root: Path) -> None:
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(d.iterdir()):
            d.rmdir()
