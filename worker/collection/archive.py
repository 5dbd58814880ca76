"""What an archive job has to do: its items, their ids, which are done, and the job summary.

Pure (storage + config, no Ray). An archive is a local folder, an ``s3://`` prefix, or a JSONL
manifest. In a folder or prefix every video is an item, and every first-level folder that holds
images is one album item (all its files, as ``list_album`` sees them: non-images are reported
and copied through); images lying directly at the top are one item each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from worker import storage
from worker.config import Config, ConfigError, load_config
from worker.item.layout import Layout, layout_for
from worker.item.staging import VIDEO_EXTS
from worker.media.image import is_image_name
from worker.records import ItemResult
from worker.storage import local as _local
from worker.storage import s3 as _s3

KINDS = ("video", "album")


@dataclass(frozen=True)
class ArchiveItem:
    """One unit of work. ``members`` (album only) are ``(relative name, size, etag/mtime)``."""

    uri: str  # a video file, an album folder, or a single image (local path or s3://)
    kind: str  # "video" | "album"
    version: str  # size + etag/mtime (a hash of them for albums): changes when the input does
    overrides: dict = field(default_factory=dict, hash=False, compare=False)  # config key -> value
    members: tuple[tuple[str, int, str], ...] = ()
    rel: str = field(default="", hash=False, compare=False)  # path in the archive ("" = its name)

    @property
    def name(self) -> str:
        return PurePosixPath(self.uri.rstrip("/").split("://", 1)[-1]).name or "item"

    @property
    def size(self) -> int:
        """Input bytes (an album: its members')."""
        if self.members:
            return sum(m[1] for m in self.members)
        head = self.version.split("-", 1)[0]
        return int(head) if head.isdigit() else 0

    @property
    def is_folder(self) -> bool:
        return self.kind == "album" and not is_image_name(self.name)


def _is_video(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in VIDEO_EXTS


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(rel).parts)


def _version(entries: Iterable[tuple[str, int, str]]) -> str:
    blob = "\n".join(f"{n}|{s}|{e}" for n, s, e in sorted(entries))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _listing(root: str) -> dict[str, tuple[str, int, str]]:
    """The visible files under folder ``root``: {relative name: (URI, size, version)}. Names that
    could not be output keys are kept as they are (the album refuses them by name)."""
    listing = {uri: (int(size), str(tag)) for uri, size, tag in storage.list(root)}
    names, refused = storage.split_names(root, listing)
    uri_of = {**names, **{raw: f"{root.rstrip('/')}/{raw}" for raw in refused}}
    return {rel: (uri, *listing[uri]) for rel, uri in uri_of.items() if not _hidden(rel)}


def list_prefix(root: str) -> list[ArchiveItem]:
    """Items of a local folder or an ``s3://`` prefix, in key order. A file whose name could
    not be an output key (``a//b.jpg``, a backslash) is still listed: in an album it is refused
    by name when the album runs; on its own it is an item like any other (outputs are named by
    item id, never by the input's key)."""
    listed = _listing(root)
    uri_of = {rel: uri for rel, (uri, _, _) in listed.items()}
    files = [(rel, size, tag) for rel, (_, size, tag) in listed.items()]
    albums: dict[str, list[tuple[str, int, str]]] = {}
    for rel, size, tag in files:
        top, _, rest = rel.partition("/")
        if rest and top not in ("", ".", ".."):
            albums.setdefault(top, []).append((rest, size, tag))
    album_dirs = {d for d, members in albums.items() if any(is_image_name(m[0]) for m in members)}
    items = []
    for rel, size, tag in files:
        if rel.partition("/")[0] in album_dirs and "/" in rel:
            continue
        if _is_video(rel):
            items.append(ArchiveItem(uri_of[rel], "video", f"{size}-{tag}", rel=rel))
        elif is_image_name(rel) and "/" not in rel:
            items.append(ArchiveItem(uri_of[rel], "album", f"{size}-{tag}", members=((rel, size, tag),), rel=rel))
    for d in sorted(album_dirs):
        members = tuple(sorted(albums[d]))
        items.append(ArchiveItem(storage.join(root, d), "album", _version(members), members=members, rel=d))
    return sorted(items, key=lambda i: i.uri)


def _stat(uri: str) -> tuple[int, str]:
    return _s3.stat(uri) if storage.is_s3(uri) else _local.stat(uri)


def read_manifest(text: str) -> list[ArchiveItem]:
    """Items of a JSONL manifest: one ``{"uri", "type", "overrides"}`` object per line
    (blank lines and ``#`` comments skipped). A bad line raises ``ConfigError`` naming it."""
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rec = json.loads(line)
            uri = rec["uri"]
            kind = rec.get("type") or ("album" if uri.endswith("/") else "video")
            overrides = rec.get("overrides") or {}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"manifest line {n}: expected {{'uri', 'type', 'overrides'}} ({e})") from e
        if kind not in KINDS or not isinstance(overrides, dict):
            raise ConfigError(f"manifest line {n}: type must be one of {KINDS}, overrides a mapping")
        uri = uri.rstrip("/") if kind == "album" else uri
        if kind == "album" and not is_image_name(uri):
            members = tuple(sorted((rel, size, tag) for rel, (_, size, tag) in _listing(uri).items()))
            version = _version(members)
        else:
            try:
                size, tag = _stat(uri)
            except FileNotFoundError:
                size, tag = -1, "missing"  # reported as a failed item, not a failed job
            members = ((PurePosixPath(uri).name, size, tag),) if kind == "album" else ()
            version = f"{size}-{tag}"
        items.append(ArchiveItem(uri, kind, version, overrides, members))
    return items


def items_from_uris(uris: list[str]) -> list[ArchiveItem]:
    """Items named one by one: a video, an image, or an album folder (``s3://b/p/album/``)."""
    from worker.item.staging import item_kind

    return read_manifest("\n".join(json.dumps({"uri": u, "type": item_kind(u)}) for u in uris))


def item_config(config_file: str | None, sets: list[str], item: ArchiveItem) -> Config:
    """The job's config with the item's manifest overrides on top (values as JSON)."""
    extra = [f"{k}={json.dumps(v)}" for k, v in item.overrides.items()]
    return load_config(config_file, list(sets) + extra)


def item_id(item: ArchiveItem, cfg: Config) -> str:
    """Deterministic id, the same ``worker.item.pipeline.restore_item`` gives the URI (hash of the URI,
    its objects' sizes and ETags/mtimes, and the effective config), so either path resumes the
    other's work."""
    from worker.item.staging import item_id as staging_item_id

    return staging_item_id(item.uri, cfg)


def item_layout(item: ArchiveItem, out_root: str, cfg: Config) -> Layout:
    """Where the item's outputs go (``output.layout``); the mirror layout names them by the
    item's path in the archive (by its name when it was listed on its own). StorageError when
    that path could not be an output key, or would write over the input."""
    layout = layout_for(out_root, item.rel or item.name, cfg.output, item.is_folder)
    layout.check_not_input(item.uri)
    return layout


def summarise(rows: list[tuple[ArchiveItem, ItemResult]], seconds: float) -> dict:
    """The job summary written to ``<output>/_job_summary.json``."""
    status = [r.status for _, r in rows]
    total = {k: sum(r.counts.get(k, 0) for _, r in rows) for k in ("frames", "faces", "identities")}
    return {
        "items": len(rows),
        "done": sum(s in ("ok", "partial") for s in status),
        "skipped": status.count("skipped"),
        "failed": status.count("failed"),
        **total,
        "faces_restored": sum(r.counts.get("faces_restored", 0) for _, r in rows),
        "seconds": round(seconds, 3),
        "results": [{"uri": it.uri, "kind": it.kind, "item_id": r.item_id, "status": r.status,
                     "output": r.output, "errors": [str(e) for e in r.errors]} for it, r in rows],
    }
