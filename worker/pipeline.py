"""One item end to end on one machine: the reference behaviour that the Ray job distributes.

An item is a video file, an image, or a folder of images (an album). Its outputs go to
``<out>/<item-id>/`` (see README); ``_DONE`` is written last, so an item without it is
incomplete and is redone by the next run.
"""

from __future__ import annotations

import hashlib
import re
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import cv2

from worker import storage
from worker.config import Config, digest, to_dict, with_backend_defaults
from worker.errors import MediaError, WorkerError
from worker.records import Face, Identity, ItemError, ItemResult
from worker.report import ReportSamples, build_manifest, dumps, render_html

VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}


def item_id(path: str | Path, cfg: Config) -> str:
    """Deterministic id: readable stem + hash of the resolved path, size, mtime and config."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}|{digest(cfg)}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem or p.name)[:48] or "item"
    return f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def item_kind(path: Path) -> str:
    from worker.media.image import is_image_name

    if path.is_dir() or is_image_name(path.name):
        return "album"
    return "video"


class Engine:
    """The models of a run (face analyser, restorer), loaded once and shared by its items."""

    def __init__(self, cfg: Config):
        from refstar.restorer import make_restorer
        from worker.faces.base import make_analyzer

        self.analyzer = make_analyzer(cfg.detect)
        self.cfg = with_backend_defaults(cfg, self.analyzer.identity_max_dist,
                                         self.analyzer.track_max_embed_dist)
        r = cfg.restore
        self.restorer = make_restorer(r.restorer, device=r.device, checkpoint=r.checkpoint,
                                      strength=r.strength)


def restore_item(src: str | Path, out_root: str, cfg: Config, *, engine: Engine | None = None,
                 force: bool = False) -> ItemResult:
    """Restore one item. Never raises for bad input: failures come back in ``result.errors``
    with ``status == "failed"`` and a manifest explaining them, but no ``_DONE``."""
    src = Path(src)
    if not src.exists():
        return ItemResult(item_id="", source=str(src), kind="?", status="failed",
                          errors=[ItemError(str(src), "no such file or folder", "read")])
    iid = item_id(src, cfg)
    out_dir = storage.join(out_root, iid)
    kind = item_kind(src)
    result = ItemResult(item_id=iid, source=str(src), kind=kind, output=out_dir)
    if storage.exists(storage.join(out_dir, storage.DONE_MARKER)) and not force:
        result.status = "skipped"
        return result
    storage.remove_tree_marker(out_dir)
    t0 = time.monotonic()
    identities: list[Identity] = []
    faces: list[Face] = []
    media: dict = {}
    files: list[dict] = []
    samples = ReportSamples()
    try:
        engine = engine or Engine(cfg)
        cfg = engine.cfg
        if kind == "video":
            from worker.video_item import restore_video
            identities, faces, media, samples = restore_video(str(src), out_dir, cfg, engine, result)
        else:
            from worker.album_item import restore_album
            identities, faces, media, files, samples = restore_album(src, out_dir, cfg, engine, result)
    except (MediaError, WorkerError) as e:
        result.status = "failed"
        result.errors.append(ItemError(getattr(e, "file", str(src)), getattr(e, "reason", str(e)), "item"))
    except Exception as e:  # one bad item never sinks a batch; keep the evidence
        result.status = "failed"
        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        result.errors.append(ItemError(str(src), f"internal error: {tb}", "item"))
    result.timings["total"] = time.monotonic() - t0
    if result.status == "ok" and result.errors:
        result.status = "partial"
    _publish(out_dir, result, identities, faces, media, files, samples, cfg)
    return result


def _publish(out_dir: str, result: ItemResult, identities: list[Identity], faces: list[Face],
             media: dict, files: list[dict], samples: ReportSamples, cfg: Config) -> None:
    """refs, manifest, report, then ``_DONE`` (only for items that completed)."""
    for ident in identities:
        for ref in ident.references:
            ok, buf = cv2.imencode(".png", ref.crop)
            storage.write_atomic(storage.join(out_dir, "refs", f"{ref.ref_id}.png"), buf.tobytes())
    manifest = build_manifest(result, identities, faces, media, to_dict(cfg), files)
    storage.write_atomic(storage.join(out_dir, "manifest.json"), dumps(manifest))
    if cfg.output.write_report:
        storage.write_atomic(storage.join(out_dir, "report.html"), render_html(manifest, identities, samples))
    if result.status in ("ok", "partial"):
        done = {"item_id": result.item_id, "status": result.status, "finished": time.time()}
        if not storage.put_done_marker(out_dir, done):  # another worker finished it meanwhile
            result.errors.append(ItemError(result.source, "item was completed by another run", "publish"))


def count_faces(faces: list[Face], identities: list[Identity]) -> dict[str, int]:
    return {
        "faces": len(faces),
        "faces_restored": sum(f.restored for f in faces),
        "faces_with_reference": sum(f.restored and f.reference is not None for f in faces),
        "faces_too_small": sum(f.skipped == "too_small" for f in faces),
        "identities": len(identities),
        "references": sum(len(i.references) for i in identities),
    }


def media_dict(obj) -> dict:
    """JSON-safe view of a media info dataclass."""
    d = asdict(obj)
    return {k: (str(v) if not isinstance(v, (int, float, str, bool, type(None), dict, list)) else v)
            for k, v in d.items()}
